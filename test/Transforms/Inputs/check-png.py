"""Checks a PNG that rsvg-convert rendered: its size, and that it shows
given colours (the renderer drew the cells, not a blank page).

Usage: check-png.py FILE MAX_WIDTH MAX_HEIGHT #rrggbb [#rrggbb ...]

Decodes the PNG in pure Python (8-bit RGB or RGBA, the five filters).
"""
import struct
import sys
import zlib

path, max_w, max_h, *colours = sys.argv[1:]
data = open(path, "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat, width, height, ctype = 8, b"", 0, 0, 0
while pos < len(data):
    length, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + length]
    if kind == b"IHDR":
        width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
        assert depth == 8 and ctype in (2, 6), f"unexpected PNG type {depth}/{ctype}"
    elif kind == b"IDAT":
        idat += body
    pos += 12 + length
bpp = 4 if ctype == 6 else 3
raw = zlib.decompress(idat)
stride = width * bpp
rows, prev = [], bytearray(stride)
for y in range(height):
    f = raw[y * (stride + 1)]
    line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for i in range(stride):
        a = line[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        if f == 1:
            line[i] = (line[i] + a) & 255
        elif f == 2:
            line[i] = (line[i] + b) & 255
        elif f == 3:
            line[i] = (line[i] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    rows.append(bytes(line))
    prev = line
seen = set()
for line in rows:
    for x in range(0, stride, bpp):
        seen.add(bytes(line[x:x + 3]))
problems = []
if width > int(max_w) or height > int(max_h):
    problems.append(f"{width}x{height} is larger than {max_w}x{max_h}")
for colour in colours:
    rgb = bytes.fromhex(colour.lstrip("#"))
    if rgb not in seen:
        problems.append(f"no pixel of {colour}")
if problems:
    sys.exit(f"check-png: {path}: " + "; ".join(problems))
print(f"ok: {width}x{height}, {len(seen)} colours, all of {' '.join(colours)} drawn")
