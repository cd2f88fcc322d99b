//===- cpu-decode.cpp - decode attention on compiled caches vs a stream
//----===//
//
// For each plan and context length: fills a one-layer cache through the
// generated append, then times the generated attend at full length and a
// streaming-read kernel over the same arena bytes, alternating, in this
// process (the machine is shared and noisy: only the ratio of the two is
// meaningful). Prints one JSON object per measurement on stdout.
//
//   kvprec-bench-cpu-decode [--positions N[,N...]] [--gqa G[,G...]]
//                           [--threads T[,T...]] [--formats NAME[,NAME...]]
//                           [--reps R]
//
// With T threads the generated attention splits each KV head's positions
// into T parts (kvprec-to-llvm{threads=T}, OpenMP) and the stream read
// uses T threads too.
//
//===----------------------------------------------------------------------===//

#include "kvprec/Runtime/CompiledCache.h"

#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

using kvprec::runtime::Arena;
using kvprec::runtime::CompiledCache;

namespace {
constexpr int64_t kHeads = 8, kHeadDim = 128, kBlock = 64, kSink = 4,
                  kWindow = 256;

/// The formats of the uniform plans and of the mixed plan (sink and window
/// in f16, K body int8 and V body int4, token groups).
const std::map<std::string, std::vector<std::string>> &planFormats() {
  static const std::map<std::string, std::vector<std::string>> plans = {
      {"f16", {"#kvprec.format<f16>"}},
      {"bf16", {"#kvprec.format<bf16>"}},
      {"f8E4M3FN",
       {"#kvprec.format<f8E4M3FN, symmetric, token_group = 128, scale = f16>"}},
      {"i8", {"#kvprec.format<i8, symmetric, token_group = 128, scale = f16>"}},
      {"i4", {"#kvprec.format<i4, symmetric, token_group = 32, scale = f16>"}},
      {"i2", {"#kvprec.format<i2, asymmetric, token_group = 32, scale = f16>"}},
      {"mixed",
       {"#kvprec.format<f16>",
        "#kvprec.format<i8, symmetric, token_group = 128, scale = f16>",
        "#kvprec.format<i4, symmetric, token_group = 32, scale = f16>"}},
  };
  return plans;
}

std::string cacheType(const std::string &name, int64_t capacity) {
  const std::vector<std::string> &formats = planFormats().at(name);
  std::string list, body;
  for (const std::string &f : formats)
    list += (list.empty() ? "" : ", ") + f;
  if (name == "mixed") {
    // Items alternate K, V: K body int8 (1), V body int4 (2).
    for (int64_t item = 0; item < 2 * kHeads; ++item)
      body += std::string(body.empty() ? "" : ", ") + (item % 2 ? "2" : "1");
    body = "[" + body + "]";
  } else {
    body = "[0]";
  }
  std::ostringstream os;
  os << "!kvprec.cache<1x" << kHeads << "x" << capacity << "x" << kHeadDim
     << "xf32, #kvprec.plan<layers = 1, heads = " << kHeads
     << ", capacity = " << capacity << ", block = " << kBlock
     << ", sink = " << kSink << ", window = " << kWindow << ", formats = ["
     << list << "], sink_formats = [0], body_formats = " << body
     << ", window_formats = [0]>>";
  return os.str();
}

/// Sums `bytes` bytes as floats with independent vector accumulators: a
/// read at the machine's streaming bandwidth.
__attribute__((noinline)) float streamReadOne(const uint8_t *data,
                                              int64_t bytes) {
  const float *f = reinterpret_cast<const float *>(data);
  int64_t n = bytes / 4;
#if defined(__AVX512F__)
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    a0 = _mm512_add_ps(a0, _mm512_load_ps(f + i));
    a1 = _mm512_add_ps(a1, _mm512_load_ps(f + i + 16));
    a2 = _mm512_add_ps(a2, _mm512_load_ps(f + i + 32));
    a3 = _mm512_add_ps(a3, _mm512_load_ps(f + i + 48));
  }
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes,
                  _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  float sum = 0;
  for (float lane : lanes)
    sum += lane;
  for (; i < n; ++i)
    sum += f[i];
  return sum;
#else
  float acc[16] = {};
  for (int64_t i = 0; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j)
      acc[j] += f[i + j];
  float sum = 0;
  for (float a : acc)
    sum += a;
  return sum;
#endif
}

/// The same read split over `threads` threads (contiguous parts).
float streamRead(const uint8_t *data, int64_t bytes, int64_t threads) {
  if (threads <= 1)
    return streamReadOne(data, bytes);
  std::vector<float> sums(threads);
  std::vector<std::thread> workers;
  int64_t part = (bytes / threads) / 64 * 64;
  for (int64_t t = 0; t < threads; ++t)
    workers.emplace_back([&, t] {
      int64_t begin = t * part;
      int64_t size = t + 1 == threads ? bytes - begin : part;
      sums[t] = streamReadOne(data + begin, size);
    });
  for (std::thread &worker : workers)
    worker.join();
  float sum = 0;
  for (float s : sums)
    sum += s;
  return sum;
}

double seconds() {
  return std::chrono::duration<double>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::vector<int64_t> parseList(const char *text) {
  std::vector<int64_t> values;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ','))
    values.push_back(std::stoll(item));
  return values;
}
std::vector<std::string> parseNames(const char *text) {
  std::vector<std::string> values;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ','))
    values.push_back(item);
  return values;
}
} // namespace

int main(int argc, char **argv) {
  std::vector<int64_t> positions = {4096, 16384, 65536}, gqas = {1, 4};
  std::vector<std::string> formats = {"f16", "bf16", "f8E4M3FN", "i8",
                                      "i4",  "i2",   "mixed"};
  int reps = 15;
  std::vector<int64_t> threadCounts = {1, 2};
  // kvprec-to-llvm's prefetch-distance: several for an A/B in one process.
  std::vector<int64_t> prefetchDistances = {8192};
  // --print-type NAME POSITIONS: the cache type a run uses, for the
  // instruction count of bench/cpu-decode.sh.
  if (argc == 4 && std::string(argv[1]) == "--print-type") {
    if (!planFormats().count(argv[2]))
      return 2;
    std::printf("%s\n", cacheType(argv[2], std::stoll(argv[3])).c_str());
    return 0;
  }
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--positions")
      positions = parseList(argv[i + 1]);
    else if (flag == "--gqa")
      gqas = parseList(argv[i + 1]);
    else if (flag == "--formats")
      formats = parseNames(argv[i + 1]);
    else if (flag == "--threads")
      threadCounts = parseList(argv[i + 1]);
    else if (flag == "--prefetch-distance")
      prefetchDistances = parseList(argv[i + 1]);
    else if (flag == "--reps")
      reps = std::stoi(argv[i + 1]);
    else {
      std::fprintf(stderr,
                   "kvprec-bench-cpu-decode: error: unknown option '%s'\n",
                   argv[i]);
      return 2;
    }
  }
  for (const std::string &name : formats)
    if (!planFormats().count(name)) {
      std::fprintf(stderr,
                   "kvprec-bench-cpu-decode: error: unknown format '%s'\n",
                   name.c_str());
      return 2;
    }

  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  volatile float sink = 0;
  for (int64_t capacity : positions)
    for (const std::string &name : formats) {
      auto compiled = CompiledCache::compile(cacheType(name, capacity));
      if (!compiled) {
        std::fprintf(stderr, "kvprec-bench-cpu-decode: error: %s\n",
                     llvm::toString(compiled.takeError()).c_str());
        return 1;
      }
      const CompiledCache &code = **compiled;
      Arena arena(code.getArenaBytes());
      std::memset(arena.data, 0, arena.size);
      if (code.init(arena.data, arena.size) != 0)
        return 1;
      // Append cost: single tokens for the first 1024 positions, then the
      // rest in chunks.
      const int64_t row = kHeads * kHeadDim;
      std::vector<float> keys(256 * row), values(256 * row);
      for (float &x : keys)
        x = normal(rng);
      for (float &x : values)
        x = normal(rng);
      int64_t single = std::min<int64_t>(1024, capacity);
      double start = seconds();
      for (int64_t p = 0; p < single; ++p)
        if (code.append(arena.data, arena.size, 0,
                        keys.data() + (p % 256) * row,
                        values.data() + (p % 256) * row, 1, p) != 0)
          return 1;
      double appendPerToken = (seconds() - start) / double(single);
      for (int64_t p = single; p < capacity;) {
        int64_t n = std::min<int64_t>(256, capacity - p);
        if (code.append(arena.data, arena.size, 0, keys.data(), values.data(),
                        n, p) != 0)
          return 1;
        p += n;
      }
      for (int64_t threadCount : threadCounts) {
        // One compiled variant per prefetch distance; their repetitions
        // interleave, so that the machine's drift falls on all alike.
        std::vector<std::unique_ptr<CompiledCache>> variants;
        for (int64_t distance : prefetchDistances) {
          auto parallel =
              CompiledCache::compile(cacheType(name, capacity), threadCount,
                                     /*runtimeCertificate=*/true, distance);
          if (!parallel) {
            std::fprintf(stderr, "kvprec-bench-cpu-decode: error: %s\n",
                         llvm::toString(parallel.takeError()).c_str());
            return 1;
          }
          variants.push_back(std::move(*parallel));
        }
        for (int64_t gqa : gqas) {
          int64_t queryHeads = kHeads * gqa;
          std::vector<float> query(queryHeads * kHeadDim), output(query.size());
          for (float &x : query)
            x = normal(rng);
          std::vector<float> bounds(queryHeads);
          size_t n = variants.size();
          std::vector<std::vector<double>> attendTimes(n), streamTimes(n),
              certifiedTimes(n);
          for (int r = 0; r < reps + 1; ++r)
            for (size_t v = 0; v < n; ++v) {
              const CompiledCache &variant = *variants[v];
              double t0 = seconds();
              if (variant.attend(arena.data, arena.size, 0, query.data(),
                                 queryHeads, capacity, output.data(),
                                 1.0f / std::sqrt(float(kHeadDim))) != 0)
                return 1;
              double t1 = seconds();
              sink = sink + streamRead(arena.data, arena.size, threadCount);
              double t2 = seconds();
              // The same attention with its run-time certificate.
              if (variant.attendCertified(
                      arena.data, arena.size, 0, query.data(), queryHeads,
                      capacity, output.data(),
                      1.0f / std::sqrt(float(kHeadDim)), bounds.data()) != 0)
                return 1;
              double t3 = seconds();
              if (r == 0)
                continue; // Warm-up.
              attendTimes[v].push_back(t1 - t0);
              streamTimes[v].push_back(t2 - t1);
              certifiedTimes[v].push_back(t3 - t2);
            }
          auto median = [](std::vector<double> &times) {
            std::sort(times.begin(), times.end());
            return times[times.size() / 2];
          };
          for (size_t v = 0; v < n; ++v) {
            double certified = median(certifiedTimes[v]);
            double attend = median(attendTimes[v]);
            double stream = median(streamTimes[v]);
            double gb = double(arena.size) / 1e9;
            std::printf(
                "{\"format\": \"%s\", \"positions\": %lld, \"gqa\": %lld, "
                "\"threads\": %lld, \"prefetch_distance\": %lld, "
                "\"arena_bytes\": %lld, \"step_us\": %.1f, "
                "\"gbps\": %.2f, \"stream_gbps\": %.2f, "
                "\"ratio_to_stream\": %.3f, \"append_us_per_token\": %.2f, "
                "\"certified_step_us\": %.1f, \"certified_over_attend\": "
                "%.3f}\n",
                name.c_str(), (long long)capacity, (long long)gqa,
                (long long)threadCount, (long long)prefetchDistances[v],
                (long long)arena.size, attend * 1e6, gb / attend, gb / stream,
                stream / attend, appendPerToken * 1e6, certified * 1e6,
                certified / attend);
          }
          std::fflush(stdout);
        }
      }
    }
  return 0;
}
