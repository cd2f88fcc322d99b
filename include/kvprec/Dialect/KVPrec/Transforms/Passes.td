//===- Passes.td - kvprec dialect passes -------------------*- tablegen -*-===//

#ifndef KVPREC_DIALECT_KVPREC_TRANSFORMS_PASSES_TD
#define KVPREC_DIALECT_KVPREC_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def ImportCalibration : Pass<"kvprec-import-calibration", "::mlir::ModuleOp"> {
  let summary = "Loads a calibration statistics file into the module";
  let description = [{
    Reads a `kvprec-calib-v1` safetensors file (docs/calibration.md), checks
    it (header, dtypes, shapes, finite values, masses in [0, 1], ranges) and
    against every cache in the module (layers, KV heads, head_dim, and the
    query heads of every `kvprec.attend`), then adds a `kvprec.calibration`
    op holding the statistics and points every `kvprec.alloc` of a matching
    cache at it. Tensors with more than `inline-limit` elements become
    `dense_resource` blobs, smaller ones dense attributes, so the module is
    self-contained and round-trips through text and bytecode.

    ```
    kvprec-opt model.mlir --kvprec-import-calibration="file=stats.safetensors"
    ```
  }];
  let dependentDialects = ["::mlir::kvprec::KVPrecDialect"];
  let options = [
    Option<"file", "file", "std::string", /*default=*/"",
           "The kvprec-calib-v1 safetensors file to import (required)">,
    Option<"symbolName", "name", "std::string", /*default=*/"\"calibration\"",
           "Symbol name of the kvprec.calibration op to create">,
    Option<"inlineLimit", "inline-limit", "int64_t", /*default=*/"64",
           "Tensors with more elements than this are stored as dense_resource "
           "blobs instead of dense attributes">
  ];
}

def AnalyzeSensitivity : Pass<"kvprec-analyze-sensitivity", "::mlir::ModuleOp"> {
  let summary = "Attaches the sensitivities and curvature the allocation uses";
  let description = [{
    For every calibrated `kvprec.alloc`, computes per layer, KV head, K/V and
    position class (sink, window, body) the quantities of
    docs/error-bounds.md that drive the allocation, and attaches them to the
    op as `kvprec.sensitivity`, a dictionary of `tensor<L x H x 3 x f64>`
    (classes in the order sink, window, body):

    - `mass`: the (C1) attention-mass envelope of the class;
    - `k_first_order`: A * max_j span_j(V) * ||Q||_1 * scale, the
      first-order sensitivity of the output to a unit key error (section 1);
    - `v_first_order`: A, the sensitivity to a unit value error;
    - `k_curvature`: A * kappa_K = A * ||Q||_1^2 / (2 d) * max_j span_j(V),
      the HNF curvature of section 3;
    - `k_necessary_bits`: the HNF necessary bits at `tolerance`, a lower
      bound only, never a sufficient condition.

    The position classes are those of the cache's plan when it has one, else
    the calibration's.
  }];
  let dependentDialects = ["::mlir::kvprec::KVPrecDialect"];
  let options = [
    Option<"tolerance", "tolerance", "double", /*default=*/"1e-3",
           "Tolerance at which to report the HNF necessary bits">
  ];
}

def AssignPrecision : Pass<"kvprec-assign-precision", "::mlir::ModuleOp"> {
  let summary = "Chooses storage formats and writes the plan into the caches";
  let description = [{
    Writes a `#kvprec.plan` into the type of every cache in the module.

    - `mode=certified` (default) implements docs/error-bounds.md: from the
      cache's calibration (`kvprec-import-calibration`), every (layer, KV
      head) gets the cheapest formats whose certified bound (section 2 with
      the envelopes of section 5) is within `tolerance` (one value, or one
      per layer), by a multiple-choice knapsack over K and V of the sink,
      window and body classes (section 4). With `budget` (bytes) instead,
      it minimises the summed bound within that budget. `per-block=true`
      also refines every body block with its own calibrated ranges, keeping
      the certificate.
    - `mode=uniform format=T` stores everything in one format (works without
      calibration; then the plan carries no certificate).
    - `mode=kivi bits=2|4` is KIVI's layout: keys per channel over groups of
      32 tokens, values per token in groups of 32 channels, asymmetric with
      f16 scales, and a 128-token f16 window.
    - `mode=seed` is the earlier prototype's heuristic (score and fixed
      25/18/14-bit thresholds), for comparison only; its plan carries the
      certificate that its formats actually achieve, which may exceed the
      tolerance.

    With calibration, the plan records the certificate (tolerance, certified
    bound, HNF necessary bits, average bits, bytes vs fp16). The pass
    statistics report the plan's bytes and the fp16 bytes.
  }];
  let dependentDialects = ["::mlir::kvprec::KVPrecDialect"];
  let options = [
    Option<"mode", "mode", "::mlir::kvprec::AssignMode",
           /*default=*/"::mlir::kvprec::AssignMode::Certified",
           "How to choose formats",
           [{::llvm::cl::values(
               clEnumValN(::mlir::kvprec::AssignMode::Certified, "certified",
                          "the cheapest plan whose certificate meets the "
                          "tolerance (or the least error within a budget)"),
               clEnumValN(::mlir::kvprec::AssignMode::Uniform, "uniform",
                          "one format everywhere (format=T)"),
               clEnumValN(::mlir::kvprec::AssignMode::Kivi, "kivi",
                          "KIVI's layout (bits=2|4)"),
               clEnumValN(::mlir::kvprec::AssignMode::Seed, "seed",
                          "the earlier prototype's heuristic, for "
                          "comparison"))}]>,
    ListOption<"tolerance", "tolerance", "double",
               "Attention-output error tolerance (infinity norm): one value, "
               "or one per layer">,
    Option<"kl", "kl", "double", /*default=*/"0",
           "Mean KL divergence of the next-token distribution to aim for "
           "(certified mode): per-layer tolerances sqrt(kl / s_l) / L from the "
           "calibration's measured layer sensitivities s_l "
           "(layer_kl_sensitivity); the propagation is measured, each layer's "
           "bound certified. Replaces tolerance= and budget=">,
    Option<"budget", "budget", "double", /*default=*/"0",
           "Byte budget for the whole cache (certified mode): minimise the "
           "error within it instead of meeting a tolerance">,
    ListOption<"formats", "formats", "std::string",
               "Allowed storage formats, as MLIR element types (default: "
               "f32,f16,bf16,f8E4M3FN,f8E5M2,i8,i4,i2)">,
    Option<"format", "format", "std::string", /*default=*/"\"\"",
           "The single format of mode=uniform">,
    Option<"bits", "bits", "int64_t", /*default=*/"4",
           "Bits of mode=kivi (2 or 4)">,
    Option<"block", "block", "int64_t", /*default=*/"0",
           "Body block size in positions (0: the calibration's, else 32)">,
    Option<"sink", "sink", "int64_t", /*default=*/"-1",
           "Sink positions (-1: the calibration's, else 4)">,
    Option<"window", "window", "int64_t", /*default=*/"-1",
           "Recent-window positions, a multiple of the block (-1: the "
           "calibration's, else 64)">,
    Option<"granularity", "granularity", "::mlir::kvprec::GroupGranularity",
           /*default=*/"::mlir::kvprec::GroupGranularity::Token",
           "Scale sharing of integer formats",
           [{::llvm::cl::values(
               clEnumValN(::mlir::kvprec::GroupGranularity::Token, "token",
                          "groups of channels of one token"),
               clEnumValN(::mlir::kvprec::GroupGranularity::Channel,
                          "channel",
                          "one channel over a group of tokens (also allows "
                          "token groups where channel groups cannot "
                          "tile)"))}]>,
    Option<"group", "group", "int64_t", /*default=*/"0",
           "Group size (0: head_dim for token groups, the block for channel "
           "groups)">,
    Option<"scheme", "scheme", "::mlir::kvprec::QuantScheme",
           /*default=*/"::mlir::kvprec::QuantScheme::asymmetric",
           "Integer quantization scheme",
           [{::llvm::cl::values(
               clEnumValN(::mlir::kvprec::QuantScheme::symmetric, "symmetric",
                          "codes k * scale"),
               clEnumValN(::mlir::kvprec::QuantScheme::asymmetric,
                          "asymmetric",
                          "codes zero + k * scale"))}]>,
    Option<"scale", "scale", "std::string", /*default=*/"\"f16\"",
           "Scale (and zero point) element type: f16, bf16 or f32">,
    Option<"perBlock", "per-block", "bool", /*default=*/"false",
           "Refine every body block with its own calibrated ranges">,
    Option<"logitErrorCap", "ecap", "double", /*default=*/"0.25",
           "E_cap of error-bounds.md section 4: the largest logit error a key "
           "format may introduce, in (0, 100]">,
    Option<"extrapolate", "extrapolate", "::kvprec::certify::Extrapolation",
           /*default=*/"::kvprec::certify::Extrapolation::None",
           "What the certificate assumes past the calibrated length",
           [{::llvm::cl::values(
               clEnumValN(::kvprec::certify::Extrapolation::None, "none",
                          "refuse to certify a cache longer than calibration "
                          "observed"),
               clEnumValN(::kvprec::certify::Extrapolation::WorstCase,
                          "worst-case",
                          "past it: every class mass 1, every magnitude "
                          "envelope times margin"))}]>,
    Option<"margin", "margin", "double", /*default=*/"1.0",
           "Factor on |q|, the logit envelope's factors and the K/V ranges "
           "of extrapolate=worst-case (at least 1)">,
    Option<"certificate", "certificate", "::kvprec::certify::CertificateKind",
           /*default=*/"::kvprec::certify::CertificateKind::Deterministic",
           "Which certificate the plan must meet its tolerance with",
           [{::llvm::cl::values(
               clEnumValN(::kvprec::certify::CertificateKind::Deterministic,
                          "deterministic",
                          "a proof under the calibration envelopes"),
               clEnumValN(::kvprec::certify::CertificateKind::Probabilistic,
                          "probabilistic",
                          "holds with probability 1 - confidence per decode "
                          "step under the rounding model of "
                          "error-bounds.md section 9"))}]>,
    Option<"confidence", "confidence", "double", /*default=*/"1e-9",
           "certificate=probabilistic: the failure probability P per decode "
           "step (one query token, all layers and query heads), in (0, 1)">,
    Option<"quiet", "quiet", "bool", /*default=*/"false",
           "Do not emit the memory remark on every planned allocation">
  ];
  let statistics = [
    Statistic<"numCaches", "caches", "Cache types given a plan">,
    Statistic<"planBytes", "plan-bytes", "Bytes of the planned caches">,
    Statistic<"f16Bytes", "f16-bytes", "Bytes of the same caches in fp16">,
    Statistic<"averageMilliBits", "average-millibits",
              "Average stored bits per element, times 1000">
  ];
}

def VerifyPlan : Pass<"kvprec-verify-plan", "::mlir::ModuleOp"> {
  let summary = "Recomputes and checks the certificate of every plan";
  let description = [{
    For every cache with a plan and a calibration, recomputes the static
    certificate of each (layer, KV head) from the plan's formats and the
    calibration alone (independently of how the plan was made, so
    hand-written plans are checked too), at the softmax scale of the
    `kvprec.attend` ops that read the cache, and emits a located error when
    the calibration does not cover the cache (length, scale), when a
    certified bound exceeds its layer's tolerance (the `tolerance` option,
    else the certificate's), or when a budget plan exceeds its budget. When
    the plan carries a certificate, every recorded field (bounds per layer,
    necessary bits, average bits, bytes vs fp16, calibrated length,
    extrapolation, and the arithmetic contract) must equal the recomputed
    one. The HNF necessary bits are recorded as a necessary condition only,
    never a reason to reject. With `update=true` the recomputed certificate
    replaces the recorded one.
  }];
  let dependentDialects = ["::mlir::kvprec::KVPrecDialect"];
  let options = [
    ListOption<"tolerance", "tolerance", "double",
               "Tolerance to check (one value or one per layer); default: the "
               "plan certificate's">,
    Option<"extrapolate", "extrapolate", "::kvprec::certify::Extrapolation",
           /*default=*/"::kvprec::certify::Extrapolation::None",
           "Extrapolation rule for a plan without a certificate (one with a "
           "certificate is checked under the rule it records)",
           [{::llvm::cl::values(
               clEnumValN(::kvprec::certify::Extrapolation::None, "none",
                          "refuse caches longer than the calibration"),
               clEnumValN(::kvprec::certify::Extrapolation::WorstCase,
                          "worst-case",
                          "masses 1 and magnitudes times margin past it"))}]>,
    Option<"margin", "margin", "double", /*default=*/"1.0",
           "Margin of extrapolate=worst-case">,
    Option<"certificate", "certificate", "::kvprec::certify::CertificateKind",
           /*default=*/"::kvprec::certify::CertificateKind::Deterministic",
           "Certificate for a plan without one (one with a certificate is checked as the kind it records)",
           [{::llvm::cl::values(
               clEnumValN(::kvprec::certify::CertificateKind::Deterministic,
                          "deterministic",
                          "a proof under the calibration envelopes"),
               clEnumValN(::kvprec::certify::CertificateKind::Probabilistic,
                          "probabilistic",
                          "holds with probability 1 - confidence per decode "
                          "step under the rounding model of "
                          "error-bounds.md section 9"))}]>,
    Option<"confidence", "confidence", "double", /*default=*/"1e-9",
           "certificate=probabilistic: the failure probability P per decode "
           "step (one query token, all layers and query heads), in (0, 1)">,
    Option<"update", "update", "bool", /*default=*/"false",
           "Write the recomputed certificate into the plan">
  ];
}

def Report : Pass<"kvprec-report", "::mlir::ModuleOp"> {
  let summary = "Prints the precision map, memory and certificate";
  let description = [{
    For every cache with a plan, prints the precision map (layers x KV heads
    x {sink, window, body}, K and V), the memory totals against fp16, the
    certificate, the calibration envelopes it assumes, and the attention
    pattern of each layer and head from calibration (sink mass, recent-window
    mass, entropy). `format=table` (default) prints a terminal table,
    `format=json` a JSON document for tools, `format=svg` a picture: the
    cache, its bytes and its certificate (and measured quality, when
    kvprec-calib eval-quality annotated it) in the title, a layers x KV heads
    grid per K/V class coloured by format with a legend of the formats and
    their bits, per-block bodies along the position axis, and with
    `quality=FILE` (bench/quality/results.jsonl) a plot of bytes against
    mean KL of the benchmark's plans. `output=FILE` writes to a file instead
    of stdout.
  }];
  let dependentDialects = ["::mlir::kvprec::KVPrecDialect"];
  let options = [
    Option<"format", "format", "::mlir::kvprec::ReportFormat",
           /*default=*/"::mlir::kvprec::ReportFormat::Table",
           "Output format",
           [{::llvm::cl::values(
               clEnumValN(::mlir::kvprec::ReportFormat::Table, "table",
                          "a terminal table"),
               clEnumValN(::mlir::kvprec::ReportFormat::Json, "json",
                          "a JSON document"),
               clEnumValN(::mlir::kvprec::ReportFormat::Svg, "svg",
                          "an SVG picture of the plan"))}]>,
    Option<"output", "output", "std::string", /*default=*/"\"-\"",
           "Output file ('-' for stdout)">,
    Option<"quality", "quality", "std::string", /*default=*/"\"\"",
           "format=svg: also plot bytes against mean KL of the plans in this "
           "bench/quality results file (JSON lines) for the cache's model">
  ];
}

#endif // KVPREC_DIALECT_KVPREC_TRANSFORMS_PASSES_TD
