//===- certificate-fuzzer.cpp - two certifiers on random plans ------------===//
//
// Decodes a cache shape, synthetic calibration statistics (their seed and
// a rescaling of their envelopes), a plan (any format in any class, uniform
// or per-block bodies, sinks and windows of any size) and certificate
// options from the input, then certifies every (layer, head) with the
// allocator's class-based certifier and with the position-by-position
// reference (kvprec/Certify/ReferenceCertifier.h). Both must agree on what
// they refuse; neither may return NaN or a negative bound; on a uniform
// body they compute the same quantity (relative 1e-9); on a per-block body
// the class-based one may only be larger. Invalid floating-point operations
// (inf * 0, inf - inf, 0 / 0) trap: a NaN that a later min or max drops
// could otherwise hide a wrong bound.
//
//===----------------------------------------------------------------------===//

#include "kvprec/Calibration/Synthetic.h"
#include "kvprec/Certify/Plan.h"
#include "kvprec/Certify/ReferenceCertifier.h"

#include "llvm/Support/Error.h"

#include <fuzzer/FuzzedDataProvider.h>

#include <cfenv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>

using namespace kvprec;
using namespace kvprec::certify;
namespace an = kvprec::analysis;
namespace calib = kvprec::calib;

static an::StorageFormat pickFormat(FuzzedDataProvider &in) {
  using K = an::StorageKind;
  static const K kinds[] = {K::F32,    K::F16,  K::BF16, K::F8E4M3FN,
                            K::F8E5M2, K::Int8, K::Int4, K::Int2};
  K kind = kinds[in.ConsumeIntegralInRange<int>(0, 7)];
  if (kind == K::F32 || kind == K::F16 || kind == K::BF16)
    return an::StorageFormat::unscaled(kind);
  bool floatKind = kind == K::F8E4M3FN || kind == K::F8E5M2;
  an::QuantScheme scheme = floatKind || in.ConsumeBool()
                               ? an::QuantScheme::Symmetric
                               : an::QuantScheme::Asymmetric;
  an::Granularity granularity = !floatKind && in.ConsumeBool()
                                    ? an::Granularity::ChannelGroup
                                    : an::Granularity::TokenGroup;
  unsigned group = 1u << in.ConsumeIntegralInRange<int>(0, 4);
  K scale = in.ConsumeBool() ? K::F16 : K::F32;
  return an::StorageFormat::scaled(kind, scheme, granularity, group, scale);
}

static void fail(const char *what, int64_t layer, int64_t head, double a,
                 double b) {
  std::fprintf(stderr,
               "certificate-fuzzer: %s at layer %lld head %lld: "
               "class-based %.17g, position-by-position %.17g\n",
               what, (long long)layer, (long long)head, a, b);
  std::abort();
}

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  feenableexcept(FE_INVALID);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  FuzzedDataProvider in(data, size);
  calib::SyntheticOptions shape;
  shape.layers = in.ConsumeIntegralInRange<int64_t>(1, 2);
  shape.kvHeads = in.ConsumeIntegralInRange<int64_t>(1, 2);
  shape.qHeads = shape.kvHeads * in.ConsumeIntegralInRange<int64_t>(1, 4);
  shape.headDim = 2 * in.ConsumeIntegralInRange<int64_t>(1, 8);
  shape.block = int64_t(1) << in.ConsumeIntegralInRange<int>(0, 4);
  shape.sink = in.ConsumeIntegralInRange<int64_t>(0, 8);
  shape.window = shape.block * in.ConsumeIntegralInRange<int64_t>(0, 3);
  shape.capacity = in.ConsumeIntegralInRange<int64_t>(1, 96);
  shape.seed = in.ConsumeIntegral<uint32_t>();
  llvm::Expected<calib::CalibrationStats> generated =
      calib::generateSyntheticStats(shape);
  if (!generated) {
    llvm::consumeError(generated.takeError());
    return 0;
  }
  calib::CalibrationStats stats = std::move(*generated);
  // Random envelopes: rescale the value and key ranges and the query bound.
  double valueScale = std::ldexp(1.0, in.ConsumeIntegralInRange<int>(-8, 8));
  double keyScale = std::ldexp(1.0, in.ConsumeIntegralInRange<int>(-8, 8));
  for (float &v : stats.vChanMin)
    v *= valueScale;
  for (float &v : stats.vChanMax)
    v *= valueScale;
  for (float &v : stats.kChanMin)
    v *= keyScale;
  for (float &v : stats.kChanMax)
    v *= keyScale;
  if (llvm::Error error = calib::validateCalibrationStats(stats, "fuzz")) {
    llvm::consumeError(std::move(error));
    return 0;
  }

  Plan plan;
  plan.geometry.layers = shape.layers;
  plan.geometry.heads = shape.kvHeads;
  plan.geometry.headDim = shape.headDim;
  plan.geometry.block = shape.block;
  plan.geometry.sink = in.ConsumeIntegralInRange<int64_t>(0, shape.sink);
  plan.geometry.window = shape.block * in.ConsumeIntegralInRange<int64_t>(0, 3);
  bool extrapolate = in.ConsumeBool();
  plan.geometry.capacity =
      extrapolate ? shape.capacity + in.ConsumeIntegralInRange<int64_t>(0, 200)
                  : in.ConsumeIntegralInRange<int64_t>(1, shape.capacity);
  int numFormats = in.ConsumeIntegralInRange<int>(1, 6);
  for (int i = 0; i < numFormats; ++i)
    plan.formats.push_back(pickFormat(in));
  plan.perBlock = in.ConsumeBool();
  auto pick = [&] {
    return int8_t(in.ConsumeIntegralInRange<int>(0, numFormats - 1));
  };
  int64_t items = plan.getNumItems();
  for (int64_t i = 0; i < items; ++i) {
    plan.sinkFormats.push_back(pick());
    plan.windowFormats.push_back(pick());
  }
  int64_t bodyEntries =
      plan.perBlock ? items * plan.geometry.getNumBodyBlocks() : items;
  for (int64_t i = 0; i < bodyEntries; ++i)
    plan.bodyFormats.push_back(pick());

  CertifyOptions options;
  if (extrapolate) {
    options.extrapolation = Extrapolation::WorstCase;
    options.extrapolationMargin = 1.0 + in.ConsumeIntegralInRange<int>(0, 4);
  }
  if (in.ConsumeBool())
    options.certificate = CertificateKind::Probabilistic;
  options.kernel.enabled = in.ConsumeIntegralInRange<int>(0, 3) != 0;

  for (int64_t layer = 0; layer < plan.geometry.layers; ++layer)
    for (int64_t head = 0; head < plan.geometry.heads; ++head) {
      an::StaticCertifiedBound classBound;
      double keyLogitError = 0, reference = 0;
      an::Status classStatus = certifyPlanHead(
          stats, plan, layer, head, options, classBound, keyLogitError);
      an::Status referenceStatus =
          certifyHeadByPosition(stats, plan, layer, head, options, reference);
      // A refusal and an infinite bound both certify nothing: the
      // class-based certifier may refuse a class whose union of block
      // ranges overflows a scale kind while the position-by-position one,
      // block by block, only reaches an infinite bound
      // (fuzz/regressions/certificate/scale-overflow-inf). A refusal
      // against a finite bound is a disagreement.
      if (classStatus.failed() != referenceStatus.failed()) {
        double other = classStatus.failed() ? reference : classBound.infNorm;
        if (other == std::numeric_limits<double>::infinity())
          continue;
        std::fprintf(stderr, "class-based: %s\nposition-by-position: %s\n",
                     classStatus.getMessage().c_str(),
                     referenceStatus.getMessage().c_str());
        fail("one certifier refused what the other certified", layer, head,
             classBound.infNorm, reference);
      }
      if (classStatus.failed())
        continue;
      double a = classBound.infNorm;
      if (std::isnan(a) || std::isnan(reference) || a < 0 || reference < 0)
        fail("NaN or negative bound", layer, head, a, reference);
      if (plan.perBlock) {
        if (!(a >= reference * (1 - 1e-9)))
          fail("per-block class-based bound below the reference", layer, head,
               a, reference);
      } else if (std::isfinite(a) != std::isfinite(reference) ||
                 (std::isfinite(a) &&
                  std::fabs(a - reference) > 1e-9 * std::max(a, reference))) {
        fail("uniform-body bounds disagree", layer, head, a, reference);
      }
    }
  return 0;
}
