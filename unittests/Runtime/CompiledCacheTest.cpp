//===- CompiledCacheTest.cpp - generated cache code against the reference -===//
//
// The CPU code of planned caches (kvprec-to-llvm) against the plan
// emulator and double-precision attention (CacheCases.h): every format,
// both granularities, sinks, windows, per-block bodies, several head dims
// and GQA ratios.
//
//===----------------------------------------------------------------------===//

#include "CacheCases.h"

#include "kvprec/Analysis/SoftFloat.h"

#include "gtest/gtest.h"

#include <cmath>
#include <cstring>

using namespace kvprec::testing;
namespace an = kvprec::analysis;

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
