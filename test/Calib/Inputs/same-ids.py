"""Compares two whitespace-separated id lists; with a third argument N,
requires only the first N ids to agree and reports how many do."""
import sys

a = open(sys.argv[1]).read().split()
b = open(sys.argv[2]).read().split()
if len(sys.argv) > 3:
    n = int(sys.argv[3])
    agree = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    print(f"first {agree} of {len(b)} ids agree")
    if agree < n:
        sys.exit(f"same-ids: only the first {agree} ids agree, expected {n}")
    sys.exit(0)
if a != b:
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    sys.exit(f"same-ids: {len(a)} vs {len(b)} ids, first difference at {first}")
print(f"ok: {len(a)} ids agree")
