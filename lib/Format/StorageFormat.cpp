//===- StorageFormat.cpp - KV-cache element storage formats ---------------===//

#include "kvprec/Format/StorageFormat.h"

#include <cassert>

using namespace kvprec::analysis;

StorageFormat StorageFormat::unscaled(StorageKind kind) {
  StorageFormat format;
  format.kind = kind;
  return format;
}

StorageFormat StorageFormat::scaled(StorageKind kind, QuantScheme scheme,
                                    Granularity granularity, unsigned groupSize,
                                    StorageKind scaleKind) {
  StorageFormat format;
  format.kind = kind;
  format.scheme = scheme;
  format.granularity = granularity;
  format.groupSize = groupSize;
  format.scaleKind = scaleKind;
  return format;
}

bool StorageFormat::operator==(const StorageFormat &other) const {
  if (kind != other.kind)
    return false;
  // Unscaled formats have no scheme, granularity, group or scale.
  if (!isScaledKind(kind))
    return true;
  return scheme == other.scheme && granularity == other.granularity &&
         groupSize == other.groupSize && scaleKind == other.scaleKind;
}

unsigned kvprec::analysis::getBitWidth(StorageKind kind) {
  switch (kind) {
  case StorageKind::F32:
    return 32;
  case StorageKind::F16:
  case StorageKind::BF16:
    return 16;
  case StorageKind::F8E4M3FN:
  case StorageKind::F8E5M2:
  case StorageKind::Int8:
    return 8;
  case StorageKind::Int4:
    return 4;
  case StorageKind::Int3:
    return 3;
  case StorageKind::Int2:
    return 2;
  }
  assert(false && "unknown storage kind");
  return 0;
}

bool kvprec::analysis::isFloatKind(StorageKind kind) {
  switch (kind) {
  case StorageKind::F32:
  case StorageKind::F16:
  case StorageKind::BF16:
  case StorageKind::F8E4M3FN:
  case StorageKind::F8E5M2:
    return true;
  default:
    return false;
  }
}

bool kvprec::analysis::isFp8Kind(StorageKind kind) {
  return kind == StorageKind::F8E4M3FN || kind == StorageKind::F8E5M2;
}

bool kvprec::analysis::isIntegerKind(StorageKind kind) {
  return !isFloatKind(kind);
}

bool kvprec::analysis::isStorableKind(StorageKind kind) {
  return kind != StorageKind::Int3;
}

bool kvprec::analysis::isScaledKind(StorageKind kind) {
  return isIntegerKind(kind) || isFp8Kind(kind);
}

const char *kvprec::analysis::getStorageKindName(StorageKind kind) {
  switch (kind) {
  case StorageKind::F32:
    return "f32";
  case StorageKind::F16:
    return "f16";
  case StorageKind::BF16:
    return "bf16";
  case StorageKind::F8E4M3FN:
    return "f8E4M3FN";
  case StorageKind::F8E5M2:
    return "f8E5M2";
  case StorageKind::Int8:
    return "int8";
  case StorageKind::Int4:
    return "int4";
  case StorageKind::Int3:
    return "int3";
  case StorageKind::Int2:
    return "int2";
  }
  return "<unknown>";
}

const char *kvprec::analysis::getQuantSchemeName(QuantScheme scheme) {
  return scheme == QuantScheme::Symmetric ? "sym" : "asym";
}

const char *kvprec::analysis::getGranularityName(Granularity granularity) {
  return granularity == Granularity::TokenGroup ? "token_group"
                                                : "channel_group";
}

std::string kvprec::analysis::getFormatName(const StorageFormat &format) {
  std::string name = getStorageKindName(format.kind);
  if (!isScaled(format))
    return name;
  name += '<';
  name += getQuantSchemeName(format.scheme);
  name += ',';
  name += getGranularityName(format.granularity);
  name += '=';
  name += std::to_string(format.groupSize);
  name += ",scale=";
  name += getStorageKindName(format.scaleKind);
  name += '>';
  return name;
}

std::pair<int32_t, int32_t>
kvprec::analysis::getIntegerCodeRange(StorageKind kind, QuantScheme scheme) {
  assert(isIntegerKind(kind) && "integer kind expected");
  int32_t bits = static_cast<int32_t>(getBitWidth(kind));
  if (scheme == QuantScheme::Symmetric) {
    int32_t maxCode = (int32_t(1) << (bits - 1)) - 1;
    return {-maxCode, maxCode};
  }
  return {0, (int32_t(1) << bits) - 1};
}

unsigned kvprec::analysis::getGroupOverheadBits(const StorageFormat &format) {
  if (!isScaled(format))
    return 0;
  unsigned scaleBits = getBitWidth(format.scaleKind);
  return format.scheme == QuantScheme::Asymmetric ? 2 * scaleBits : scaleBits;
}

double
kvprec::analysis::getEffectiveBitsPerElement(const StorageFormat &format) {
  double bits = getBitWidth(format.kind);
  if (isScaled(format) && format.groupSize > 0)
    bits += double(getGroupOverheadBits(format)) / format.groupSize;
  return bits;
}

Status kvprec::analysis::verifyStorageFormat(const StorageFormat &format,
                                             bool requireStorable) {
  std::string name = getFormatName(format);
  if (requireStorable && !isStorableKind(format.kind))
    return Status::failure(name +
                           ": int3 is an analysis-only option and cannot be "
                           "stored");
  if (format.groupSize == 0)
    return Status::failure(name + ": group size must be positive");
  if (!isScaled(format)) {
    if (format.scheme != QuantScheme::Symmetric)
      return Status::failure(name + ": unscaled float formats have no zero "
                                    "point and must be symmetric");
    return Status::success();
  }
  if (isFp8Kind(format.kind) && format.scheme != QuantScheme::Symmetric)
    return Status::failure(name + ": fp8 formats support only the symmetric "
                                  "scheme");
  if (format.scaleKind != StorageKind::F32 &&
      format.scaleKind != StorageKind::F16 &&
      format.scaleKind != StorageKind::BF16)
    return Status::failure(name + ": the scale kind must be f32, f16 or bf16");
  return Status::success();
}
