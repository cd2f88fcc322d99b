"""Checks an eval-bounds --backend=compiled report: both certificates hold
for the compiled attention, and it differs from the emulated attention only
by f32 rounding (the values of stories260K are below 10 in magnitude)."""
import json
import sys

report = json.load(open(sys.argv[1]))
problems = []
for field in ("violations", "runtime_violations", "compiled_violations",
              "compiled_runtime_violations",
              "generated_certificate_violations"):
    if report[field] != 0:
        problems.append(f"{field} = {report[field]}")
if report["cases"] <= 0:
    problems.append("no cases")
if not 0 <= report["max_backend_diff"] < 1e-4:
    problems.append(f"max_backend_diff = {report['max_backend_diff']}")
# The generated certificate is at least the kernel-rounding part, so it is
# positive, and its one-pass form loosens the refined one by a small factor
# (the second argument, default 3; the kernel-rounding part alone, all an
# f32 plan has, loosens more: its residuals become channel spans).
max_ratio = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
if not report["max_generated_certificate"] > 0:
    problems.append("the generated certificate is 0")
if not 0 < report["mean_generated_over_refined"] < max_ratio:
    problems.append(
        f"mean_generated_over_refined = {report['mean_generated_over_refined']}")
if problems:
    sys.exit("check-compiled: " + ", ".join(problems))
print(f"ok: {report['cases']} cases, max_backend_diff "
      f"{report['max_backend_diff']:.3g}, generated certificate up to "
      f"{report['max_generated_certificate']:.3g}, "
      f"{report['mean_generated_over_refined']:.3g}x the refined one")
