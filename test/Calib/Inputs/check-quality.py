"""Recomputes an eval-quality report from its --dump-logits file.

Usage: check-quality.py REPORT.json DUMP.safetensors

From the dumped logits of the fp32 and the planned runs alone (pure
Python): the mean and largest KL(fp32 || plan) over the positions, the
top-1 agreement, and the perplexity of both over the prompt positions;
each must equal the report's to 1e-9 relative.
"""
import json
import math
import struct
import sys

report = json.load(open(sys.argv[1]))
data = open(sys.argv[2], "rb").read()
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
problems = [f"{k}: report {report[k]}, recomputed {v}" for k, v in expected.items()
            if not math.isclose(report[k], v, rel_tol=1e-9, abs_tol=1e-15)]
if problems:
    sys.exit("check-quality: " + "; ".join(problems))
print(f"ok: {positions} positions, mean KL {expected['mean_kl']:.3g}, "
      f"top-1 {expected['top1_agreement']:.3f}")
