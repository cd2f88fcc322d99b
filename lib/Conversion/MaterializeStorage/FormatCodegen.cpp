//===- FormatCodegen.cpp - store and load kernels of one format -----------===//
//
// The arithmetic is that of lib/Analysis/Quantizer.cpp and SoftFloat.cpp,
// written as element-wise vector ops on f32 and f64 lanes and on the bit
// patterns of the small float kinds, so that the results are bit-identical
// to the reference on every target and do not depend on how a backend
// lowers f16/bf16/f8 conversions (docs/lowering.md).
//
//===----------------------------------------------------------------------===//

#include "FormatCodegen.h"

#include "kvprec/Analysis/Quantizer.h"
#include "kvprec/Analysis/SoftFloat.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

#include <cmath>
#include <limits>

using namespace mlir;
using namespace mlir::kvprec;
namespace an = ::kvprec::analysis;
using an::StorageKind;

namespace {
enum class Rounding { Nearest, TowardPositive, TowardNegative };

/// Element-wise arithmetic on vectors of `lanes` lanes.
class Lanes {
public:
  Lanes(ImplicitLocOpBuilder &b, int64_t lanes) : b(b), lanes(lanes) {}

  VectorType type(Type element) const {
    return VectorType::get({lanes}, element);
  }
  Value f32(double v) { return splat(b.getF32Type(), b.getF32FloatAttr(v)); }
  Value f64(double v) { return splat(b.getF64Type(), b.getF64FloatAttr(v)); }
  Value i32(int64_t v) { return splat(b.getI32Type(), b.getI32IntegerAttr(v)); }
  Value i1(bool v) { return splat(b.getI1Type(), b.getBoolAttr(v)); }

  Value bitsOf(Value f32Lanes) {
    return arith::BitcastOp::create(b, type(b.getI32Type()), f32Lanes);
  }
  Value floatOf(Value i32Lanes) {
    return arith::BitcastOp::create(b, type(b.getF32Type()), i32Lanes);
  }
  Value select(Value c, Value t, Value f) {
    return arith::SelectOp::create(b, c, t, f);
  }
  Value cmpi(arith::CmpIPredicate p, Value x, Value y) {
    return arith::CmpIOp::create(b, p, x, y);
  }
  Value cmpf(arith::CmpFPredicate p, Value x, Value y) {
    return arith::CmpFOp::create(b, p, x, y);
  }
  /// True for finite lanes of an f32 or f64 vector.
  Value isFinite(Value x) {
    bool isF64 = cast<VectorType>(x.getType()).getElementType().isF64();
    Value inf = isF64 ? f64(std::numeric_limits<double>::infinity())
                      : f32(std::numeric_limits<float>::infinity());
    Value magnitude = math::AbsFOp::create(b, x);
    return cmpf(arith::CmpFPredicate::OLT, magnitude, inf);
  }
  /// True when every lane is true.
  Value all(Value mask) {
    return vector::ReductionOp::create(b, vector::CombiningKind::AND, mask);
  }

  /// The bits (in the low bits of i32 lanes) of the value of a float kind
  /// that `x` (finite f32 lanes) rounds to. Overflow gives inf (NaN for
  /// f8E4M3FN), except toward zero, which saturates, as SoftFloat does.
  Value encode(StorageKind kind, Value x, Rounding rounding) {
    if (kind == StorageKind::F32)
      return bitsOf(x);
    const an::FloatFormatInfo &info = an::getFloatFormatInfo(kind);
    const int64_t m = info.mantissaBits, e = info.exponentBits;
    const int64_t emin = 1 - info.bias;
    Value bits = bitsOf(x);
    Value sign = arith::ShRUIOp::create(b, bits, i32(31));
    Value magnitude = arith::AndIOp::create(b, bits, i32(0x7FFFFFFF));
    Value field = arith::ShRUIOp::create(b, magnitude, i32(23));
    Value fraction = arith::AndIOp::create(b, magnitude, i32(0x7FFFFF));
    Value normal = cmpi(arith::CmpIPredicate::ne, field, i32(0));
    Value significand = arith::OrIOp::create(
        b, fraction, select(normal, i32(0x800000), i32(0)));
    Value exponent = arith::SubIOp::create(
        b, arith::MaxSIOp::create(b, field, i32(1)), i32(127));
    Value clamped = arith::MaxSIOp::create(b, exponent, i32(emin));
    // Divide the significand down to the quantum 2^(clamped - m); beyond 25
    // bits everything is below one half of it.
    Value shift = arith::AddIOp::create(
        b, i32(23 - m), arith::SubIOp::create(b, clamped, exponent));
    shift = arith::MinSIOp::create(b, shift, i32(25));
    Value quotient = arith::ShRUIOp::create(b, significand, shift);
    Value one = i32(1);
    Value unit = arith::ShLIOp::create(b, one, shift);
    Value remainder = arith::AndIOp::create(
        b, significand, arith::SubIOp::create(b, unit, one));
    Value half = arith::ShRUIOp::create(b, unit, one);
    Value increment;
    Value towardZero = i1(false);
    if (rounding == Rounding::Nearest) {
      Value above = cmpi(arith::CmpIPredicate::ugt, remainder, half);
      Value tie = cmpi(arith::CmpIPredicate::eq, remainder, half);
      Value odd = cmpi(arith::CmpIPredicate::ne,
                       arith::AndIOp::create(b, quotient, one), i32(0));
      increment =
          arith::OrIOp::create(b, above, arith::AndIOp::create(b, tie, odd));
    } else {
      // Directed: the magnitude rounds up when the direction points away
      // from zero, and is truncated otherwise.
      Value negative = cmpi(arith::CmpIPredicate::ne, sign, i32(0));
      Value away = rounding == Rounding::TowardPositive
                       ? arith::XOrIOp::create(b, negative, i1(true))
                       : negative;
      Value inexact = cmpi(arith::CmpIPredicate::ne, remainder, i32(0));
      increment = arith::AndIOp::create(b, away, inexact);
      towardZero = arith::XOrIOp::create(b, away, i1(true));
    }
    quotient = arith::AddIOp::create(
        b, quotient,
        arith::ExtUIOp::create(b, type(b.getI32Type()), increment));
    Value result = arith::SubIOp::create(
        b,
        arith::AddIOp::create(
            b,
            arith::ShLIOp::create(
                b, arith::AddIOp::create(b, clamped, i32(info.bias)), i32(m)),
            quotient),
        i32(int64_t(1) << m));
    Value overflow =
        cmpi(arith::CmpIPredicate::ugt, result, i32(info.maxFiniteBits));
    Value nonFinite = i32(info.hasInfinity ? info.infinityBits : info.nanBits);
    result =
        select(overflow, select(towardZero, i32(info.maxFiniteBits), nonFinite),
               result);
    return arith::OrIOp::create(b, result,
                                arith::ShLIOp::create(b, sign, i32(e + m)));
  }

  /// The f32 value of kind bits (low bits of i32 lanes); NaN for infinities
  /// and NaNs, which no stored value may be.
  Value decode(StorageKind kind, Value bits) {
    if (kind == StorageKind::F32)
      return floatOf(bits);
    const an::FloatFormatInfo &info = an::getFloatFormatInfo(kind);
    const int64_t m = info.mantissaBits, e = info.exponentBits;
    Value magnitude = arith::AndIOp::create(b, bits, i32((1 << (e + m)) - 1));
    Value sign = arith::AndIOp::create(
        b, arith::ShRUIOp::create(b, bits, i32(e + m)), i32(1));
    // The kind's exponent and fraction become the top of f32's; scaling by
    // 2^(127 - bias) is exact, also for subnormals.
    Value value = floatOf(arith::OrIOp::create(
        b, arith::ShLIOp::create(b, magnitude, i32(23 - m)),
        arith::ShLIOp::create(b, sign, i32(31))));
    if (info.bias != 127)
      value = arith::MulFOp::create(b, value,
                                    f32(std::ldexp(1.0, 127 - info.bias)));
    uint32_t firstNonFinite =
        info.hasInfinity ? info.infinityBits : info.nanBits;
    Value nonFinite =
        cmpi(arith::CmpIPredicate::uge, magnitude, i32(firstNonFinite));
    return select(nonFinite, f32(std::numeric_limits<float>::quiet_NaN()),
                  value);
  }

  /// fl_P(x) for f32 lanes.
  Value roundTo(StorageKind precision, Value x) {
    if (precision == StorageKind::F32)
      return x;
    return decode(precision, encode(precision, x, Rounding::Nearest));
  }

  /// The smallest f32 >= x for non-negative f64 lanes (inf past the range).
  Value roundUpToF32(Value x) {
    Value t = arith::TruncFOp::create(b, type(b.getF32Type()), x);
    Value back = arith::ExtFOp::create(b, type(b.getF64Type()), t);
    Value below = cmpf(arith::CmpFPredicate::OLT, back, x);
    return select(below, floatOf(arith::AddIOp::create(b, bitsOf(t), i32(1))),
                  t);
  }
  Value toF64(Value x) {
    return arith::ExtFOp::create(b, type(b.getF64Type()), x);
  }
  /// Neighbours, in `kind`, of positive finite f32 lanes holding values of
  /// `kind`.
  Value nextUp(StorageKind kind, Value v) {
    return decode(kind, arith::AddIOp::create(
                            b, encode(kind, v, Rounding::Nearest), i32(1)));
  }
  Value nextDown(StorageKind kind, Value v) {
    return decode(kind, arith::SubIOp::create(
                            b, encode(kind, v, Rounding::Nearest), i32(1)));
  }

  /// Quantizer.cpp's computeRoundedUpScale: the smallest value s of
  /// `kind` with s * maxCode >= range (exact products in f64), for
  /// non-negative f64 lanes; the kind's smallest subnormal for 0. Clears
  /// `ok` lanes where no finite scale exists.
  Value scaleFor(StorageKind kind, Value range, double maxCode, Value &ok) {
    const an::FloatFormatInfo &info = an::getFloatFormatInfo(kind);
    Value code = f64(maxCode);
    Value quotient = arith::DivFOp::create(b, range, code);
    Value candidate = roundUpToF32(quotient);
    if (kind != StorageKind::F32)
      candidate =
          decode(kind, encode(kind, candidate, Rounding::TowardPositive));
    ok = arith::AndIOp::create(b, ok, isFinite(candidate));
    // One step each way reaches the smallest such value: the quotient is
    // correctly rounded, so the candidate is within one step of it.
    Value tooSmall =
        cmpf(arith::CmpFPredicate::OLT,
             arith::MulFOp::create(b, toF64(candidate), code), range);
    candidate = select(tooSmall, nextUp(kind, candidate), candidate);
    ok = arith::AndIOp::create(b, ok, isFinite(candidate));
    Value minimum = f32(info.minSubnormal);
    Value smaller = nextDown(kind, candidate);
    Value canShrink = arith::AndIOp::create(
        b, cmpf(arith::CmpFPredicate::OGT, candidate, minimum),
        cmpf(arith::CmpFPredicate::OGE,
             arith::MulFOp::create(b, toF64(smaller), code), range));
    candidate = select(canShrink, smaller, candidate);
    Value zero = cmpf(arith::CmpFPredicate::OEQ, range, f64(0.0));
    return select(zero, minimum, candidate);
  }

  ImplicitLocOpBuilder &b;
  int64_t lanes;

private:
  Value splat(Type element, TypedAttr value) {
    auto attr =
        DenseElementsAttr::get(type(element), ArrayRef<Attribute>{value});
    return arith::ConstantOp::create(b, cast<TypedAttr>(attr));
  }
};

} // namespace

/// The lane-wise sum of the `chunk`-lane pieces of `v`, added as a fixed
/// pairwise tree.
static Value sumChunks(ImplicitLocOpBuilder &b, Value v, int64_t chunk) {
  int64_t width = cast<VectorType>(v.getType()).getDimSize(0);
  if (width <= chunk)
    return v;
  SmallVector<Value> parts;
  for (int64_t k = 0; k < width; k += chunk)
    parts.push_back(vector::ExtractStridedSliceOp::create(
        b, v, ArrayRef<int64_t>{k}, ArrayRef<int64_t>{chunk},
        ArrayRef<int64_t>{1}));
  // Pairwise, in place: level by level, part i takes parts 2i and 2i + 1.
  size_t count = parts.size();
  while (count > 1) {
    size_t next = 0;
    for (size_t i = 0; i + 1 < count; i += 2)
      parts[next++] = arith::AddFOp::create(b, parts[i], parts[i + 1]);
    if (count % 2)
      parts[next++] = parts[count - 1];
    count = next;
  }
  return parts.front();
}

int64_t mlir::kvprec::getLaneChunk(int64_t width) {
  int64_t chunk = 1;
  while (chunk < 16 && width % (chunk * 2) == 0)
    chunk *= 2;
  return chunk;
}

Value mlir::kvprec::emitChunkDot(ImplicitLocOpBuilder &b, Value x, Value y,
                                 int64_t chunk) {
  int64_t width = cast<VectorType>(x.getType()).getDimSize(0);
  auto piece = [&](Value v, int64_t k) -> Value {
    if (chunk == width)
      return v;
    return vector::ExtractStridedSliceOp::create(b, v, ArrayRef<int64_t>{k},
                                                 ArrayRef<int64_t>{chunk},
                                                 ArrayRef<int64_t>{1});
  };
  Value acc = arith::MulFOp::create(b, piece(x, 0), piece(y, 0));
  for (int64_t k = chunk; k < width; k += chunk)
    acc = vector::FMAOp::create(b, piece(x, k), piece(y, k), acc);
  return acc;
}

Value mlir::kvprec::emitLaneSum(ImplicitLocOpBuilder &b, Value v) {
  auto type = cast<VectorType>(v.getType());
  int64_t width = type.getDimSize(0);
  int64_t chunk = getLaneChunk(width);
  Value sum = sumChunks(b, v, chunk);
  for (int64_t half = chunk / 2; half >= 1; half /= 2) {
    SmallVector<int64_t> low, high;
    for (int64_t j = 0; j < half; ++j) {
      low.push_back(j);
      high.push_back(j + half);
    }
    sum = arith::AddFOp::create(b, vector::ShuffleOp::create(b, sum, sum, low),
                                vector::ShuffleOp::create(b, sum, sum, high));
  }
  return vector::ExtractOp::create(b, sum, ArrayRef<int64_t>{0});
}

Value mlir::kvprec::emitRowSums(ImplicitLocOpBuilder &b, ArrayRef<Value> rows) {
  const int64_t w = rows.size();
  SmallVector<Value> partial;
  for (Value product : rows)
    partial.push_back(sumChunks(b, product, w));
  // Level with groups of g lanes per row: pairs of vectors (rows a...,
  // b...) keep, per row, the sum of the two halves of each group.
  for (int64_t group = w; group > 1; group /= 2) {
    SmallVector<Value> next;
    for (size_t k = 0; k + 1 < partial.size(); k += 2) {
      SmallVector<int64_t> low, high;
      for (int64_t lane = 0; lane < 2 * w; lane += group)
        for (int64_t j = 0; j < group / 2; ++j) {
          low.push_back(lane + j);
          high.push_back(lane + group / 2 + j);
        }
      next.push_back(arith::AddFOp::create(
          b, vector::ShuffleOp::create(b, partial[k], partial[k + 1], low),
          vector::ShuffleOp::create(b, partial[k], partial[k + 1], high)));
    }
    partial = std::move(next);
  }
  return partial[0];
}

Value mlir::kvprec::emitExp(ImplicitLocOpBuilder &b, Value x) {
  auto type = cast<VectorType>(x.getType());
  Lanes l(b, type.getDimSize(0));
  auto fma = [&](Value a, Value c, Value d) {
    return math::FmaOp::create(b, a, c, d).getResult();
  };
  Value clamped = arith::MinimumFOp::create(
      b, arith::MaximumFOp::create(b, x, l.f32(-104.0)), l.f32(88.8));
  Value n = math::RoundEvenOp::create(
      b, arith::MulFOp::create(b, clamped, l.f32(1.44269504088896341)));
  // ln 2 = 0.693359375 - 2.12194440e-4 (the first part exact in f32).
  Value r = fma(n, l.f32(-0.693359375), clamped);
  r = fma(n, l.f32(2.12194440e-4), r);
  Value p = l.f32(1.9875691500e-4);
  for (double c : {1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                   1.6666665459e-1, 5.0000001201e-1})
    p = fma(p, r, l.f32(c));
  Value r2 = arith::MulFOp::create(b, r, r);
  Value y = arith::AddFOp::create(b, fma(p, r2, r), l.f32(1.0));
  // 2^n = 2^n1 * 2^n2 with both halves in the normal range.
  Value ni = arith::FPToSIOp::create(b, l.type(b.getI32Type()), n);
  Value n1 = arith::ShRSIOp::create(b, ni, l.i32(1));
  Value n2 = arith::SubIOp::create(b, ni, n1);
  auto power = [&](Value k) {
    return l.floatOf(arith::ShLIOp::create(
        b, arith::AddIOp::create(b, k, l.i32(127)), l.i32(23)));
  };
  Value result = arith::MulFOp::create(
      b, arith::MulFOp::create(b, y, power(n1)), power(n2));
  Value below = l.cmpf(arith::CmpFPredicate::OLT, x, l.f32(-104.0));
  Value above = l.cmpf(arith::CmpFPredicate::OGT, x, l.f32(88.8));
  result = l.select(below, l.f32(0.0), result);
  return l.select(above, l.f32(std::numeric_limits<float>::infinity()), result);
}

Value mlir::kvprec::emitExpm1(ImplicitLocOpBuilder &b, Value x) {
  auto type = cast<VectorType>(x.getType());
  Lanes l(b, type.getDimSize(0));
  // x (1 + x/2 (1 + x/3 (... (1 + x/7)))): below 1/8 the first omitted
  // term is under 1e-12 of the result.
  Value series = l.f32(1.0);
  for (int k = 7; k >= 2; --k)
    series = math::FmaOp::create(b, arith::MulFOp::create(b, x, l.f32(1.0 / k)),
                                 series, l.f32(1.0));
  series = arith::MulFOp::create(b, x, series);
  Value direct = arith::SubFOp::create(b, emitExp(b, x), l.f32(1.0));
  return l.select(l.cmpf(arith::CmpFPredicate::OLT, x, l.f32(0.125)), series,
                  direct);
}

namespace {
/// Integer codes' range and bits.
struct IntCodes {
  int64_t bits;
  int64_t minCode, maxCode;
};
IntCodes getIntCodes(const an::StorageFormat &format) {
  auto [minCode, maxCode] = an::getIntegerCodeRange(format.kind, format.scheme);
  return {an::getBitWidth(format.kind), minCode, maxCode};
}

/// Emits one kernel function's body for one format.
class KernelEmitter {
public:
  KernelEmitter(ImplicitLocOpBuilder &b, const an::StorageFormat &format,
                int64_t headDim, StorageKind dequantizer)
      : b(b), format(format), headDim(headDim), dequantizer(dequantizer),
        row(b, headDim) {
    unsigned bits = an::getBitWidth(format.kind);
    rowBytes = bits >= 8 ? headDim * (bits / 8)
                         : (headDim + 8 / bits - 1) / (8 / bits);
    if (an::isScaled(format)) {
      scaleLanes = format.granularity == an::Granularity::TokenGroup
                       ? headDim / format.groupSize
                       : headDim;
      scaleBytes = format.scaleKind == StorageKind::F32 ? 4 : 2;
    }
  }

  /// An emitter for a nested region (builder `nested`) over the same views.
  KernelEmitter at(ImplicitLocOpBuilder &nested) const {
    KernelEmitter e(nested, format, headDim, dequantizer);
    e.codes = codes;
    e.scales = scales;
    e.zeros = zeros;
    e.lookup = lookup;
    return e;
  }

  bool isScaled() const { return an::isScaled(format); }
  bool isChannelGroup() const {
    return isScaled() && format.granularity == an::Granularity::ChannelGroup;
  }
  bool isAsymmetric() const {
    return format.scheme == an::QuantScheme::Asymmetric;
  }

  Value index(int64_t v) { return arith::ConstantIndexOp::create(b, v); }
  Value mul(Value x, int64_t c) {
    return arith::MulIOp::create(b, x, index(c));
  }
  Value add(Value x, Value y) { return arith::AddIOp::create(b, x, y); }

  /// A typed view of the arena from byte `offset` to its end.
  Value view(Value arena, Value offset, Type element, int64_t elementBytes) {
    Value size = memref::DimOp::create(b, arena, 0);
    Value elements = arith::DivUIOp::create(
        b, arith::SubIOp::create(b, size, offset), index(elementBytes));
    return memref::ViewOp::create(
        b, MemRefType::get({ShapedType::kDynamic}, element), arena, offset,
        ValueRange{elements});
  }

  /// The code element type stored for the format, and its bytes.
  Type codeElement() const {
    switch (format.kind) {
    case StorageKind::F32:
      return b.getF32Type();
    case StorageKind::F16:
    case StorageKind::BF16:
      return b.getI16Type();
    default:
      return b.getI8Type();
    }
  }
  int64_t codeElementBytes() const {
    return format.kind == StorageKind::F32 ? 4
           : (format.kind == StorageKind::F16 ||
              format.kind == StorageKind::BF16)
               ? 2
               : 1;
  }
  Type scaleElement() const {
    return format.scaleKind == StorageKind::F32 ? Type(b.getF32Type())
                                                : Type(b.getI16Type());
  }

  /// Views of the run's regions.
  void openViews(Value arena, Value code, Value scale, Value zero) {
    codes = view(arena, code, codeElement(), codeElementBytes());
    if (!isScaled())
      return;
    scales = view(arena, scale, scaleElement(), scaleBytes);
    if (isAsymmetric())
      zeros = view(arena, zero, scaleElement(), scaleBytes);
  }

  /// Scale values (f32 lanes) stored at element offset `at` of a view.
  Value loadScales(Value view, Value at, Lanes &lanes) {
    if (format.scaleKind == StorageKind::F32)
      return vector::LoadOp::create(b, lanes.type(b.getF32Type()), view,
                                    ValueRange{at});
    Value raw = vector::LoadOp::create(b, lanes.type(b.getI16Type()), view,
                                       ValueRange{at});
    // f16 and bf16 widen exactly with the native conversion (one
    // instruction with F16C, a shift for bf16), as loadRow's codes do.
    Type half = format.scaleKind == StorageKind::F16 ? Type(b.getF16Type())
                                                     : Type(b.getBF16Type());
    return arith::ExtFOp::create(
        b, lanes.type(b.getF32Type()),
        Value(arith::BitcastOp::create(b, lanes.type(half), raw)));
  }
  void storeScales(Value values, Value view, Value at, Lanes &lanes) {
    if (format.scaleKind == StorageKind::F32) {
      vector::StoreOp::create(b, values, view, ValueRange{at});
      return;
    }
    Value bits = lanes.encode(format.scaleKind, values, Rounding::Nearest);
    vector::StoreOp::create(
        b, arith::TruncIOp::create(b, lanes.type(b.getI16Type()), bits), view,
        ValueRange{at});
  }

  /// Per-element lanes of per-group values (token groups): lane j takes
  /// group j / g.
  Value expandGroups(Value groups) {
    if (format.granularity != an::Granularity::TokenGroup)
      return groups;
    SmallVector<int64_t> mask;
    for (int64_t j = 0; j < headDim; ++j)
      mask.push_back(j / format.groupSize);
    return vector::ShuffleOp::create(b, groups, groups, mask);
  }

  /// Scale row (element offset in the scale view) of row `r` of the run.
  Value scaleRowAt(Value r) {
    Value scaleRow = isChannelGroup()
                         ? arith::DivUIOp::create(b, r, index(format.groupSize))
                         : r;
    return mul(scaleRow, scaleLanes);
  }

  /// Asks the memory system for the codes of row `r + ahead`, every cache
  /// line of it, into L2: attention's phases of arithmetic between loads
  /// would otherwise leave memory idle. The row is clamped to the last
  /// whole row of the view (which holds row `r`), so every line's address
  /// stays inside it and the lines' offsets fold into the addresses.
  void prefetchCodes(Value r, int64_t ahead) {
    int64_t stride = rowBytes / codeElementBytes();
    Value lastRow = arith::SubIOp::create(b, memref::DimOp::create(b, codes, 0),
                                          index(stride));
    Value start =
        arith::MinUIOp::create(b, mul(add(r, index(ahead)), stride), lastRow);
    for (int64_t line = 0; line * 64 < rowBytes; ++line) {
      Value at = line == 0
                     ? start
                     : Value(arith::AddIOp::create(
                           b, start, index(line * 64 / codeElementBytes())));
      memref::PrefetchOp::create(b, codes, ValueRange{at},
                                 /*isWrite=*/false, /*localityHint=*/2,
                                 /*isDataCache=*/true);
    }
  }

  /// prefetchCodes for the rows `distance` bytes ahead of row `r` (none
  /// for 0).
  void prefetchAhead(Value r, int64_t distance) {
    if (distance)
      prefetchCodes(r, llvm::divideCeil(distance, rowBytes));
  }

  /// The integer or float code lanes (i32) of row `r`.
  Value loadCodes(Value r) {
    Type i32 = b.getI32Type();
    unsigned bits = an::getBitWidth(format.kind);
    if (format.kind == StorageKind::F32)
      return row.bitsOf(vector::LoadOp::create(
          b, row.type(b.getF32Type()), codes, ValueRange{mul(r, headDim)}));
    if (bits >= 8) {
      Value raw = vector::LoadOp::create(b, row.type(codeElement()), codes,
                                         ValueRange{mul(r, headDim)});
      bool signExtend = an::isIntegerKind(format.kind) && !isAsymmetric();
      if (signExtend)
        return arith::ExtSIOp::create(b, row.type(i32), raw);
      return arith::ExtUIOp::create(b, row.type(i32), raw);
    }
    // Planar: byte k holds elements k, k + R, ... in successive fields.
    Lanes bytes(b, rowBytes);
    Value raw = vector::LoadOp::create(b, bytes.type(b.getI8Type()), codes,
                                       ValueRange{mul(r, rowBytes)});
    Value wide = arith::ExtUIOp::create(b, bytes.type(i32), raw);
    int64_t perByte = 8 / bits;
    SmallVector<Value> fields;
    for (int64_t i = 0; i < perByte; ++i) {
      Value field = arith::ShRUIOp::create(b, wide, bytes.i32(i * bits));
      field = arith::AndIOp::create(b, field, bytes.i32((1 << bits) - 1));
      if (!isAsymmetric()) {
        Value up = bytes.i32(32 - bits);
        field =
            arith::ShRSIOp::create(b, arith::ShLIOp::create(b, field, up), up);
      }
      fields.push_back(field);
    }
    return concatenate(fields, rowBytes);
  }

  /// The first head_dim lanes of the concatenation of equal-size pieces.
  Value concatenate(ArrayRef<Value> pieces, int64_t pieceLanes) {
    // Join pairwise with shuffles until one vector remains.
    SmallVector<Value> level(pieces.begin(), pieces.end());
    int64_t width = pieceLanes;
    while (level.size() > 1) {
      SmallVector<Value> next;
      for (size_t i = 0; i + 1 < level.size(); i += 2) {
        SmallVector<int64_t> mask;
        for (int64_t j = 0; j < 2 * width; ++j)
          mask.push_back(j);
        next.push_back(
            vector::ShuffleOp::create(b, level[i], level[i + 1], mask));
      }
      if (level.size() % 2)
        next.push_back(level.back()); // Never: piece counts are 2 or 4.
      level = std::move(next);
      width *= 2;
    }
    SmallVector<int64_t> mask;
    for (int64_t j = 0; j < headDim; ++j)
      mask.push_back(j);
    return vector::ShuffleOp::create(b, level[0], level[0], mask);
  }

  /// Stores code lanes (i32) as row `r`.
  void storeCodes(Value codeLanes, Value r) {
    unsigned bits = an::getBitWidth(format.kind);
    if (format.kind == StorageKind::F32) {
      vector::StoreOp::create(b, row.floatOf(codeLanes), codes,
                              ValueRange{mul(r, headDim)});
      return;
    }
    if (bits >= 8) {
      vector::StoreOp::create(
          b, arith::TruncIOp::create(b, row.type(codeElement()), codeLanes),
          codes, ValueRange{mul(r, headDim)});
      return;
    }
    Lanes bytes(b, rowBytes);
    int64_t perByte = 8 / bits;
    Value masked =
        arith::AndIOp::create(b, codeLanes, row.i32((1 << bits) - 1));
    // Pad to perByte * R lanes with zeros, then OR the fields together.
    Value zeros = row.i32(0);
    Value packed = bytes.i32(0);
    for (int64_t i = 0; i < perByte; ++i) {
      SmallVector<int64_t> mask;
      for (int64_t k = 0; k < rowBytes; ++k) {
        int64_t j = i * rowBytes + k;
        mask.push_back(j < headDim ? j : headDim); // Lane 0 of `zeros`.
      }
      Value field = vector::ShuffleOp::create(b, masked, zeros, mask);
      packed = arith::OrIOp::create(
          b, packed, arith::ShLIOp::create(b, field, bytes.i32(i * bits)));
    }
    vector::StoreOp::create(
        b, arith::TruncIOp::create(b, bytes.type(b.getI8Type()), packed), codes,
        ValueRange{mul(r, rowBytes)});
  }

  /// The value of code lanes before scaling.
  Value codeValue(Value codeLanes) {
    if (an::isIntegerKind(format.kind))
      return arith::SIToFPOp::create(b, row.type(b.getF32Type()), codeLanes);
    if (an::isFp8Kind(format.kind))
      return fp8Value(codeLanes);
    return row.decode(format.kind, codeLanes);
  }

  /// An f8 code (i32 lanes of one byte) through f16, which holds every f8
  /// value, and the native f16 widening: f8E5M2 is the top byte of an f16;
  /// f8E4M3FN's exponent and fraction shifted into an f16's give 2^-8 of
  /// its value, also for subnormals, so one exact multiply by 256 follows;
  /// its NaN code becomes NaN. The same values as Lanes::decode's integer
  /// decode in about half the instructions, the bit work on 16-bit lanes.
  Value fp8Value(Value codeLanes) {
    Type i16 = b.getI16Type();
    VectorType halfBits = row.type(i16);
    auto constant = [&](int64_t v) -> Value {
      return arith::ConstantOp::create(
          b, DenseElementsAttr::get(halfBits, b.getIntegerAttr(i16, v)));
    };
    Value x = arith::TruncIOp::create(b, halfBits, codeLanes);
    Value bits;
    if (format.kind == StorageKind::F8E5M2) {
      bits = arith::ShLIOp::create(b, x, constant(8));
    } else {
      Value magnitude = arith::AndIOp::create(b, x, constant(0x7F));
      Value sign = arith::AndIOp::create(b, x, constant(0x80));
      bits = arith::OrIOp::create(
          b, arith::ShLIOp::create(b, magnitude, constant(7)),
          arith::ShLIOp::create(b, sign, constant(8)));
      Value isNaN = arith::CmpIOp::create(b, arith::CmpIPredicate::eq,
                                          magnitude, constant(0x7F));
      bits = arith::SelectOp::create(b, isNaN, constant(0x7E00), bits);
    }
    Value value = arith::ExtFOp::create(
        b, row.type(b.getF32Type()),
        Value(arith::BitcastOp::create(b, row.type(b.getF16Type()), bits)));
    if (format.kind == StorageKind::F8E4M3FN)
      value = arith::MulFOp::create(b, value, row.f32(256.0));
    return value;
  }

  /// Dequantizes code lanes with per-element scale and zero point lanes.
  Value dequantize(Value codeLanes, Value scale, Value zero) {
    return dequantizeValue(codeValue(codeLanes), scale, zero);
  }
  /// Dequantizes code values (f32 lanes, codeValue's) with per-element
  /// scale and zero point lanes.
  Value dequantizeValue(Value value, Value scale, Value zero) {
    if (!isScaled())
      return value;
    Value product =
        row.roundTo(dequantizer, arith::MulFOp::create(b, value, scale));
    if (!isAsymmetric())
      return product;
    return row.roundTo(dequantizer, arith::AddFOp::create(b, product, zero));
  }

  /// Whether rows decode through the target's 16-entry table permute:
  /// int4 and int2 codes in token groups where each 16-byte piece of the
  /// planar row (16 consecutive elements of one field) lies in one group.
  bool decodesByTable() const {
    unsigned bits = an::getBitWidth(format.kind);
    return lookup && an::isIntegerKind(format.kind) && bits < 8 && isScaled() &&
           format.granularity == an::Granularity::TokenGroup &&
           format.groupSize % 16 == 0 && headDim % ((8 / bits) * 16) == 0;
  }

  /// Row `r` through table lookups (decodesByTable): per group a table of
  /// the 16 values the low 4 bits of a byte can stand for, dequantized with
  /// the group's scale and zero point as dequantize does each element (so
  /// the same bits), or the code values where `scaled` is false; then one
  /// permute per 16 elements, the byte lanes shifted by 4 for the fields
  /// in the high half of each byte.
  Value loadRowByTable(Value r, bool scaled) {
    const int64_t bits = an::getBitWidth(format.kind), perByte = 8 / bits;
    const int64_t perIndex = 4 / bits; // Fields in the low 4 bits.
    Lanes bytes(b, rowBytes), sixteen(b, 16);
    Value raw = vector::LoadOp::create(b, bytes.type(b.getI8Type()), codes,
                                       ValueRange{mul(r, rowBytes)});
    Value wide = arith::ExtUIOp::create(b, bytes.type(b.getI32Type()), raw);
    Value scaleLanesOf, zeroLanesOf;
    if (scaled) {
      Lanes scaleRow(b, scaleLanes);
      Value at = scaleRowAt(r);
      scaleLanesOf = loadScales(scales, at, scaleRow);
      if (isAsymmetric())
        zeroLanesOf = loadScales(zeros, at, scaleRow);
    }
    KernelEmitter t(b, format, 16, dequantizer);
    std::map<std::pair<int64_t, int64_t>, Value> tables;
    auto tableOf = [&](int64_t group, int64_t u) -> Value {
      auto found = tables.find({group, u});
      if (found != tables.end())
        return found->second;
      SmallVector<int32_t> values;
      for (int64_t i = 0; i < 16; ++i) {
        int32_t field = (i >> (u * bits)) & ((1 << bits) - 1);
        if (!isAsymmetric() && field >= (1 << (bits - 1)))
          field -= 1 << bits;
        values.push_back(field);
      }
      Value codeLanes = arith::ConstantOp::create(
          b, DenseElementsAttr::get(sixteen.type(b.getI32Type()),
                                    ArrayRef<int32_t>(values)));
      auto splatOf = [&](Value lanes) -> Value {
        return vector::BroadcastOp::create(
            b, sixteen.type(b.getF32Type()),
            vector::ExtractOp::create(b, lanes, ArrayRef<int64_t>{group}));
      };
      Value table =
          scaled ? t.dequantize(codeLanes, splatOf(scaleLanesOf),
                                isAsymmetric() ? splatOf(zeroLanesOf) : Value())
                 : t.codeValue(codeLanes);
      tables[{group, u}] = table;
      return table;
    };
    Value result = row.f32(0.0);
    for (int64_t f = 0; f < perByte; ++f)
      for (int64_t k0 = 0; k0 < rowBytes; k0 += 16) {
        Value index = vector::ExtractStridedSliceOp::create(
            b, wide, ArrayRef<int64_t>{k0}, ArrayRef<int64_t>{16},
            ArrayRef<int64_t>{1});
        if (f >= perIndex)
          index = arith::ShRUIOp::create(b, index, sixteen.i32(4));
        int64_t element = f * rowBytes + k0;
        Value piece = lookup->emitTableLookup16(
            b, tableOf(element / format.groupSize, f % perIndex), index);
        result = vector::InsertStridedSliceOp::create(
            b, piece, result, ArrayRef<int64_t>{element}, ArrayRef<int64_t>{1});
      }
    return result;
  }

  /// Row `r` of the run, dequantized (f32 lanes).
  Value loadRow(Value r) {
    // f16 and bf16 widen exactly with the native conversion.
    if (format.kind == StorageKind::F16 || format.kind == StorageKind::BF16) {
      Type half = format.kind == StorageKind::F16 ? Type(b.getF16Type())
                                                  : Type(b.getBF16Type());
      Value raw = vector::LoadOp::create(b, row.type(b.getI16Type()), codes,
                                         ValueRange{mul(r, headDim)});
      return arith::ExtFOp::create(
          b, row.type(b.getF32Type()),
          Value(arith::BitcastOp::create(b, row.type(half), raw)));
    }
    if (decodesByTable())
      return loadRowByTable(r, /*scaled=*/true);
    Value codeLanes = loadCodes(r);
    if (!isScaled())
      return dequantize(codeLanes, Value(), Value());
    Lanes scaleRow(b, scaleLanes);
    Value at = scaleRowAt(r);
    Value scale = expandGroups(loadScales(scales, at, scaleRow));
    Value zero = isAsymmetric() ? expandGroups(loadScales(zeros, at, scaleRow))
                                : Value();
    return dequantize(codeLanes, scale, zero);
  }

  /// The error bound delta of every element of row `r` (f32 lanes), never
  /// below an::computeStoredElementErrorBound: its formula with the
  /// format's largest code magnitude in place of each integer code (a
  /// per-scale constant plus u_P |x^|), evaluated in f32 and raised by the
  /// relative 2^-20 and absolute 2^-100 that cover that evaluation's
  /// rounding (a few operations of non-negative terms). Constants below
  /// 2^-100 (the f32 dequantizer's eta) are raised to it: subnormal
  /// operands cost a microcode assist per lane on x86.
  /// Whether attention's logits take the row's scale out of the dot
  /// product: symmetric token groups of a whole row, with the f32
  /// dequantizer, where s (q . c) rounds within the contract's gamma_{d+2}
  /// of q . fl(s c) (an asymmetric zero point would not: q . z can cancel).
  bool foldsScale() const {
    return foldsKeyScale(format, headDim, dequantizer);
  }
  /// What attention multiplies with the query: the code values where the
  /// scale folds, the dequantized row elsewhere.
  Value rowForDot(Value r) {
    if (foldsScale())
      return decodesByTable() ? loadRowByTable(r, /*scaled=*/false)
                              : codeValue(loadCodes(r));
    return loadRow(r);
  }
  /// The scale of row `r` of a run whose scale folds (its one scale).
  Value rowScale(Value r) {
    Lanes one(b, 1);
    return vector::ExtractOp::create(b, loadScales(scales, r, one),
                                     ArrayRef<int64_t>{0});
  }

  /// Returns the row dequantized, as loadRow does, and its bounds in
  /// `delta`.
  Value loadRowAndBound(Value r, Value &delta) {
    if (!isScaled()) {
      Value value = loadRow(r);
      delta = elementBound(Value(), value, Value());
      return value;
    }
    Value codeLanes = loadCodes(r);
    Lanes scaleRow(b, scaleLanes);
    Value at = scaleRowAt(r);
    Value scale = expandGroups(loadScales(scales, at, scaleRow));
    Value zero = isAsymmetric() ? expandGroups(loadScales(zeros, at, scaleRow))
                                : Value();
    Value codes = codeValue(codeLanes);
    Value value = dequantizeValue(codes, scale, zero);
    delta = elementBound(codes, value, scale);
    return value;
  }

  /// Each element's error bound delta (never below
  /// an::computeStoredElementErrorBound, rounded up to f32) from its code
  /// value (f32 lanes, codeValue's; unused for unscaled formats), its
  /// dequantized value and its scale (null for unscaled formats).
  Value elementBound(Value codes, Value value, Value scale) {
    if (format.kind == StorageKind::F32)
      return row.f32(0.0);
    auto up = [](double v) -> double {
      if (v > 0 && v < 0x1p-100)
        return 0x1p-100;
      float f = float(v);
      return double(f) < v ? double(std::nextafter(
                                 f, std::numeric_limits<float>::infinity()))
                           : double(f);
    };
    auto fma = [&](Value a, Value x, Value c) -> Value {
      return math::FmaOp::create(b, a, x, c);
    };
    an::DequantizerConfig config{dequantizer};
    const double uq = an::kQuantizeUnitRoundoff;
    const double uP = an::getDequantizerUnitRoundoff(config);
    const double etaP = an::getDequantizerMinSubnormal(config);
    Value delta;
    if (!isScaled()) {
      const an::FloatFormatInfo &info = an::getFloatFormatInfo(format.kind);
      delta =
          fma(row.f32(up(info.unitRoundoff)), math::AbsFOp::create(b, value),
              row.f32(up(info.minSubnormal / 2)));
    } else {
      Value magnitude = math::AbsFOp::create(b, value);
      if (an::isFp8Kind(format.kind)) {
        // s (u8 c + eta8/2 + 3 uq (2c + eta8)) + uP |x^| + etaP/2
        //   = c (s (u8 + 6 uq)) + s (eta8/2 + 3 uq eta8) + uP |x^| + etaP/2.
        const an::FloatFormatInfo &info = an::getFloatFormatInfo(format.kind);
        double eta8 = info.minSubnormal;
        Value c = math::AbsFOp::create(b, codes);
        Value perCode = arith::MulFOp::create(
            b, scale, row.f32(up(info.unitRoundoff + 6 * uq)));
        Value constant = fma(scale, row.f32(up(eta8 / 2 + 3 * uq * eta8)),
                             row.f32(up(etaP / 2)));
        delta = fma(c, perCode, fma(row.f32(up(uP)), magnitude, constant));
      } else {
        // Symmetric: s (0.5 + 3 uq (k + 1)) + uP |x^| + etaP/2; asymmetric:
        // s (0.5 + 4 uq (k + 1)) + uP (|fl_P(k s)| + |x^|) + etaP, with
        // |fl_P(k s)| <= k s (1 + uP); k at most the largest code.
        double k = getIntCodes(format).maxCode;
        double perScale = isAsymmetric()
                              ? 0.5 + 4 * uq * (k + 1) + uP * k * (1 + uP)
                              : 0.5 + 3 * uq * (k + 1);
        double constant = isAsymmetric() ? etaP : etaP / 2;
        delta = fma(row.f32(up(uP)), magnitude,
                    fma(scale, row.f32(up(perScale)), row.f32(up(constant))));
      }
    }
    return fma(delta, row.f32(up(1 + 0x1p-20)), row.f32(0x1p-100));
  }

  /// The codes of f32 lanes `x` with per-element scale and zero point,
  /// and the dequantized values (in `dequantized`).
  Value quantize(Value x, Value scale, Value zero, Value &dequantized) {
    Value codeLanes;
    switch (format.kind) {
    case StorageKind::F32:
      codeLanes = row.bitsOf(x);
      break;
    case StorageKind::F16:
    case StorageKind::BF16:
      codeLanes = row.encode(format.kind, x, Rounding::Nearest);
      break;
    case StorageKind::F8E4M3FN:
    case StorageKind::F8E5M2:
      codeLanes = row.encode(format.kind, arith::DivFOp::create(b, x, scale),
                             Rounding::Nearest);
      break;
    default: {
      IntCodes ints = getIntCodes(format);
      Value shifted =
          isAsymmetric() ? Value(arith::SubFOp::create(b, x, zero)) : x;
      Value k = math::RoundEvenOp::create(
          b, arith::DivFOp::create(b, shifted, scale));
      k = arith::MaximumFOp::create(b, k, row.f32(ints.minCode));
      k = arith::MinimumFOp::create(b, k, row.f32(ints.maxCode));
      codeLanes = arith::FPToSIOp::create(b, row.type(b.getI32Type()), k);
      break;
    }
    }
    dequantized = dequantize(codeLanes, scale, zero);
    return codeLanes;
  }

  /// Per-group statistics of rows: absolute maximum, or minimum and
  /// maximum, as f32 lanes of the scale row.
  void tokenGroupRange(Value x, Value &low, Value &high) {
    Lanes groups(b, scaleLanes);
    SmallVector<Value> lows, highs;
    Value magnitude = math::AbsFOp::create(b, x);
    for (int64_t k = 0; k < scaleLanes; ++k) {
      int64_t g = format.groupSize;
      auto slice = [&](Value v) {
        return vector::ExtractStridedSliceOp::create(
            b, v, ArrayRef<int64_t>{k * g}, ArrayRef<int64_t>{g},
            ArrayRef<int64_t>{1});
      };
      if (isAsymmetric()) {
        lows.push_back(vector::ReductionOp::create(
            b, vector::CombiningKind::MINIMUMF, slice(x)));
        highs.push_back(vector::ReductionOp::create(
            b, vector::CombiningKind::MAXIMUMF, slice(x)));
      } else {
        highs.push_back(vector::ReductionOp::create(
            b, vector::CombiningKind::MAXIMUMF, slice(magnitude)));
      }
    }
    high =
        vector::FromElementsOp::create(b, groups.type(b.getF32Type()), highs);
    if (isAsymmetric())
      low =
          vector::FromElementsOp::create(b, groups.type(b.getF32Type()), lows);
  }

  /// Scale and zero point lanes (f32) from group statistics; clears `ok`
  /// lanes that cannot be stored.
  void scalesFor(Lanes &lanes, Value low, Value high, Value &scale, Value &zero,
                 Value &ok) {
    if (!isAsymmetric()) {
      double maxCode = an::isFp8Kind(format.kind)
                           ? an::getFloatFormatInfo(format.kind).maxFinite
                           : double(getIntCodes(format).maxCode);
      Value s =
          lanes.scaleFor(format.scaleKind, lanes.toF64(high), maxCode, ok);
      scale = s;
      return;
    }
    Value z = low;
    if (format.scaleKind != StorageKind::F32)
      z = lanes.decode(
          format.scaleKind,
          lanes.encode(format.scaleKind, low, Rounding::TowardNegative));
    // +0 for a zero minimum (Quantizer.cpp).
    z = lanes.select(lanes.cmpf(arith::CmpFPredicate::OEQ, z, lanes.f32(0.0)),
                     lanes.f32(0.0), z);
    ok = arith::AndIOp::create(b, ok, lanes.isFinite(z));
    Value span = arith::SubFOp::create(b, high, z);
    ok = arith::AndIOp::create(b, ok, lanes.isFinite(span));
    // A non-finite span must not reach the scale search as NaN.
    span = lanes.select(lanes.isFinite(span), span, lanes.f32(0.0));
    scale = lanes.scaleFor(format.scaleKind, lanes.toF64(span),
                           double(getIntCodes(format).maxCode), ok);
    zero = z;
  }

  ImplicitLocOpBuilder &b;
  const an::StorageFormat &format;
  int64_t headDim;
  StorageKind dequantizer;
  Lanes row;
  int64_t rowBytes = 0, scaleLanes = 0, scaleBytes = 4;
  Value codes, scales, zeros;
  /// The target's table permute, where rows decode through it (null:
  /// shifts and conversions).
  const StorageTargetInfo *lookup = nullptr;
};

/// Creates `name` at the end of `container` (a builtin or GPU module) with
/// an entry block.
func::FuncOp createFunction(Operation *container, StringRef name,
                            FunctionType type) {
  OpBuilder builder = OpBuilder::atBlockEnd(&container->getRegion(0).front());
  auto function =
      func::FuncOp::create(builder, container->getLoc(), name, type);
  function.setPrivate();
  // Internal in LLVM too: modules compiled apart (symbol-prefix) link into
  // one program without their shared kernel names clashing.
  function->setAttr(
      "llvm.linkage",
      LLVM::LinkageAttr::get(container->getContext(), LLVM::Linkage::Internal));
  function.addEntryBlock();
  return function;
}
} // namespace

bool mlir::kvprec::foldsKeyScale(const an::StorageFormat &format,
                                 int64_t headDim, StorageKind dequantizer) {
  return an::isScaled(format) && format.scheme == an::QuantScheme::Symmetric &&
         dequantizer == StorageKind::F32 &&
         format.granularity == an::Granularity::TokenGroup &&
         format.groupSize == headDim;
}

static int64_t getLaneCount(Value lanes) {
  return cast<VectorType>(lanes.getType()).getNumElements();
}

Value mlir::kvprec::emitCodeValues(ImplicitLocOpBuilder &b,
                                   const an::StorageFormat &format,
                                   Value codes) {
  KernelEmitter k(b, format, getLaneCount(codes), StorageKind::F32);
  return k.codeValue(codes);
}

Value mlir::kvprec::emitDequantizeValues(ImplicitLocOpBuilder &b,
                                         const an::StorageFormat &format,
                                         StorageKind dequantizer, Value values,
                                         Value scale, Value zero) {
  KernelEmitter k(b, format, getLaneCount(values), dequantizer);
  return k.dequantizeValue(values, scale, zero);
}

Value mlir::kvprec::emitElementBounds(ImplicitLocOpBuilder &b,
                                      const an::StorageFormat &format,
                                      StorageKind dequantizer, Value codes,
                                      Value value, Value scale) {
  KernelEmitter k(b, format, getLaneCount(value), dequantizer);
  return k.elementBound(codes, value, scale);
}

Value mlir::kvprec::emitWidenScales(ImplicitLocOpBuilder &b,
                                    const an::StorageFormat &format,
                                    Value raw) {
  if (format.scaleKind == StorageKind::F32)
    return raw;
  int64_t lanes = getLaneCount(raw);
  Type half = format.scaleKind == StorageKind::F16 ? Type(b.getF16Type())
                                                   : Type(b.getBF16Type());
  return arith::ExtFOp::create(
      b, VectorType::get({lanes}, b.getF32Type()),
      Value(arith::BitcastOp::create(b, VectorType::get({lanes}, half), raw)));
}

/// The body of store(...) (see FormatKernels) over pieces of at most
/// `pieceLanes` elements of a row, for targets whose registers do not hold
/// whole rows (a GPU thread): each piece takes W consecutive elements of
/// each field (planar sub-byte codes pack the fields of the same bytes), W
/// dividing the field and, for token groups, the group. Per element it
/// does what the whole-row kernel does (group statistics are maxima and
/// minima, exact in any order; scale search, quantization, dequantization
/// and the checks lane by lane), so it stores the same bits. A row (or a
/// channel group) is checked in full before any byte of it is written.
static void emitPiecewiseStore(func::FuncOp fn, const an::StorageFormat &format,
                               int64_t d, StorageKind dequantizer,
                               int64_t pieceLanes) {
  Block &entry = fn.front();
  ImplicitLocOpBuilder b(fn.getLoc(), OpBuilder::atBlockBegin(&entry));
  KernelEmitter k(b, format, d, dequantizer);
  auto args = entry.getArguments();
  Value src = args[4], srcOff = args[5], row0 = args[6], rows = args[7];
  Value dry = args[8];
  k.openViews(args[0], args[1], args[2], args[3]);
  Type f32 = b.getF32Type(), i32 = b.getI32Type();
  const int64_t bits = an::getBitWidth(format.kind);
  const int64_t fields = bits < 8 ? 8 / bits : 1;
  const int64_t perField = bits < 8 ? k.rowBytes : d;
  const bool scaled = an::isScaled(format);
  const bool tokenGroups =
      scaled && format.granularity == an::Granularity::TokenGroup;
  const bool asymmetric =
      scaled && format.scheme == an::QuantScheme::Asymmetric;
  const int64_t g = scaled ? format.groupSize : 0;
  int64_t W = pieceLanes;
  while (W > 1 && (perField % W || (tokenGroups && g % W)))
    W /= 2;
  const int64_t pieces = perField / W;
  auto cst = [](ImplicitLocOpBuilder &nb, int64_t v) -> Value {
    return arith::ConstantIndexOp::create(nb, v);
  };
  auto addI = [](ImplicitLocOpBuilder &nb, Value x, Value y) -> Value {
    return arith::AddIOp::create(nb, x, y);
  };
  auto mulI = [&](ImplicitLocOpBuilder &nb, Value x, int64_t y) -> Value {
    return arith::MulIOp::create(nb, x, cst(nb, y));
  };
  auto andB = [](ImplicitLocOpBuilder &nb, Value x, Value y) -> Value {
    return arith::AndIOp::create(nb, x, y);
  };
  auto notB = [](ImplicitLocOpBuilder &nb, Value x) -> Value {
    return arith::XOrIOp::create(nb, x, arith::ConstantIntOp::create(nb, 1, 1));
  };
  auto loadLanes = [&](ImplicitLocOpBuilder &nb, Value at) -> Value {
    return vector::LoadOp::create(nb, VectorType::get({W}, f32), src,
                                  ValueRange{at});
  };
  // Stores the codes of one piece of row `row`: `codes[f]` the W code lanes
  // of field f.
  auto storePiece = [&](ImplicitLocOpBuilder &nb, ArrayRef<Value> codes,
                        Value row, Value q) {
    KernelEmitter w = k.at(nb);
    VectorType laneI32 = VectorType::get({W}, i32);
    if (bits >= 8) {
      Value at = addI(nb, mulI(nb, row, d), mulI(nb, q, W));
      Value value = codes[0];
      if (format.kind == StorageKind::F32)
        value = arith::BitcastOp::create(nb, VectorType::get({W}, f32), value);
      else
        value = arith::TruncIOp::create(
            nb, VectorType::get({W}, w.codeElement()), value);
      vector::StoreOp::create(nb, value, w.codes, ValueRange{at});
      return;
    }
    Value packed;
    for (int64_t f = 0; f < fields; ++f) {
      Value field = arith::AndIOp::create(
          nb, codes[f],
          arith::ConstantOp::create(
              nb, DenseElementsAttr::get(
                      laneI32, nb.getI32IntegerAttr((1 << bits) - 1))));
      if (f)
        field = arith::ShLIOp::create(
            nb, field,
            arith::ConstantOp::create(
                nb, DenseElementsAttr::get(
                        laneI32, nb.getI32IntegerAttr(int32_t(f * bits)))));
      packed = f ? Value(arith::OrIOp::create(nb, packed, field)) : field;
    }
    Value at = addI(nb, mulI(nb, row, k.rowBytes), mulI(nb, q, W));
    vector::StoreOp::create(
        nb,
        arith::TruncIOp::create(nb, VectorType::get({W}, nb.getI8Type()),
                                packed),
        w.codes, ValueRange{at});
  };

  Value okInit = arith::ConstantIntOp::create(b, 1, 1);
  Value ok;
  if (!scaled || tokenGroups) {
    const int64_t groups = tokenGroups ? d / g : 0;
    auto loop = scf::ForOp::create(
        b, cst(b, 0), rows, cst(b, 1), ValueRange{okInit},
        [&](OpBuilder &nested, Location loc, Value r, ValueRange iter) {
          ImplicitLocOpBuilder ib(loc, nested);
          Value base = addI(ib, srcOff, mulI(ib, r, d));
          Value rowOk = arith::ConstantIntOp::create(ib, 1, 1);
          Value scaleGroups, zeroGroups;
          Lanes groupLanes(ib, std::max<int64_t>(groups, 1));
          if (tokenGroups) {
            // Group statistics over the row's pieces.
            Lanes gl(ib, groups);
            Value inf = gl.f32(std::numeric_limits<float>::infinity());
            Value negInf = gl.f32(-std::numeric_limits<float>::infinity());
            auto stats = scf::ForOp::create(
                ib, cst(ib, 0), cst(ib, d / W), cst(ib, 1),
                ValueRange{inf, negInf, rowOk},
                [&](OpBuilder &n2, Location l2, Value p, ValueRange acc) {
                  ImplicitLocOpBuilder sb(l2, n2);
                  Lanes pl(sb, W);
                  Value x = loadLanes(sb, addI(sb, base, mulI(sb, p, W)));
                  Value group =
                      arith::DivUIOp::create(sb, mulI(sb, p, W), cst(sb, g));
                  Value high = acc[1], low = acc[0];
                  Value oldHigh = vector::ExtractOp::create(sb, high, group);
                  Value pieceHigh =
                      asymmetric ? Value(vector::ReductionOp::create(
                                       sb, vector::CombiningKind::MAXIMUMF, x))
                                 : Value(vector::ReductionOp::create(
                                       sb, vector::CombiningKind::MAXIMUMF,
                                       math::AbsFOp::create(sb, x)));
                  high = vector::InsertOp::create(
                      sb, arith::MaximumFOp::create(sb, oldHigh, pieceHigh),
                      high, group);
                  if (asymmetric) {
                    Value oldLow = vector::ExtractOp::create(sb, low, group);
                    Value pieceLow = vector::ReductionOp::create(
                        sb, vector::CombiningKind::MINIMUMF, x);
                    low = vector::InsertOp::create(
                        sb, arith::MinimumFOp::create(sb, oldLow, pieceLow),
                        low, group);
                  }
                  Value finite = andB(sb, acc[2], pl.all(pl.isFinite(x)));
                  scf::YieldOp::create(sb, ValueRange{low, high, finite});
                });
            Value groupOk = gl.i1(true);
            KernelEmitter ge(ib, format, d, dequantizer);
            ge.scalesFor(gl, stats.getResult(0), stats.getResult(1),
                         scaleGroups, zeroGroups, groupOk);
            rowOk = andB(ib, stats.getResult(2), gl.all(groupOk));
          }
          // The codes of piece q's fields (and whether they dequantize to
          // finite values).
          auto pieceCodes = [&](ImplicitLocOpBuilder &pb, Value q,
                                SmallVector<Value> &codes) -> Value {
            KernelEmitter pe(pb, format, W, dequantizer);
            Lanes pl(pb, W);
            Value pieceOk = arith::ConstantIntOp::create(pb, 1, 1);
            for (int64_t f = 0; f < fields; ++f) {
              Value element = addI(pb, cst(pb, f * perField), mulI(pb, q, W));
              Value x = loadLanes(pb, addI(pb, base, element));
              Value scale, zero;
              if (tokenGroups) {
                Value group = arith::DivUIOp::create(pb, element, cst(pb, g));
                scale = vector::BroadcastOp::create(
                    pb, pl.type(f32),
                    vector::ExtractOp::create(pb, scaleGroups, group));
                if (asymmetric)
                  zero = vector::BroadcastOp::create(
                      pb, pl.type(f32),
                      vector::ExtractOp::create(pb, zeroGroups, group));
              }
              Value dequantized;
              codes.push_back(pe.quantize(x, scale, zero, dequantized));
              pieceOk = andB(pb, pieceOk,
                             andB(pb, pl.all(pl.isFinite(x)),
                                  pl.all(pl.isFinite(dequantized))));
            }
            return pieceOk;
          };
          auto check = scf::ForOp::create(
              ib, cst(ib, 0), cst(ib, pieces), cst(ib, 1), ValueRange{rowOk},
              [&](OpBuilder &n2, Location l2, Value q, ValueRange acc) {
                ImplicitLocOpBuilder cb(l2, n2);
                SmallVector<Value> codes;
                Value pieceOk = pieceCodes(cb, q, codes);
                scf::YieldOp::create(cb, ValueRange{andB(cb, acc[0], pieceOk)});
              });
          rowOk = check.getResult(0);
          Value write = andB(ib, rowOk, notB(ib, dry));
          Value at = addI(ib, row0, r);
          scf::IfOp::create(ib, write, [&](OpBuilder &then, Location l) {
            ImplicitLocOpBuilder tb(l, then);
            scf::ForOp::create(
                tb, cst(tb, 0), cst(tb, pieces), cst(tb, 1), ValueRange{},
                [&](OpBuilder &n2, Location l2, Value q, ValueRange) {
                  ImplicitLocOpBuilder wb(l2, n2);
                  SmallVector<Value> codes;
                  (void)pieceCodes(wb, q, codes);
                  storePiece(wb, codes, at, q);
                  scf::YieldOp::create(wb);
                });
            if (tokenGroups) {
              KernelEmitter w = k.at(tb);
              Lanes gl(tb, groups);
              w.storeScales(scaleGroups, w.scales, w.scaleRowAt(at), gl);
              if (asymmetric)
                w.storeScales(zeroGroups, w.zeros, w.scaleRowAt(at), gl);
            }
            scf::YieldOp::create(tb);
          });
          (void)groupLanes;
          scf::YieldOp::create(ib, ValueRange{andB(ib, iter[0], rowOk)});
        });
    ok = loop.getResult(0);
  } else {
    // Channel groups: per piece, the channels' range over the group's rows,
    // their scales, then the rows' codes.
    auto loop = scf::ForOp::create(
        b, cst(b, 0), rows, cst(b, g), ValueRange{okInit},
        [&](OpBuilder &nested, Location loc, Value groupBegin,
            ValueRange iter) {
          ImplicitLocOpBuilder ib(loc, nested);
          Value count = arith::MinSIOp::create(
              ib, cst(ib, g), arith::SubIOp::create(ib, rows, groupBegin));
          auto rowAt = [&](ImplicitLocOpBuilder &rb, Value i, Value element) {
            return loadLanes(
                rb,
                addI(rb, srcOff,
                     addI(rb, mulI(rb, addI(rb, groupBegin, i), d), element)));
          };
          // Scale and zero lanes of field f of piece q, and whether the
          // channels can be stored.
          auto scalesOf = [&](ImplicitLocOpBuilder &sb, Value element,
                              Value &scale, Value &zero) -> Value {
            Lanes pl(sb, W);
            Value inf = pl.f32(std::numeric_limits<float>::infinity());
            Value negInf = pl.f32(-std::numeric_limits<float>::infinity());
            auto range = scf::ForOp::create(
                sb, cst(sb, 0), count, cst(sb, 1),
                ValueRange{inf, negInf, pl.i1(true)},
                [&](OpBuilder &n2, Location l2, Value i, ValueRange acc) {
                  ImplicitLocOpBuilder rb(l2, n2);
                  Lanes rl(rb, W);
                  Value x = rowAt(rb, i, element);
                  Value finite = rl.isFinite(x);
                  Value clean = rl.select(finite, x, rl.f32(0.0));
                  Value low, high;
                  if (asymmetric) {
                    low = arith::MinimumFOp::create(rb, acc[0], clean);
                    high = arith::MaximumFOp::create(rb, acc[1], clean);
                  } else {
                    low = acc[0];
                    high = arith::MaximumFOp::create(
                        rb, acc[1], math::AbsFOp::create(rb, clean));
                  }
                  scf::YieldOp::create(
                      rb, ValueRange{low, high, andB(rb, acc[2], finite)});
                });
            Value laneOk = range.getResult(2);
            KernelEmitter se(sb, format, W, dequantizer);
            se.scalesFor(pl, range.getResult(0), range.getResult(1), scale,
                         zero, laneOk);
            return laneOk;
          };
          auto codesOf = [&](ImplicitLocOpBuilder &cb, Value i, Value element,
                             Value scale, Value zero, Value &deqOk) {
            KernelEmitter ce(cb, format, W, dequantizer);
            Lanes cl(cb, W);
            Value dequantized;
            Value codes =
                ce.quantize(rowAt(cb, i, element), scale, zero, dequantized);
            deqOk = cl.isFinite(dequantized);
            return codes;
          };
          auto check = scf::ForOp::create(
              ib, cst(ib, 0), cst(ib, pieces), cst(ib, 1),
              ValueRange{arith::ConstantIntOp::create(ib, 1, 1)},
              [&](OpBuilder &n2, Location l2, Value q, ValueRange acc) {
                ImplicitLocOpBuilder pb(l2, n2);
                Value pieceOk = acc[0];
                for (int64_t f = 0; f < fields; ++f) {
                  Value element =
                      addI(pb, cst(pb, f * perField), mulI(pb, q, W));
                  Value scale, zero;
                  Value laneOk = scalesOf(pb, element, scale, zero);
                  auto rowsLoop = scf::ForOp::create(
                      pb, cst(pb, 0), count, cst(pb, 1), ValueRange{laneOk},
                      [&](OpBuilder &n3, Location l3, Value i, ValueRange a) {
                        ImplicitLocOpBuilder rb(l3, n3);
                        Value deqOk;
                        (void)codesOf(rb, i, element, scale, zero, deqOk);
                        scf::YieldOp::create(rb,
                                             ValueRange{andB(rb, a[0], deqOk)});
                      });
                  Lanes pl(pb, W);
                  pieceOk = andB(pb, pieceOk, pl.all(rowsLoop.getResult(0)));
                }
                scf::YieldOp::create(pb, ValueRange{pieceOk});
              });
          Value groupOk = check.getResult(0);
          Value write = andB(ib, groupOk, notB(ib, dry));
          scf::IfOp::create(ib, write, [&](OpBuilder &then, Location l) {
            ImplicitLocOpBuilder tb(l, then);
            Value first = addI(tb, row0, groupBegin);
            scf::ForOp::create(
                tb, cst(tb, 0), cst(tb, pieces), cst(tb, 1), ValueRange{},
                [&](OpBuilder &n2, Location l2, Value q, ValueRange) {
                  ImplicitLocOpBuilder pb(l2, n2);
                  KernelEmitter w = k.at(pb);
                  Lanes pl(pb, W);
                  SmallVector<Value> scales, zeros, elements;
                  for (int64_t f = 0; f < fields; ++f) {
                    Value element =
                        addI(pb, cst(pb, f * perField), mulI(pb, q, W));
                    Value scale, zero;
                    (void)scalesOf(pb, element, scale, zero);
                    Value at = addI(pb, w.scaleRowAt(first), element);
                    w.storeScales(scale, w.scales, at, pl);
                    if (asymmetric)
                      w.storeScales(zero, w.zeros, at, pl);
                    scales.push_back(scale);
                    zeros.push_back(zero);
                    elements.push_back(element);
                  }
                  scf::ForOp::create(
                      pb, cst(pb, 0), count, cst(pb, 1), ValueRange{},
                      [&](OpBuilder &n3, Location l3, Value i, ValueRange) {
                        ImplicitLocOpBuilder rb(l3, n3);
                        SmallVector<Value> codes;
                        for (int64_t f = 0; f < fields; ++f) {
                          Value deqOk;
                          codes.push_back(codesOf(rb, i, elements[f], scales[f],
                                                  zeros[f], deqOk));
                        }
                        storePiece(rb, codes, addI(rb, first, i), q);
                        scf::YieldOp::create(rb);
                      });
                  scf::YieldOp::create(pb);
                });
            scf::YieldOp::create(tb);
          });
          scf::YieldOp::create(ib, ValueRange{andB(ib, iter[0], groupOk)});
        });
    ok = loop.getResult(0);
  }
  Value status = arith::SelectOp::create(
      b, ok, arith::ConstantIntOp::create(b, 0, 32),
      arith::ConstantIntOp::create(b, int64_t(CacheStatus::Unrepresentable),
                                   32));
  func::ReturnOp::create(b, status);
}

namespace {
/// A kernel over the rows of a run: its function (the arena and the run's
/// code, scale and zero offsets, then `rest`), a builder at its entry and
/// an emitter over the run's views.
struct RowKernel {
  RowKernel(Operation *module, const std::string &name, ArrayRef<Type> rest,
            const an::StorageFormat &format, int64_t headDim,
            StorageKind dequantizer, const StorageTargetInfo &target)
      : fn(create(module, name, rest)),
        b(fn.getLoc(), OpBuilder::atBlockEnd(&fn.front())),
        k(b, format, headDim, dequantizer) {
    if (target.hasTableLookup16())
      k.lookup = &target;
    ValueRange all = fn.front().getArguments();
    k.openViews(all[0], all[1], all[2], all[3]);
  }
  /// The arguments after the four of the run.
  ValueRange args() { return fn.front().getArguments().drop_front(4); }

  func::FuncOp fn;
  ImplicitLocOpBuilder b;
  KernelEmitter k;

private:
  static func::FuncOp create(Operation *module, const std::string &name,
                             ArrayRef<Type> rest) {
    MLIRContext *context = module->getContext();
    Type index = IndexType::get(context);
    SmallVector<Type> inputs{
        MemRefType::get({ShapedType::kDynamic}, IntegerType::get(context, 8)),
        index, index, index};
    inputs.append(rest.begin(), rest.end());
    return createFunction(module, name, FunctionType::get(context, inputs, {}));
  }
};
} // namespace

std::string FormatCodegen::getMangledName(const an::StorageFormat &format) {
  std::string name = an::getStorageKindName(format.kind);
  if (!an::isScaled(format))
    return name;
  name += format.scheme == an::QuantScheme::Symmetric ? "_sym" : "_asym";
  name += format.granularity == an::Granularity::TokenGroup ? "_tg" : "_cg";
  name += std::to_string(format.groupSize);
  name += "_";
  name += an::getStorageKindName(format.scaleKind);
  return name;
}

const FormatKernels &FormatCodegen::get(const an::StorageFormat &format,
                                        int64_t headDim,
                                        StorageKind dequantizer,
                                        bool withBounds) {
  std::string base = "kvprec_" + getMangledName(format) + "_d" +
                     std::to_string(headDim) + "_" +
                     an::getStorageKindName(dequantizer);
  auto found = kernels.find(base);
  if (found != kernels.end() && (!withBounds || found->second.bounds))
    return found->second;
  const bool haveStoreAndLoad = found != kernels.end();
  MLIRContext *context = module->getContext();
  Type index = IndexType::get(context);
  Type i1 = IntegerType::get(context, 1);
  Type i32 = IntegerType::get(context, 32);
  Type f32 = Float32Type::get(context);
  Type arena =
      MemRefType::get({ShapedType::kDynamic}, IntegerType::get(context, 8));
  Type floats = MemRefType::get({ShapedType::kDynamic}, f32);
  FormatKernels result = haveStoreAndLoad ? found->second : FormatKernels();
  const int64_t d = headDim;

  // store(arena, code, scale, zero, src, srcOff, row0, rows, dry) -> i32
  if (!haveStoreAndLoad && target.getStorePieceLanes() > 0) {
    func::FuncOp fn =
        createFunction(module, base + "_store",
                       FunctionType::get(context,
                                         {arena, index, index, index, floats,
                                          index, index, index, i1},
                                         {i32}));
    emitPiecewiseStore(fn, format, d, dequantizer, target.getStorePieceLanes());
    result.store = fn;
  } else if (!haveStoreAndLoad) {
    func::FuncOp fn =
        createFunction(module, base + "_store",
                       FunctionType::get(context,
                                         {arena, index, index, index, floats,
                                          index, index, index, i1},
                                         {i32}));
    Block &entry = fn.front();
    ImplicitLocOpBuilder b(fn.getLoc(), OpBuilder::atBlockBegin(&entry));
    KernelEmitter k(b, format, d, dequantizer);
    auto args = entry.getArguments();
    Value src = args[4], srcOff = args[5], row0 = args[6], rows = args[7];
    Value dry = args[8];
    k.openViews(args[0], args[1], args[2], args[3]);
    Value zeroIndex = k.index(0), oneIndex = k.index(1);
    Value okInit = arith::ConstantIntOp::create(b, 1, 1);
    Value ok;
    if (!k.isChannelGroup()) {
      auto loop = scf::ForOp::create(
          b, zeroIndex, rows, oneIndex, ValueRange{okInit},
          [&](OpBuilder &nested, Location loc, Value r, ValueRange iter) {
            ImplicitLocOpBuilder ib(loc, nested);
            KernelEmitter e = k.at(ib);
            Value x =
                vector::LoadOp::create(ib, e.row.type(f32), src,
                                       ValueRange{e.add(srcOff, e.mul(r, d))});
            Value laneOk = e.row.isFinite(x);
            Value scale, zero, scaleGroups, zeroGroups;
            if (e.isScaled()) {
              Lanes groups(ib, e.scaleLanes);
              Value low, high;
              e.tokenGroupRange(x, low, high);
              // Non-finite inputs fail below; keep NaN out of the search.
              Value groupOk = groups.i1(true);
              e.scalesFor(groups, low, high, scaleGroups, zeroGroups, groupOk);
              laneOk =
                  arith::AndIOp::create(ib, laneOk, e.expandGroups(groupOk));
              scale = e.expandGroups(scaleGroups);
              zero = e.isAsymmetric() ? e.expandGroups(zeroGroups) : Value();
            }
            Value dequantized;
            Value codeLanes = e.quantize(x, scale, zero, dequantized);
            laneOk =
                arith::AndIOp::create(ib, laneOk, e.row.isFinite(dequantized));
            Value rowOk = e.row.all(laneOk);
            Value write = arith::AndIOp::create(
                ib, rowOk,
                arith::XOrIOp::create(ib, dry,
                                      arith::ConstantIntOp::create(ib, 1, 1)));
            Value at = e.add(row0, r);
            scf::IfOp::create(ib, write, [&](OpBuilder &then, Location l) {
              ImplicitLocOpBuilder tb(l, then);
              KernelEmitter w = e.at(tb);
              w.storeCodes(codeLanes, at);
              if (w.isScaled()) {
                Lanes groups(tb, w.scaleLanes);
                w.storeScales(scaleGroups, w.scales, w.scaleRowAt(at), groups);
                if (w.isAsymmetric())
                  w.storeScales(zeroGroups, w.zeros, w.scaleRowAt(at), groups);
              }
              scf::YieldOp::create(tb);
            });
            scf::YieldOp::create(
                ib, ValueRange{arith::AndIOp::create(ib, iter[0], rowOk)});
          });
      ok = loop.getResult(0);
    } else {
      const int64_t g = format.groupSize;
      auto loop = scf::ForOp::create(
          b, zeroIndex, rows, k.index(g), ValueRange{okInit},
          [&](OpBuilder &nested, Location loc, Value groupBegin,
              ValueRange iter) {
            ImplicitLocOpBuilder ib(loc, nested);
            KernelEmitter e = k.at(ib);
            Value count = arith::MinSIOp::create(
                ib, e.index(g), arith::SubIOp::create(ib, rows, groupBegin));
            auto rowAt = [&](ImplicitLocOpBuilder &rb, KernelEmitter &re,
                             Value i) -> Value {
              return vector::LoadOp::create(
                  rb, re.row.type(f32), src,
                  ValueRange{re.add(srcOff, re.mul(re.add(groupBegin, i), d))});
            };
            // Pass 1: per-channel range and finiteness over the group.
            Value inf = e.row.f32(std::numeric_limits<float>::infinity());
            Value negInf = e.row.f32(-std::numeric_limits<float>::infinity());
            auto range = scf::ForOp::create(
                ib, e.index(0), count, e.index(1),
                ValueRange{inf, negInf, e.row.i1(true)},
                [&](OpBuilder &n2, Location l2, Value i, ValueRange acc) {
                  ImplicitLocOpBuilder rb(l2, n2);
                  KernelEmitter re(rb, format, d, dequantizer);
                  Value x = rowAt(rb, re, i);
                  Value finite = re.row.isFinite(x);
                  Value clean = re.row.select(finite, x, re.row.f32(0.0));
                  Value low, high;
                  if (re.isAsymmetric()) {
                    low = arith::MinimumFOp::create(rb, acc[0], clean);
                    high = arith::MaximumFOp::create(rb, acc[1], clean);
                  } else {
                    low = acc[0];
                    high = arith::MaximumFOp::create(
                        rb, acc[1], math::AbsFOp::create(rb, clean));
                  }
                  scf::YieldOp::create(rb, ValueRange{low, high,
                                                      arith::AndIOp::create(
                                                          rb, acc[2], finite)});
                });
            Value low = range.getResult(0), high = range.getResult(1);
            Value laneOk = range.getResult(2);
            Value scale, zero;
            e.scalesFor(e.row, low, high, scale, zero, laneOk);
            // Pass 2: codes, and the dequantized values' finiteness.
            auto codesLoop = scf::ForOp::create(
                ib, e.index(0), count, e.index(1), ValueRange{laneOk},
                [&](OpBuilder &n2, Location l2, Value i, ValueRange acc) {
                  ImplicitLocOpBuilder rb(l2, n2);
                  KernelEmitter re(rb, format, d, dequantizer);
                  Value dequantized;
                  re.quantize(rowAt(rb, re, i), scale, zero, dequantized);
                  scf::YieldOp::create(
                      rb, ValueRange{arith::AndIOp::create(
                              rb, acc[0], re.row.isFinite(dequantized))});
                });
            Value groupOk = e.row.all(codesLoop.getResult(0));
            Value write = arith::AndIOp::create(
                ib, groupOk,
                arith::XOrIOp::create(ib, dry,
                                      arith::ConstantIntOp::create(ib, 1, 1)));
            scf::IfOp::create(ib, write, [&](OpBuilder &then, Location l) {
              ImplicitLocOpBuilder tb(l, then);
              KernelEmitter w = e.at(tb);
              Value first = w.add(row0, groupBegin);
              w.storeScales(scale, w.scales, w.scaleRowAt(first), w.row);
              if (w.isAsymmetric())
                w.storeScales(zero, w.zeros, w.scaleRowAt(first), w.row);
              scf::ForOp::create(
                  tb, w.index(0), count, w.index(1), ValueRange{},
                  [&](OpBuilder &n3, Location l3, Value i, ValueRange) {
                    ImplicitLocOpBuilder sb(l3, n3);
                    KernelEmitter se = w.at(sb);
                    Value dequantized;
                    Value codeLanes =
                        se.quantize(rowAt(sb, se, i), scale, zero, dequantized);
                    se.storeCodes(codeLanes, se.add(first, i));
                    scf::YieldOp::create(sb);
                  });
              scf::YieldOp::create(tb);
            });
            scf::YieldOp::create(
                ib, ValueRange{arith::AndIOp::create(ib, iter[0], groupOk)});
          });
      ok = loop.getResult(0);
    }
    Value status = arith::SelectOp::create(
        b, ok, arith::ConstantIntOp::create(b, 0, 32),
        arith::ConstantIntOp::create(b, int64_t(CacheStatus::Unrepresentable),
                                     32));
    func::ReturnOp::create(b, status);
    result.store = fn;
  }

  // The kernels over rows [row0, row0 + rows) of a run, writing row i to
  // dst[dstOff + i * d]:
  //  * load(arena, code, scale, zero, row0, rows, dst, dstOff): the
  //    dequantized rows;
  //  * load_bounds(<the same>, bounds): also the error bound of each
  //    element to bounds[dstOff...] (the run-time certificate, and the
  //    bound a demoted block inherits);
  //  * load_keys(<the same>, rowScales): what attention's logits multiply
  //    with the query, and a factor per row to rowScales[i]: the code values
  //    and the row's scale where the scale folds (KernelEmitter::foldsScale),
  //    the dequantized row and 1 elsewhere.
  enum class RowsKernel { Load, LoadBounds, LoadKeys };
  auto emitRowsKernel = [&](StringRef suffix, RowsKernel kind) {
    SmallVector<Type> rest{index, index, floats, index};
    if (kind != RowsKernel::Load)
      rest.push_back(floats);
    RowKernel kernel(module, base + suffix.str(), rest, format, d, dequantizer,
                     target);
    ImplicitLocOpBuilder &b = kernel.b;
    KernelEmitter &k = kernel.k;
    ValueRange args = kernel.args();
    Value row0 = args[0], rows = args[1], dst = args[2], dstOff = args[3];
    scf::ForOp::create(
        b, k.index(0), rows, k.index(1), ValueRange{},
        [&](OpBuilder &nested, Location loc, Value i, ValueRange) {
          ImplicitLocOpBuilder ib(loc, nested);
          KernelEmitter e = k.at(ib);
          // Separate statements: argument evaluation order differs between
          // compilers, and the IR should not.
          Value r = e.add(row0, i);
          Value at = e.add(dstOff, e.mul(i, d));
          Value delta;
          e.prefetchAhead(r, target.getPrefetchDistance());
          Value lanes = kind == RowsKernel::LoadBounds
                            ? e.loadRowAndBound(r, delta)
                        : kind == RowsKernel::LoadKeys ? e.rowForDot(r)
                                                       : e.loadRow(r);
          vector::StoreOp::create(ib, lanes, dst, ValueRange{at});
          if (kind == RowsKernel::LoadBounds)
            vector::StoreOp::create(ib, delta, args[4], ValueRange{at});
          if (kind == RowsKernel::LoadKeys) {
            Value factor =
                e.foldsScale()
                    ? e.rowScale(r)
                    : Value(arith::ConstantFloatOp::create(
                          ib, Float32Type::get(context), APFloat(1.0f)));
            memref::StoreOp::create(ib, factor, args[4], ValueRange{i});
          }
          scf::YieldOp::create(ib);
        });
    func::ReturnOp::create(b);
    return kernel.fn;
  };
  // Attention over rows [row0, row0 + rows) of a run for one query head,
  // each row dequantized in registers where it is used (no f32 tile):
  //  * logits(arena, code, scale, zero, row0, rows, q, qOff, scale: f32,
  //           out, outOff): out[outOff + i] = scale * f_i * (q . k_i), k_i
  //    and f_i what load_keys gives (f_i = 1 is not multiplied), the dot
  //    products as attention's tile_logits computes them (groups of w rows
  //    reduced by one transposed tree, the rest one row at a time);
  //  * accumulate(arena, code, scale, zero, row0, rows, p, pOff, acc,
  //               accOff): acc[accOff...] += sum_i p[pOff + i] v_i in row
  //    order, v_i what load gives, the accumulator in registers.
  // The same operations in the same order as load_keys + tile_logits and
  // load + tile_accumulate for one head.
  auto emitLogitsKernel = [&]() {
    RowKernel kernel(module, base + "_logits",
                     {index, index, floats, index, f32, floats, index}, format,
                     d, dequantizer, target);
    ImplicitLocOpBuilder &b = kernel.b;
    KernelEmitter &k = kernel.k;
    ValueRange args = kernel.args();
    Value row0 = args[0], rows = args[1], q = args[2], qOff = args[3],
          scale = args[4], out = args[5], outOff = args[6];
    Value qv = vector::LoadOp::create(b, k.row.type(f32), q, ValueRange{qOff});
    const int64_t w = target.getF32Lanes();
    const int64_t distance = target.getPrefetchDistance();
    // The dot product of row r with q, as a `chunk`-lane partial, and the
    // row's factor where the scale folds.
    auto rowDot = [&](KernelEmitter &e, Value r, int64_t chunk) {
      e.prefetchAhead(r, distance);
      return emitChunkDot(e.b, qv, e.rowForDot(r), chunk);
    };
    Value grouped = k.index(0);
    if (d % w == 0 && (w & (w - 1)) == 0 && w >= 2) {
      grouped = k.mul(arith::DivUIOp::create(b, rows, k.index(w)), w);
      scf::ForOp::create(
          b, k.index(0), grouped, k.index(w), ValueRange{},
          [&](OpBuilder &nested, Location loc, Value i0, ValueRange) {
            ImplicitLocOpBuilder ib(loc, nested);
            KernelEmitter e = k.at(ib);
            Value r0 = e.add(row0, i0);
            SmallVector<Value> partials;
            for (int64_t i = 0; i < w; ++i)
              partials.push_back(rowDot(e, e.add(r0, e.index(i)), w));
            Value dots = emitRowSums(ib, partials);
            Lanes lanes(ib, w);
            if (e.foldsScale())
              dots = arith::MulFOp::create(ib, dots,
                                           e.loadScales(e.scales, r0, lanes));
            dots = arith::MulFOp::create(
                ib, dots,
                vector::BroadcastOp::create(ib, lanes.type(f32), scale));
            vector::StoreOp::create(ib, dots, out,
                                    ValueRange{e.add(outOff, i0)});
            scf::YieldOp::create(ib);
          });
    }
    scf::ForOp::create(
        b, grouped, rows, k.index(1), ValueRange{},
        [&](OpBuilder &nested, Location loc, Value i, ValueRange) {
          ImplicitLocOpBuilder ib(loc, nested);
          KernelEmitter e = k.at(ib);
          Value r = e.add(row0, i);
          Value dot = emitLaneSum(ib, rowDot(e, r, getLaneChunk(d)));
          if (e.foldsScale())
            dot = arith::MulFOp::create(ib, dot, e.rowScale(r));
          memref::StoreOp::create(ib, arith::MulFOp::create(ib, dot, scale),
                                  out, ValueRange{e.add(outOff, i)});
          scf::YieldOp::create(ib);
        });
    func::ReturnOp::create(b);
    return kernel.fn;
  };
  auto emitAccumulateKernel = [&]() {
    RowKernel kernel(module, base + "_accumulate",
                     {index, index, floats, index, floats, index}, format, d,
                     dequantizer, target);
    ImplicitLocOpBuilder &b = kernel.b;
    KernelEmitter &k = kernel.k;
    ValueRange args = kernel.args();
    Value row0 = args[0], rows = args[1], p = args[2], pOff = args[3],
          acc = args[4], accOff = args[5];
    VectorType vt = k.row.type(f32);
    Value initial = vector::LoadOp::create(b, vt, acc, ValueRange{accOff});
    auto loop = scf::ForOp::create(
        b, k.index(0), rows, k.index(1), ValueRange{initial},
        [&](OpBuilder &nested, Location loc, Value i, ValueRange current) {
          ImplicitLocOpBuilder ib(loc, nested);
          KernelEmitter e = k.at(ib);
          Value r = e.add(row0, i);
          e.prefetchAhead(r, target.getPrefetchDistance());
          Value value = e.loadRow(r);
          Value weight =
              memref::LoadOp::create(ib, p, ValueRange{e.add(pOff, i)});
          Value splat = vector::BroadcastOp::create(ib, vt, weight);
          scf::YieldOp::create(ib, ValueRange{vector::FMAOp::create(
                                       ib, splat, value, current[0])});
        });
    vector::StoreOp::create(b, loop.getResult(0), acc, ValueRange{accOff});
    func::ReturnOp::create(b);
    return kernel.fn;
  };
  if (!haveStoreAndLoad) {
    result.load = emitRowsKernel("_load", RowsKernel::Load);
    result.loadKeys = emitRowsKernel("_load_keys", RowsKernel::LoadKeys);
    result.logits = emitLogitsKernel();
    result.accumulate = emitAccumulateKernel();
  }
  if (withBounds)
    result.bounds = emitRowsKernel("_load_bounds", RowsKernel::LoadBounds);

  FormatKernels &entry = kernels[base];
  entry = result;
  return entry;
}
