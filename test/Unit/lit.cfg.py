# -*- Python -*-
# Runs every GoogleTest binary under build/unittests as lit tests, so unit
# tests join the lit summary.
import os

import lit.formats

config.name = "KVPREC-Unit"
config.suffixes = []
config.test_exec_root = os.path.join(config.kvprec_obj_root, "unittests")
config.test_source_root = config.test_exec_root
config.test_format = lit.formats.GoogleTest(".", "Tests")
config.environment["KVPREC_MODELS_DIR"] = config.kvprec_models_dir
for name in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
    if name in os.environ:
        config.environment[name] = os.environ[name]
