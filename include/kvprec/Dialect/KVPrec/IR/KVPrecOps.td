//===- KVPrecOps.td - kvprec operations --------------------*- tablegen -*-===//

#ifndef KVPREC_DIALECT_KVPREC_IR_KVPRECOPS_TD
#define KVPREC_DIALECT_KVPREC_IR_KVPRECOPS_TD

include "kvprec/Dialect/KVPrec/IR/KVPrecDialect.td"
include "kvprec/Dialect/KVPrec/IR/KVPrecTypes.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

// The storage behind a cache value. Appends write it and attention reads it,
// so a cache behaves like a memref: a resource with side effects.
def KVPrec_CacheResource : Resource<"::mlir::kvprec::CacheResource">;

// K and V of new tokens, or a range being loaded: [tokens, kv_heads, head_dim].
def KVPrec_TokenMemRef : MemRefRankOf<[F32, F16, BF16], [3]>;
// One query or output vector per query head: [q_heads, head_dim].
def KVPrec_HeadMemRef : MemRefRankOf<[F32, F16, BF16], [2]>;

def KVPrec_AllocOp : KVPrec_Op<"alloc", [
    DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "Allocates an empty KV cache";
  let description = [{
    Creates a cache of the result type's shape, holding no positions yet. The
    optional `calibration` names the `kvprec.calibration` whose statistics
    describe this cache; its shape must match.

    ```mlir
    %cache = kvprec.alloc calibration @stories260K
        : !kvprec.cache<5x4x512x8xf32>
    ```
  }];
  let arguments = (ins OptionalAttr<FlatSymbolRefAttr>:$calibration);
  let results = (outs Res<KVPrec_CacheType, "the new cache",
                          [MemAlloc<KVPrec_CacheResource>]>:$cache);
  let assemblyFormat = [{
    (`calibration` $calibration^)? attr-dict `:` qualified(type($cache))
  }];
}

def KVPrec_DeallocOp : KVPrec_Op<"dealloc"> {
  let summary = "Frees a KV cache";
  let description = [{
    Releases the storage of a cache made by `kvprec.alloc`. The cache must
    not be used afterwards.

    ```mlir
    kvprec.dealloc %cache : !kvprec.cache<5x4x512x8xf32>
    ```
  }];
  let arguments = (ins Arg<KVPrec_CacheType, "the cache to free",
                           [MemFree<KVPrec_CacheResource>]>:$cache);
  let assemblyFormat = "$cache attr-dict `:` qualified(type($cache))";
}

def KVPrec_AppendOp : KVPrec_Op<"append"> {
  let summary = "Stores the K and V of new tokens of one layer";
  let description = [{
    Writes `keys` and `values`, each `[tokens, kv_heads, head_dim]`, as
    positions `[position, position + tokens)` of layer `layer`. With a plan,
    each position is quantized on store to the format of its class (sink,
    window); positions that leave the recent window are demoted to their body
    block's format. `keys` are taken as cached (after RoPE).

    The cache counts the positions appended to each layer (its fill count),
    and the class of every position follows from that count. `position` must
    equal the layer's fill count and `position + tokens` must not exceed the
    capacity; otherwise the append is a run-time error that writes nothing
    (docs/abi.md).

    ```mlir
    kvprec.append %k, %v into %cache[0] at %pos
        : memref<1x4x8xf32>, memref<1x4x8xf32> into !kvprec.cache<5x4x512x8xf32>
    ```
  }];
  let arguments = (ins
    Arg<KVPrec_TokenMemRef, "new keys", [MemRead]>:$keys,
    Arg<KVPrec_TokenMemRef, "new values", [MemRead]>:$values,
    Arg<KVPrec_CacheType, "the cache",
        [MemRead<KVPrec_CacheResource>, MemWrite<KVPrec_CacheResource>]>:$cache,
    ConfinedAttr<I64Attr, [IntNonNegative]>:$layer,
    Index:$position
  );
  let assemblyFormat = [{
    $keys `,` $values `into` $cache `[` $layer `]` `at` $position attr-dict
    `:` type($keys) `,` type($values) `into` qualified(type($cache))
  }];
  let hasVerifier = 1;
}

def KVPrec_AttendOp : KVPrec_Op<"attend"> {
  let summary = "Single-query grouped-query decode attention over the cache";
  let description = [{
    For every query head `h` of `query` (`[q_heads, head_dim]`) computes
    `softmax(scale * q_h . K_t) . V_t` over positions `[0, length)` of layer
    `layer`, reading K and V from KV head `h / (q_heads / kv_heads)`, and
    writes it to row `h` of `output`. The cache is dequantized on load and
    the softmax is computed online (stable). `scale` defaults to
    `1 / sqrt(head_dim)`. `length` must equal the layer's fill count (the
    positions appended so far) and be positive; any other value is a
    run-time error that writes nothing.

    With a `-> f32` result the op also returns the run-time certificate of
    docs/error-bounds.md sections 5 and 8, computed for this actual query in
    the same pass over the cache: a bound on the infinity-norm error (over
    all query heads) of the output against exact attention over the keys
    and values as appended, from the storage formats and the kernel's own
    f32 arithmetic. It assumes only the formats' per-element error model
    and that arithmetic, no calibration (docs/abi.md,
    `P_attend_certified`).

    ```mlir
    %bound = kvprec.attend %q, %cache[0] len %len into %out
        : memref<8x8xf32>, !kvprec.cache<5x4x512x8xf32> into memref<8x8xf32> -> f32
    ```
  }];
  let arguments = (ins
    Arg<KVPrec_HeadMemRef, "queries, one per query head", [MemRead]>:$query,
    Arg<KVPrec_CacheType, "the cache", [MemRead<KVPrec_CacheResource>]>:$cache,
    ConfinedAttr<I64Attr, [IntNonNegative]>:$layer,
    Index:$length,
    Arg<KVPrec_HeadMemRef, "attention outputs", [MemWrite]>:$output,
    OptionalAttr<F32Attr>:$scale
  );
  let results = (outs Optional<F32>:$bound);
  let assemblyFormat = [{
    $query `,` $cache `[` $layer `]` `len` $length `into` $output attr-dict
    `:` type($query) `,` qualified(type($cache)) `into` type($output)
    (`->` type($bound)^)?
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// The softmax scale: the `scale` attribute or 1/sqrt(head_dim).
    double getEffectiveScale();
  }];
}

def KVPrec_LoadOp : KVPrec_Op<"load"> {
  let summary = "Dequantizes a position range of one layer";
  let description = [{
    Reads positions `[start, start + tokens)` of layer `layer`, dequantized to
    the element type of `keys` and `values` (each
    `[tokens, kv_heads, head_dim]`), for interoperation with code that
    expects a plain cache. The range must lie within the positions appended
    to the layer so far (its fill count); otherwise the load is a run-time
    error that writes nothing.

    ```mlir
    kvprec.load %cache[2] from %start into %k, %v
        : !kvprec.cache<5x4x512x8xf32> into memref<?x4x8xf32>, memref<?x4x8xf32>
    ```
  }];
  let arguments = (ins
    Arg<KVPrec_CacheType, "the cache", [MemRead<KVPrec_CacheResource>]>:$cache,
    ConfinedAttr<I64Attr, [IntNonNegative]>:$layer,
    Index:$start,
    Arg<KVPrec_TokenMemRef, "loaded keys", [MemWrite]>:$keys,
    Arg<KVPrec_TokenMemRef, "loaded values", [MemWrite]>:$values
  );
  let assemblyFormat = [{
    $cache `[` $layer `]` `from` $start `into` $keys `,` $values attr-dict
    `:` qualified(type($cache)) `into` type($keys) `,` type($values)
  }];
  let hasVerifier = 1;
}

def KVPrec_CalibrationOp : KVPrec_Op<"calibration", [Symbol,
    HasParent<"::mlir::ModuleOp">]> {
  let summary = "Calibration statistics of a model's KV caches";
  let description = [{
    Holds the statistics that docs/error-bounds.md section 5 requires, as
    named tensors (dense or `dense_resource` elements) in `stats`: attention
    mass envelopes per position class, per-channel query magnitudes, and K and
    V ranges and spans per channel and per block, with sample counts. The
    shape fields describe the model the statistics came from, and
    `softmax_scale` the scale its attention used (the masses are valid only
    at that scale); caches that
    name this op through `kvprec.alloc calibration @name` must match them.
    docs/calibration.md lists every tensor and its shape.

    `layer_kl_sensitivity`, when present, is the measured downstream
    sensitivity of each layer (kvprec-calib collect --sensitivity-error):
    the mean KL divergence of the model's next-token distribution per squared
    infinity-norm error of that layer's attention outputs, measured at the
    error `sensitivity_error`. `kvprec-assign-precision{kl=...}` turns a KL
    target into per-layer tolerances with it.

    `kvprec-import-calibration` creates this op from a statistics file.

    ```mlir
    kvprec.calibration @stories260K <{layers = 5, kv_heads = 4, q_heads = 8,
        head_dim = 8, sink = 4, window = 64, block = 32, max_positions = 97,
        model = "stories260K", synthetic = false,
        softmax_scale = 0.35355339059327373 : f64, stats = {...}}>
    ```
  }];
  let arguments = (ins
    SymbolNameAttr:$sym_name,
    ConfinedAttr<I64Attr, [IntPositive]>:$layers,
    ConfinedAttr<I64Attr, [IntPositive]>:$kv_heads,
    ConfinedAttr<I64Attr, [IntPositive]>:$q_heads,
    ConfinedAttr<I64Attr, [IntPositive]>:$head_dim,
    ConfinedAttr<I64Attr, [IntNonNegative]>:$sink,
    ConfinedAttr<I64Attr, [IntNonNegative]>:$window,
    ConfinedAttr<I64Attr, [IntPositive]>:$block,
    ConfinedAttr<I64Attr, [IntPositive]>:$max_positions,
    ConfinedAttr<I64Attr, [IntNonNegative]>:$query_samples,
    StrAttr:$model,
    BoolAttr:$synthetic,
    F64Attr:$softmax_scale,
    DictionaryAttr:$stats,
    OptionalAttr<DenseF64ArrayAttr>:$layer_kl_sensitivity,
    OptionalAttr<F64Attr>:$sensitivity_error
  );
  let assemblyFormat = "$sym_name prop-dict attr-dict";
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// The named statistics tensor, or null.
    ::mlir::ElementsAttr getStat(::llvm::StringRef name);
  }];
}

#endif // KVPREC_DIALECT_KVPREC_IR_KVPRECOPS_TD
