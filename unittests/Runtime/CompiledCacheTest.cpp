//===- CompiledCacheTest.cpp - generated cache code against the reference -===//
//
// Compiles planned caches with kvprec-to-llvm and runs them in-process:
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

#include "kvprec/Runtime/CompiledCache.h"

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

namespace {
struct Case {
  std::string name;
  int64_t layers = 2, heads = 2, capacity = 40, headDim = 8, block = 8,
          sink = 4, window = 16, groupRatio = 2;
  std::vector<std::string> formats;
  /// One entry each (every item), or per item.
  std::string sinkFormats = "[0]", windowFormats = "[0]", bodyFormats = "[0]";
  /// When above 1, attend is also run as compiled with this many position
  /// splits (kvprec-to-llvm{threads}), against the same reference.
  int64_t threads = 1;
  /// kvprec-to-llvm's store-pieces: 0 quantizes whole rows; the NVPTX
  /// target's form quantizes pieces of this many elements (the same bits).
  int64_t storePieces = 0;
  /// Element j of the n-th row appended (all heads, K and V), replacing the
  /// default random data when set.
  std::function<float(std::mt19937 &, int64_t row, int64_t j)> generate;
};

std::string typeText(const Case &c) {
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

void runCase(const Case &c) {
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
          ASSERT_EQ(compareArena(*layout, arena.data, item, streams[item]), 0)
              << "layer " << layer << " head " << head << " kv " << kv
              << " length " << fill;
        }
      // load == the emulator's stored values, bit for bit.
      std::vector<float> loadedK(fill * h * d), loadedV(fill * h * d);
      ASSERT_EQ(code.load(arena.data, arena.size, layer, 0, fill,
                          loadedK.data(), loadedV.data()),
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
      // attend against double-precision attention over the stored values.
      std::vector<float> query(q * d), output(q * d);
      for (float &x : query)
        x = normal(rng);
      float scale = 1.0f / std::sqrt(float(d));
      ASSERT_EQ(code.attend(arena.data, arena.size, layer, query.data(), q,
                            fill, output.data(), scale),
                0);
      std::vector<float> splitOutput(q * d);
      if (split)
        ASSERT_EQ(split->attend(arena.data, arena.size, layer, query.data(), q,
                                fill, splitOutput.data(), scale),
                  0);
      for (int64_t head = 0; head < q; ++head) {
        int64_t kvHead = head / c.groupRatio;
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
              vmax * (std::expm1(2 * logitError) + 8 * (fill + d) * u) + 1e-30;
          ASSERT_NEAR(output[head * d + j], expected, tolerance)
              << "attend head " << head << " channel " << j << " length "
              << fill;
          if (split)
            ASSERT_NEAR(splitOutput[head * d + j], expected, tolerance)
                << "attend with " << c.threads << " splits, head " << head
                << " channel " << j << " length " << fill;
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
        int64_t kvHead = head / c.groupRatio;
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
        // The generated code keeps one inherited bound per re-quantized
        // block (CacheLayout.h), the largest of its elements'.
        auto blockwise = [&](const cf::EmulatedStream &stream) {
          an::Matrix bounds = stream.getErrorBounds();
          const std::vector<double> &inherited = stream.getInheritedBounds();
          for (int64_t begin = c.sink; begin < fill; begin += c.block) {
            int64_t end = std::min(fill, begin + c.block);
            double largest = 0;
            for (int64_t i = begin * d; i < end * d; ++i)
              largest = std::max(largest, inherited[i]);
            for (int64_t i = begin * d; i < end * d; ++i)
              bounds.values[i] += largest - inherited[i];
          }
          return bounds;
        };
        an::StreamingCertificate modelled;
        ASSERT_TRUE(an::computeStreamingCertificate(
                        queryD, k.getStored(), v.getStored(), blockwise(k),
                        blockwise(v), double(scale), model, modelled)
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
        ASSERT_GE(bounds[head], reference.infNorm)
            << "head " << head << " length " << fill;
        ASSERT_LE(bounds[head], modelled.infNorm * (1 + 1e-3))
            << "head " << head << " length " << fill;
        worstRatio = std::max(worstRatio, measured / bounds[head]);
      }
    }
  }

  std::printf("[certificate] %s: %lld query heads, measured/bound max "
              "%.4f\n",
              c.name.c_str(), (long long)certifiedCases, worstRatio);

  // Bad calls: a status, and the arena unchanged.
  std::vector<uint8_t> before(arena.data, arena.data + arena.size);
  auto unchanged = [&] {
    return std::memcmp(before.data(), arena.data, arena.size) == 0;
  };
  std::vector<float> one(h * d, 1.0f), query(q * d, 1.0f), output(q * d);
  EXPECT_EQ(code.append(arena.data, arena.size, 0, one.data(), one.data(), 1,
                        c.capacity),
            1); // Full (position == fill == capacity).
  EXPECT_EQ(
      code.append(arena.data, arena.size, 0, one.data(), one.data(), 1, 3),
      2); // Position disagrees with the fill count.
  EXPECT_EQ(code.append(arena.data, arena.size, c.layers, one.data(),
                        one.data(), 1, 0),
            3);
  EXPECT_EQ(code.append(arena.data, arena.size - 1, 0, one.data(), one.data(),
                        1, c.capacity),
            4);
  EXPECT_EQ(code.attend(arena.data, arena.size, 0, query.data(), q,
                        c.capacity - 1, output.data(), 1.0f),
            2);
  // Query heads that are not a multiple of the KV heads (or none).
  std::vector<float> wide((q + 1) * d, 1.0f), wideOut((q + 1) * d);
  EXPECT_EQ(code.attend(arena.data, arena.size, 0, wide.data(),
                        h > 1 ? q + 1 : 0, c.capacity, wideOut.data(), 1.0f),
            6);
  std::vector<float> rows(2 * h * d);
  EXPECT_EQ(code.load(arena.data, arena.size, 0, c.capacity - 1, 2, rows.data(),
                      rows.data()),
            2);
  EXPECT_TRUE(unchanged());

  // A fresh layer state: a NaN row writes nothing.
  ASSERT_EQ(code.init(arena.data, arena.size), 0);
  before.assign(arena.data, arena.data + arena.size);
  std::vector<float> nan = one;
  nan[d / 2] = NAN;
  EXPECT_EQ(
      code.append(arena.data, arena.size, 0, nan.data(), one.data(), 1, 0), 5);
  EXPECT_TRUE(unchanged());
}

const char *kF32 = "#kvprec.format<f32>";
} // namespace

TEST(CompiledCache, UnscaledFormats) {
  for (const char *format :
       {"#kvprec.format<f32>", "#kvprec.format<f16>", "#kvprec.format<bf16>"}) {
    Case c;
    c.name = format;
    c.formats = {format};
    runCase(c);
  }
}

TEST(CompiledCache, Fp8Formats) {
  for (const char *format :
       {"#kvprec.format<f8E4M3FN, symmetric, token_group = 8, scale = f16>",
        "#kvprec.format<f8E5M2, symmetric, token_group = 4, scale = bf16>",
        "#kvprec.format<f8E4M3FN, symmetric, channel_group = 4, scale = "
        "f32>"}) {
    Case c;
    c.name = format;
    c.formats = {format};
    runCase(c);
  }
}

TEST(CompiledCache, IntegerFormats) {
  for (const char *format :
       {"#kvprec.format<i8, symmetric, token_group = 8, scale = f32>",
        "#kvprec.format<i8, asymmetric, token_group = 4, scale = f16>",
        "#kvprec.format<i8, symmetric, channel_group = 8, scale = bf16>",
        "#kvprec.format<i4, symmetric, token_group = 4, scale = f16>",
        "#kvprec.format<i4, asymmetric, channel_group = 4, scale = f16>",
        "#kvprec.format<i2, asymmetric, channel_group = 8, scale = f16>",
        "#kvprec.format<i2, symmetric, token_group = 8, scale = f32>"}) {
    Case c;
    c.name = format;
    c.sink = 8; // Channel groups of 8 must tile the sink.
    c.formats = {format};
    runCase(c);
  }
}

// Token groups of 16 or more int4/int2 elements decode through the 16-entry
// table permute where the host has AVX-512 (CompiledCache compiles with
// x86-avx512 there): each 16-element piece of the planar row lies in one
// group. One query head takes the fused kernels, a group the tile; the
// scale folds into the logits where the group is the whole row.
TEST(CompiledCache, TableDecodedIntegerFormats) {
  struct TableCase {
    const char *format;
    int64_t headDim, groupRatio;
  };
  for (const TableCase &t :
       {TableCase{"#kvprec.format<i4, symmetric, token_group = 32, scale = "
                  "f16>",
                  128, 1},
        TableCase{"#kvprec.format<i4, asymmetric, token_group = 16, scale = "
                  "bf16>",
                  64, 2},
        TableCase{"#kvprec.format<i4, symmetric, token_group = 64, scale = "
                  "f32>",
                  64, 1},
        TableCase{"#kvprec.format<i2, asymmetric, token_group = 32, scale = "
                  "f16>",
                  64, 1},
        TableCase{"#kvprec.format<i2, symmetric, token_group = 64, scale = "
                  "f32>",
                  128, 4}}) {
    Case c;
    c.name = std::string(t.format) + " head_dim " + std::to_string(t.headDim) +
             " GQA " + std::to_string(t.groupRatio);
    c.headDim = t.headDim;
    c.groupRatio = t.groupRatio;
    c.layers = 1;
    c.formats = {t.format};
    runCase(c);
  }
}

// The store kernels in pieces (what target=nvptx emits, so that a GPU
// thread's registers hold what it quantizes) store the same bits as whole
// rows: every format and granularity, pieces smaller than a group and
// groups smaller than a piece, planar sub-byte fields, head_dim 8, 24, 64.
TEST(CompiledCache, PiecewiseStoresAreBitExact) {
  struct PieceCase {
    const char *format;
    int64_t headDim, pieces;
  };
  for (const PieceCase &t :
       {PieceCase{"#kvprec.format<f32>", 8, 4},
        PieceCase{"#kvprec.format<f16>", 24, 16},
        PieceCase{"#kvprec.format<bf16>", 8, 2},
        PieceCase{"#kvprec.format<f8E4M3FN, symmetric, token_group = 8, "
                  "scale = f16>",
                  8, 4},
        PieceCase{"#kvprec.format<f8E5M2, symmetric, channel_group = 4, "
                  "scale = bf16>",
                  24, 16},
        PieceCase{"#kvprec.format<i8, symmetric, token_group = 8, scale = "
                  "f32>",
                  64, 16},
        PieceCase{"#kvprec.format<i8, asymmetric, token_group = 4, scale = "
                  "f16>",
                  8, 2},
        PieceCase{"#kvprec.format<i8, symmetric, channel_group = 8, scale = "
                  "bf16>",
                  8, 4},
        PieceCase{"#kvprec.format<i4, symmetric, token_group = 4, scale = "
                  "f16>",
                  8, 16},
        PieceCase{"#kvprec.format<i4, asymmetric, token_group = 32, scale = "
                  "f16>",
                  64, 16},
        PieceCase{"#kvprec.format<i4, asymmetric, channel_group = 4, scale "
                  "= f16>",
                  24, 4},
        PieceCase{"#kvprec.format<i2, asymmetric, channel_group = 8, scale "
                  "= f16>",
                  8, 2},
        PieceCase{"#kvprec.format<i2, symmetric, token_group = 8, scale = "
                  "f32>",
                  64, 16}}) {
    Case c;
    c.name = std::string(t.format) + " head_dim " + std::to_string(t.headDim) +
             " pieces " + std::to_string(t.pieces);
    c.headDim = t.headDim;
    c.storePieces = t.pieces;
    c.layers = 1;
    c.sink = 8; // Channel groups of 8 must tile the sink.
    c.formats = {t.format};
    runCase(c);
  }
}

TEST(CompiledCache, MixedClassesAndPerBlockBodies) {
  Case c;
  c.name = "sink f32, window f16, body KIVI-2";
  c.formats = {
      kF32, "#kvprec.format<f16>",
      "#kvprec.format<i2, asymmetric, channel_group = 8, scale = f16>"};
  c.sinkFormats = "[0]";
  c.windowFormats = "[1]";
  c.bodyFormats = "[2]";
  runCase(c);

  // Capacity 40: body blocks of 8 from position 4 (5 blocks; the last
  // holds 4). Per item and block: i8, i4, i2, i8, i4.
  c.name = "per-block bodies";
  c.threads = 3; // Uneven splits of the tiles; some splits empty early on.
  c.formats = {kF32,
               "#kvprec.format<i8, symmetric, token_group = 8, scale = f16>",
               "#kvprec.format<i4, asymmetric, channel_group = 4, scale = f16>",
               "#kvprec.format<i2, symmetric, token_group = 4, scale = f32>"};
  c.sinkFormats = "[0]";
  c.windowFormats = "[1]";
  std::string body;
  for (int item = 0; item < 8; ++item)
    for (int b = 0; b < 5; ++b)
      body += (body.empty() ? "" : ", ") + std::to_string(1 + (b + item) % 3);
  c.bodyFormats = "[" + body + "]";
  runCase(c);
}

TEST(CompiledCache, NoSinkNoWindowAndChannelGroupsFillingInTheBody) {
  Case c;
  c.name = "sink 0, window 0, KIVI-4 body";
  c.sink = 0;
  c.window = 0;
  c.formats = {
      "#kvprec.format<i4, asymmetric, channel_group = 4, scale = f16>"};
  runCase(c);
  c.name = "channel-group sink";
  c.sink = 8;
  c.window = 8;
  c.formats = {"#kvprec.format<i8, asymmetric, channel_group = 4, scale = f32>",
               "#kvprec.format<f16>"};
  c.sinkFormats = "[0]";
  c.windowFormats = "[1]";
  c.bodyFormats = "[0]";
  runCase(c);
}

TEST(CompiledCache, HeadDimsAndGroupRatios) {
  const char *i4 =
      "#kvprec.format<i4, asymmetric, token_group = 8, scale = f16>";
  for (auto [headDim, ratio] :
       // The tile kernels take query heads in blocks of 4, 2 and 1:
       // groups of 3, 5 and 7 use the smaller blocks after the large ones.
       {std::pair<int64_t, int64_t>{16, 1},
        {24, 4},
        {64, 8},
        {128, 2},
        {128, 7},
        {64, 3},
        {8, 5}}) {
    Case c;
    c.name =
        "head_dim " + std::to_string(headDim) + " GQA " + std::to_string(ratio);
    c.headDim = headDim;
    c.groupRatio = ratio;
    c.layers = 1;
    c.capacity = 30;
    c.threads = 2;
    c.formats = {i4};
    runCase(c);
  }
}

namespace {
/// Midpoints between neighbouring values of a float kind, below `limit`,
/// both signs: every one is a tie for round-to-nearest-even.
std::vector<float> midpoints(an::StorageKind kind, double limit,
                             uint32_t step) {
  std::vector<float> result;
  for (uint32_t bits = 0;; bits += step) {
    double low = an::decodeFloat(kind, bits);
    double high = an::decodeFloat(kind, bits + 1);
    if (!(high < limit))
      break;
    float mid = float((low + high) / 2);
    if (double(mid) != (low + high) / 2)
      continue; // Not an f32 value (never for these kinds).
    result.push_back(mid);
    result.push_back(-mid);
  }
  return result;
}

/// Rows whose first elements pin the group's scale to 1 (and zero point
/// to 0), followed by values from `pool`.
Case tieCase(std::string name, std::string format, int64_t headDim, float first,
             float second, std::vector<float> pool) {
  Case c;
  c.name = std::move(name);
  c.layers = 1;
  c.heads = 1;
  c.capacity = 24;
  c.headDim = headDim;
  c.groupRatio = 1;
  c.formats = {std::move(format)};
  auto shared = std::make_shared<std::vector<float>>(std::move(pool));
  c.generate = [=](std::mt19937 &, int64_t row, int64_t j) -> float {
    if (j == 0)
      return first;
    if (j == 1)
      return second;
    return (*shared)[(row * headDim + j) % shared->size()];
  };
  return c;
}
} // namespace

TEST(CompiledCache, LongBlocksUseTheGroupedLogits) {
  // Tiles of 32 and 48 rows: the logits of whole groups of 16 rows go
  // through the transposed reduction, the rest row by row.
  for (auto [block, headDim] :
       {std::pair<int64_t, int64_t>{32, 64}, {48, 128}}) {
    Case c;
    c.name = "block " + std::to_string(block) + " head_dim " +
             std::to_string(headDim);
    c.layers = 1;
    c.block = block;
    c.sink = 4;
    c.window = block;
    c.capacity = 4 + 3 * block + 5;
    c.headDim = headDim;
    c.groupRatio = 4;
    c.threads = 2;
    c.formats = {
        "#kvprec.format<i8, symmetric, token_group = 64, scale = f16>"};
    runCase(c);
  }
}

TEST(CompiledCache, RoundingTiesOfEveryKind) {
  // Unscaled: the value itself is rounded.
  runCase(tieCase("f16 ties", "#kvprec.format<f16>", 64, 1.0f, -1.0f,
                  midpoints(an::StorageKind::F16, 65504, 7)));
  runCase(tieCase("bf16 ties", "#kvprec.format<bf16>", 64, 1.0f, -1.0f,
                  midpoints(an::StorageKind::BF16, 1e30, 97)));
  // Scaled with s = 1 exactly (the pinned maximum is the largest code).
  runCase(tieCase(
      "f8E4M3FN ties",
      "#kvprec.format<f8E4M3FN, symmetric, token_group = 64, scale = f32>", 64,
      448.0f, -448.0f, midpoints(an::StorageKind::F8E4M3FN, 448, 1)));
  runCase(tieCase(
      "f8E5M2 ties",
      "#kvprec.format<f8E5M2, symmetric, token_group = 64, scale = f32>", 64,
      57344.0f, -57344.0f, midpoints(an::StorageKind::F8E5M2, 57344, 1)));
  std::vector<float> halves;
  for (int k = -127; k < 127; ++k)
    halves.push_back(k + 0.5f);
  runCase(
      tieCase("int8 ties",
              "#kvprec.format<i8, symmetric, token_group = 64, scale = f32>",
              64, 127.0f, -127.0f, halves));
  std::vector<float> positive;
  for (int k = 0; k < 15; ++k)
    positive.push_back(k + 0.5f);
  runCase(
      tieCase("int4 asymmetric ties",
              "#kvprec.format<i4, asymmetric, token_group = 16, scale = f32>",
              16, 15.0f, 0.0f, positive));
}

TEST(CompiledCache, EveryFp8Code) {
  // With s = 1 every finite value of the kind is stored as its own code:
  // all 254 finite f8E4M3FN codes and the 248 finite f8E5M2 codes, signs
  // and subnormals included, go through the f16-based decode.
  for (an::StorageKind kind :
       {an::StorageKind::F8E4M3FN, an::StorageKind::F8E5M2}) {
    const an::FloatFormatInfo &info = an::getFloatFormatInfo(kind);
    std::vector<float> values;
    for (uint32_t bits = 0; bits < 256; ++bits) {
      double v = an::decodeFloat(kind, bits);
      if (std::isfinite(v))
        values.push_back(float(v));
    }
    std::string name = an::getStorageKindName(kind);
    float top = float(info.maxFinite);
    runCase(tieCase("every " + name + " code",
                    "#kvprec.format<" + name +
                        ", symmetric, token_group = 64, scale = f32>",
                    64, top, -top, values));
  }
}

TEST(CompiledCache, TinyAndHugeMagnitudes) {
  // Scales in the subnormal range of f16/bf16 and near the top of f32:
  // the rounded-up scale search at its edges.
  for (const char *format :
       {"#kvprec.format<i4, symmetric, token_group = 4, scale = f16>",
        "#kvprec.format<i8, asymmetric, token_group = 8, scale = bf16>",
        "#kvprec.format<f8E4M3FN, symmetric, token_group = 8, scale = f16>",
        "#kvprec.format<i2, asymmetric, channel_group = 4, scale = f16>",
        "#kvprec.format<i8, symmetric, token_group = 8, scale = f32>"}) {
    Case c;
    c.name = std::string("magnitudes ") + format;
    c.formats = {format};
    c.layers = 1;
    bool f32Scale =
        std::string(format).find("scale = f32") != std::string::npos;
    c.generate = [=](std::mt19937 &rng, int64_t row, int64_t) -> float {
      std::normal_distribution<float> normal;
      // f16 and bf16 scales: as small as 2^-40 (below f16's smallest
      // subnormal), at most 2^8; f32 scales 2^-120 to 2^100.
      int exponent =
          f32Scale ? int(row * 37 % 220) - 120 : int(row * 13 % 48) - 40;
      return std::ldexp(normal(rng), exponent);
    };
    runCase(c);
  }
}
