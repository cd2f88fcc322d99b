//===- gpu-check.cpp - the GPU bundle: checks and benchmark ---------------===//
//
// A program with no MLIR in it, for machines that have a GPU but not the
// toolchain (bench/gpu-decode.sh bundles it): every case of cases.py is
// compiled ahead of time twice, with kvprec-to-nvvm (gpu<i>_, PTX inside,
// calling the mgpu* runtime of runtime/) and kvprec-to-llvm (cpu<i>_), and
// linked in.
//
//   gpu-check check   every check case on device 0: after every append the
//                     device arena equals the CPU code's byte for byte and
//                     the plan emulator's codes, scales and zero points;
//                     load returns the emulator's values; attention for GQA
//                     1, 4 and 8 matches double-precision attention over the
//                     stored values within f32 rounding and stays within
//                     the CPU code's run-time certificate for the same query;
//                     bad calls return their status. One JSON line per case.
//   gpu-check bench   every bench case: the arena filled by the CPU code and
//                     copied to the device, then attention's kernel time
//                     (events around each launch) against a device-to-device
//                     copy of the same bytes, GQA 1 and 4. One JSON line per
//                     measurement.
//
//===----------------------------------------------------------------------===//

#include "kvprec/Analysis/StreamingCertificate.h"
#include "kvprec/Certify/PlanEmulation.h"
#include "kvprec/Format/CacheLayout.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace an = kvprec::analysis;
namespace cf = kvprec::certify;
namespace lay = kvprec::layout;

// The LLVM headers that the plan emulator's headers include ask for the
// symbol by which LLVM libraries check that their users were built with the
// same ABI-breaking checks. This program links no LLVM library (the GPU
// machines have none) and calls no LLVM code, so it answers for itself, as
// LLVMSupport defines it in release builds.
namespace llvm {
int DisableABIBreakingChecks = 1;
} // namespace llvm

// MLIR's memref descriptors (mlir/ExecutionEngine/CRunnerUtils.h).
template <typename T, int N> struct Memref {
  T *basePtr;
  T *data;
  int64_t offset;
  int64_t sizes[N];
  int64_t strides[N];
};
using Arena1 = Memref<int8_t, 1>;
using Tokens3 = Memref<float, 3>;
using Heads2 = Memref<float, 2>;
using Floats1 = Memref<float, 1>;

// runtime/CudaRuntime.cpp.
extern "C" {
int kvprecCudaStatus(char *message, int size);
int kvprecCudaComputeCapability();
void *mgpuMemAlloc(uint64_t bytes, void *stream, bool isHostShared);
void mgpuMemFree(void *pointer, void *stream);
void mgpuMemcpy(void *dst, void *src, size_t bytes, void *stream);
void mgpuStreamSynchronize(void *stream);
void kvprecKernelTiming(int enable);
double kvprecKernelTimeMs(int64_t *launches);
double kvprecCopyTimeMs(void *dst, void *src, size_t bytes, int reps);
}

namespace {
struct Functions {
  int64_t (*arenaBytes)();
  int32_t (*init)(Arena1 *);
  int32_t (*append)(Arena1 *, int64_t, Tokens3 *, Tokens3 *, int64_t);
  int32_t (*attend)(Arena1 *, int64_t, Heads2 *, int64_t, Heads2 *, float);
  int32_t (*load)(Arena1 *, int64_t, int64_t, Tokens3 *, Tokens3 *);
  /// P_attend_certified (both sides are compiled with the run-time
  /// certificate).
  int32_t (*attendCertified)(Arena1 *, int64_t, Heads2 *, int64_t, Heads2 *,
                             float, Floats1 *);
};
struct PlanText {
  cf::Geometry geometry;
  std::vector<an::StorageFormat> formats;
  std::vector<int8_t> sinks, windows, bodies;
};
struct CaseEntry {
  const char *name;
  bool check;
  int64_t capacity, heads, headDim;
  Functions gpu, cpu;
  PlanText plan;
};

#include "cases.inc"

template <typename T, int N>
Memref<T, N> describe(void *data, const int64_t (&sizes)[N]) {
  Memref<T, N> m;
  m.basePtr = m.data = static_cast<T *>(data);
  m.offset = 0;
  int64_t stride = 1;
  for (int i = N - 1; i >= 0; --i) {
    m.sizes[i] = sizes[i];
    m.strides[i] = stride;
    stride *= sizes[i];
  }
  return m;
}

/// `gpu-check selftest`: the checks with the CPU code in the GPU code's
/// place and host memory for device memory, to test this program itself
/// where no GPU is.
bool hostOnly = false;

/// Device memory (host memory in a self-test), freed at scope exit.
struct Device {
  explicit Device(int64_t bytes) : bytes(bytes) {
    if (!bytes)
      pointer = nullptr;
    else if (hostOnly)
      pointer = std::aligned_alloc(64, size_t((bytes + 63) / 64 * 64));
    else
      pointer = mgpuMemAlloc(uint64_t(bytes), nullptr, false);
  }
  ~Device() {
    if (pointer && hostOnly)
      std::free(pointer);
    else if (pointer)
      mgpuMemFree(pointer, nullptr);
  }
  Device(const Device &) = delete;
  void fromHost(const void *host) {
    if (hostOnly) {
      std::memcpy(pointer, host, size_t(bytes));
      return;
    }
    mgpuMemcpy(pointer, const_cast<void *>(host), size_t(bytes), nullptr);
    mgpuStreamSynchronize(nullptr);
  }
  void toHost(void *host) const {
    if (hostOnly) {
      std::memcpy(host, pointer, size_t(bytes));
      return;
    }
    mgpuMemcpy(host, pointer, size_t(bytes), nullptr);
    mgpuStreamSynchronize(nullptr);
  }
  void *pointer;
  int64_t bytes;
};

struct HostArena {
  explicit HostArena(int64_t bytes)
      : data(static_cast<uint8_t *>(std::aligned_alloc(
            64, std::max<int64_t>((bytes + 63) / 64 * 64, 64)))),
        size(bytes) {}
  ~HostArena() { std::free(data); }
  uint8_t *data;
  int64_t size;
};

double seconds() {
  return std::chrono::duration<double>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/// Why a check failed (empty while it holds).
struct Failure {
  std::string message;
  explicit operator bool() const { return !message.empty(); }
};

/// The arena bytes of every live position of `item` against the emulator
/// (as unittests/Runtime/CacheCases.cpp compares them).
std::string compareArena(const lay::ArenaLayout &layout, const uint8_t *arena,
                         int64_t item, const cf::EmulatedStream &stream) {
  const cf::Plan &plan = layout.getPlan();
  const int64_t d = plan.geometry.headDim, length = stream.getLength();
  for (int64_t p = 0; p < length; ++p) {
    int64_t row = 0;
    const lay::Run *run = lay::findRow(layout, item, p, length, row);
    if (!run)
      return "no row for position " + std::to_string(p);
    const an::StorageFormat &format = plan.formats[run->formatIndex];
    lay::RowShape shape = lay::getRowShape(format, d);
    unsigned bits = an::getBitWidth(format.kind);
    for (int64_t j = 0; j < d; ++j) {
      uint32_t expected = uint32_t(stream.getCodes()[p * d + j]);
      if (bits < 32)
        expected &= (uint32_t(1) << bits) - 1;
      const uint8_t *rowStart = arena + run->codeOffset + row * shape.rowBytes;
      uint32_t actual = 0;
      if (bits >= 8) {
        std::memcpy(&actual, rowStart + j * (bits / 8), bits / 8);
      } else {
        int64_t byte = j % shape.rowBytes, field = j / shape.rowBytes;
        actual = (rowStart[byte] >> (field * bits)) & ((1u << bits) - 1);
      }
      if (actual != expected)
        return an::getFormatName(format) + ": position " + std::to_string(p) +
               " channel " + std::to_string(j) + " code " +
               std::to_string(actual) + ", the emulator's " +
               std::to_string(expected);
    }
  }
  return "";
}

Failure runCheck(const CaseEntry &entry) {
  CaseEntry c = entry;
  if (hostOnly)
    c.gpu = c.cpu;
  cf::Plan plan;
  plan.geometry = c.plan.geometry;
  plan.formats = c.plan.formats;
  plan.sinkFormats = c.plan.sinks;
  plan.windowFormats = c.plan.windows;
  plan.bodyFormats = c.plan.bodies;
  std::unique_ptr<lay::ArenaLayout> layout;
  if (an::Status s = lay::ArenaLayout::build(plan, layout); s.failed())
    return {"layout: " + s.getMessage()};
  const int64_t bytes = c.cpu.arenaBytes();
  if (c.gpu.arenaBytes() != bytes || bytes != layout->getTotalBytes())
    return {"arena sizes differ"};
  HostArena cpuArena(bytes), gpuView(bytes);
  std::memset(cpuArena.data, 0xA5, bytes);
  Device gpuArena(bytes);
  gpuArena.fromHost(cpuArena.data);
  Arena1 cpuA = describe<int8_t, 1>(cpuArena.data, {bytes});
  Arena1 gpuA = describe<int8_t, 1>(gpuArena.pointer, {bytes});
  if (c.cpu.init(&cpuA) || c.gpu.init(&gpuA))
    return {"init failed"};

  const cf::Geometry &g = plan.geometry;
  const int64_t h = g.heads, d = g.headDim;
  an::DequantizerConfig dequantizer;
  std::vector<cf::EmulatedStream> streams;
  for (int64_t item = 0; item < plan.getNumItems(); ++item)
    streams.emplace_back(plan, item, dequantizer);
  std::mt19937 rng(1234);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> channelScale(d), channelShift(d);
  for (int64_t j = 0; j < d; ++j) {
    channelScale[j] = std::exp(normal(rng));
    channelShift[j] = normal(rng) * 0.5f;
  }
  double worst = 0;
  int64_t attended = 0;
  for (int64_t layer = 0; layer < g.layers; ++layer) {
    int64_t fill = 0, step = 0;
    while (fill < g.capacity) {
      int64_t tokens = std::min<int64_t>(1 + step % 3, g.capacity - fill);
      std::vector<float> keys(tokens * h * d), values(tokens * h * d);
      for (int kv = 0; kv < 2; ++kv)
        for (int64_t t = 0; t < tokens; ++t)
          for (int64_t i = 0; i < h * d; ++i)
            (kv ? values : keys)[t * h * d + i] =
                (step + t + 11 * kv) % 7 == 3
                    ? 0.0f
                    : normal(rng) * channelScale[i % d] + channelShift[i % d];
      Device k(tokens * h * d * 4), v(tokens * h * d * 4);
      k.fromHost(keys.data());
      v.fromHost(values.data());
      Tokens3 kc = describe<float, 3>(keys.data(), {tokens, h, d});
      Tokens3 vc = describe<float, 3>(values.data(), {tokens, h, d});
      Tokens3 kg = describe<float, 3>(k.pointer, {tokens, h, d});
      Tokens3 vg = describe<float, 3>(v.pointer, {tokens, h, d});
      if (int32_t s = c.cpu.append(&cpuA, layer, &kc, &vc, fill))
        return {"CPU append failed: status " + std::to_string(s)};
      if (int32_t s = c.gpu.append(&gpuA, layer, &kg, &vg, fill))
        return {"GPU append failed: status " + std::to_string(s)};
      for (int64_t t = 0; t < tokens; ++t)
        for (int64_t head = 0; head < h; ++head)
          for (int kv = 0; kv < 2; ++kv)
            if (an::Status s = streams[plan.getItem(layer, head, kv)].append(
                    &(kv ? values : keys)[(t * h + head) * d]);
                s.failed())
              return {"emulator: " + s.getMessage()};
      fill += tokens;
      ++step;
      gpuArena.toHost(gpuView.data);
      if (std::memcmp(gpuView.data, cpuArena.data, bytes) != 0)
        return {"the GPU arena differs from the CPU's at length " +
                std::to_string(fill)};
      for (int64_t item = layer * h * 2; item < (layer + 1) * h * 2; ++item)
        if (std::string m =
                compareArena(*layout, gpuView.data, item, streams[item]);
            !m.empty())
          return {m + " at length " + std::to_string(fill)};
      // load: the emulator's stored values.
      std::vector<float> loadedK(fill * h * d), loadedV(fill * h * d);
      Device lk(fill * h * d * 4), lv(fill * h * d * 4);
      Tokens3 lkg = describe<float, 3>(lk.pointer, {fill, h, d});
      Tokens3 lvg = describe<float, 3>(lv.pointer, {fill, h, d});
      if (int32_t s = c.gpu.load(&gpuA, layer, 0, &lkg, &lvg))
        return {"GPU load failed: status " + std::to_string(s)};
      lk.toHost(loadedK.data());
      lv.toHost(loadedV.data());
      for (int64_t p = 0; p < fill; ++p)
        for (int64_t head = 0; head < h; ++head)
          for (int64_t j = 0; j < d; ++j)
            for (int kv = 0; kv < 2; ++kv) {
              float got = (kv ? loadedV : loadedK)[(p * h + head) * d + j];
              float want = float(
                  streams[plan.getItem(layer, head, kv)].getStored()(p, j));
              if (std::memcmp(&got, &want, 4) != 0)
                return {"GPU load position " + std::to_string(p) +
                        " differs from the emulator"};
            }
      // Attention for GQA 1, 4 and 8.
      for (int64_t ratio : {1, 4, 8}) {
        const int64_t q = h * ratio;
        std::vector<float> query(q * d), gpuOut(q * d), cpuOut(q * d),
            bounds(q);
        for (float &x : query)
          x = normal(rng);
        float scale = 1.0f / std::sqrt(float(d));
        Device dq(q * d * 4), dout(q * d * 4);
        dq.fromHost(query.data());
        Heads2 qg = describe<float, 2>(dq.pointer, {q, d});
        Heads2 og = describe<float, 2>(dout.pointer, {q, d});
        if (int32_t s = c.gpu.attend(&gpuA, layer, &qg, fill, &og, scale))
          return {"GPU attend failed: status " + std::to_string(s)};
        dout.toHost(gpuOut.data());
        Heads2 qc = describe<float, 2>(query.data(), {q, d});
        Heads2 oc = describe<float, 2>(cpuOut.data(), {q, d});
        Floats1 bc = describe<float, 1>(bounds.data(), {q});
        if (int32_t s =
                c.cpu.attendCertified(&cpuA, layer, &qc, fill, &oc, scale, &bc))
          return {"CPU certified attend failed: status " + std::to_string(s)};
        // The GPU's certified attention: its output and its own bounds.
        std::vector<float> gpuCertifiedOut(q * d), gpuBounds(q);
        {
          Device dcert(q * d * 4), dbounds(q * 4);
          Heads2 cg = describe<float, 2>(dcert.pointer, {q, d});
          Floats1 bg = describe<float, 1>(dbounds.pointer, {q});
          if (int32_t s = c.gpu.attendCertified(&gpuA, layer, &qg, fill, &cg,
                                                scale, &bg))
            return {"GPU certified attend failed: status " + std::to_string(s)};
          dcert.toHost(gpuCertifiedOut.data());
          dbounds.toHost(gpuBounds.data());
        }
        for (int64_t head = 0; head < q; ++head) {
          int64_t kvHead = head / ratio;
          const cf::EmulatedStream &ks =
              streams[plan.getItem(layer, kvHead, 0)];
          const cf::EmulatedStream &vs =
              streams[plan.getItem(layer, kvHead, 1)];
          std::vector<double> logits(fill);
          double maxLogit = -INFINITY, logitError = 0;
          const double u = 0x1p-24;
          for (int64_t p = 0; p < fill; ++p) {
            double dot = 0, magnitude = 0;
            for (int64_t j = 0; j < d; ++j) {
              dot += double(query[head * d + j]) * ks.getStored()(p, j);
              magnitude +=
                  std::fabs(query[head * d + j] * ks.getStored()(p, j));
            }
            logits[p] = dot * scale;
            maxLogit = std::max(maxLogit, logits[p]);
            logitError = std::max(logitError, (d + 1) * u * magnitude * scale);
          }
          double sum = 0, vmax = 0;
          for (int64_t p = 0; p < fill; ++p)
            sum += logits[p] = std::exp(logits[p] - maxLogit);
          std::vector<double> scaledQuery(d);
          for (int64_t j = 0; j < d; ++j)
            scaledQuery[j] =
                double(query[head * d + j]) * scale * std::sqrt(double(d));
          an::AttentionResult exact =
              an::computeAttention(scaledQuery, ks.getExact(), vs.getExact());
          double measured = 0;
          for (int64_t j = 0; j < d; ++j) {
            double expected = 0;
            for (int64_t p = 0; p < fill; ++p) {
              expected += logits[p] / sum * vs.getStored()(p, j);
              vmax = std::max(vmax, std::fabs(vs.getStored()(p, j)));
            }
            double tolerance =
                vmax * (std::expm1(2 * logitError) + 8 * (fill + d) * u) +
                1e-30;
            double got = gpuOut[head * d + j];
            if (!(std::fabs(got - expected) <= tolerance))
              return {"GPU attention GQA " + std::to_string(ratio) + " head " +
                      std::to_string(head) + " channel " + std::to_string(j) +
                      " length " + std::to_string(fill) + ": " +
                      std::to_string(got) + " vs " + std::to_string(expected) +
                      " (tolerance " + std::to_string(tolerance) + ")"};
            measured = std::max(measured, std::fabs(got - exact.output[j]));
          }
          if (!(measured <= bounds[head]))
            return {"GPU attention beyond the run-time certificate: GQA " +
                    std::to_string(ratio) + " head " + std::to_string(head) +
                    " length " + std::to_string(fill) + ": error " +
                    std::to_string(measured) + ", bound " +
                    std::to_string(bounds[head])};
          worst = std::max(worst, measured / bounds[head]);
          // The GPU's certificate (CacheCases.cpp's checks): its output
          // within it; the bound never below the double-precision
          // reference of its streaming form, and within 1e-3 of that form
          // with the code's block-wise inherited bounds.
          double measuredCertified = 0;
          for (int64_t j = 0; j < d; ++j)
            measuredCertified = std::max(
                measuredCertified,
                std::fabs(gpuCertifiedOut[head * d + j] - exact.output[j]));
          std::vector<double> queryD(query.begin() + head * d,
                                     query.begin() + (head + 1) * d);
          an::KernelRoundingModel model;
          model.numRescales = 1;
          an::StreamingCertificate reference, modelled;
          if (an::computeStreamingCertificate(
                  queryD, ks.getStored(), vs.getStored(), ks.getErrorBounds(),
                  vs.getErrorBounds(), double(scale), model, reference)
                  .failed() ||
              an::computeStreamingCertificate(
                  queryD, ks.getStored(), vs.getStored(),
                  ks.getBlockwiseErrorBounds(), vs.getBlockwiseErrorBounds(),
                  double(scale), model, modelled)
                  .failed())
            return {"the streaming certificate's reference failed"};
          std::string where = "GQA " + std::to_string(ratio) + " head " +
                              std::to_string(head) + " length " +
                              std::to_string(fill);
          if (!(measuredCertified <= gpuBounds[head]))
            return {"GPU certified attention beyond its own certificate: " +
                    where + ": error " + std::to_string(measuredCertified) +
                    ", bound " + std::to_string(gpuBounds[head])};
          if (!(gpuBounds[head] >= reference.infNorm) ||
              !(gpuBounds[head] <= modelled.infNorm * (1 + 1e-3)))
            return {"GPU certificate off its reference: " + where + ": bound " +
                    std::to_string(gpuBounds[head]) + ", reference " +
                    std::to_string(reference.infNorm) + ", block-wise " +
                    std::to_string(modelled.infNorm)};
          worst = std::max(worst, measuredCertified / gpuBounds[head]);
          ++attended;
        }
      }
    }
  }
  // Bad calls: their status, and the arena unchanged.
  gpuArena.toHost(gpuView.data);
  std::vector<uint8_t> before(gpuView.data, gpuView.data + bytes);
  std::vector<float> one(h * d, 1.0f);
  Device o1(h * d * 4);
  o1.fromHost(one.data());
  Tokens3 og1 = describe<float, 3>(o1.pointer, {1, h, d});
  if (int32_t s = c.gpu.append(&gpuA, 0, &og1, &og1, g.capacity); s != 1)
    return {"append past capacity: status " + std::to_string(s) +
            ", expected 1"};
  if (int32_t s = c.gpu.append(&gpuA, 0, &og1, &og1, 3); s != 2)
    return {"append at a wrong position: status " + std::to_string(s) +
            ", expected 2"};
  std::vector<float> query(h * d, 1.0f);
  Device dq(h * d * 4), dout(h * d * 4);
  dq.fromHost(query.data());
  Heads2 qg = describe<float, 2>(dq.pointer, {h, d});
  Heads2 og = describe<float, 2>(dout.pointer, {h, d});
  if (int32_t s = c.gpu.attend(&gpuA, 0, &qg, g.capacity - 1, &og, 1.0f);
      s != 2)
    return {"attend at a wrong length: status " + std::to_string(s) +
            ", expected 2"};
  gpuArena.toHost(gpuView.data);
  if (std::memcmp(before.data(), gpuView.data, bytes) != 0)
    return {"a refused call changed the arena"};
  std::printf("{\"case\": \"%s\", \"ok\": true, \"attention_checks\": %lld, "
              "\"worst_error_over_bound\": %.4f}\n",
              c.name, (long long)attended, worst);
  return {};
}

int runChecks() {
  int failures = 0;
  for (const CaseEntry &c : kCases) {
    if (!c.check)
      continue;
    double start = seconds();
    Failure f = runCheck(c);
    if (f) {
      ++failures;
      std::printf("{\"case\": \"%s\", \"ok\": false, \"failure\": \"%s\"}\n",
                  c.name, f.message.c_str());
    }
    std::fprintf(stderr, "gpu-check: %s: %s (%.1f s)\n", c.name,
                 f ? "FAILED" : "ok", seconds() - start);
    std::fflush(stdout);
  }
  std::fprintf(stderr, "gpu-check: %d failed\n", failures);
  return failures ? 1 : 0;
}

int runBench(int reps) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  for (const CaseEntry &c : kCases) {
    if (c.check)
      continue;
    const int64_t h = c.heads, d = c.headDim, capacity = c.capacity;
    const int64_t bytes = c.cpu.arenaBytes();
    // Fill on the host with the CPU code (the same layout and bits), then
    // copy to the device.
    HostArena host(bytes);
    std::memset(host.data, 0, bytes);
    Arena1 hostA = describe<int8_t, 1>(host.data, {bytes});
    if (c.cpu.init(&hostA))
      return 1;
    std::vector<float> keys(256 * h * d), values(256 * h * d);
    for (float &x : keys)
      x = normal(rng);
    for (float &x : values)
      x = normal(rng);
    for (int64_t p = 0; p < capacity;) {
      int64_t n = std::min<int64_t>(256, capacity - p);
      Tokens3 k = describe<float, 3>(keys.data(), {n, h, d});
      Tokens3 v = describe<float, 3>(values.data(), {n, h, d});
      if (c.cpu.append(&hostA, 0, &k, &v, p))
        return 1;
      p += n;
    }
    Device arena(bytes), copy(bytes);
    arena.fromHost(host.data);
    Arena1 a = describe<int8_t, 1>(arena.pointer, {bytes});
    double copyMs =
        kvprecCopyTimeMs(copy.pointer, arena.pointer, size_t(bytes), reps);
    for (int64_t gqa : {1, 4}) {
      const int64_t q = h * gqa;
      std::vector<float> query(q * d);
      for (float &x : query)
        x = normal(rng);
      Device dq(q * d * 4), dout(q * d * 4);
      dq.fromHost(query.data());
      Heads2 qg = describe<float, 2>(dq.pointer, {q, d});
      Heads2 og = describe<float, 2>(dout.pointer, {q, d});
      float scale = 1.0f / std::sqrt(float(d));
      Device dbounds(q * 4);
      Floats1 bg = describe<float, 1>(dbounds.pointer, {q});
      // The median kernel time and wall time of `call` over `reps` runs
      // after two warm-ups (the first also JIT-compiles the PTX).
      auto time = [&](const char *what, auto call, double &kernel,
                      double &wall) {
        std::vector<double> kernelMs, wallMs;
        for (int r = 0; r < reps + 2; ++r) {
          kvprecKernelTiming(1);
          double start = seconds();
          if (int32_t status = call()) {
            kvprecKernelTiming(0);
            std::fprintf(stderr, "gpu-check: %s: %s failed: status %d\n",
                         c.name, what, status);
            return false;
          }
          double elapsed = (seconds() - start) * 1e3;
          int64_t launches = 0;
          double kernels = kvprecKernelTimeMs(&launches);
          kvprecKernelTiming(0);
          if (r < 2)
            continue;
          kernelMs.push_back(kernels);
          wallMs.push_back(elapsed);
        }
        std::sort(kernelMs.begin(), kernelMs.end());
        std::sort(wallMs.begin(), wallMs.end());
        kernel = kernelMs[kernelMs.size() / 2];
        wall = wallMs[wallMs.size() / 2];
        return true;
      };
      double kernel = 0, wall = 0, certifiedKernel = 0, certifiedWall = 0;
      if (!time(
              "attend",
              [&] { return c.gpu.attend(&a, 0, &qg, capacity, &og, scale); },
              kernel, wall) ||
          !time(
              "attend_certified",
              [&] {
                return c.gpu.attendCertified(&a, 0, &qg, capacity, &og, scale,
                                             &bg);
              },
              certifiedKernel, certifiedWall))
        return 1;
      double gbps = double(bytes) / (kernel * 1e-3) / 1e9;
      // A copy reads and writes each byte.
      double copyGbps = 2.0 * double(bytes) / (copyMs * 1e-3) / 1e9;
      std::printf("{\"format\": \"%s\", \"positions\": %lld, \"gqa\": %lld, "
                  "\"arena_bytes\": %lld, \"kernel_us\": %.2f, "
                  "\"step_us\": %.2f, \"gbps\": %.1f, \"copy_gbps\": %.1f, "
                  "\"ratio_to_copy\": %.3f, \"certified_kernel_us\": %.2f, "
                  "\"certified_step_us\": %.2f}\n",
                  c.name, (long long)capacity, (long long)gqa, (long long)bytes,
                  kernel * 1e3, wall * 1e3, gbps, copyGbps, gbps / copyGbps,
                  certifiedKernel * 1e3, certifiedWall * 1e3);
      std::fflush(stdout);
    }
  }
  return 0;
}
} // namespace

int main(int argc, char **argv) {
  std::string mode = argc > 1 ? argv[1] : "";
  if (mode != "check" && mode != "bench" && mode != "status" &&
      mode != "selftest") {
    std::fprintf(stderr,
                 "usage: gpu-check check|bench [REPS]|status|selftest\n");
    return 2;
  }
  if (mode == "selftest") {
    hostOnly = true;
    return runChecks();
  }
  char why[512] = {};
  if (!kvprecCudaStatus(why, sizeof(why))) {
    std::fprintf(stderr, "gpu-check: no CUDA device: %s\n", why);
    return 3;
  }
  std::fprintf(stderr, "gpu-check: %s, sm_%d\n", why,
               kvprecCudaComputeCapability());
  if (mode == "status")
    return 0;
  if (mode == "check")
    return runChecks();
  return runBench(argc > 2 ? std::atoi(argv[2]) : 20);
}
