#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into OUT/<target>/.

usage: make-seeds.py OUT SOURCE_ROOT MODELS_DIR

  ir           every .mlir file under test/ and examples/
  safetensors  calibration files from make-calibration.py (valid, and each
               corruption it knows), and the calibration of a real model
               when test/Integration left one (none is committed)
  checkpoint   a tiny llama2.c checkpoint written here (and stories260K when
               the shared models are present: large, so only as a seed)
  tokenizer    a tiny tokenizer written here and tok512.bin, each prefixed
               with its vocabulary size (2 bytes, little endian)
  hf-tokenizer a small tokenizer.json written here, and tinystories-656K's
  certificate  a few fixed byte strings (the target decodes any input)

and, for every target, the inputs in fuzz/regressions/<target>/: what the
fuzzers found once (docs/testing.md), replayed first by every run.
"""
import json
import math
import os
import pathlib
import shutil
import struct
import subprocess
import sys

out, root, models = (pathlib.Path(p) for p in sys.argv[1:4])


def target(name):
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    return d


# IR: the lit tests and examples (split files go in whole; the parser sees
# their later chunks as more top-level ops, which is fine for a seed).
ir = target("ir")
for path in sorted(list((root / "test").rglob("*.mlir")) +
                   list((root / "examples").rglob("*.mlir"))):
    rel = path.relative_to(root).as_posix().replace("/", "_")
    shutil.copyfile(path, ir / rel)

# Calibration statistics.
st = target("safetensors")
maker = root / "test" / "Transforms" / "Inputs" / "make-calibration.py"
corruptions = ["none", "truncated", "short", "header-length", "json",
               "no-metadata", "schema", "dtype", "shape", "nan", "mass",
               "offsets", "missing-tensor", "no-queries"]
for mode in corruptions:
    subprocess.run([sys.executable, str(maker), str(st / f"calib-{mode}"),
                    "--corrupt", mode], check=True)
subprocess.run([sys.executable, str(maker), str(st / "calib-small"),
                "--layers", "1", "--kv-heads", "1", "--q-heads", "1",
                "--head-dim", "2", "--max-positions", "8", "--block", "4",
                "--window", "4", "--sink", "1", "--query-samples", "1"],
               check=True)


def checkpoint(dim, hidden, layers, heads, kv_heads, vocab, seq):
    hs = dim // heads
    kv_dim = kv_heads * hs
    floats = []

    def add(n, value):
        floats.extend([value] * n)
    add(vocab * dim, 0.02)
    add(layers * dim, 1.0)
    add(layers * dim * dim, 0.01)
    add(layers * kv_dim * dim, 0.01)
    add(layers * kv_dim * dim, 0.01)
    add(layers * dim * dim, 0.01)
    add(layers * dim, 1.0)
    add(layers * hidden * dim, 0.01)
    add(layers * dim * hidden, 0.01)
    add(layers * hidden * dim, 0.01)
    add(dim, 1.0)
    for table in (math.cos, math.sin):
        for pos in range(seq):
            for i in range(hs // 2):
                freq = 1.0 / (10000.0 ** (2 * i / hs))
                floats.append(table(pos * freq))
    header = struct.pack("<7i", dim, hidden, layers, heads, kv_heads, vocab,
                         seq)
    return header + struct.pack(f"<{len(floats)}f", *floats)


cp = target("checkpoint")
(cp / "tiny.bin").write_bytes(checkpoint(8, 16, 1, 2, 1, 8, 4))
(cp / "tiny-gqa.bin").write_bytes(checkpoint(8, 12, 2, 4, 2, 6, 3))
stories = models / "stories260K"
if (stories / "stories260K.bin").exists():
    shutil.copyfile(stories / "stories260K.bin", cp / "stories260K.bin")

tk = target("tokenizer")
pieces = [b"<unk>", b"<s>", b"</s>"] + [bytes([c]) for c in b" abcehlo"] + \
         [b"he", b"ll", b"hell", b"hello", b" h", b"<0x0A>"]
body = struct.pack("<i", max(len(p) for p in pieces))
for i, piece in enumerate(pieces):
    body += struct.pack("<fi", -float(i), len(piece)) + piece
(tk / "tiny.bin").write_bytes(struct.pack("<H", len(pieces) - 1) + body)
if (stories / "tok512.bin").exists():
    (tk / "tok512.bin").write_bytes(struct.pack("<H", 511) +
                                    (stories / "tok512.bin").read_bytes())

hf = target("hf-tokenizer")
(hf / "small.json").write_text(json.dumps({
    "added_tokens": [{"id": 1, "content": "<s>", "normalized": True, "special": True}],
    "normalizer": {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
    "pre_tokenizer": None,
    "decoder": {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
    "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": True, "byte_fallback": True,
              "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "\u2581": 3, "a": 4, "b": 5,
                        "ab": 6, "\u2581a": 7, "<0xC3>": 8, "<0xA9>": 9},
              "merges": ["a b", "\u2581 a"]}}))
tiny_json = models / "tinystories-656K" / "tokenizer.json"
if tiny_json.exists():
    shutil.copyfile(tiny_json, hf / "tinystories.json")

cert = target("certificate")
for i, seed in enumerate([b"\x00" * 64, b"\xff" * 64,
                          bytes(range(64)), bytes(range(255, 0, -3))]):
    (cert / f"seed{i}").write_bytes(seed)

for regressions in sorted((root / "fuzz" / "regressions").glob("*")):
    for path in sorted(regressions.iterdir()):
        shutil.copyfile(path, target(regressions.name) / ("regression-" + path.name))
