"""Checks an eval-bounds --backend=compiled report: both certificates hold
for the compiled attention, and it differs from the emulated attention only
by f32 rounding (the values of stories260K are below 10 in magnitude)."""
import json
import sys

report = json.load(open(sys.argv[1]))
problems = []
for field in ("violations", "runtime_violations", "compiled_violations",
              "compiled_runtime_violations"):
    if report[field] != 0:
        problems.append(f"{field} = {report[field]}")
if report["cases"] <= 0:
    problems.append("no cases")
if not 0 <= report["max_backend_diff"] < 1e-4:
    problems.append(f"max_backend_diff = {report['max_backend_diff']}")
if problems:
    sys.exit("check-compiled: " + ", ".join(problems))
print(f"ok: {report['cases']} cases, max_backend_diff {report['max_backend_diff']:.3g}")
