//===- Quantizer.cpp - Bit-exact KV-cache quantization emulation ----------===//

#include "kvprec/Analysis/Quantizer.h"
#include "kvprec/Analysis/SoftFloat.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>

using namespace kvprec::analysis;

double
kvprec::analysis::getDequantizerUnitRoundoff(const DequantizerConfig &config) {
  return getFloatFormatInfo(config.precision).unitRoundoff;
}

double
kvprec::analysis::getDequantizerMinSubnormal(const DequantizerConfig &config) {
  return getFloatFormatInfo(config.precision).minSubnormal;
}

/// True when every value of the float kind `kind` is a value of `precision`.
static bool fitsExactly(StorageKind kind, StorageKind precision) {
  return kind == precision || precision == StorageKind::F32;
}

Status
kvprec::analysis::verifyDequantizerConfig(const StorageFormat &format,
                                          const DequantizerConfig &config) {
  Status status = verifyStorageFormat(format, /*requireStorable=*/false);
  if (status.failed())
    return status;
  StorageKind precision = config.precision;
  if (precision != StorageKind::F32 && precision != StorageKind::F16 &&
      precision != StorageKind::BF16)
    return Status::failure(std::string("dequantizer precision must be f32, "
                                       "f16 or bf16, not ") +
                           getStorageKindName(precision));
  // Every fp8 value and every int code up to 255 is exact in f16 and bf16,
  // so only the stored scale (scaled kinds) or the stored element (unscaled
  // kinds) can fail to fit.
  StorageKind stored = isScaled(format) ? format.scaleKind : format.kind;
  if (!fitsExactly(stored, precision))
    return Status::failure(
        getFormatName(format) + ": a " + getStorageKindName(precision) +
        " dequantizer cannot hold " + getStorageKindName(stored) +
        " stored values exactly; store them as " +
        getStorageKindName(precision));
  return Status::success();
}

/// The largest code magnitude of a symmetric scaled kind: 2^{b-1}-1 for ints,
/// the largest finite value for fp8.
static double getSymmetricMaxCode(StorageKind kind) {
  if (isFp8Kind(kind))
    return getFloatFormatInfo(kind).maxFinite;
  return getIntegerCodeRange(kind, QuantScheme::Symmetric).second;
}

/// The smallest value s of `scaleKind` with s * maxCode >= range. Products are
/// exact in double (s has at most 24 significant bits, maxCode at most 8), so
/// the comparisons decide the real inequality exactly.
static Status computeRoundedUpScale(StorageKind scaleKind, double range,
                                    double maxCode, const std::string &name,
                                    double &scale) {
  if (!(range >= 0.0) || !std::isfinite(range))
    return Status::failure(name + ": group range is not finite");
  if (range == 0.0) {
    scale = getFloatFormatInfo(scaleKind).minSubnormal;
    return Status::success();
  }
  double candidate = roundUpToFloatKind(scaleKind, range / maxCode);
  if (!std::isfinite(candidate))
    return Status::failure(name + ": scale " + std::to_string(range / maxCode) +
                           " overflows the scale kind " +
                           getStorageKindName(scaleKind));
  while (candidate * maxCode < range) {
    candidate = nextUpInKind(scaleKind, candidate);
    if (!std::isfinite(candidate))
      return Status::failure(name + ": scale overflows the scale kind");
  }
  while (candidate > getFloatFormatInfo(scaleKind).minSubnormal) {
    double smaller = nextDownInKind(scaleKind, candidate);
    if (smaller * maxCode < range)
      break;
    candidate = smaller;
  }
  scale = candidate;
  return Status::success();
}

Status kvprec::analysis::computeSymmetricScale(const StorageFormat &format,
                                               double absMax,
                                               GroupScale &result) {
  assert(isScaled(format) && format.scheme == QuantScheme::Symmetric);
  result = GroupScale();
  return computeRoundedUpScale(format.scaleKind, absMax,
                               getSymmetricMaxCode(format.kind),
                               getFormatName(format), result.scale);
}

Status kvprec::analysis::computeAsymmetricScale(const StorageFormat &format,
                                                double minValue,
                                                double maxValue,
                                                GroupScale &result) {
  assert(isIntegerKind(format.kind) &&
         format.scheme == QuantScheme::Asymmetric);
  result = GroupScale();
  std::string name = getFormatName(format);
  if (!std::isfinite(minValue) || !std::isfinite(maxValue) ||
      minValue > maxValue)
    return Status::failure(name + ": invalid group range");
  // Rounding z down keeps min - z >= 0, so no element needs a negative code.
  double zeroPoint = roundDownToFloatKind(format.scaleKind, minValue);
  // A zero minimum stores +0 whether the group's first minimum was +0 or
  // -0: the value is the same, and a vectorised kernel cannot tell which
  // came first.
  if (zeroPoint == 0.0)
    zeroPoint = 0.0;
  if (!std::isfinite(zeroPoint))
    return Status::failure(name + ": zero point overflows the scale kind");
  // The kernel forms max - z in f32; the scale must cover that value.
  float span = static_cast<float>(maxValue) - static_cast<float>(zeroPoint);
  if (!std::isfinite(span))
    return Status::failure(name + ": group range overflows f32");
  double maxCode = getIntegerCodeRange(format.kind, format.scheme).second;
  result.zeroPoint = zeroPoint;
  return computeRoundedUpScale(format.scaleKind, span, maxCode, name,
                               result.scale);
}

Status kvprec::analysis::computeGroupScale(const StorageFormat &format,
                                           const float *values, size_t count,
                                           GroupScale &result) {
  result = GroupScale();
  for (size_t i = 0; i < count; ++i)
    if (!std::isfinite(values[i]))
      return Status::failure(getFormatName(format) +
                             ": group contains a non-finite value");
  if (!isScaled(format))
    return Status::success();
  if (format.scheme == QuantScheme::Symmetric) {
    double absMax = 0.0;
    for (size_t i = 0; i < count; ++i)
      absMax = std::max(absMax, double(std::fabs(values[i])));
    return computeSymmetricScale(format, absMax, result);
  }
  if (count == 0)
    return computeAsymmetricScale(format, 0.0, 0.0, result);
  auto [minIt, maxIt] = std::minmax_element(values, values + count);
  return computeAsymmetricScale(format, *minIt, *maxIt, result);
}

int32_t kvprec::analysis::quantizeElement(const StorageFormat &format,
                                          const GroupScale &scale,
                                          float value) {
  switch (format.kind) {
  case StorageKind::F32: {
    int32_t bits;
    std::memcpy(&bits, &value, sizeof(bits));
    return bits;
  }
  case StorageKind::F16:
  case StorageKind::BF16:
    return static_cast<int32_t>(encodeFloat(format.kind, value));
  case StorageKind::F8E4M3FN:
  case StorageKind::F8E5M2: {
    float scaled = value / static_cast<float>(scale.scale);
    return static_cast<int32_t>(encodeFloat(format.kind, scaled));
  }
  default:
    break;
  }
  auto [minCode, maxCode] = getIntegerCodeRange(format.kind, format.scheme);
  float scaled;
  if (format.scheme == QuantScheme::Symmetric)
    scaled = value / static_cast<float>(scale.scale);
  else
    scaled = (value - static_cast<float>(scale.zeroPoint)) /
             static_cast<float>(scale.scale);
  // nearbyint rounds ties to even in the default rounding mode. The clamp is
  // a guard only: the rounded-up stored scale keeps every code in range.
  float rounded = std::nearbyint(scaled);
  assert(rounded >= float(minCode) && rounded <= float(maxCode) &&
         "quantization clipped despite the rounded-up scale");
  rounded = std::min(std::max(rounded, float(minCode)), float(maxCode));
  return static_cast<int32_t>(rounded);
}

/// The code's value before scaling: the integer, or the fp8 value.
static double getCodeValue(const StorageFormat &format, int32_t code) {
  if (isFp8Kind(format.kind))
    return decodeFloat(format.kind, static_cast<uint32_t>(code));
  return code;
}

/// fl_P(k * s). In f16/bf16 the product is exact in double (code at most 8
/// significant bits, scale at most 11), so one rounding of it is exact
/// emulation.
static double multiplyInPrecision(StorageKind precision, double codeValue,
                                  double scale) {
  if (precision == StorageKind::F32)
    return static_cast<float>(codeValue) * static_cast<float>(scale);
  return roundToFloatKind(precision, codeValue * scale);
}

/// fl_P(a + b) for values a, b of P. For f16 the double sum is exact; for
/// bf16 it is exact unless the exponents differ by more than 44, in which
/// case both the exact and the double sum round to the larger operand.
static double addInPrecision(StorageKind precision, double a, double b) {
  if (precision == StorageKind::F32)
    return static_cast<float>(a) + static_cast<float>(b);
  return roundToFloatKind(precision, a + b);
}

float kvprec::analysis::dequantizeElement(const StorageFormat &format,
                                          const GroupScale &scale, int32_t code,
                                          const DequantizerConfig &config) {
  if (format.kind == StorageKind::F32) {
    float value;
    std::memcpy(&value, &code, sizeof(value));
    return value;
  }
  if (!isScaled(format))
    return static_cast<float>(
        decodeFloat(format.kind, static_cast<uint32_t>(code)));
  double product = multiplyInPrecision(config.precision,
                                       getCodeValue(format, code), scale.scale);
  if (format.scheme == QuantScheme::Symmetric)
    return static_cast<float>(product);
  return static_cast<float>(
      addInPrecision(config.precision, product, scale.zeroPoint));
}

double kvprec::analysis::computeStoredElementErrorBound(
    const StorageFormat &format, const GroupScale &scale, int32_t code,
    float dequantized, const DequantizerConfig &config) {
  const double uq = kQuantizeUnitRoundoff;
  const double uP = getDequantizerUnitRoundoff(config);
  const double etaP = getDequantizerMinSubnormal(config);
  const double absDequantized = std::fabs(double(dequantized));
  if (format.kind == StorageKind::F32)
    return 0.0;
  if (!isScaled(format)) {
    const FloatFormatInfo &info = getFloatFormatInfo(format.kind);
    return info.unitRoundoff * absDequantized + info.minSubnormal / 2;
  }
  const double s = scale.scale;
  if (isFp8Kind(format.kind)) {
    const FloatFormatInfo &info = getFloatFormatInfo(format.kind);
    double c = std::fabs(getCodeValue(format, code));
    double eta8 = info.minSubnormal;
    return s * (info.unitRoundoff * c + eta8 / 2 + 3 * uq * (2 * c + eta8)) +
           uP * absDequantized + etaP / 2;
  }
  double k = std::fabs(double(code));
  if (format.scheme == QuantScheme::Symmetric)
    return s * (0.5 + 3 * uq * (k + 1)) + uP * absDequantized + etaP / 2;
  double product = multiplyInPrecision(config.precision, k, s);
  return s * (0.5 + 4 * uq * (k + 1)) +
         uP * (std::fabs(product) + absDequantized) + etaP;
}

Status kvprec::analysis::quantizeGroup(const StorageFormat &format,
                                       const float *values, size_t count,
                                       const DequantizerConfig &config,
                                       QuantizedGroup &result) {
  Status status = verifyDequantizerConfig(format, config);
  if (status.failed())
    return status;
  status = computeGroupScale(format, values, count, result.scale);
  if (status.failed())
    return status;
  result.codes.resize(count);
  result.dequantized.resize(count);
  result.errorBounds.resize(count);
  for (size_t i = 0; i < count; ++i) {
    int32_t code = quantizeElement(format, result.scale, values[i]);
    float dequantized = dequantizeElement(format, result.scale, code, config);
    if (!std::isfinite(dequantized))
      return Status::failure(getFormatName(format) + ": value " +
                             std::to_string(values[i]) +
                             " is not representable (the stored or "
                             "dequantized value overflows)");
    result.codes[i] = code;
    result.dequantized[i] = dequantized;
    result.errorBounds[i] = computeStoredElementErrorBound(
        format, result.scale, code, dequantized, config);
  }
  return Status::success();
}

Status kvprec::analysis::quantizeMatrix(const StorageFormat &format,
                                        const Matrix &values,
                                        const DequantizerConfig &config,
                                        QuantizedMatrix &result) {
  Status status = verifyDequantizerConfig(format, config);
  if (status.failed())
    return status;
  for (double v : values.values)
    if (double(static_cast<float>(v)) != v)
      return Status::failure("quantizeMatrix: input value " +
                             std::to_string(v) + " is not an f32 value");
  result.dequantized = Matrix(values.rows, values.cols);
  result.errorBounds = Matrix(values.rows, values.cols);
  result.scales.clear();

  const size_t numTokens = values.rows, numChannels = values.cols;
  std::vector<float> group;
  QuantizedGroup quantized;
  // Quantizes the elements at `positions` (row, col pairs) as one group.
  auto runGroup =
      [&](const std::vector<std::pair<size_t, size_t>> &positions) -> Status {
    group.resize(positions.size());
    for (size_t i = 0; i < positions.size(); ++i)
      group[i] =
          static_cast<float>(values(positions[i].first, positions[i].second));
    Status groupStatus =
        quantizeGroup(format, group.data(), group.size(), config, quantized);
    if (groupStatus.failed())
      return groupStatus;
    for (size_t i = 0; i < positions.size(); ++i) {
      result.dequantized(positions[i].first, positions[i].second) =
          quantized.dequantized[i];
      result.errorBounds(positions[i].first, positions[i].second) =
          quantized.errorBounds[i];
    }
    if (isScaled(format))
      result.scales.push_back(quantized.scale);
    return Status::success();
  };

  std::vector<std::pair<size_t, size_t>> positions;
  if (!isScaled(format)) {
    for (size_t t = 0; t < numTokens; ++t)
      for (size_t j = 0; j < numChannels; ++j) {
        positions.assign(1, {t, j});
        if (Status s = runGroup(positions); s.failed())
          return s;
      }
    return Status::success();
  }
  const size_t g = format.groupSize;
  if (format.granularity == Granularity::TokenGroup) {
    if (numChannels % g != 0)
      return Status::failure(getFormatName(format) + ": group size " +
                             std::to_string(g) + " does not divide " +
                             std::to_string(numChannels) + " channels");
    for (size_t t = 0; t < numTokens; ++t)
      for (size_t begin = 0; begin < numChannels; begin += g) {
        positions.clear();
        for (size_t j = begin; j < begin + g; ++j)
          positions.push_back({t, j});
        if (Status s = runGroup(positions); s.failed())
          return s;
      }
    return Status::success();
  }
  for (size_t j = 0; j < numChannels; ++j)
    for (size_t begin = 0; begin < numTokens; begin += g) {
      positions.clear();
      for (size_t t = begin; t < std::min(begin + g, numTokens); ++t)
        positions.push_back({t, j});
      if (Status s = runGroup(positions); s.failed())
        return s;
    }
  return Status::success();
}
