"""Lowers test caches with kvprec-to-nvvm and checks the PTX (and, given
--ptxas, what ptxas makes of it).

    check-nvptx.py --kvprec-opt BIN --extract SCRIPT --inputs DIR --out PREFIX
                   [--ptxas BIN] [--certificate] CASE...

CASE is NAME:CHIP (DIR/nvptx-NAME.mlir for sm_CHIP). For each case:
  * kvprec-opt --kvprec-to-nvvm="chip=sm_CHIP" succeeds and the gpu.binary
    holds PTX for that chip;
  * the attention kernels (*_attend_split, *_attend_combine) use no local
    memory; the split kernel loads codes 128 bits at a time
    (ld.global.v4) and reduces with warp shuffles (shfl.sync.bfly);
  * f8 codes (NAME starting with f8) widen through cvt.rn.f16x2.e4m3x2 /
    e5m2x2 on sm_90 and through integer operations on sm_80 (no cvt from
    an f8 type there);
  * with --ptxas: `ptxas -arch=sm_CHIP -v` accepts the module, no function
    spills, and the attention kernels have no stack frame;
  * with --certificate the lowering has runtime-certificate=true, and the
    certified split kernel (*_attend_split_certified) must be there and
    pass the split kernel's checks but the 128-bit loads (it narrows its
    pieces to at most 16 elements a lane).
Prints one line per case."""
import argparse
import re
import subprocess
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--kvprec-opt", required=True)
parser.add_argument("--extract", required=True)
parser.add_argument("--inputs", required=True)
parser.add_argument("--out", required=True)
parser.add_argument("--ptxas")
parser.add_argument("--certificate", action="store_true")
parser.add_argument("cases", nargs="+")
args = parser.parse_args()


def fail(message):
    sys.exit("check-nvptx.py: " + message)


def kernels(ptx):
    """(name, body) of each .entry."""
    starts = list(re.finditer(r"^\.(?:visible |weak )?\.?(entry|func)\s+(?:\([^)]*\)\s*)?(\w+)\(",
                              ptx, re.M))
    for n, m in enumerate(starts):
        if m.group(1) != "entry":
            continue
        end = starts[n + 1].start() if n + 1 < len(starts) else len(ptx)
        yield m.group(2), ptx[m.start():end]


for case in args.cases:
    name, chip = case.split(":")
    source = "%s/nvptx-%s.mlir" % (args.inputs, name)
    lowered = "%s.%s.sm_%s.mlir" % (args.out, name, chip)
    options = "chip=sm_%s" % chip
    if args.certificate:
        options += " runtime-certificate=true"
    run = subprocess.run([args.kvprec_opt, source,
                          "--kvprec-to-nvvm=%s" % options, "-o", lowered],
                         capture_output=True, text=True)
    if run.returncode:
        fail("%s: kvprec-to-nvvm failed:\n%s" % (case, run.stderr))
    prefix = "%s.%s.sm_%s" % (args.out, name, chip)
    paths = subprocess.run([sys.executable, args.extract, lowered, prefix],
                           capture_output=True, text=True)
    if paths.returncode:
        fail("%s: %s" % (case, paths.stderr))
    ptx_path = paths.stdout.split()[0]
    ptx = open(ptx_path).read()
    if not re.search(r"^\.target sm_%s\b" % chip, ptx, re.M):
        fail("%s: the PTX is not for sm_%s" % (case, chip))
    seen = set()
    for kernel, body in kernels(ptx):
        role = next((r for r in ("_attend_split", "_attend_combine",
                                 "_attend_split_certified")
                     if kernel.endswith(r)), None)
        if not role:
            continue
        seen.add(role)
        if re.search(r"\.local|ld\.local|st\.local", body):
            fail("%s: %s uses local memory" % (case, kernel))
        if role in ("_attend_split", "_attend_split_certified"):
            # The certified kernel narrows its pieces where a lane would
            # hold more than 16 elements, so only the other loads 128 bits.
            patterns = [r"shfl\.sync\.bfly"]
            if role == "_attend_split":
                patterns.append(r"ld\.global(\.nc)?\.v4\.")
            for pattern in patterns:
                if not re.search(pattern, body):
                    fail("%s: %s has no %s" % (case, kernel, pattern))
            if name.startswith("f8"):
                converts = re.search(r"cvt\.rn\.f16x2\.e[45]m[23]x2", body)
                if chip == "90" and not converts:
                    fail("%s: no cvt.rn.f16x2 from f8 on sm_90" % case)
                if chip != "90" and re.search(r"cvt\.[^\s]*e[45]m[23]", body):
                    fail("%s: an f8 cvt on sm_%s" % (case, chip))
    expected = {"_attend_split", "_attend_combine"}
    if args.certificate:
        expected.add("_attend_split_certified")
    if seen != expected:
        fail("%s: attention kernels missing (found %s)" % (case, sorted(seen)))
    line = "%s sm_%s%s: PTX checked" % (
        name, chip, " certified" if args.certificate else "")
    if args.ptxas:
        assembled = subprocess.run([args.ptxas, "-arch=sm_%s" % chip, "-v",
                                    ptx_path, "-o", prefix + ".cubin"],
                                   capture_output=True, text=True)
        if assembled.returncode:
            fail("%s: ptxas failed:\n%s" % (case, assembled.stderr))
        report = assembled.stdout + assembled.stderr
        blocks = re.findall(
            r"Function properties for (\S+)\n\s*(\d+) bytes stack frame, "
            r"(\d+) bytes spill stores, (\d+) bytes spill loads", report)
        if not blocks:
            fail("%s: no function properties from ptxas -v" % case)
        for function, stack, stores, loads in blocks:
            if int(stores) or int(loads):
                fail("%s: %s spills (%s bytes stored, %s loaded)"
                     % (case, function, stores, loads))
            if int(stack) and function.endswith(("_attend_split",
                                                 "_attend_combine",
                                                 "_attend_split_certified")):
                fail("%s: %s has a %s-byte stack frame" % (case, function, stack))
        line += ", ptxas: %d functions, 0 bytes of spills" % len(blocks)
    print(line)
