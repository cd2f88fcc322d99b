"""Checks a plan-budget search (argv[1]) against eval-quality of the uniform
int8 plan at the same budget on the same prompts (argv[2]) and of the chosen
plan (argv[3]), and the number of candidates (argv[4]). argv[2] and argv[3]
may be "-": no such comparison."""
import json
import sys

search, uniform, chosen = (None if p == "-" else json.load(open(p))
                           for p in sys.argv[1:4])
candidates = search["candidates"]
assert len(candidates) == int(sys.argv[4]), len(candidates)
if uniform:
    assert search["budget"] == uniform["plan_bytes"], (search["budget"], uniform["plan_bytes"])
measured = [c for c in candidates if "mean_kl" in c]
failed = [c for c in candidates if "error" in c]
assert measured and all(c["plan_bytes"] <= search["budget"] for c in measured)
assert all(c["error"] for c in failed)
if uniform:
    # f32 does not fit a budget of int8's bytes; it is reported, not measured.
    f32 = next(c for c in candidates if c.get("uniform") == "f32")
    assert "exceed the budget" in f32["error"], f32
    # The uniform int8 candidate is the uniform plan measured by eval-quality.
    i8 = next(c for c in candidates if c.get("uniform") == "i8")
    assert i8["mean_kl"] == uniform["mean_kl"], (i8["mean_kl"], uniform["mean_kl"])
# The lowest KL (then the fewest bytes) is the reference; each candidate's
# paired excess over it and its standard error decide which cannot be told
# from it (excess within two errors), and of those the lowest certified
# bound (then KL, then bytes) is chosen.
lowest = min(measured, key=lambda c: (c["mean_kl"], c["plan_bytes"]))
assert search["lowest_kl"] == lowest["options"], (search["lowest_kl"], lowest["options"])
assert lowest["kl_excess"] == 0 and lowest["indistinguishable"], lowest
for c in measured:
    assert c["kl_excess_error"] >= 0, c
    assert c["indistinguishable"] == (c["kl_excess"] <= 2 * c["kl_excess_error"]), c
    # The mean of the per-position differences is the difference of the means.
    assert abs(c["kl_excess"] - (c["mean_kl"] - lowest["mean_kl"])) <= 1e-9 * max(1.0, c["mean_kl"]), c
near = [c for c in measured if c["indistinguishable"]]
inf = float("inf")
best = min(near, key=lambda c: (inf if c["bound"] is None else c["bound"],
                                c["mean_kl"], c["plan_bytes"]))
assert search["chosen"] == best["options"], (search["chosen"], best["options"])
assert search["mean_kl"] == best["mean_kl"] and search["bound"] == best["bound"]
assert search["mean_kl"] <= lowest["mean_kl"] + 2 * best["kl_excess_error"]
assert search["plan_bytes"] <= search["budget"]
if chosen:
    assert chosen["mean_kl"] == search["mean_kl"], (chosen["mean_kl"], search["mean_kl"])
    assert chosen["plan_bytes"] == search["plan_bytes"]
print("plan-budget: %d candidates, %d within two standard errors of the lowest KL, "
      "chose %s (mean KL %.3g, bound %.3g; uniform i8 %.3g)"
      % (len(candidates), len(near), search["chosen"], search["mean_kl"],
         search["bound"], uniform["mean_kl"] if uniform else float("nan")))
