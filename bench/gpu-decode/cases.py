"""The cases of the GPU bundle (bench/gpu-decode.sh): correctness checks of
every format and granularity at head_dim 64 and 128 plus a mixed plan, and
the benchmark's caches (head_dim 128, 8 KV heads, 4K to 128K positions,
each format and the certified mixed plan).

    cases.py OUTDIR [--quick] [--mixed N=FILE]...

Writes OUTDIR/case_<i>.mlir (a declaration using the planned cache type)
for every case and OUTDIR/cases.inc, the table gpu-check.cpp includes: per
case its name, kind (check or bench), geometry, formats and class format
indices (for the plan emulator of the checks) and the C ABI entry points
of its GPU code (prefix gpu<i>_) and CPU code (cpu<i>_). --mixed gives the
certified mixed plan's cache type for N positions (bench/cpu-decode.sh's
certified_plan writes them). --quick keeps three check cases (f32, int4
and the mixed plan) and no benchmark, for the bundle's own test."""
import re
import sys

KINDS = {"f32": "F32", "f16": "F16", "bf16": "BF16", "f8E4M3FN": "F8E4M3FN",
         "f8E5M2": "F8E5M2", "i8": "Int8", "i4": "Int4", "i2": "Int2"}


def fmt(kind, scheme=None, gran=None, group=None, scale=None):
    return dict(kind=kind, scheme=scheme, gran=gran, group=group, scale=scale)


def format_text(f):
    if f["scheme"] is None:
        return "#kvprec.format<%s>" % f["kind"]
    return "#kvprec.format<%s, %s, %s_group = %d, scale = %s>" % (
        f["kind"], f["scheme"], f["gran"], f["group"], f["scale"])


def format_cpp(f):
    if f["scheme"] is None:
        return "an::StorageFormat::unscaled(an::StorageKind::%s)" % KINDS[f["kind"]]
    return ("an::StorageFormat::scaled(an::StorageKind::%s, an::QuantScheme::%s, "
            "an::Granularity::%s, %d, an::StorageKind::%s)" % (
                KINDS[f["kind"]], f["scheme"].capitalize(),
                "TokenGroup" if f["gran"] == "token" else "ChannelGroup",
                f["group"], KINDS[f["scale"]]))


EVERY_FORMAT = [
    fmt("f32"), fmt("f16"), fmt("bf16"),
    fmt("f8E4M3FN", "symmetric", "token", 32, "f16"),
    fmt("f8E5M2", "symmetric", "channel", 8, "bf16"),
    fmt("i8", "symmetric", "token", 64, "f16"),
    fmt("i8", "asymmetric", "token", 16, "f32"),
    fmt("i8", "symmetric", "channel", 8, "f16"),
    fmt("i4", "symmetric", "token", 32, "f16"),
    fmt("i4", "asymmetric", "channel", 8, "f16"),
    fmt("i2", "asymmetric", "token", 32, "f16"),
    fmt("i2", "symmetric", "channel", 8, "f32"),
]

BENCH_FORMATS = {
    "f16": fmt("f16"), "bf16": fmt("bf16"),
    "f8E4M3FN": fmt("f8E4M3FN", "symmetric", "token", 128, "f16"),
    "i8": fmt("i8", "symmetric", "token", 128, "f16"),
    "i4": fmt("i4", "symmetric", "token", 32, "f16"),
    "i2": fmt("i2", "asymmetric", "token", 32, "f16"),
}
BENCH_POSITIONS = [4096, 16384, 65536, 131072]


def cache_type(layers, heads, capacity, head_dim, block, sink, window, formats,
               sinks, bodies, windows):
    return ("!kvprec.cache<%dx%dx%dx%dxf32, #kvprec.plan<layers = %d, heads = %d, "
            "capacity = %d, block = %d, sink = %d, window = %d, formats = [%s], "
            "sink_formats = [%s], body_formats = [%s], window_formats = [%s]>>" % (
                layers, heads, capacity, head_dim, layers, heads, capacity, block,
                sink, window, ", ".join(format_text(f) for f in formats),
                ", ".join(map(str, sinks)), ", ".join(map(str, bodies)),
                ", ".join(map(str, windows))))


def main():
    out = sys.argv[1]
    mixed = {}
    args = sys.argv[2:]
    quick = "--quick" in args
    args = [a for a in args if a != "--quick"]
    while args:
        if args[0] != "--mixed" or len(args) < 2:
            sys.exit("usage: cases.py OUTDIR [--mixed N=FILE]...")
        n, path = args[1].split("=", 1)
        mixed[int(n)] = open(path).read().strip()
        args = args[2:]
    cases = []
    # Checks: one layer, 2 KV heads, 40 positions in blocks of 8, a sink of
    # 8 and a window of 16 (demotions), as test/Unit's CacheCases.
    for head_dim in (64, 128):
        for f in EVERY_FORMAT:
            geometry = dict(layers=1, heads=2, capacity=40, head_dim=head_dim,
                            block=8, sink=8, window=16)
            cases.append(dict(name="%s d%d" % (format_text(f), head_dim),
                              kind="check", formats=[f], sinks=[0], bodies=[0],
                              windows=[0], **geometry))
    cases.append(dict(
        name="mixed f16 sink/window, int8 K and int4 V body, 300 positions",
        kind="check", layers=1, heads=2, capacity=300, head_dim=128, block=16,
        sink=4, window=32,
        formats=[fmt("f16"), fmt("i8", "symmetric", "token", 128, "f16"),
                 fmt("i4", "asymmetric", "token", 32, "f16")],
        sinks=[0], bodies=[1, 2, 1, 2], windows=[0]))
    # Benchmark caches: one layer, 8 KV heads, head_dim 128, block 64,
    # sink 4, window 256 (bench/cpu-decode's shape).
    for positions in BENCH_POSITIONS:
        for name, f in BENCH_FORMATS.items():
            cases.append(dict(name=name, kind="bench", layers=1, heads=8,
                              capacity=positions, head_dim=128, block=64,
                              sink=4, window=256, formats=[f], sinks=[0],
                              bodies=[0], windows=[0]))
        if positions in mixed:
            cases.append(dict(name="mixed", kind="bench", capacity=positions,
                              head_dim=128, heads=8, type=mixed[positions]))
    if quick:
        cases = [c for c in cases if c["kind"] == "check" and (
            c["name"].startswith("#kvprec.format<f32> d64") or
            c["name"].startswith("#kvprec.format<i4, symmetric") and "d64" in c["name"] or
            c["name"].startswith("mixed"))]
    inc = []
    for i, c in enumerate(cases):
        if "type" not in c:
            c["type"] = cache_type(c["layers"], c["heads"], c["capacity"],
                                   c["head_dim"], c["block"], c["sink"],
                                   c["window"], c["formats"], c["sinks"],
                                   c["bodies"], c["windows"])
        with open("%s/case_%d.mlir" % (out, i), "w") as f:
            f.write("func.func private @uses(%s)\n" % c["type"])
        for side in ("gpu", "cpu"):
            p = "_mlir_ciface_%s%d_0_" % (side, i)
            inc.append('extern "C" int64_t %sarena_bytes();' % p)
            inc.append('extern "C" int32_t %sinit(Arena1 *);' % p)
            inc.append('extern "C" int32_t %sappend(Arena1 *, int64_t, Tokens3 *, '
                       'Tokens3 *, int64_t);' % p)
            inc.append('extern "C" int32_t %sattend(Arena1 *, int64_t, Heads2 *, '
                       'int64_t, Heads2 *, float);' % p)
            inc.append('extern "C" int32_t %sload(Arena1 *, int64_t, int64_t, '
                       'Tokens3 *, Tokens3 *);' % p)
            inc.append('extern "C" int32_t %sattend_certified(Arena1 *, int64_t, '
                       'Heads2 *, int64_t, Heads2 *, float, Floats1 *);' % p)
    inc.append("static const CaseEntry kCases[] = {")
    for i, c in enumerate(cases):
        def entry(side):
            p = "_mlir_ciface_%s%d_0_" % (side, i)
            return ("{%sarena_bytes, %sinit, %sappend, %sattend, %sload, "
                    "%sattend_certified}" % ((p,) * 6))
        plan = "{}"
        if c["kind"] == "check":
            items = c["layers"] * c["heads"] * 2

            def expand(xs):
                xs = xs if len(xs) > 1 else xs * items
                return "{" + ", ".join(map(str, xs)) + "}"
            plan = ("{{%d, %d, %d, %d, %d, %d, %d}, {%s}, %s, %s, %s}" % (
                c["layers"], c["heads"], c["capacity"], c["head_dim"],
                c["block"], c["sink"], c["window"],
                ", ".join(format_cpp(f) for f in c["formats"]),
                expand(c["sinks"]), expand(c["windows"]), expand(c["bodies"])))
        inc.append('  {"%s", %s, %d, %d, %d, %s, %s, %s},' % (
                       c["name"].replace('"', "'"),
                       "true" if c["kind"] == "check" else "false",
                       c["capacity"], c["heads"], c["head_dim"], entry("gpu"),
                       entry("cpu"), plan))
    inc.append("};")
    with open(out + "/cases.inc", "w") as f:
        f.write("\n".join(inc) + "\n")
    with open(out + "/cases.txt", "w") as f:
        for i, c in enumerate(cases):
            f.write("%d %s\n" % (i, c["kind"]))
    print(len(cases))


if __name__ == "__main__":
    main()
