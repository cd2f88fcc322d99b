# -*- Python -*-
import os
import shutil
import subprocess

import lit.formats
import lit.util
from lit.llvm import llvm_config
from lit.llvm.subst import ToolSubst

config.name = "KVPREC"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".test"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.kvprec_obj_root, "test")
# Unit/ has its own config (GoogleTest format); Inputs/ hold data files.
config.excludes = ["Inputs", "Unit", "CMakeLists.txt", "README.md", "lit.cfg.py",
                   "lit.site.cfg.py"]

config.substitutions.append(("%PATH%", config.environment["PATH"]))
config.substitutions.append(("%shlibext", config.llvm_shlib_ext))
config.substitutions.append(("%kvprec_src_root", config.kvprec_src_root))
config.substitutions.append(("%kvprec_lib_dir", config.kvprec_lib_dir))
config.substitutions.append(("%models", config.kvprec_models_dir))
config.substitutions.append(("%mlir_lib_dir", config.llvm_lib_dir))
config.substitutions.append(("%kvprec_obj_root", config.kvprec_obj_root))
config.substitutions.append(("%cmake_generator", config.cmake_generator))
config.substitutions.append(("%cmake", config.cmake_command))
config.substitutions.append(("%cxx", config.cxx_compiler))

llvm_config.with_system_environment(["HOME", "INCLUDE", "LIB", "TMP", "TEMP",
                                     "ASAN_OPTIONS", "UBSAN_OPTIONS",
                                     "LSAN_OPTIONS"])
# scripts/check.sh --sanitize: an ASan+UBSan build (test/Plugin and
# test/Install are unsupported there, each says why).
if config.kvprec_sanitize.upper() in ("ON", "TRUE", "1", "YES"):
    config.available_features.add("sanitizer")
llvm_config.use_default_substitutions()

tool_dirs = [config.kvprec_tools_dir, config.llvm_tools_dir]
tools = ["kvprec-opt", "kvprec-calib"]
llvm_config.add_tool_substitutions(tools, tool_dirs)
llvm_config.with_environment("PATH", config.kvprec_tools_dir, append_path=True)
llvm_config.with_environment("PATH", config.llvm_tools_dir, append_path=True)

if config.mlir_opt_executable and os.path.exists(config.mlir_opt_executable):
    config.available_features.add("system-mlir-opt")
    config.substitutions.append(("%system_mlir_opt", config.mlir_opt_executable))
if config.mlir_runner_executable and os.path.exists(config.mlir_runner_executable):
    config.available_features.add("mlir-runner")
    config.substitutions.append(("%mlir_runner", config.mlir_runner_executable))

# kvprec-to-llvm{threads=N} code calls the OpenMP runtime.
if config.kvprec_libomp and os.path.exists(config.kvprec_libomp):
    config.available_features.add("libomp")
    config.substitutions.append(("%libomp", config.kvprec_libomp))

# The stories260K checkpoint lives in ../shared; tests that read it need it.
if os.path.exists(os.path.join(config.kvprec_models_dir, "stories260K", "stories260K.bin")):
    config.available_features.add("stories260K")
if os.path.exists(os.path.join(config.kvprec_models_dir, "tinystories-656K", "model.safetensors")):
    config.available_features.add("tinystories656K")

# kvprec-to-nvvm links CUDA's libdevice (lib/Conversion/KVPrecToNVVM): it
# looks where the pipeline does.
def libdevice_path():
    for variable in ("CUDA_PATH", "CUDA_HOME"):
        root = os.environ.get(variable)
        if root:
            return os.path.join(root, "nvvm", "libdevice", "libdevice.10.bc")
    return "/usr/local/cuda/nvvm/libdevice/libdevice.10.bc"
if os.path.exists(libdevice_path()):
    config.available_features.add("libdevice")
for variable in ("CUDA_PATH", "CUDA_HOME"):
    if variable in os.environ:
        config.environment[variable] = os.environ[variable]

# runtime/ (the mgpu* functions on the CUDA driver API), built where cuda.h
# exists.
if config.kvprec_cuda_runtime and os.path.exists(config.kvprec_cuda_runtime):
    config.available_features.add("cuda-runtime")
    config.substitutions.append(("%cuda_runtime", config.kvprec_cuda_runtime))

# NVPTX tests need ptxas; device tests need a visible NVIDIA GPU.
if config.ptxas_executable and os.path.exists(config.ptxas_executable):
    config.available_features.add("ptxas")
    config.substitutions.append(("%ptxas", config.ptxas_executable))
nvidia_smi = shutil.which("nvidia-smi")
if nvidia_smi:
    try:
        out = subprocess.run([nvidia_smi, "-L"], capture_output=True, text=True,
                             timeout=20)
        if out.returncode == 0 and "GPU" in out.stdout:
            config.available_features.add("cuda-gpu")
    except Exception:
        pass

# librsvg's renderer (scripts/setup.sh installs librsvg2-bin) checks the SVG
# report as a picture.
import shutil
if shutil.which("rsvg-convert"):
    config.available_features.add("rsvg")
