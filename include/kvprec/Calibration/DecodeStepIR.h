//===- DecodeStepIR.h - kvprec IR of one decode step ------------*- C++ -*-===//
//
// Prints, as text, the kvprec IR of one decode step of a model: an @init
// function that allocates the cache and a @decode_step function that, per
// layer, appends the new token's K/V at %pos and attends over [0, %pos + 1).
// The cache type is !kvprec.cache<layers x kv_heads x capacity x head_dim x
// f32>. This is the input kvprec-opt's passes start from.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_CALIBRATION_DECODESTEPIR_H
#define KVPREC_CALIBRATION_DECODESTEPIR_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdint>
#include <string>

namespace kvprec::calib {

struct DecodeStepShape {
  /// Goes into the header comment and the kvprec.model attribute.
  std::string model;
  /// The command that produced the IR, for the header comment.
  std::string generator;
  /// Adds "SYNTHETIC" to the header comment.
  bool synthetic = false;
  int64_t layers = 0;
  int64_t kvHeads = 0;
  int64_t qHeads = 0;
  int64_t headDim = 0;
  int64_t capacity = 0;
};

/// Prints the module. The shape must be valid (positive sizes).
void printDecodeStepIR(llvm::raw_ostream &os, const DecodeStepShape &shape);

/// Writes the module to `path`.
llvm::Error writeDecodeStepIR(llvm::StringRef path,
                              const DecodeStepShape &shape);

} // namespace kvprec::calib

#endif // KVPREC_CALIBRATION_DECODESTEPIR_H
