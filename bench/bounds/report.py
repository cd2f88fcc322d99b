#!/usr/bin/env python3
"""Writes docs/results-bounds.md from bench/bounds/results (run.sh).

Every number in the document comes from the result files of this run (the
eval-bounds JSON of each plan, index.tsv) or from the two statistics files
run.sh collected; nothing is typed in by hand.
"""

import argparse
import datetime
import json
import math
import os
import platform
import struct
import subprocess
import sys
from array import array


def fmt(x, digits=3):
    if x is None:
        return "n/a"
    if isinstance(x, int):
        return str(x)
    if x == 0:
        return "0"
    return f"{x:.{digits}g}"


def pct(part, total):
    return "n/a" if not total else f"{100.0 * part / total:.2f} %"


def read_safetensors(path):
    """name -> (flat list, shape), plus the metadata."""
    with open(path, "rb") as f:
        data = f.read()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        values = array("f" if entry["dtype"] == "F32" else "q")
        values.frombytes(data[8 + size + begin:8 + size + end])
        tensors[name] = (list(values), entry["shape"])
    return tensors, header.get("__metadata__", {})


def envelope_coverage(calib, evaluation):
    """Per (layer, KV head): how far the evaluation prompts left the
    calibrated envelopes the static certificate rests on (0 = inside)."""
    (kmin_c, shape), (kmax_c, _) = calib["k_chan_min"], calib["k_chan_max"]
    layers, heads, dim = shape
    result = []
    for layer in range(layers):
        for head in range(heads):
            base = (layer * heads + head) * dim
            row = {"layer": layer, "kv_head": head}
            for kv in ("k", "v"):
                lo_c = calib[kv + "_chan_min"][0]
                hi_c = calib[kv + "_chan_max"][0]
                lo_e = evaluation[kv + "_chan_min"][0]
                hi_e = evaluation[kv + "_chan_max"][0]
                excess = 0.0
                for j in range(base, base + dim):
                    span = hi_c[j] - lo_c[j]
                    out = max(hi_e[j] - hi_c[j], lo_c[j] - lo_e[j], 0.0)
                    excess = max(excess, out / span if span > 0 else out)
                row[kv + "_range_excess"] = excess
            q_c, q_e = calib["q_absmax"][0], evaluation["q_absmax"][0]
            row["q_absmax_ratio"] = max(
                q_e[j] / q_c[j] if q_c[j] > 0 else 0.0
                for j in range(base, base + dim))
            lh = layer * heads + head
            row["qk_logit_max_ratio"] = (
                evaluation["qk_logit_max"][0][lh] /
                max(calib["qk_logit_max"][0][lh], 1e-30))
            for name in ("attn_sink_mass", "attn_window_mass"):
                row[name + "_ratio"] = (evaluation[name][0][lh] /
                                        max(calib[name][0][lh], 1e-30))
            result.append(row)
    return result


def machine_description(binary_dir):
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"],
                               capture_output=True, text=True,
                               check=True).stdout.strip()
        commit += " (with uncommitted changes)" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return (f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} "
            f"{platform.release()}; tools from `{binary_dir}`, source "
            f"commit {commit}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--results", required=True)
    parser.add_argument("--calib", required=True)
    parser.add_argument("--eval", required=True)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--calib-steps", required=True)
    parser.add_argument("--eval-steps", required=True)
    parser.add_argument("--short", required=True)
    parser.add_argument("--short-steps", required=True)
    parser.add_argument("--long-steps", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--invocation", required=True)
    args = parser.parse_args()

    runs = []
    with open(os.path.join(args.results, "index.tsv")) as f:
        keys = f.readline().rstrip("\n").split("\t")
        for line in f:
            run = dict(zip(keys, line.rstrip("\n").split("\t")))
            path = os.path.join(args.results, run["name"] + ".json")
            run["data"] = None
            if run["status"] == "ok":
                with open(path) as r:
                    run["data"] = json.load(r)
            else:
                with open(os.path.join(args.results,
                                       run["name"] + ".error.txt")) as r:
                    run["error"] = r.read().strip()
            over = os.path.join(args.results, run["name"] + ".cases-over.json")
            if os.path.exists(over):
                with open(over) as r:
                    run["over"] = json.load(r)
            runs.append(run)

    calib, calib_meta = read_safetensors(args.calib)
    _, short_meta = read_safetensors(args.short)
    evaluation, eval_meta = read_safetensors(args.eval)
    coverage = envelope_coverage(calib, evaluation)
    with open(os.path.join(args.results, "envelope-coverage.json"), "w") as f:
        json.dump(coverage, f, indent=2)
        f.write("\n")

    ok = [r for r in runs if r["data"]]
    # A long cache without a rule must be refused: that is not a failure.
    refused = [r for r in runs if not r["data"] and r["kind"] == "long"
               and r["status"] == "plan-failed"]
    failed = [r for r in runs if not r["data"] and r not in refused]
    long_runs = [r for r in runs if r["kind"] in ("long", "long-baseline")]
    main_ok = [r for r in ok if r not in long_runs]
    certified = [r for r in ok if r["kind"] in ("certified", "sweep")]
    certified.sort(key=lambda r: float(r["tolerance"]))
    probabilistic = [r for r in ok if r["kind"] == "probabilistic"]
    probabilistic.sort(key=lambda r: float(r["tolerance"]))
    any_data = ok[0]["data"] if ok else {}

    out = []
    w = out.append
    w("# Certified bounds against measured attention errors (stories260K)")
    w("")
    w("Generated by `bench/bounds/run.sh` (tables by `bench/bounds/report.py`)"
      "; do not edit by hand. Every number below comes from that run: the "
      "per-plan JSON in `bench/bounds/results/`, `index.tsv`, and the "
      "statistics files it collected.")
    w("")
    w("## Setup")
    w("")
    w(f"- Model: `{any_data.get('model', 'n/a')}` (fp32 llama2.c forward "
      "pass, `kvprec-calib`).")
    w(f"- Calibration: `examples/prompts-calib.txt`, "
      f"{calib_meta.get('prompts')} prompts, {args.calib_steps} greedy steps "
      f"each, {calib_meta.get('max_positions')} positions at most "
      f"(sink {calib_meta.get('sink')}, window {calib_meta.get('window')}, "
      f"block {calib_meta.get('block')}).")
    w(f"- Evaluation: the disjoint `examples/prompts-eval.txt`, "
      f"{any_data.get('prompts', 'n/a')} prompts, {args.eval_steps} greedy "
      f"steps each ({any_data.get('positions', 'n/a')} positions, "
      f"{any_data.get('cases', 'n/a')} cases per plan).")
    w(f"- Machine: {machine_description(args.bin)}; "
      f"generated {datetime.date.today().isoformat()}.")
    w("- What is measured (`kvprec-calib eval-bounds`): the model runs in "
      "fp32 on its own greedy continuation. Beside it, an emulated cache "
      "stores every K and V exactly as the plan says at each length "
      "(bit-exact quantizers of `Quantizer.h`; channel groups over each "
      "block's tokens; blocks leaving the window re-quantized from their "
      "window-format values; sink positions quantized once). At every "
      "position (prompt positions included), for every layer and query "
      "head, the error is max_j |ô_j − o_j| of exact softmax attention "
      "(scale 1/sqrt(head_dim)) over the emulated and the fp32 cache with "
      "the model's own query. It is formed term by term in long double, so "
      "its rounding is relative to the error itself.")
    w("- A case's *bound* is the static certificate of its (layer, KV head), "
      "recomputed by `certifyPlanHead` from the calibration (error-bounds.md "
      "§2 with the envelopes of §5 and the f32 kernel's rounding of §8; "
      "E_cap 0.25, f32 dequantizer, at the attends' softmax scale). "
      "eval-bounds also recomputes it with the independent "
      "position-by-position certifier of `kvprec-verify-plan` and reports "
      "the largest relative difference (`max_certifier_gap`). A "
      "*violation* is a case whose error exceeds it by more than the "
      "long double measurement's own rounding, 64 LDBL_EPSILON (1 + max|V|) "
      "≈ 7e-18 (1 + max|V|), and error/bound ratios are taken against the "
      "bound plus that (a probabilistic run-time bound of 4e-20 met a "
      "measured 1.4e-19 of pure measurement noise before it). The "
      "*run-time* certificate is §5's a-posteriori bound for the actual "
      "query, from the dequantized cache and per-element error bounds of "
      "the stored data (after a demotion: the window's bound plus the "
      "body's).")
    w("- Bytes are the plan's storage (elements, scales, zero points) "
      "relative to an fp16 cache of the same capacity.")
    w("")
    w(f"Regenerate with `{args.invocation}` (about "
      f"{fmt(sum(float(r['seconds']) for r in runs), 2)} s of planning and "
      "evaluation here). It runs these commands (from "
      "`bench/bounds/results/commands.txt`; `$WORK` is a scratch folder):")
    w("")
    w("```sh")
    with open(os.path.join(args.results, "commands.txt")) as f:
        commands = [line.rstrip("\n") for line in f]
    # The first few set up; then one (plan, evaluate) pair per plan: show
    # the first pair and the list of pass options.
    setup = [c for c in commands if "--kvprec-assign-precision" not in c
             and " eval-bounds " not in c and "--kvprec-verify-plan" not in c]
    for c in setup:
        w(c)
    first_plan = next((c for c in commands
                       if "--kvprec-assign-precision" in c), None)
    first_eval = next((c for c in commands if " eval-bounds " in c), None)
    first_verify = next((c for c in commands if "--kvprec-verify-plan" in c),
                        None)
    if first_plan:
        w("# then, for each plan below (OPTIONS in the tables):")
        w(first_plan)
    if first_verify:
        w(first_verify)
    if first_eval:
        w(first_eval)
    w("```")
    w("")

    # 0. A summary computed from the tables below.
    w("## Summary")
    w("")
    cert_ok = [r for r in certified]
    if cert_ok:
        cases = sum(r["data"]["cases"] for r in cert_ok)
        viol = sum(r["data"]["violations"] for r in cert_ok)
        rviol = sum(r["data"]["runtime_violations"] for r in cert_ok)
        worst = max(r["data"]["max_ratio"] for r in cert_ok)
        w(f"- Certified plans ({len(cert_ok)} tolerances): {viol} violations "
          f"of the static certificate in {cases} cases, {rviol} of the "
          f"run-time certificate; the largest measured error / certified "
          f"bound is {fmt(worst)}.")
        over = [r for r in cert_ok
                if r["data"]["max_bound"] > float(r["tolerance"])]
        w(f"- Plans whose certified bound exceeds their tolerance: "
          f"{len(over)} of {len(cert_ok)}.")
        cheapest = min(cert_ok, key=lambda r: r["data"]["bytes_ratio"])
        w(f"- The cheapest certified plan of the grid (tolerance "
          f"{cheapest['tolerance']}) stores {fmt(cheapest['data']['bytes_ratio'])}"
          f" of the fp16 bytes; at the study's tolerances "
          + ", ".join(f"{r['tolerance']}: {fmt(r['data']['bytes_ratio'])}"
                      for r in runs if r["kind"] == "certified" and r["data"])
          + " (the formats are listed under the tables).")
        ratios = []
        for b in (r for r in ok if r["kind"] == "baseline"):
            fits = [c for c in cert_ok
                    if c["data"]["max_error"] <= b["data"]["max_error"]]
            if fits:
                best = min(fits, key=lambda c: c["data"]["bytes_ratio"])
                ratios.append(best["data"]["bytes_ratio"] /
                              b["data"]["bytes_ratio"])
        if ratios:
            w(f"- At equal measured error, the cheapest certified plan "
              f"needs {fmt(min(ratios))}× to {fmt(max(ratios))}× the bytes "
              f"of the baselines ({len(ratios)} compared).")
    if probabilistic:
        cases = sum(r["data"]["cases"] for r in probabilistic)
        viol = sum(r["data"]["violations"] for r in probabilistic)
        rviol = sum(r["data"]["runtime_violations"] for r in probabilistic)
        worst = max(r["data"]["max_ratio"] for r in probabilistic)
        w(f"- Probabilistic plans (`certificate=probabilistic "
          f"confidence=1e-9`, {len(probabilistic)} tolerances): {viol} "
          f"violations of the static certificate in {cases} cases, {rviol} "
          f"of the probabilistic run-time certificate; the largest measured "
          f"error / bound is {fmt(worst)}.")
        at = {r["tolerance"]: r for r in probabilistic}
        det = {r["tolerance"]: r for r in certified}
        pairs = [t for t in ("1e-2", "1e-1", "1") if t in at and t in det]
        if pairs:
            w("- Bytes vs fp16, probabilistic against deterministic: "
              + ", ".join(f"tolerance {t}: {fmt(at[t]['data']['bytes_ratio'])}"
                          f" against {fmt(det[t]['data']['bytes_ratio'])}"
                          for t in pairs) + ".")
        ratios = []
        for b in (r for r in ok if r["kind"] == "baseline"):
            fits = [c for c in probabilistic
                    if c["data"]["max_error"] <= b["data"]["max_error"]]
            if fits:
                best = min(fits, key=lambda c: c["data"]["bytes_ratio"])
                ratios.append((best["data"]["bytes_ratio"] /
                               b["data"]["bytes_ratio"], b["name"]))
        if ratios:
            w(f"- At equal measured error, the cheapest probabilistic plan "
              f"needs {fmt(min(ratios)[0])}× to {fmt(max(ratios)[0])}× the "
              f"bytes of the baselines ({len(ratios)} compared; above 1 "
              "against " + (", ".join(n for x, n in ratios if x > 1) or
                            "none") + ").")
    seed_ok = [r for r in ok if r["kind"] == "seed"]
    if seed_ok:
        exceed = sum(r["data"]["max_error"] > float(r["tolerance"])
                     for r in seed_ok)
        w(f"- The seed rule: measured error above its tolerance in {exceed} "
          f"of {len(seed_ok)} plans; certified bound above it in "
          f"{sum(r['data']['max_bound'] > float(r['tolerance']) for r in seed_ok)}"
          f" of {len(seed_ok)}.")
    verified = [r for r in runs if r.get("verified") == "yes"]
    unverified = [r for r in runs if r.get("verified") == "no"]
    w(f"- `kvprec-verify-plan` (the position-by-position certifier) accepts "
      f"{len(verified)} of the {len(verified) + len(unverified)} plans made"
      + (" and refuses " + ", ".join(r["name"] for r in unverified)
         if unverified else "") + ".")
    gaps = [r["data"].get("max_certifier_gap", 0) for r in ok]
    if gaps:
        w(f"- The two certifiers agree on every evaluated plan: the largest "
          f"relative difference of a (layer, KV head) bound is "
          f"{fmt(max(gaps))}.")
    if cert_ok:
        med = [r["data"]["median_static_over_runtime"] for r in cert_ok]
        mx = [r["data"]["max_static_over_runtime"] for r in cert_ok]
        w(f"- Static / run-time bound per case, certified plans: median "
          f"{fmt(min(med))} to {fmt(max(med))} per plan, max "
          f"{fmt(min(mx))} to {fmt(max(mx))} (the price of not knowing the "
          "query; per plan in the sweep table).")
    long_ok = [r for r in long_runs if r["data"]]
    if long_ok:
        beyond = sum(r["data"]["beyond_calibration"]["cases"] for r in long_ok)
        bviol = sum(r["data"]["beyond_calibration"]["violations"]
                    for r in long_ok)
        w(f"- Past the calibrated length ({short_meta.get('max_positions')} "
          f"positions calibrated, runs of {args.long_steps} steps): without a "
          f"rule the plan is refused ({len(refused)} of "
          f"{sum(r['kind'] == 'long' and 'extrapolate' not in r['options'] for r in long_runs)}); "
          f"with the worst-case rule, {bviol} violations in {beyond} cases "
          f"past it over {len(long_ok)} plans.")
    w(f"- Failed plans or evaluations: {len(failed)}"
      + (" (" + ", ".join(r["name"] for r in failed) + ")" if failed else "")
      + ".")
    w("")

    # 1. The certified plans of the study.
    w("## Certified plans (mode=certified)")
    w("")
    w("| tolerance | bytes vs fp16 | max certified bound | bound ≤ tolerance "
      "| max measured error | violations / cases | max error/bound "
      "| median error/bound | run-time violations | max error/run-time bound "
      "|")
    w("|---|---|---|---|---|---|---|---|---|---|")
    main = [r for r in runs if r["kind"] == "certified"]
    for r in main:
        d = r["data"]
        if not d:
            w(f"| {r['tolerance']} | failed: see below | | | | | | | | |")
            continue
        w(f"| {r['tolerance']} | {fmt(d['bytes_ratio'])} | "
          f"{fmt(d['max_bound'])} | "
          f"{'yes' if d['max_bound'] <= float(r['tolerance']) else 'NO'} | "
          f"{fmt(d['max_error'])} | {d['violations']} / {d['cases']} | "
          f"{fmt(d['max_ratio'])} | {fmt(d['median_ratio'])} | "
          f"{d['runtime_violations']} | {fmt(d['max_runtime_ratio'])} |")
    w("")
    for r in main:
        if r["data"]:
            w(f"- tolerance {r['tolerance']}: {r['data']['plan']}")
    w("")

    # 2. Baselines.
    baselines = [r for r in runs if r["kind"] == "baseline"]
    w("## Baselines")
    w("")
    w("| plan | options | bytes vs fp16 | max measured error | static bound "
      "(max over heads) | violations | run-time violations | max error/"
      "run-time bound | median error/run-time bound | median static/run-time "
      "|")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for r in baselines:
        d = r["data"]
        if not d:
            w(f"| {r['name']} | `{r['options']}` | failed: see below "
              "| | | | | | | |")
            continue
        w(f"| {r['name']} | `{r['options']}` | {fmt(d['bytes_ratio'])} | "
          f"{fmt(d['max_error'])} | {fmt(d['max_bound'])} | "
          f"{d['violations']} | {d['runtime_violations']} | "
          f"{fmt(d['max_runtime_ratio'])} | "
          f"{fmt(d['median_runtime_ratio'])} | "
          f"{fmt(d['median_static_over_runtime'])} |")
    w("")
    for r in baselines:
        if r["data"]:
            w(f"- {r['name']}: {r['data']['plan']}")
    w("")

    # 3. Equal measured error.
    w("## Bytes at equal measured error")
    w("")
    w("For each baseline: the cheapest certified plan of the tolerance grid "
      "(the tolerances of the study and of the sweep below) whose *measured* "
      "max error on the evaluation prompts is no larger than the baseline's, "
      "and the cheapest whose *certified bound* is (a guarantee, not a "
      "measurement, at the baseline's measured error).")
    w("")
    w("| baseline | bytes vs fp16 | max measured error | certified, measured "
      "≤ baseline: tolerance | its bytes vs fp16 | its max error | bytes "
      "certified / baseline | certified, bound ≤ baseline's error: "
      "tolerance | its bytes vs fp16 | probabilistic, measured ≤ baseline: "
      "tolerance | its bytes vs fp16 | its max error | bytes probabilistic / "
      "baseline |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in baselines:
        d = r["data"]
        if not d:
            continue
        fits = [c for c in certified if c["data"]["max_error"] <= d["max_error"]]
        best = min(fits, key=lambda c: c["data"]["bytes_ratio"], default=None)
        bounded = [c for c in certified
                   if c["data"]["max_bound"] <= d["max_error"]]
        best_bound = min(bounded, key=lambda c: c["data"]["bytes_ratio"],
                         default=None)
        pfits = [c for c in probabilistic
                 if c["data"]["max_error"] <= d["max_error"]]
        pbest = min(pfits, key=lambda c: c["data"]["bytes_ratio"],
                    default=None)
        cells = [r["name"], fmt(d["bytes_ratio"]), fmt(d["max_error"])]
        if best:
            b = best["data"]
            cells += [best["tolerance"], fmt(b["bytes_ratio"]),
                      fmt(b["max_error"]),
                      fmt(b["bytes_ratio"] / d["bytes_ratio"])]
        else:
            cells += ["none in the grid", "", "", ""]
        if best_bound:
            cells += [best_bound["tolerance"],
                      fmt(best_bound["data"]["bytes_ratio"])]
        else:
            cells += ["none in the grid", ""]
        if pbest:
            cells += [pbest["tolerance"], fmt(pbest["data"]["bytes_ratio"]),
                      fmt(pbest["data"]["max_error"]),
                      fmt(pbest["data"]["bytes_ratio"] / d["bytes_ratio"])]
        else:
            cells += ["none in the grid", "", "", ""]
        w("| " + " | ".join(cells) + " |")
    w("")

    # 4. The seed rule.
    seeds = [r for r in runs if r["kind"] == "seed"]
    w("## The seed rule against its own tolerance (mode=seed)")
    w("")
    w("The seed rule picks formats from the prototype's score and fixed "
      "thresholds. Below: its plan's certified bound and its measured "
      "error, each against the tolerance it was given; heads count "
      "(layer, KV head) pairs.")
    w("")
    w("| tolerance | bytes vs fp16 | max certified bound | bound / tolerance "
      "| heads with bound > tolerance | max measured error | measured / "
      "tolerance | heads with measured > tolerance | cases with measured > "
      "tolerance | violations of its bound |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for r in seeds:
        d = r["data"]
        if not d:
            w(f"| {r['tolerance']} | failed: see below | | | | | | | | |")
            continue
        t = float(r["tolerance"])
        heads = d["heads"]
        over = r.get("over", {})
        w(f"| {r['tolerance']} | {fmt(d['bytes_ratio'])} | "
          f"{fmt(d['max_bound'])} | {fmt(d['max_bound'] / t)} | "
          f"{sum(h['bound'] > t for h in heads)} / {len(heads)} | "
          f"{fmt(d['max_error'])} | {fmt(d['max_error'] / t)} | "
          f"{sum(h['max_error'] > t for h in heads)} / {len(heads)} | "
          f"{over.get('over', 'n/a')} / {over.get('cases', 'n/a')} "
          f"({pct(over.get('over', 0), over.get('cases', 0))}) | "
          f"{d['violations']} |")
    w("")
    for r in seeds:
        if r["data"]:
            w(f"- seed {r['tolerance']}: {r['data']['plan']}")
    w("")

    # 5. The sweep.
    w("## Tolerance sweep (mode=certified)")
    w("")
    w("| tolerance | bytes vs fp16 | max certified bound | max measured "
      "error | violations | max error/bound | median error/bound | run-time "
      "violations | median static/run-time | max static/run-time | "
      "verified | eval-bounds + plan seconds |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in sorted((r for r in runs if r["kind"] in ("certified", "sweep")),
                    key=lambda r: float(r["tolerance"])):
        d = r["data"]
        if not d:
            w(f"| {r['tolerance']} | failed: see below | | | | | | | | | | |")
            continue
        w(f"| {r['tolerance']} | {fmt(d['bytes_ratio'])} | "
          f"{fmt(d['max_bound'])} | {fmt(d['max_error'])} | "
          f"{d['violations']} | {fmt(d['max_ratio'])} | "
          f"{fmt(d['median_ratio'])} | {d['runtime_violations']} | "
          f"{fmt(d['median_static_over_runtime'])} | "
          f"{fmt(d['max_static_over_runtime'])} | {r.get('verified')} | "
          f"{r['seconds']} |")
    w("")

    # 5a. The probabilistic sweep.
    w("## Probabilistic certificate (certificate=probabilistic confidence=1e-9)")
    w("")
    w("The same tolerances planned against the certificate of "
      "error-bounds.md §9 (docs/analysis.md): under the rounding model (M) "
      "it holds with probability at least 1 − 1e-9 per decode step (every "
      "layer and query head). Its static bound is evaluated by "
      "eval-bounds like the deterministic one, and its run-time form for "
      "the actual query; a violation is a case above either.")
    w("")
    w("| tolerance | bytes vs fp16 | max bound | max measured error | "
      "violations / cases | max error/bound | median error/bound | "
      "run-time violations | max error/run-time bound | median error/run-time "
      "bound | median static/run-time | verified | seconds |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in sorted((r for r in runs if r["kind"] == "probabilistic"),
                    key=lambda r: float(r["tolerance"])):
        d = r["data"]
        if not d:
            w(f"| {r['tolerance']} | failed: see below | | | | | | | | | | | |")
            continue
        w(f"| {r['tolerance']} | {fmt(d['bytes_ratio'])} | "
          f"{fmt(d['max_bound'])} | {fmt(d['max_error'])} | "
          f"{d['violations']} / {d['cases']} | {fmt(d['max_ratio'])} | "
          f"{fmt(d['median_ratio'])} | {d['runtime_violations']} | "
          f"{fmt(d['max_runtime_ratio'])} | "
          f"{fmt(d['median_runtime_ratio'])} | "
          f"{fmt(d['median_static_over_runtime'])} | {r.get('verified')} | "
          f"{r['seconds']} |")
    w("")
    for r in probabilistic:
        if r["tolerance"] in ("1e-2", "1e-1", "1"):
            w(f"- probabilistic {r['tolerance']}: {r['data']['plan']}")
    w("")

    # 5a'. The baselines under both certificates.
    w("## Why the probabilistic plans do not reach every baseline")
    w("")
    w("Each baseline's own formats, certified both ways (its plan with "
      "`certificate=probabilistic confidence=1e-9` beside the deterministic "
      "one): a certified plan can only match a baseline's bytes at its "
      "measured error if a certificate of about that error allows formats "
      "that small. The static bound is the largest over (layer, KV head); "
      "the run-time bounds are medians over cases.")
    w("")
    w("| baseline | bytes vs fp16 | max measured error | deterministic bound "
      "| probabilistic bound | probabilistic / deterministic | median "
      "error / probabilistic run-time bound |")
    w("|---|---|---|---|---|---|---|")
    by_name = {r["name"]: r for r in runs}
    for r in baselines:
        p = by_name.get(r["name"] + "-probabilistic")
        if not r["data"] or not p or not p["data"]:
            continue
        d, q = r["data"], p["data"]
        w(f"| {r['name']} | {fmt(d['bytes_ratio'])} | {fmt(d['max_error'])} "
          f"| {fmt(d['max_bound'])} | {fmt(q['max_bound'])} | "
          f"{fmt(q['max_bound'] / d['max_bound']) if d['max_bound'] else 'n/a'} "
          f"| {fmt(q['median_runtime_ratio'])} |")
    w("")
    # What the sums of squares can gain: the sampled queries' effective
    # attention sizes n_eff = 1 / sum_t a_t^2 (upper bounds of sum_t a_t^2
    # per bin, so n_eff is a lower bound).
    squares, shape = calib["query_sample_sqmass"]
    counts = calib["query_sample_count"][0]
    layers, heads, slots, bins = shape
    d = int(calib_meta.get("head_dim", 8))
    qheads = int(calib_meta.get("q_heads", 8))
    n_eff = []
    for lh in range(layers * heads):
        for i in range(counts[lh]):
            base = (lh * slots + i) * bins
            total = sum(squares[base:base + bins])
            n_eff.append(1.0 / total if total > 0 else float("inf"))
    if n_eff:
        p = 1e-9 / (3 * layers * qheads)
        lam_v = math.sqrt(2 * math.log(2 * d / p))
        lam_l = math.sqrt(2 * math.log(2 * 512 / p))
        n_eff.sort()
        below_v = sum(x < lam_v ** 2 for x in n_eff)
        below_k = sum(x < lam_v ** 2 / d for x in n_eff)
        w(f"The terms that block it, from the calibration's "
          f"{len(n_eff)} query samples (n_eff = 1 / Σ_t a_t² per sample; "
          f"levels at P = 1e-9 over {layers} layers × {qheads} query heads, "
          f"512 positions, d = {d}: λ_1 = {fmt(lam_l)}, λ_2 = λ_3 = "
          f"{fmt(lam_v)}):")
        w("")
        w(f"- Logits: Hoeffding gives λ_1 σ_t ≥ λ_1 E_t / √d = "
          f"{fmt(lam_l / math.sqrt(d))} E_t, so at d = {d} the logit errors "
          "keep their deterministic value (E~ = E), and with them "
          "e^{Ebar}, φ(E) and the key formats they allow: the logit "
          "envelope Λ (qk_logit_max, below) makes f16 keys cost up to "
          "2^-11 Λ per logit and integer keys far more, whatever the "
          "certificate.")
        w(f"- Value part: λ_2 (Σ_t â_t² δ²)^½ is below the deterministic "
          f"Σ_t â_t δ only when n_eff > λ_2² = {fmt(lam_v ** 2)}; "
          f"{below_v} of {len(n_eff)} samples ({pct(below_v, len(n_eff))}) "
          f"have a smaller n_eff (median {fmt(n_eff[len(n_eff) // 2])}, "
          f"smallest {fmt(n_eff[0])}).")
        w(f"- Key part: λ_3 (Σ_t a_t² R² σ_t²)^½ with σ_t ≥ E_t / √d is "
          f"below Σ_t a_t φ(E_t) R only when n_eff > λ_3² / d = "
          f"{fmt(lam_v ** 2 / d)}; {below_k} samples "
          f"({pct(below_k, len(n_eff))}) have a smaller n_eff.")
        w("- The certificate is the largest bound over the samples, so the "
          "queries with the most concentrated attention (the first "
          "positions of every sequence, sink-dominated heads) set it, and "
          "there the probabilistic bound equals the deterministic one "
          "(probabilistic / deterministic above).")
        w("")

    # 5b. Past the calibrated length.
    w("## Past the calibrated length")
    w("")
    w(f"Calibration on the same prompts with {args.short_steps} steps "
      f"observes {short_meta.get('max_positions')} positions; the cache holds "
      f"512, and the evaluation runs {args.long_steps} steps. A certificate "
      "covers only what its calibration observed: without a rule the plan "
      "is refused (a located error), and with `extrapolate=worst-case "
      "margin=M` every class mass is 1 past it and the magnitude envelopes "
      "are multiplied by M (docs/analysis.md). Cases at positions at or past "
      "the calibrated length are counted apart.")
    w("")
    w("| plan | options | outcome | bytes vs fp16 | violations / cases | "
      "past calibration: violations / cases | max error/bound past it | "
      "run-time violations | verified |")
    w("|---|---|---|---|---|---|---|---|---|")
    for r in long_runs:
        d = r["data"]
        if not d:
            message = r.get("error", "").splitlines()
            w(f"| {r['name']} | `{r['options']}` | {r['status']}: "
              f"{message[0].split('error: ', 1)[-1] if message else ''} "
              "| | | | | | |")
            continue
        b = d["beyond_calibration"]
        w(f"| {r['name']} | `{r['options']}` | certified, bound "
          f"{fmt(d['max_bound'])} | {fmt(d['bytes_ratio'])} | "
          f"{d['violations']} / {d['cases']} | {b['violations']} / "
          f"{b['cases']} | {fmt(b['max_ratio'])} | "
          f"{d['runtime_violations']} | {r.get('verified')} |")
    w("")

    # 5c. What keeps the deterministic plans large.
    lam = calib["qk_logit_max"][0]
    span = max(calib["v_chan_max"][0][i] - calib["v_chan_min"][0][i]
               for i in range(len(calib["v_chan_max"][0])))
    e16 = 2 ** -11 * max(lam)
    w("## What keeps deterministic plans large here")
    w("")
    d_head = calib["q_absmax"][1][2]
    u = 2.0 ** -24
    n = d_head + 2
    gamma = n * u / (1 - n * u)
    kernel = (gamma * (1 + 2 * u) + 2 * u) * max(lam) + 2 * 4 * u / (1 - 4 * u)
    w(f"- The f32 kernel itself: a length-{d_head} dot product and its "
      f"scaling err by up to gamma_{n} · qk_logit_max = {fmt(gamma)} · "
      f"{fmt(max(lam))}, and with the max shift and exp the logit error of "
      f"exactly stored keys is up to {fmt(kernel)}; times a value span of "
      f"{fmt(span)} that is {fmt(kernel * span)} per unit of attention "
      "mass in the worst case: the floor below which no plan, even all-f32, "
      "can be certified for this model (the tolerances that fail above; "
      "their messages give what the all-f32 plan certifies).")
    w(f"- The logit envelope qk_logit_max reaches {fmt(max(lam))} "
      f"(largest over heads), so f16 rounding of a key alone can move a "
      f"logit by up to 2^-11 · {fmt(max(lam))} = {fmt(e16)} in the worst "
      f"case over the envelopes, and with a value span of up to {fmt(span)} "
      f"the key term phi(E) · span is up to {fmt((2.718281828 ** e16 - 1) * span)}"
      " per unit of attention mass: above every tolerance below 1e-1 unless "
      "keys stay f32. The deterministic bound takes every key error aligned "
      "against the query and every logit error pushing mass to the farthest "
      "value (some error pattern attains that); the median static / run-time "
      "ratios above show how much of the gap comes from not knowing the "
      "query. The certificates here are joint over the calibration's "
      "sampled queries (error-bounds.md §7); the probabilistic certificate "
      "of §9 drops the worst-case alignment of rounding errors under its "
      "model (its section above), and what it cannot drop is listed under "
      "'Why the probabilistic plans do not reach every baseline'.")
    w("")

    # 6. Violations and the envelopes they left.
    w("## Violations of the static certificate")
    w("")
    w("The static certificate holds for every query inside the calibrated "
      "envelopes (attention mass per class, per-channel |q|, the q-K logit "
      "envelope qk_logit_max, K and V channel ranges; error-bounds.md §5). Those are statistical: a new prompt can "
      "leave them. For every (layer, KV head) with a violation, the last "
      "columns say how far the evaluation prompts (collected with the same "
      "steps) left the calibration's envelopes: range excess is the largest "
      "overshoot of a K or V channel's calibrated [min, max], relative to "
      "its calibrated span (0 = inside), and |q| ratio the largest "
      "evaluation / calibration ratio of a channel's max |q_j| (≤ 1 = "
      "inside), |qK| ratio that of qk_logit_max. "
      "`bench/bounds/results/envelope-coverage.json` has every head.")
    w("")
    def worst(key):
        return max(c[key] for c in coverage)
    w(f"Over all {len(coverage)} heads the evaluation prompts left the "
      f"calibrated envelopes by at most: K range excess "
      f"{fmt(worst('k_range_excess'))}, V range excess "
      f"{fmt(worst('v_range_excess'))}, |q| ratio "
      f"{fmt(worst('q_absmax_ratio'))}, |qK| ratio "
      f"{fmt(worst('qk_logit_max_ratio'))}; heads with a |qK| ratio above 1: "
      f"{sum(c['qk_logit_max_ratio'] > 1 for c in coverage)}.")
    w("")
    rows = []
    for r in main_ok:
        for h in r["data"]["heads"]:
            if h["violations"]:
                c = coverage[h["layer"] * evaluation["k_chan_min"][1][1]
                             + h["kv_head"]]
                rows.append((r, h, c))
    if rows:
        w("| plan | layer | KV head | violations / cases | max error/bound | "
          "V range excess | K range excess | |q| ratio | |qK| ratio |")
        w("|---|---|---|---|---|---|---|---|---|")
        for r, h, c in rows:
            w(f"| {r['name']} | {h['layer']} | {h['kv_head']} | "
              f"{h['violations']} / {h['cases']} | {fmt(h['max_ratio'])} | "
              f"{fmt(c['v_range_excess'])} | {fmt(c['k_range_excess'])} | "
              f"{fmt(c['q_absmax_ratio'])} | "
              f"{fmt(c['qk_logit_max_ratio'])} |")
    else:
        w("No plan had a violation.")
    w("")
    runtime_bad = [r for r in ok if r["data"]["runtime_violations"]]
    element_bad = [r for r in ok if r["data"]["element_bound_violations"]]
    w(f"Run-time certificate violations: "
      f"{sum(r['data']['runtime_violations'] for r in ok)} over all "
      f"{len(ok)} evaluated plans"
      + (" (" + ", ".join(r["name"] for r in runtime_bad) + ")"
         if runtime_bad else "")
      + f"; stored elements outside their per-element bound: "
      f"{sum(r['data']['element_bound_violations'] for r in ok)}"
      + (" (" + ", ".join(r["name"] for r in element_bad) + ")"
         if element_bad else "") + ".")
    w("")

    w("## Notes")
    w("")
    w("- The static certificate assumes every query and every cached "
      "vector lies inside the calibrated envelopes. The evaluation prompts "
      "are disjoint from the calibration prompts, so they can leave them; "
      "the previous section shows how far each violating head's evaluation "
      "data went outside. The run-time certificate needs no envelope.")
    w("- A block that leaves the window is re-quantized from its "
      "window-format values, so its error relative to fp32 is the body "
      "format's error plus the window format's. Both certificates add the "
      "two (the static one over ranges widened by the window's error), "
      "except that the static one counts a demotion into f32, or into the "
      "same unscaled float as the window, as exact (it is).")
    w("- Relative-error key formats (f16, bf16, fp8) are certified with the "
      "smaller of the channel-wise logit error and the one through "
      "qk_logit_max; integer formats only with the channel-wise one.")
    w("- Even f32 storage certifies a positive bound: the f32 kernel's own "
      "rounding (error-bounds.md §8) is part of the certificate.")
    w("")

    if failed:
        w("## Failures")
        w("")
        w("These plans could not be made or evaluated; the messages are the "
          "tools' own.")
        w("")
        for r in failed:
            w(f"- {r['name']} (`{r['options']}`): {r['status']}")
            w("")
            w("  ```")
            for line in r["error"].splitlines():
                w("  " + line)
            w("  ```")
        w("")

    with open(args.output, "w") as f:
        f.write("\n".join(out).rstrip("\n") + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
