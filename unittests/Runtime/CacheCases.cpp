//===- CacheCases.cpp - generated cache code against the reference --------===//
//
// Compiles planned caches with kvprec-to-llvm (and kvprec-to-nvvm for
// Case::gpu) and runs them in-process:
//  * after every append, the arena's codes, scales and zero points of every
//    live position are bit-identical to what the plan emulator (and with
//    it lib/Analysis/Quantizer) stores, at the places docs/abi.md gives;
//  * load returns exactly the emulator's dequantized values;
//  * attend matches attention computed in double over the same stored
//    values within f32 rounding;
//  * bad calls return their status and leave the arena untouched.
// Every format, both granularities, sinks, windows, per-block bodies,
// several head dims and GQA ratios.
//
//===----------------------------------------------------------------------===//

#include "CacheCases.h"

#include "kvprec/Runtime/CompiledCache.h"
#include "kvprec/Runtime/EmulatedGPUCache.h"
#ifdef KVPREC_GPU_TESTS
#include "kvprec/Runtime/GPUCompiledCache.h"
#endif

#include "kvprec/Analysis/SoftFloat.h"
#include "kvprec/Analysis/StreamingCertificate.h"
#include "kvprec/Certify/PlanEmulation.h"
#include "kvprec/Dialect/KVPrec/IR/KVPrecAttrs.h"
#include "kvprec/Dialect/KVPrec/IR/KVPrecDialect.h"
#include "kvprec/Dialect/KVPrec/IR/KVPrecTypes.h"
#include "kvprec/Format/CacheLayout.h"

#include "mlir/AsmParser/AsmParser.h"
#include "mlir/IR/MLIRContext.h"

#include "gtest/gtest.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <random>

using namespace kvprec;
namespace an = kvprec::analysis;
namespace cf = kvprec::certify;
namespace lay = kvprec::layout;
using runtime::Arena;
using runtime::CompiledCache;

using kvprec::testing::Case;

namespace {

/// The bits a stored code occupies in its element (low bits).
uint32_t codeBits(const an::StorageFormat &format, int32_t code) {
  unsigned bits = an::getBitWidth(format.kind);
  if (bits == 32)
    return uint32_t(code);
  return uint32_t(code) & ((uint32_t(1) << bits) - 1);
}

uint32_t scaleBits(an::StorageKind kind, double value) {
  if (kind == an::StorageKind::F32) {
    float f = float(value);
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    return bits;
  }
  return an::encodeFloat(kind, value);
}

uint32_t readBits(const uint8_t *at, int64_t bytes) {
  uint32_t value = 0;
  std::memcpy(&value, at, bytes);
  return value;
}

/// Checks the arena bytes of every live position of `item` against the
/// emulator. Returns the number of mismatches (reported once each kind).
int64_t compareArena(const lay::ArenaLayout &layout, const uint8_t *arena,
                     int64_t item, const cf::EmulatedStream &stream) {
  const cf::Plan &plan = layout.getPlan();
  const int64_t d = plan.geometry.headDim, length = stream.getLength();
  int64_t mismatches = 0;
  for (int64_t p = 0; p < length; ++p) {
    int64_t row = 0;
    const lay::Run *run = lay::findRow(layout, item, p, length, row);
    if (!run) {
      ADD_FAILURE() << "no row for position " << p;
      return 1;
    }
    const an::StorageFormat &format = plan.formats[run->formatIndex];
    lay::RowShape shape = lay::getRowShape(format, d);
    unsigned bits = an::getBitWidth(format.kind);
    for (int64_t j = 0; j < d; ++j) {
      uint32_t expected = codeBits(format, stream.getCodes()[p * d + j]);
      uint32_t actual;
      const uint8_t *rowStart = arena + run->codeOffset + row * shape.rowBytes;
      if (bits >= 8) {
        actual = readBits(rowStart + j * (bits / 8), bits / 8);
      } else {
        int64_t byte = j % shape.rowBytes, field = j / shape.rowBytes;
        actual = (rowStart[byte] >> (field * bits)) & ((1u << bits) - 1);
      }
      if (actual != expected && mismatches++ < 3)
        ADD_FAILURE() << an::getFormatName(format) << " position " << p
                      << " channel " << j << ": code " << actual
                      << ", expected " << expected;
      if (!an::isScaled(format))
        continue;
      int64_t scaleIndex =
          format.granularity == an::Granularity::TokenGroup
              ? row * shape.scaleValues + j / format.groupSize
              : (row / format.groupSize) * shape.scaleValues + j;
      const an::GroupScale &group = stream.getScales()[p * d + j];
      uint32_t stored = readBits(arena + run->scaleOffset +
                                     scaleIndex * shape.scaleValueBytes,
                                 shape.scaleValueBytes);
      if (stored != scaleBits(format.scaleKind, group.scale) &&
          mismatches++ < 3)
        ADD_FAILURE() << an::getFormatName(format) << " position " << p
                      << " channel " << j << ": scale bits " << stored
                      << ", expected " << group.scale;
      if (format.scheme == an::QuantScheme::Asymmetric) {
        uint32_t zero = readBits(arena + run->zeroOffset +
                                     scaleIndex * shape.scaleValueBytes,
                                 shape.scaleValueBytes);
        if (zero != scaleBits(format.scaleKind, group.zeroPoint) &&
            mismatches++ < 3)
          ADD_FAILURE() << an::getFormatName(format) << " position " << p
                        << " channel " << j << ": zero point bits " << zero
                        << ", expected " << group.zeroPoint;
      }
    }
  }
  return mismatches;
}

} // namespace

std::string kvprec::testing::typeText(const Case &c) {
  std::string formats;
  for (const std::string &f : c.formats)
    formats += (formats.empty() ? "" : ", ") + f;
  return "!kvprec.cache<" + std::to_string(c.layers) + "x" +
         std::to_string(c.heads) + "x" + std::to_string(c.capacity) + "x" +
         std::to_string(c.headDim) +
         "xf32, #kvprec.plan<layers = " + std::to_string(c.layers) +
         ", heads = " + std::to_string(c.heads) +
         ", capacity = " + std::to_string(c.capacity) +
         ", block = " + std::to_string(c.block) +
         ", sink = " + std::to_string(c.sink) +
         ", window = " + std::to_string(c.window) + ", formats = [" + formats +
         "], sink_formats = " + c.sinkFormats +
         ", body_formats = " + c.bodyFormats +
         ", window_formats = " + c.windowFormats + ">>";
}

void kvprec::testing::runCase(const Case &c) {
  SCOPED_TRACE(c.name);
  mlir::MLIRContext context;
  context.loadDialect<mlir::kvprec::KVPrecDialect>();
  std::string text = typeText(c);
  auto cache = llvm::dyn_cast_or_null<mlir::kvprec::CacheType>(
      mlir::parseType(text, &context));
  ASSERT_TRUE(cache) << text;
  cf::Plan plan = cache.getPlan().getPlainPlan(c.headDim);
  std::unique_ptr<lay::ArenaLayout> layout;
  ASSERT_TRUE(lay::ArenaLayout::build(plan, layout).ok());

  auto compiled =
      CompiledCache::compile(text, /*threads=*/1, /*runtimeCertificate=*/true,
                             /*prefetchDistance=*/8192, c.storePieces);
  ASSERT_TRUE(bool(compiled)) << llvm::toString(compiled.takeError());
  const CompiledCache &code = **compiled;
  std::unique_ptr<CompiledCache> split;
  if (c.threads > 1) {
    auto parallel =
        CompiledCache::compile(text, c.threads, /*runtimeCertificate=*/true,
                               /*prefetchDistance=*/8192, c.storePieces);
    ASSERT_TRUE(bool(parallel)) << llvm::toString(parallel.takeError());
    split = std::move(*parallel);
  }
  ASSERT_EQ(code.getArenaBytes(), layout->getTotalBytes());
  Arena arena(code.getArenaBytes());
  std::memset(arena.data, 0xA5, arena.size); // Nothing may rely on zeros.
  ASSERT_EQ(code.init(arena.data, arena.size), 0);
  // The GPU code (Case::gpu) works on an arena of its own, which must stay
  // equal to the CPU's.
  std::unique_ptr<runtime::CacheCode> gpu;
  Arena gpuArena(c.gpu ? code.getArenaBytes() : 0);
  if (c.gpu && !c.emulatedChip.empty()) {
    auto emulated = runtime::EmulatedGPUCache::compile(
        text, c.emulatedChip, /*runtimeCertificate=*/true);
    ASSERT_TRUE(bool(emulated)) << llvm::toString(emulated.takeError());
    gpu = std::move(*emulated);
    ASSERT_EQ(gpu->getArenaBytes(), code.getArenaBytes());
    std::memset(gpuArena.data, 0xA5, gpuArena.size);
    ASSERT_EQ(gpu->init(gpuArena.data, gpuArena.size), 0);
  } else if (c.gpu) {
#ifdef KVPREC_GPU_TESTS
    auto compiledGPU = runtime::GPUCompiledCache::compile(
        text, "", /*runtimeCertificate=*/true);
    ASSERT_TRUE(bool(compiledGPU)) << llvm::toString(compiledGPU.takeError());
    gpu = std::move(*compiledGPU);
    ASSERT_EQ(gpu->getArenaBytes(), code.getArenaBytes());
    std::memset(gpuArena.data, 0xA5, gpuArena.size);
    ASSERT_EQ(gpu->init(gpuArena.data, gpuArena.size), 0);
#else
    FAIL() << "built without the GPU runtime";
#endif
  }
  // The code whose calls the checks below make: the GPU's where asked for.
  const runtime::CacheCode &primary =
      gpu ? *gpu : static_cast<const runtime::CacheCode &>(code);
  Arena &primaryArena = gpu ? gpuArena : arena;
  int64_t certifiedCases = 0;
  double worstRatio = 0;

  an::DequantizerConfig dequantizer;
  std::vector<cf::EmulatedStream> streams;
  for (int64_t item = 0; item < plan.getNumItems(); ++item)
    streams.emplace_back(plan, item, dequantizer);

  std::mt19937 rng(1234);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t h = c.heads, d = c.headDim, q = c.heads * c.groupRatio;
  std::vector<float> channelScale(d), channelShift(d);
  for (int64_t j = 0; j < d; ++j) {
    channelScale[j] = std::exp(normal(rng));
    channelShift[j] = normal(rng) * 0.5f;
  }
  int64_t rowsMade = 0;
  auto makeTokens = [&](int64_t tokens, int64_t step) {
    std::vector<float> data(tokens * h * d);
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t i = 0; i < h * d; ++i) {
        int64_t j = i % d;
        if (c.generate) {
          if (j == 0)
            ++rowsMade;
          data[t * h * d + i] = c.generate(rng, rowsMade, j);
          continue;
        }
        // Some rows all zero; the rest shifted and scaled per channel.
        data[t * h * d + i] =
            (step + t) % 7 == 3
                ? 0.0f
                : normal(rng) * channelScale[j] + channelShift[j];
      }
    return data;
  };

  for (int64_t layer = 0; layer < c.layers; ++layer) {
    int64_t fill = 0, step = 0;
    while (fill < c.capacity) {
      int64_t tokens = std::min<int64_t>(1 + step % 3, c.capacity - fill);
      std::vector<float> keys = makeTokens(tokens, step),
                         values = makeTokens(tokens, step + 11);
      ASSERT_EQ(code.append(arena.data, arena.size, layer, keys.data(),
                            values.data(), tokens, fill),
                0)
          << "append at " << fill;
      if (gpu) {
        ASSERT_EQ(gpu->append(gpuArena.data, gpuArena.size, layer, keys.data(),
                              values.data(), tokens, fill),
                  0)
            << "GPU append at " << fill;
        // Every byte: codes, scales, zero points, staging, inherited
        // bounds and fill counts.
        ASSERT_EQ(std::memcmp(gpuArena.data, arena.data, arena.size), 0)
            << "the GPU's arena differs from the CPU's after the append at "
            << fill;
      }
      for (int64_t t = 0; t < tokens; ++t)
        for (int64_t head = 0; head < h; ++head)
          for (int kv = 0; kv < 2; ++kv) {
            const std::vector<float> &source = kv ? values : keys;
            an::Status status = streams[plan.getItem(layer, head, kv)].append(
                &source[(t * h + head) * d]);
            ASSERT_TRUE(status.ok()) << status.getMessage();
          }
      fill += tokens;
      ++step;

      // Arena bytes of every live position.
      for (int64_t head = 0; head < h; ++head)
        for (int kv = 0; kv < 2; ++kv) {
          int64_t item = plan.getItem(layer, head, kv);
          ASSERT_EQ(
              compareArena(*layout, primaryArena.data, item, streams[item]), 0)
              << "layer " << layer << " head " << head << " kv " << kv
              << " length " << fill;
        }
      // load == the emulator's stored values, bit for bit.
      std::vector<float> loadedK(fill * h * d), loadedV(fill * h * d);
      ASSERT_EQ(primary.load(primaryArena.data, primaryArena.size, layer, 0,
                             fill, loadedK.data(), loadedV.data()),
                0);
      for (int64_t p = 0; p < fill; ++p)
        for (int64_t head = 0; head < h; ++head)
          for (int64_t j = 0; j < d; ++j)
            for (int kv = 0; kv < 2; ++kv) {
              float got = (kv ? loadedV : loadedK)[(p * h + head) * d + j];
              float want = float(
                  streams[plan.getItem(layer, head, kv)].getStored()(p, j));
              ASSERT_EQ(std::memcmp(&got, &want, 4), 0)
                  << "load position " << p << " head " << head << " channel "
                  << j << (kv ? " V" : " K") << ": " << got << " vs " << want;
            }
      // Attention for each GQA ratio of the case (the same code).
      std::vector<int64_t> ratios{c.groupRatio};
      ratios.insert(ratios.end(), c.moreGroupRatios.begin(),
                    c.moreGroupRatios.end());
      for (int64_t ratio : ratios) {
        const int64_t q = h * ratio;
        // attend against double-precision attention over the stored values.
        std::vector<float> query(q * d), output(q * d);
        for (float &x : query)
          x = normal(rng);
        float scale = 1.0f / std::sqrt(float(d));
        ASSERT_EQ(code.attend(arena.data, arena.size, layer, query.data(), q,
                              fill, output.data(), scale),
                  0);
        std::vector<float> gpuOutput(q * d);
        if (gpu) {
          ASSERT_EQ(gpu->attend(gpuArena.data, gpuArena.size, layer,
                                query.data(), q, fill, gpuOutput.data(), scale),
                    0);
        }
        std::vector<float> splitOutput(q * d);
        if (split) {
          ASSERT_EQ(split->attend(arena.data, arena.size, layer, query.data(),
                                  q, fill, splitOutput.data(), scale),
                    0);
        }
        for (int64_t head = 0; head < q; ++head) {
          int64_t kvHead = head / ratio;
          const cf::EmulatedStream &k = streams[plan.getItem(layer, kvHead, 0)];
          const cf::EmulatedStream &v = streams[plan.getItem(layer, kvHead, 1)];
          std::vector<double> logits(fill);
          double maxLogit = -INFINITY, logitError = 0;
          const double u = 0x1p-24;
          for (int64_t p = 0; p < fill; ++p) {
            double dot = 0, magnitude = 0;
            for (int64_t j = 0; j < d; ++j) {
              dot += double(query[head * d + j]) * k.getStored()(p, j);
              magnitude += std::fabs(query[head * d + j] * k.getStored()(p, j));
            }
            logits[p] = dot * scale;
            maxLogit = std::max(maxLogit, logits[p]);
            // f32 dot product and scaling (Higham's gamma_{d+1}).
            logitError = std::max(logitError, (d + 1) * u * magnitude * scale);
          }
          double sum = 0, vmax = 0;
          for (int64_t p = 0; p < fill; ++p)
            sum += logits[p] = std::exp(logits[p] - maxLogit);
          for (int64_t j = 0; j < d; ++j) {
            double expected = 0;
            for (int64_t p = 0; p < fill; ++p) {
              expected += logits[p] / sum * v.getStored()(p, j);
              vmax = std::max(vmax, std::fabs(v.getStored()(p, j)));
            }
            // Logit errors move the weights by a factor within
            // e^(+-2 logitError); exp, the sums over <= capacity terms and
            // the normalisation add a few ulps each.
            double tolerance =
                vmax * (std::expm1(2 * logitError) + 8 * (fill + d) * u) +
                1e-30;
            ASSERT_NEAR(output[head * d + j], expected, tolerance)
                << "attend head " << head << " channel " << j << " length "
                << fill;
            if (gpu) {
              ASSERT_NEAR(gpuOutput[head * d + j], expected, tolerance)
                  << "GPU attend head " << head << " channel " << j
                  << " length " << fill << " GQA " << ratio;
            }
            if (split) {
              ASSERT_NEAR(splitOutput[head * d + j], expected, tolerance)
                  << "attend with " << c.threads << " splits, head " << head
                  << " channel " << j << " length " << fill;
            }
          }
        }
        // The run-time certificate: the same output bit for bit, and per
        // query head a bound on the error against exact attention over the
        // values as appended, never below the double-precision reference of
        // its streaming form and within its stated f32 margin of it.
        std::vector<float> certifiedOutput(q * d), bounds(q, -1.0f);
        ASSERT_EQ(code.attendCertified(
                      arena.data, arena.size, layer, query.data(), q, fill,
                      certifiedOutput.data(), scale, bounds.data()),
                  0);
        ASSERT_EQ(std::memcmp(certifiedOutput.data(), output.data(),
                              output.size() * sizeof(float)),
                  0);
        // The GPU's certified attention (the CPU's, a thread per split and
        // KV head): its output within its own bounds, checked below.
        std::vector<float> gpuCertifiedOutput(q * d), gpuBounds(q, -1.0f);
        if (gpu) {
          ASSERT_EQ(gpu->attendCertified(gpuArena.data, gpuArena.size, layer,
                                         query.data(), q, fill,
                                         gpuCertifiedOutput.data(), scale,
                                         gpuBounds.data()),
                    0);
        }
        if (split) {
          // Splits share the tiles, so the bounds are the same bits.
          std::vector<float> splitBounds(q);
          ASSERT_EQ(split->attendCertified(
                        arena.data, arena.size, layer, query.data(), q, fill,
                        certifiedOutput.data(), scale, splitBounds.data()),
                    0);
          ASSERT_EQ(std::memcmp(splitBounds.data(), bounds.data(),
                                bounds.size() * sizeof(float)),
                    0);
        }
        for (int64_t head = 0; head < q; ++head) {
          int64_t kvHead = head / ratio;
          const cf::EmulatedStream &k = streams[plan.getItem(layer, kvHead, 0)];
          const cf::EmulatedStream &v = streams[plan.getItem(layer, kvHead, 1)];
          std::vector<double> queryD(d), scaledQuery(d);
          for (int64_t j = 0; j < d; ++j) {
            queryD[j] = query[head * d + j];
            scaledQuery[j] = queryD[j] * double(scale) * std::sqrt(double(d));
          }
          an::KernelRoundingModel model;
          model.numRescales = 1;
          an::StreamingCertificate reference;
          ASSERT_TRUE(an::computeStreamingCertificate(
                          queryD, k.getStored(), v.getStored(),
                          k.getErrorBounds(), v.getErrorBounds(), double(scale),
                          model, reference)
                          .ok());
          // The same with the inherited bounds the generated code keeps
          // (one per re-quantized block).
          an::StreamingCertificate modelled;
          ASSERT_TRUE(an::computeStreamingCertificate(
                          queryD, k.getStored(), v.getStored(),
                          k.getBlockwiseErrorBounds(),
                          v.getBlockwiseErrorBounds(), double(scale), model,
                          modelled)
                          .ok());
          an::AttentionResult exact =
              an::computeAttention(scaledQuery, k.getExact(), v.getExact());
          double measured = 0;
          for (int64_t j = 0; j < d; ++j)
            measured = std::max(
                measured, std::fabs(output[head * d + j] - exact.output[j]));
          ++certifiedCases;
          ASSERT_LE(measured, bounds[head])
              << "certificate violated: head " << head << " length " << fill;
          // The GPU's output against the same bound: its arithmetic is the
          // contract's (splits in place of blocks), so the CPU's run-time
          // certificate for this query bounds it too.
          if (gpu) {
            double measuredGPU = 0;
            for (int64_t j = 0; j < d; ++j)
              measuredGPU =
                  std::max(measuredGPU, std::fabs(gpuOutput[head * d + j] -
                                                  exact.output[j]));
            ASSERT_LE(measuredGPU, bounds[head])
                << "GPU output beyond the certificate: head " << head
                << " length " << fill << " GQA " << ratio;
            worstRatio = std::max(worstRatio, measuredGPU / bounds[head]);
            // The GPU's own certificate: its output within it, never below
            // the double reference, within the stated margin of it.
            double measuredCertified = 0;
            for (int64_t j = 0; j < d; ++j)
              measuredCertified =
                  std::max(measuredCertified,
                           std::fabs(gpuCertifiedOutput[head * d + j] -
                                     exact.output[j]));
            ASSERT_LE(measuredCertified, gpuBounds[head])
                << "GPU certified output beyond its certificate: head " << head
                << " length " << fill << " GQA " << ratio;
            ASSERT_GE(gpuBounds[head], reference.infNorm)
                << "GPU certificate: head " << head << " length " << fill;
            ASSERT_LE(gpuBounds[head], modelled.infNorm * (1 + 1e-3))
                << "GPU certificate: head " << head << " length " << fill;
            worstRatio =
                std::max(worstRatio, measuredCertified / gpuBounds[head]);
          }
          ASSERT_GE(bounds[head], reference.infNorm)
              << "head " << head << " length " << fill;
          ASSERT_LE(bounds[head], modelled.infNorm * (1 + 1e-3))
              << "head " << head << " length " << fill;
          worstRatio = std::max(worstRatio, measured / bounds[head]);
        }
      }
    }
  }

  std::printf("[certificate] %s: %lld query heads, measured/bound max "
              "%.4f\n",
              c.name.c_str(), (long long)certifiedCases, worstRatio);

  // Bad calls: a status, and the arena unchanged.
  std::vector<uint8_t> before(primaryArena.data,
                              primaryArena.data + primaryArena.size);
  auto unchanged = [&] {
    return std::memcmp(before.data(), primaryArena.data, primaryArena.size) ==
           0;
  };
  std::vector<float> one(h * d, 1.0f), query(q * d, 1.0f), output(q * d);
  EXPECT_EQ(primary.append(primaryArena.data, primaryArena.size, 0, one.data(),
                           one.data(), 1, c.capacity),
            1); // Full (position == fill == capacity).
  EXPECT_EQ(primary.append(primaryArena.data, primaryArena.size, 0, one.data(),
                           one.data(), 1, 3),
            2); // Position disagrees with the fill count.
  EXPECT_EQ(primary.append(primaryArena.data, primaryArena.size, c.layers,
                           one.data(), one.data(), 1, 0),
            3);
  EXPECT_EQ(primary.append(primaryArena.data, primaryArena.size - 1, 0,
                           one.data(), one.data(), 1, c.capacity),
            4);
  EXPECT_EQ(primary.attend(primaryArena.data, primaryArena.size, 0,
                           query.data(), q, c.capacity - 1, output.data(),
                           1.0f),
            2);
  // Query heads that are not a multiple of the KV heads (or none).
  std::vector<float> wide((q + 1) * d, 1.0f), wideOut((q + 1) * d);
  EXPECT_EQ(primary.attend(primaryArena.data, primaryArena.size, 0, wide.data(),
                           h > 1 ? q + 1 : 0, c.capacity, wideOut.data(), 1.0f),
            6);
  std::vector<float> rows(2 * h * d);
  EXPECT_EQ(primary.load(primaryArena.data, primaryArena.size, 0,
                         c.capacity - 1, 2, rows.data(), rows.data()),
            2);
  EXPECT_TRUE(unchanged());

  // A fresh layer state: a NaN row writes nothing.
  ASSERT_EQ(primary.init(primaryArena.data, primaryArena.size), 0);
  before.assign(primaryArena.data, primaryArena.data + primaryArena.size);
  std::vector<float> nan = one;
  nan[d / 2] = NAN;
  EXPECT_EQ(primary.append(primaryArena.data, primaryArena.size, 0, nan.data(),
                           one.data(), 1, 0),
            5);
  EXPECT_TRUE(unchanged());
}

Case kvprec::testing::gpuFormatCase(const char *format, int64_t headDim) {
  Case c;
  c.name = std::string(format) + " head_dim " + std::to_string(headDim);
  c.gpu = true;
  c.layers = 1;
  c.headDim = headDim;
  c.sink = 8; // Channel groups of 8 must tile the sink.
  c.groupRatio = 1;
  c.moreGroupRatios = {4, 8};
  c.formats = {format};
  return c;
}

Case kvprec::testing::gpuMixedCase() {
  Case c;
  c.name = "mixed";
  c.gpu = true;
  c.layers = 1;
  c.heads = 2;
  c.headDim = 128;
  c.capacity = 300;
  c.block = 16;
  c.sink = 4;
  c.window = 32;
  c.groupRatio = 1;
  c.moreGroupRatios = {4};
  c.formats = {"#kvprec.format<f16>",
               "#kvprec.format<i8, symmetric, token_group = 128, scale = f16>",
               "#kvprec.format<i4, asymmetric, token_group = 32, scale = f16>"};
  c.sinkFormats = "[0]";
  c.windowFormats = "[0]";
  c.bodyFormats = "[1, 2, 1, 2]";
  return c;
}
