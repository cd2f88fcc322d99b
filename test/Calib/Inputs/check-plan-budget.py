"""Checks a plan-budget search (argv[1]) against eval-quality of the uniform
int8 plan at the same budget on the same prompts (argv[2]) and of the chosen
plan (argv[3]), and the number of candidates (argv[4])."""
import json
import sys

search, uniform, chosen = (json.load(open(p)) for p in sys.argv[1:4])
candidates = search["candidates"]
assert len(candidates) == int(sys.argv[4]), len(candidates)
assert search["budget"] == uniform["plan_bytes"], (search["budget"], uniform["plan_bytes"])
measured = [c for c in candidates if "mean_kl" in c]
failed = [c for c in candidates if "error" in c]
assert measured and all(c["plan_bytes"] <= search["budget"] for c in measured)
assert all(c["error"] for c in failed)
# f32 does not fit a budget of int8's bytes; it is reported, not measured.
f32 = next(c for c in candidates if c.get("uniform") == "f32")
assert "exceed the budget" in f32["error"], f32
# The uniform int8 candidate is the uniform plan measured by eval-quality.
i8 = next(c for c in candidates if c.get("uniform") == "i8")
assert i8["mean_kl"] == uniform["mean_kl"], (i8["mean_kl"], uniform["mean_kl"])
# The chosen plan has the lowest KL (then the fewest bytes), so it is on or
# below the uniform plan; eval-quality of the written plan measures the same.
best = min(measured, key=lambda c: (c["mean_kl"], c["plan_bytes"]))
assert search["chosen"] == best["options"], (search["chosen"], best["options"])
assert search["mean_kl"] == best["mean_kl"] <= uniform["mean_kl"]
assert chosen["mean_kl"] == search["mean_kl"], (chosen["mean_kl"], search["mean_kl"])
assert chosen["plan_bytes"] == search["plan_bytes"] <= search["budget"]
print("plan-budget: %d candidates, chose %s (mean KL %.3g; uniform i8 %.3g)"
      % (len(candidates), search["chosen"], search["mean_kl"], uniform["mean_kl"]))
