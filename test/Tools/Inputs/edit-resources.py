#!/usr/bin/env python3
"""Damages the dialect_resources section of an MLIR file, as a truncated
download or a hand edit would.

  edit-resources.py IN OUT truncate N      cut the last N bytes
  edit-resources.py IN OUT shrink KEY      drop the last 4 bytes of blob KEY
  edit-resources.py IN OUT drop KEY        remove blob KEY
"""
import re
import sys


def main():
    src, dst, mode, arg = sys.argv[1:5]
    text = open(src, encoding="utf-8").read()
    if mode == "truncate":
        text = text[: len(text) - int(arg)]
    else:
        pattern = re.compile(r'^(\s*' + re.escape(arg) + r': "0x)([0-9A-F]*)(",?)\n',
                             re.M)
        match = pattern.search(text)
        if not match:
            sys.exit(f"edit-resources.py: no blob {arg} in {src}")
        if mode == "shrink":
            replacement = match.group(1) + match.group(2)[:-8] + match.group(3) + "\n"
        elif mode == "drop":
            replacement = ""
        else:
            sys.exit(f"edit-resources.py: unknown mode {mode}")
        text = text[: match.start()] + replacement + text[match.end():]
        # A dropped last entry leaves a trailing comma before the brace.
        text = re.sub(r",(\s*\n\s*})", r"\1", text)
    open(dst, "w", encoding="utf-8").write(text)


if __name__ == "__main__":
    main()
