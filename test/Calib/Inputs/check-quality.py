"""Checks an eval-quality report.

Usage: check-quality.py REPORT.json [DUMP.safetensors] [--exact]

Every report: each per_layer entry has the whole report's fields (tokens,
mean and max KL, top-1, prompt_tokens, ppl_fp32, ppl_plan) and the planned
layer's bytes (layer_plan_bytes, layer_fp16_bytes, layer_bytes_vs_fp16);
it counts the same positions and prompt tokens as the whole, its fp32
perplexity is the whole's (the same exact run), and the layers' bytes add
up to plan_bytes and fp16_bytes.

With DUMP (--dump-logits), from the dumped logits of the fp32 and the
planned runs alone (pure Python): the mean and largest KL(fp32 || plan)
over the positions, the top-1 agreement, and the perplexity of both over
the prompt positions; each must equal the report's to 1e-9 relative.

With --exact (a plan that stores everything exactly, all f32): KL 0 and
top-1 1 exactly, and equal perplexities, for the whole plan and every
layer.
"""
import json
import math
import struct
import sys

args = [a for a in sys.argv[1:] if not a.startswith("--")]
exact_plan = "--exact" in sys.argv[1:]
report = json.load(open(args[0]))
problems = []


def close(a, b):
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15)


layers = report["per_layer"]
if not layers:
    problems.append("no per_layer entries")
for entry in layers:
    where = f"per_layer[{entry['layer']}]"
    for key in ("tokens", "mean_kl", "max_kl", "top1_agreement", "prompt_tokens",
                "ppl_fp32", "ppl_plan", "layer_plan_bytes", "layer_fp16_bytes",
                "layer_bytes_vs_fp16"):
        if key not in entry:
            problems.append(f"{where}: no {key}")
    if problems:
        continue
    for key in ("tokens", "prompt_tokens", "ppl_fp32"):
        if entry[key] != report[key]:
            problems.append(f"{where}: {key} {entry[key]}, whole report {report[key]}")
    if not close(entry["layer_bytes_vs_fp16"],
                 entry["layer_plan_bytes"] / entry["layer_fp16_bytes"]):
        problems.append(f"{where}: layer_bytes_vs_fp16 is not layer_plan_bytes / "
                        "layer_fp16_bytes")
    if exact_plan and not (entry["mean_kl"] == 0 and entry["max_kl"] == 0 and
                           entry["top1_agreement"] == 1 and
                           entry["ppl_plan"] == entry["ppl_fp32"]):
        problems.append(f"{where}: an exact plan moved the distributions: {entry}")
if not problems:
    for key, whole in (("layer_plan_bytes", "plan_bytes"), ("layer_fp16_bytes", "fp16_bytes")):
        total = sum(entry[key] for entry in layers)
        if not close(total, report[whole]):
            problems.append(f"the layers' {key} add up to {total}, {whole} is {report[whole]}")
if exact_plan and not (report["mean_kl"] == 0 and report["max_kl"] == 0 and
                       report["top1_agreement"] == 1 and
                       report["ppl_plan"] == report["ppl_fp32"]):
    problems.append("an exact plan moved the distributions")
if len(args) < 2:
    if problems:
        sys.exit("check-quality: " + "; ".join(problems))
    print(f"ok: {len(layers)} layers")
    sys.exit(0)

data = open(args[1], "rb").read()
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n])
body = data[8 + n:]


def tensor(name):
    info = header[name]
    begin, end = info["data_offsets"]
    fmt = {"F32": "f", "I64": "q"}[info["dtype"]]
    return info["shape"], struct.unpack(f"<{(end - begin) // struct.calcsize(fmt)}{fmt}",
                                        body[begin:end])


(positions, vocab), exact = tensor("exact")
_, plan = tensor("plan")
_, targets = tensor("targets")
_, prompt = tensor("prompt")


def log_softmax(row):
    top = max(row)
    log = top + math.log(sum(math.exp(x - top) for x in row))
    return [x - log for x in row]


kls, agree, nll_exact, nll_plan, count = [], 0, 0.0, 0.0, 0
for t in range(positions):
    e = exact[t * vocab:(t + 1) * vocab]
    p = plan[t * vocab:(t + 1) * vocab]
    le, lp = log_softmax(e), log_softmax(p)
    kls.append(max(0.0, sum(math.exp(a) * (a - b) for a, b in zip(le, lp))))
    agree += e.index(max(e)) == p.index(max(p))
    if prompt[t]:
        nll_exact -= le[targets[t]]
        nll_plan -= lp[targets[t]]
        count += 1

expected = {
    "tokens": positions,
    "mean_kl": sum(kls) / positions,
    "max_kl": max(kls),
    "top1_agreement": agree / positions,
    "prompt_tokens": count,
    "ppl_fp32": math.exp(nll_exact / max(count, 1)),
    "ppl_plan": math.exp(nll_plan / max(count, 1)),
}
problems += [f"{k}: report {report[k]}, recomputed {v}" for k, v in expected.items()
             if not close(report[k], v)]
if problems:
    sys.exit("check-quality: " + "; ".join(problems))
print(f"ok: {positions} positions, mean KL {expected['mean_kl']:.3g}, "
      f"top-1 {expected['top1_agreement']:.3f}")
