#!/usr/bin/env python3
"""Writes a small kvprec-calib-v1 statistics file with the Python standard
library only (the schema of docs/calibration.md), optionally corrupted in one
way, so lit tests can exercise every error path of the importer.

usage: make-calibration.py OUT [--layers L] [--kv-heads H] [--q-heads Q]
                               [--head-dim D] [--corrupt MODE]
"""
import argparse
import json
import math
import struct

CORRUPTIONS = ["none", "truncated", "short", "header-length", "json",
               "no-metadata", "schema", "dtype", "shape", "nan", "inf",
               "mass", "offsets", "missing-tensor", "zeros", "no-queries",
               "too-many-queries", "no-scale"]

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--layers", type=int, default=2)
p.add_argument("--kv-heads", type=int, default=2)
p.add_argument("--q-heads", type=int, default=4)
p.add_argument("--head-dim", type=int, default=8)
p.add_argument("--sink", type=int, default=4)
p.add_argument("--window", type=int, default=16)
p.add_argument("--block", type=int, default=16)
p.add_argument("--max-positions", type=int, default=64)
p.add_argument("--query-samples", type=int, default=2)
p.add_argument("--softmax-scale", type=float, default=None,
               help="the scale recorded in the metadata (default 1/sqrt(D))")
p.add_argument("--corrupt", choices=CORRUPTIONS, default="none")
a = p.parse_args()

L, H, D = a.layers, a.kv_heads, a.head_dim
NB = math.ceil(max(a.max_positions - a.window, 0) / a.block)
NA = math.ceil(a.max_positions / a.block)
M = 3 + min(NB, 8)

# (name, shape, value): one consistent value per tensor.
tensors = [
    ("attn_sink_mass", [L, H], 0.5),
    ("attn_window_mass", [L, H], 0.6),
    ("attn_body_mass", [L, H, NB], 0.2),
    ("attn_sink_mass_mean", [L, H], 0.3),
    ("attn_window_mass_mean", [L, H], 0.4),
    ("attn_entropy_mean", [L, H], 1.0),
    ("attn_max_weight", [L, H], 0.4),
    ("q_absmax", [L, H, D], 1.0),
    ("q_l1_max", [L, H], 4.0),
    # At most (1/sqrt D) * sum_j q_absmax_j * max|k_j| = 2 sqrt(D), 5.66 at D=8.
    ("qk_logit_max", [L, H], 2.0),
    ("k_chan_min", [L, H, D], -2.0),
    ("k_chan_max", [L, H, D], 2.0),
    ("v_chan_min", [L, H, D], -1.0),
    ("v_chan_max", [L, H, D], 1.0),
    ("k_block_absmax", [L, H, NA], 2.0),
    ("v_block_absmax", [L, H, NA], 1.0),
    ("k_block_token_range", [L, H, NA], 3.0),
    ("v_block_token_range", [L, H, NA], 1.5),
    ("k_block_chan_span", [L, H, NA], 3.0),
    ("v_block_chan_span", [L, H, NA], 1.5),
    ("query_count", [L, H], 10),
    ("position_count", [NA], a.block),
    ("query_sample_count", [L, H], a.query_samples),
    # Each sample inside the envelopes: |q| 1, logit 1.5, masses sink 0.3,
    # window 0.5, first body block 0.2 (summing to 1).
    ("query_sample_mass", [L, H, a.query_samples, M], None),
    ("query_sample_sqmass", [L, H, a.query_samples, M], None),
    ("query_sample_absq", [L, H, a.query_samples, D], 1.0),
    ("query_sample_logit", [L, H, a.query_samples], 1.5),
]

header = {}
data = b""
for name, shape, value in tensors:
    count = math.prod(shape)
    if a.corrupt == "zeros" and not name.endswith("_count"):
        value = 0
    if name == "query_count" and a.corrupt == "no-queries":
        value = 0
    if name == "query_count" and a.corrupt == "too-many-queries":
        value = (1 << 63) - 1
    if name.endswith("_count"):
        dtype, blob = "I64", struct.pack("<%dq" % count, *([int(value)] * count))
    else:
        if name == "query_sample_mass":
            row = [0.3, 0.5, 0.2] + [0.0] * (M - 3)
            values = row * (count // M)
        elif name == "query_sample_sqmass":
            # As if each bin's mass fell on ten equal weights.
            row = [0.009, 0.025, 0.004] + [0.0] * (M - 3)
            values = row * (count // M)
        else:
            values = [float(value)] * count
        if a.corrupt == "nan" and name == "q_absmax":
            values[3] = float("nan")
        if a.corrupt == "inf" and name == "v_chan_max":
            values[5] = float("inf")
        if a.corrupt == "mass" and name == "attn_body_mass":
            values[1] = 1.5
        dtype, blob = "F32", struct.pack("<%df" % count, *values)
    if a.corrupt == "dtype" and name == "attn_sink_mass":
        dtype, blob = "F16", struct.pack("<%de" % count, *([float(value)] * count))
    if a.corrupt == "shape" and name == "attn_body_mass":
        shape = [L, H + 1, NB]
        blob = blob + struct.pack("<%df" % (L * NB), *([0.2] * (L * NB)))
    if a.corrupt == "missing-tensor" and name == "v_block_chan_span":
        continue
    begin = len(data)
    data += blob
    end = len(data)
    if a.corrupt == "offsets" and name == "k_chan_max":
        end += 4096
    header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}

metadata = {
    "schema": "kvprec-calib-v1", "model": "toy", "synthetic": "false",
    "layers": str(L), "kv_heads": str(H), "q_heads": str(a.q_heads),
    "head_dim": str(D), "sink": str(a.sink), "window": str(a.window),
    "block": str(a.block), "max_positions": str(a.max_positions),
    "prompts": "1", "steps": "8", "query_samples": str(a.query_samples),
    "softmax_scale": repr(a.softmax_scale if a.softmax_scale is not None
                          else 1 / math.sqrt(D)),
}
if a.corrupt == "no-scale":
    del metadata["softmax_scale"]
if a.corrupt == "schema":
    metadata["schema"] = "kvprec-calib-v0"
if a.corrupt != "no-metadata":
    header["__metadata__"] = metadata

text = json.dumps(header).encode()
if a.corrupt == "json":
    text = text[: len(text) // 2]
length = len(text)
if a.corrupt == "header-length":
    length = 1 << 40
out = struct.pack("<Q", length) + text + data
if a.corrupt == "truncated":
    out = out[: len(out) - 100]
if a.corrupt == "short":
    out = out[:5]
with open(a.out, "wb") as f:
    f.write(out)
