"""Checks the labels of the SVG report's bytes-against-KL plot: no two of
their boxes (about 5 px a character at font-size 9, 10 px tall, as the
report estimates them) overlap, none covers a plan's point, and the named
plans' labels sit at different heights.

Usage: check-labels.py FILE.svg [PLAN PLAN ...]
"""
import sys
import xml.etree.ElementTree as ET

path, *different = sys.argv[1:]
ns = "{http://www.w3.org/2000/svg}"
labels = {}
for text in ET.parse(path).iter(ns + "text"):
    if text.get("class") == "plot-label":
        x, y = float(text.get("x")), float(text.get("y"))
        labels[text.text] = (x, y - 8, x + 5 * len(text.text), y + 2)
points = []
for circle in ET.parse(path).iter(ns + "circle"):
    x, y, r = (float(circle.get(k)) for k in ("cx", "cy", "r"))
    points.append((circle.find(ns + "title").text.split(":")[0], (x - r, y - r, x + r, y + r)))
problems = []
if not labels:
    problems.append("no plot labels")
names = sorted(labels)
for i, a in enumerate(names):
    for b in names[i + 1:]:
        p, q = labels[a], labels[b]
        if p[0] < q[2] and q[0] < p[2] and p[1] < q[3] and q[1] < p[3]:
            problems.append(f"the labels of {a} and {b} overlap")
for name, box in labels.items():
    for plan, p in points:
        if box[0] < p[2] and p[0] < box[2] and box[1] < p[3] and p[1] < box[3]:
            problems.append(f"the label of {name} covers the point of {plan}")
heights = [labels[n][1] for n in different if n in labels]
if len(heights) != len(different):
    problems.append(f"missing labels among {different}")
elif len(set(heights)) != len(heights):
    problems.append(f"{different} share a height")
if problems:
    sys.exit(f"check-labels: {path}: " + "; ".join(problems))
print(f"ok: {len(labels)} labels, none overlapping another or a point")
