"""Writes a variant of a Hugging Face model directory, for tests.

Usage: hf-variant.py SRC DST MODE

Modes (pure Python, no numpy):
  bf16, f16      every tensor converted (round to nearest even)
  sharded        the tensors split over two shards and an index
  missing-tensor drop model.layers.1.mlp.up_proj.weight
  wrong-shape    k_proj of layer 0 declared [in, out] instead of [out, in]
  bad-dtype      model.norm.weight declared I32 (same bytes)
  extra-tensor   add model.layers.0.self_attn.q_proj.bias
  missing-shard  sharded, with one shard deleted
  no-field       config.json without "hidden_size"
  rope-scaling   config.json with rope_scaling linear 2.0
  attention-bias config.json with attention_bias true
  not-llama      config.json for GPT2LMHeadModel
  huge-heads     config.json with 2^29 heads of 2^29 channels
  bad-tokenizer  tokenizer.json with a ByteLevel pre-tokenizer
"""
import json
import os
import shutil
import struct
import sys

src, dst, mode = sys.argv[1:4]
os.makedirs(dst, exist_ok=True)


def read_safetensors(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    metadata = header.pop("__metadata__", None)
    body = data[8 + n:]
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        tensors[name] = (info["dtype"], info["shape"], body[begin:end])
    return metadata, tensors


def write_safetensors(path, metadata, tensors):
    header, offset, chunks = {}, 0, []
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        chunks.append(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))


def floats(raw):
    return struct.unpack(f"<{len(raw) // 4}f", raw)


def to_bf16(raw):
    out = bytearray()
    for (bits,) in struct.iter_unpack("<I", raw):
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        out += struct.pack("<H", rounded & 0xFFFF)
    return bytes(out)


def to_f16(raw):
    return struct.pack(f"<{len(raw) // 4}e", *floats(raw))


for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
    shutil.copy(os.path.join(src, name), os.path.join(dst, name))
metadata, tensors = read_safetensors(os.path.join(src, "model.safetensors"))
config = json.load(open(os.path.join(src, "config.json")))

if mode in ("bf16", "f16"):
    convert = to_bf16 if mode == "bf16" else to_f16
    tensors = {n: (mode.upper(), s, convert(r)) for n, (d, s, r) in tensors.items()}
elif mode == "missing-tensor":
    del tensors["model.layers.1.mlp.up_proj.weight"]
elif mode == "wrong-shape":
    d, s, r = tensors["model.layers.0.self_attn.k_proj.weight"]
    tensors["model.layers.0.self_attn.k_proj.weight"] = (d, [s[1], s[0]], r)
elif mode == "bad-dtype":
    d, s, r = tensors["model.norm.weight"]
    tensors["model.norm.weight"] = ("I32", s, r)
elif mode == "extra-tensor":
    rows = tensors["model.layers.0.self_attn.q_proj.weight"][1][0]
    tensors["model.layers.0.self_attn.q_proj.bias"] = ("F32", [rows], bytes(4 * rows))
elif mode == "no-field":
    del config["hidden_size"]
elif mode == "rope-scaling":
    config["rope_scaling"] = {"type": "linear", "factor": 2.0}
elif mode == "attention-bias":
    config["attention_bias"] = True
elif mode == "huge-heads":
    config.update(num_attention_heads=2**29, num_key_value_heads=2**29, head_dim=2**29)
elif mode == "not-llama":
    config["architectures"] = ["GPT2LMHeadModel"]
    config["model_type"] = "gpt2"
elif mode == "bad-tokenizer":
    tokenizer = json.load(open(os.path.join(src, "tokenizer.json")))
    tokenizer["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False}
    json.dump(tokenizer, open(os.path.join(dst, "tokenizer.json"), "w"))
elif mode not in ("sharded", "missing-shard"):
    sys.exit(f"hf-variant: unknown mode {mode}")

json.dump(config, open(os.path.join(dst, "config.json"), "w"), indent=2)
if mode in ("sharded", "missing-shard"):
    names = list(tensors)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    weight_map = {}
    for shard, members in shards.items():
        write_safetensors(os.path.join(dst, shard), metadata,
                          {n: tensors[n] for n in members})
        weight_map.update({n: shard for n in members})
    json.dump({"metadata": {"total_size": sum(len(t[2]) for t in tensors.values())},
               "weight_map": weight_map},
              open(os.path.join(dst, "model.safetensors.index.json"), "w"), indent=2)
    if mode == "missing-shard":
        os.remove(os.path.join(dst, "model-00002-of-00002.safetensors"))
else:
    write_safetensors(os.path.join(dst, "model.safetensors"), metadata, tensors)
