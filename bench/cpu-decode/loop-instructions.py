"""Instructions in the innermost loops of the generated attention.

Reads an x86 assembly file from llc (which marks loop headers with
"# =>This Inner Loop Header") and prints, as JSON, for each function whose
name contains one of the arguments, the instruction count of each innermost
loop body (from its header label to the branch back to it).
"""
import json
import re
import sys

asm_path, names = sys.argv[1], sys.argv[2:]
lines = open(asm_path).read().splitlines()
result = {}
function = None
i = 0
while i < len(lines):
    line = lines[i]
    m = re.match(r"^([A-Za-z_][\w.]*):", line)
    if m and not line.startswith(".L"):
        function = m.group(1)
    if "Inner Loop Header" in line and function and any(n in function for n in names):
        # The header's label is on this line or, when this line is only
        # the comment, on the line before.
        label = line.split(":")[0].strip()
        if not label.startswith(".L"):
            label = lines[i - 1].split(":")[0].strip()
        start = i if line.startswith(".L") else i - 1
        count = 0
        closed = False
        j = start + 1
        while j < len(lines) and not lines[j].startswith(".Lfunc_end"):
            text = lines[j].split("#")[0].strip()
            if text and not text.startswith(".") and not text.endswith(":"):
                count += 1
                if re.match(r"j\w+\s+" + re.escape(label) + r"$", text):
                    closed = True
                    break
            j += 1
        # A loop whose back branch targets another label (a rotated loop)
        # is not counted rather than counted wrong.
        if closed:
            result.setdefault(function, []).append(count)
        i = j
    i += 1
print(json.dumps(result))
