//===- Plan.cpp - a precision plan as plain data --------------------------===//

#include "kvprec/Certify/Plan.h"

#include <algorithm>
#include <map>
#include <limits>

using namespace kvprec;
using namespace kvprec::certify;
namespace an = kvprec::analysis;

int Plan::getSegmentAt(int64_t position, int64_t length) const {
  const Geometry &g = geometry;
  if (position < g.sink)
    return kSink;
  int64_t block = (position - g.sink) / g.block;
  if (g.window > 0 && g.sink + (block + 1) * g.block > length - g.window)
    return kWindow;
  return kBody;
}

const an::StorageFormat &Plan::getFormatAt(int64_t item, int64_t position,
                                           int64_t length) const {
  switch (getSegmentAt(position, length)) {
  case kSink:
    return getSink(item);
  case kWindow:
    return getWindow(item);
  default:
    return getBody(item, (position - geometry.sink) / geometry.block);
  }
}

double Plan::getTotalBytes() const {
  const Geometry &g = geometry;
  int64_t aged = g.getBodyTokens();
  double total = 0.0;
  for (int64_t item = 0; item < getNumItems(); ++item) {
    total += getSegmentBytes(getSink(item), g.sink, g.headDim);
    total += getSegmentBytes(getWindow(item), g.getWindowTokens(), g.headDim);
    for (int64_t b = 0; b * g.block < aged; ++b)
      total += getSegmentBytes(getBody(item, b),
                               std::min(g.block, aged - b * g.block),
                               g.headDim);
  }
  return total;
}

Status certify::certifyPlanHead(const calib::CalibrationStats &stats,
                                const Plan &plan, int64_t layer, int64_t head,
                                const CertifyOptions &options,
                                an::StaticCertifiedBound &result,
                                double &maxKeyLogitError) {
  const Geometry &g = plan.geometry;
  HeadEnvelope envelope = buildHeadEnvelope(stats, g, layer, head, options);
  std::vector<an::PositionClassEnvelope> classes;
  std::vector<std::vector<KeyLogitModel>> keyModels;
  maxKeyLogitError = 0.0;
  int64_t tokens[kNumSegments] = {g.getSinkTokens(), g.getWindowTokens(),
                                  g.getBodyTokens()};
  for (int segment = 0; segment < kNumSegments; ++segment) {
    if (tokens[segment] == 0)
      continue;
    an::PositionClassEnvelope cls;
    cls.segment = segment;
    cls.attentionMass = envelope.mass[segment];
    cls.maxValueError.assign(g.headDim, 0.0);
    keyModels.emplace_back();
    // The formats a class uses: one, or for a per-block body each block's
    // with that block's calibrated ranges.
    int64_t parts = segment == kBody && plan.perBlock ? g.getNumBodyBlocks() : 1;
    HeadEnvelope local = envelope;
    // Blocks whose ranges calibration could not narrow share the class-wide
    // error of their format: evaluate each such format once.
    std::map<std::pair<int, int8_t>, bool> seenWide;
    for (int64_t part = 0; part < parts; ++part) {
      bool narrowed = false;
      if (parts > 1) {
        int64_t begin = g.sink + part * g.block;
        int64_t end = std::min(begin + g.block, g.capacity);
        narrowed =
            narrowToBlock(stats, layer, head, envelope, begin, end, local);
      }
      for (int kv = 0; kv < 2; ++kv) {
        int64_t item = plan.getItem(layer, head, kv);
        if (parts > 1 && !narrowed) {
          int8_t index =
              plan.bodyFormats[item * g.getNumBodyBlocks() + part];
          if (!seenWide.emplace(std::make_pair(kv, index), true).second)
            continue;
        }
        const an::StorageFormat &format =
            segment == kSink     ? plan.getSink(item)
            : segment == kWindow ? plan.getWindow(item)
                                 : plan.getBody(item, part);
        SegmentError error;
        Status status =
            segment == kBody
                ? evaluateDemotedBody(local, kv, plan.getWindow(item), format,
                                      g, options, error)
                : evaluateSegment(local, segment, kv, format, options, error);
        if (status.failed())
          return Status::failure(std::string(getSegmentName(segment)) +
                                 (kv == 0 ? " keys: " : " values: ") +
                                 status.getMessage());
        if (kv == 0) {
          cls.maxLogitError = std::max(cls.maxLogitError, error.logitError);
          keyModels.back().push_back(std::move(error.keyModel));
        } else
          for (int64_t j = 0; j < g.headDim; ++j)
            cls.maxValueError[j] = std::max(cls.maxValueError[j],
                                            error.valueErrorPerChannel[j]);
      }
    }
    maxKeyLogitError = std::max(maxKeyLogitError, cls.maxLogitError);
    classes.push_back(std::move(cls));
  }
  return finishCertificate(envelope, g, options, classes, keyModels, result);
}
