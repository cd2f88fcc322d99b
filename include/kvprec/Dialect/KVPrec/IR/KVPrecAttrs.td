//===- KVPrecAttrs.td - kvprec attributes ------------------*- tablegen -*-===//

#ifndef KVPREC_DIALECT_KVPREC_IR_KVPRECATTRS_TD
#define KVPREC_DIALECT_KVPREC_IR_KVPRECATTRS_TD

include "kvprec/Dialect/KVPrec/IR/KVPrecDialect.td"
include "kvprec/Dialect/KVPrec/IR/KVPrecEnums.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/BuiltinAttributeInterfaces.td"

class KVPrec_Attr<string name, string attrMnemonic, list<Trait> traits = []>
    : AttrDef<KVPrec_Dialect, name, traits> {
  let mnemonic = attrMnemonic;
}

def KVPrec_StorageFormatAttr : KVPrec_Attr<"StorageFormat", "format"> {
  let summary = "How one segment of a KV cache is stored";
  let description = [{
    A storage format names the element type that holds the data and, for
    scaled formats, how the scales are shared.

    - Unscaled floats: `f32`, `f16`, `bf16` hold each value rounded to that
      type: `#kvprec.format<f16>`.
    - Scaled formats: the 8-bit floats `f8E4M3FN` and `f8E5M2` (symmetric
      only) and the integers `i8`, `i4` (two per byte) and `i2` (four per
      byte), symmetric or asymmetric (with a zero point). One scale (and zero
      point) is shared by a group of `token_group = g` consecutive head_dim
      channels of one token, or by one channel over `channel_group = g`
      consecutive tokens (KIVI's key layout). Scales are stored as
      `scale = f16|bf16|f32`:

      `#kvprec.format<i4, asymmetric, channel_group = 32, scale = f16>`

    The error a format introduces is the per-element bound of
    docs/error-bounds.md section 6, computed with the stored (rounded) scale.
  }];
  let parameters = (ins
    "::mlir::Type":$storageType,
    EnumParameter<KVPrec_QuantScheme>:$scheme,
    EnumParameter<KVPrec_Granularity>:$granularity,
    "unsigned":$groupSize,
    OptionalParameter<"::mlir::Type">:$scaleType
  );
  let builders = [
    // An unscaled float format (f32, f16 or bf16).
    AttrBuilder<(ins "::mlir::Type":$storageType), [{
      return $_get($_ctxt, storageType, QuantScheme::symmetric,
                   Granularity::token_group, 0u, ::mlir::Type());
    }]>
  ];
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// True for formats that store codes plus a shared scale.
    bool isScaled() const { return static_cast<bool>(getScaleType()); }
    /// Bits of one stored element, excluding scale overhead.
    unsigned getElementBits() const;
    /// Storage bytes (including scales and zero points) of a segment of
    /// `tokens` tokens of `headDim` channels.
    double getSegmentBytes(int64_t tokens, int64_t headDim) const;
    /// The plain C++ description the analysis library uses.
    ::kvprec::analysis::StorageFormat getAnalysisFormat() const;
  }];
}

def KVPrec_CertificateAttr : KVPrec_Attr<"Certificate", "certificate"> {
  let summary = "The error certificate of a precision plan";
  let description = [{
    Records what the analysis proved about a plan, what it assumed, and the
    arithmetic the generated code must perform for the proof to apply.

    - The kind of certificate (docs/analysis.md): `deterministic`, a
      worst-case bound under the stated envelopes (a proof); or
      `probabilistic, confidence = P`, a bound that holds with probability
      at least 1 - P per decode step (one query token, every layer and
      query head) under the rounding model (M) of error-bounds.md §9
      (stored-value rounding errors independent, mean zero, bounded by the
      per-element bounds and independent of the query) as well as the
      envelopes. It is not a proof, and `assumes` lists `rounding_model`.
    - `tolerance = [...]`: the user's tolerance on the attention-output
      error (infinity norm) of every (layer, KV head), one value or one per
      layer; or `budget = B`, the byte budget the plan was made for.
    - `bound`: the largest certified bound; `layer_bounds`: per layer.
    - `necessary_bits`: the HNF figure of docs/error-bounds.md section 3, a
      lower bound only, never a reason to accept or reject.
    - `average_bits` per cached element and `bytes_vs_f16`.
    - `calibrated_length`: positions the calibration observed;
      `query_samples = N`: the calibration queries per (layer, KV head) the
      joint certificate (error-bounds.md §7) takes its worst case over, or 0
      when the envelopes are combined coordinate by coordinate;
      `extrapolation = none`, or `worst_case, margin = M` when the cache is
      longer and the stated worst-case rule covers the rest.
    - The arithmetic contract: `softmax_scale`, the `dequant` precision,
      `accumulate` precision (f32), `accumulate_block` (positions per
      partial sum) and `exp_ulps` (the exp's relative error in units of
      the accumulation precision's roundoff).
    - `assumes = [...]`: the envelopes the static bound rests on, derived
      from the other fields (a certificate cannot leave one out).

    ```
    #kvprec.certificate<deterministic, tolerance = [1.0e-02], bound = 6.1e-03,
      layer_bounds = [6.1e-03, 5.0e-03], necessary_bits = 2.5e+00,
      average_bits = 5.25e+00, bytes_vs_f16 = 3.3e-01,
      calibrated_length = 64, query_samples = 0, extrapolation = none,
      softmax_scale = 3.5355339059327373e-01, dequant = f32, accumulate = f32,
      accumulate_block = 16, exp_ulps = 4,
      assumes = [attention_mass, query_magnitude, logit_envelope, kv_ranges,
                 calibrated_length]>
    ```
  }];
  let parameters = (ins
    "bool":$probabilistic,
    APFloatParameter<"failure probability per step (0: deterministic)">:$confidence,
    "::mlir::DenseF64ArrayAttr":$tolerance,
    APFloatParameter<"byte budget (0 with tolerances)">:$budget,
    APFloatParameter<"certified bound">:$bound,
    "::mlir::DenseF64ArrayAttr":$layerBounds,
    APFloatParameter<"HNF necessary bits (lower bound)">:$necessaryBits,
    APFloatParameter<"average stored bits per element">:$averageBits,
    APFloatParameter<"bytes relative to fp16">:$bytesVsF16,
    "int64_t":$calibratedLength,
    "int64_t":$querySamples,
    "bool":$extrapolated,
    APFloatParameter<"extrapolation margin">:$margin,
    APFloatParameter<"softmax scale">:$softmaxScale,
    "::mlir::Type":$dequant,
    "::mlir::Type":$accumulate,
    "int64_t":$accumulateBlock,
    "int64_t":$expUlps
  );
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// The assumptions the certificate rests on, as printed in `assumes`.
    ::llvm::SmallVector<::llvm::StringRef> getAssumptions() const;
  }];
}

def KVPrec_PlanAttr : KVPrec_Attr<"Plan", "plan"> {
  let summary = "Per layer, head and position class storage formats";
  let description = [{
    A precision plan covers a cache of `layers x heads x capacity`
    positions. Positions `[0, sink)` form the sink prefix; positions
    `[sink, capacity)` form the body, cut into blocks of `block` positions
    (the last one may be short); the `window` most recent positions before
    the current length are kept in the window format and take their body
    block's format when they age out of the window.

    `formats` is a table of `#kvprec.format`s; the three `array<i8>`s index
    into it. `sink_formats` and `window_formats` hold one entry per
    (layer, head, K/V) in the order `((layer * heads) + head) * 2 + kv` with
    `kv` 0 for K and 1 for V, or a single entry that applies to all.
    `body_formats` holds one entry per (layer, head, K/V) (a uniform body),
    a single entry, or one entry per body block of each (layer, head, K/V)
    (`index * num_blocks + block`), the compact per-block form.

    `certificate` is present when the plan was derived from calibration and
    its bound checked.
  }];
  let parameters = (ins
    "int64_t":$layers,
    "int64_t":$heads,
    "int64_t":$capacity,
    "int64_t":$block,
    "int64_t":$sink,
    "int64_t":$window,
    "::mlir::ArrayAttr":$formats,
    "::mlir::DenseI8ArrayAttr":$sink_formats,
    "::mlir::DenseI8ArrayAttr":$body_formats,
    "::mlir::DenseI8ArrayAttr":$window_formats,
    OptionalParameter<"CertificateAttr">:$certificate
  );
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// Number of body blocks: ceil((capacity - sink) / block).
    int64_t getNumBodyBlocks() const;
    /// True when body_formats has one entry per body block.
    bool isPerBlock() const;
    /// Formats of one (layer, head, kv) item; kv is 0 for K and 1 for V.
    StorageFormatAttr getSinkFormat(int64_t layer, int64_t head, int kv) const;
    StorageFormatAttr getWindowFormat(int64_t layer, int64_t head, int kv) const;
    StorageFormatAttr getBodyFormat(int64_t layer, int64_t head, int kv,
                                    int64_t block) const;
    /// Storage bytes of the whole cache under this plan with `headDim`
    /// channels, counting the window at its window format.
    double getTotalBytes(int64_t headDim) const;
    /// The plan as plain data (index lists expanded) for `headDim` channels.
    ::kvprec::certify::Plan getPlainPlan(int64_t headDim) const;
  }];
}

#endif // KVPREC_DIALECT_KVPREC_IR_KVPRECATTRS_TD
