//===- TargetInfo.h - what storage materialization asks of a target -*- C++
//-*-===//
//
// The target differences kvprec-materialize-storage's patterns depend on,
// behind one small interface, so that a GPU lowering can reuse the same
// patterns with its own answers instead of forking them.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_CONVERSION_MATERIALIZESTORAGE_TARGETINFO_H
#define KVPREC_CONVERSION_MATERIALIZESTORAGE_TARGETINFO_H

#include "mlir/IR/ImplicitLocOpBuilder.h"

#include <cstdint>

namespace mlir::kvprec {

/// The largest head_dim the lowering takes, on every target. Its kernels
/// hold whole rows as vector<head_dim x f32> values (on the CPU) or a
/// row's lane pieces and query rows in shared memory (on NVPTX); LLVM's
/// compile time and memory grow with the vector width, and at head_dim
/// 65536 one cache took minutes and gigabytes to compile. Models use 64 to
/// 256.
inline constexpr int64_t kMaxLoweredHeadDim = 1024;

class NVPTXStorageTargetInfo;

class StorageTargetInfo {
public:
  virtual ~StorageTargetInfo();
  /// f32 lanes of one vector register: the width of the softmax loops
  /// (per-row kernels work on whole head_dim vectors, which the backend
  /// splits into registers).
  virtual int64_t getF32Lanes() const = 0;
  /// Parts each KV head's positions are split into for parallel execution
  /// (scf.parallel over (KV head, part)); 1 runs attention sequentially.
  virtual int64_t getPositionSplits() const = 0;
  /// Bytes ahead of the row being read that the row kernels prefetch (0:
  /// none): a CPU's hardware prefetcher stops while attention computes
  /// between loads; a GPU hides latency with other warps instead.
  virtual int64_t getPrefetchDistance() const = 0;
  /// Bytes of f32 rows attention decodes before it uses them (a CPU keeps
  /// them within L1: a 64-row tile of head_dim 128 is 32 KiB).
  virtual int64_t getDecodeBufferBytes() const = 0;
  /// Whether emitTableLookup16 exists: without it int4 and int2 codes
  /// decode through shifts and conversions.
  virtual bool hasTableLookup16() const { return false; }
  /// result[l] = table[indices[l] mod 16] for a vector<16xf32> table and
  /// vector<16xi32> indices (only their low 4 bits count); only where
  /// hasTableLookup16().
  virtual Value emitTableLookup16(ImplicitLocOpBuilder &b, Value table,
                                  Value indices) const {
    return {};
  }
  /// Elements of a row the store kernels quantize at a time (0: whole
  /// rows, as vectors of head_dim lanes); the same bits either way.
  virtual int64_t getStorePieceLanes() const { return 0; }
  /// The NVPTX target's own answers; null for a CPU.
  virtual const NVPTXStorageTargetInfo *getNVPTX() const { return nullptr; }
};

/// x86-64 CPUs with 512-bit vectors (AVX-512), `threads` OpenMP threads.
class CPUStorageTargetInfo final : public StorageTargetInfo {
public:
  CPUStorageTargetInfo(int64_t threads, int64_t prefetchDistance,
                       bool avx512Permute = false, int64_t vectorBits = 512,
                       int64_t storePieceLanes = 0)
      : threads(threads), prefetchDistance(prefetchDistance),
        avx512Permute(avx512Permute), vectorBits(vectorBits),
        storePieceLanes(storePieceLanes) {}
  /// Whole rows unless asked (store-pieces, which tests the GPU's form).
  int64_t getStorePieceLanes() const override { return storePieceLanes; }
  int64_t getF32Lanes() const override { return vectorBits / 32; }
  int64_t getPositionSplits() const override { return threads; }
  int64_t getPrefetchDistance() const override { return prefetchDistance; }
  int64_t getDecodeBufferBytes() const override { return 16384; }
  /// vpermps (AVX-512F) when asked for (kvprec-to-llvm{x86-avx512=true}).
  bool hasTableLookup16() const override {
    return avx512Permute && vectorBits == 512;
  }
  Value emitTableLookup16(ImplicitLocOpBuilder &b, Value table,
                          Value indices) const override;

private:
  int64_t threads, prefetchDistance;
  bool avx512Permute;
  int64_t vectorBits, storePieceLanes;
};

/// NVIDIA GPUs through NVPTX (kvprec-to-nvvm{chip=sm_XY}). The format
/// kernels that device code shares with the CPU (append, load) run in one
/// GPU thread, so they keep whole-row vectors and need no prefetch;
/// attention has kernels of its own (GPUCacheCodegen.cpp), shaped by the
/// answers below.
class NVPTXStorageTargetInfo final : public StorageTargetInfo {
public:
  /// `sm` is the compute capability times ten (80 for sm_80).
  explicit NVPTXStorageTargetInfo(int64_t sm) : sm(sm) {}
  int64_t getF32Lanes() const override { return 4; }
  int64_t getPositionSplits() const override { return 1; }
  int64_t getPrefetchDistance() const override { return 0; }
  int64_t getDecodeBufferBytes() const override { return 16384; }
  /// A thread holding a whole row's vectors spills; 16 lanes do not.
  int64_t getStorePieceLanes() const override { return 16; }
  const NVPTXStorageTargetInfo *getNVPTX() const override { return this; }

  int64_t getSM() const { return sm; }
  /// Threads of one attention block: four warps.
  int64_t getBlockThreads() const { return 128; }
  /// f32 registers one thread's accumulators (or query values) may take:
  /// elements per lane times the query heads a block handles.
  int64_t getAccumulatorRegisters() const { return 64; }
  /// Bytes of shared memory one attention block's logits may take.
  int64_t getLogitBytes() const { return 16384; }
  /// Whether f8 pairs widen through cvt.rn.f16x2.e4m3x2 / e5m2x2 (sm_89
  /// and later with PTX 8.1; kvprec-to-nvvm emits PTX 8.0 for sm_90, which
  /// has it from PTX 7.8); elsewhere the integer decode runs.
  bool hasFp8Convert() const { return sm >= 90; }

private:
  int64_t sm;
};

} // namespace mlir::kvprec

#endif // KVPREC_CONVERSION_MATERIALIZESTORAGE_TARGETINFO_H
