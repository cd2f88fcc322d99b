#!/usr/bin/env python3
"""Writes the PTX of every gpu.binary in an MLIR file (kvprec-to-nvvm's
output with format=isa) to PREFIX.<binary name>.ptx, one file per binary
(what ptxas or the CUDA driver takes), and prints the paths.

    scripts/extract-ptx.py OUT.mlir PREFIX

Exits 1 when the file holds no PTX object."""
import re
import sys


def unescape(text):
    """MLIR string escapes: \\XX (hex), \\\\ and \\"."""
    out = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt in "\\\"":
                out.append(nxt)
                i += 2
                continue
            if i + 2 < len(text) and re.fullmatch(r"[0-9A-Fa-f]{2}", text[i + 1:i + 3]):
                out.append(chr(int(text[i + 1:i + 3], 16)))
                i += 3
                continue
        out.append(c)
        i += 1
    return "".join(out)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: extract-ptx.py OUT.mlir PREFIX")
    source = open(sys.argv[1]).read()
    found = 0
    # gpu.binary @name <handler>? [#gpu.object<#nvvm.target<...>, ... assembly = "...">]
    for binary in re.finditer(r"gpu\.binary @([\w$.]+)", source):
        name = binary.group(1)
        start = binary.end()
        nxt = source.find("gpu.binary @", start)
        chunk = source[start:nxt if nxt >= 0 else len(source)]
        for match in re.finditer(r'assembly = "((?:[^"\\]|\\.)*)"', chunk):
            path = "%s.%s.ptx" % (sys.argv[2], name)
            with open(path, "w") as f:
                f.write(unescape(match.group(1)))
            print(path)
            found += 1
            break
    if not found:
        sys.exit("extract-ptx.py: no PTX (gpu.binary with format=isa) in "
                 + sys.argv[1])


if __name__ == "__main__":
    main()
