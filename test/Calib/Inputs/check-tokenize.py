"""Checks `kvprec-calib tokenize --model DIR` against expected ids.

Usage: check-tokenize.py KVPREC_CALIB MODEL_DIR EXPECTED.jsonl

EXPECTED.jsonl holds one {"text": ..., "ids": [...]} per line, made by an
independent implementation, the @huggingface/tokenizers npm package (0.2.0):

  npm install @huggingface/tokenizers@0.2.0
  node tokenize-reference.mjs MODEL_DIR tokenize-prompts.json > tinystories-tokenize.jsonl
"""
import json
import subprocess
import sys

tool, model, expected = sys.argv[1:4]
problems = []
cases = 0
for line in open(expected, encoding="utf-8"):
    if not line.strip():
        continue
    case = json.loads(line)
    out = subprocess.run([tool, "tokenize", "--model", model, "--text", case["text"]],
                         capture_output=True, text=True)
    if out.returncode != 0:
        problems.append(f"{case['text']!r}: exit {out.returncode}: {out.stderr.strip()}")
        continue
    ids = [int(x) for x in out.stdout.split()]
    if ids != case["ids"]:
        problems.append(f"{case['text']!r}: got {ids}, expected {case['ids']}")
    # With --bos the same ids follow BOS.
    bos = subprocess.run([tool, "tokenize", "--model", model, "--bos", "--text", case["text"]],
                         capture_output=True, text=True)
    if [int(x) for x in bos.stdout.split()] != [1] + case["ids"]:
        problems.append(f"{case['text']!r} with --bos: got {bos.stdout.strip()}")
    cases += 1
if problems:
    sys.exit("check-tokenize: " + "\n".join(problems))
print(f"ok: {cases} texts tokenize as the reference does")
