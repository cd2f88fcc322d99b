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
//                           [--plan NAME@N=FILE]... [--reps R]
//                           [--prefetch-distance B[,B...]]
//                           [--certified yes|no]
//   kvprec-bench-cpu-decode --fma-peak
//   kvprec-bench-cpu-decode --print-type NAME N
//
// With T threads the generated attention splits each KV head's positions
// into T parts (kvprec-to-llvm{threads=T}, OpenMP) and the stream read
// uses T threads too. --plan runs a planned cache type (the text of a
// !kvprec.cache type, as kvprec-opt --mlir-print-local-scope prints it)
// under NAME at N positions: bench/cpu-decode.sh passes the certified
// mixed plan that way. --certified no leaves out the timing of
// P_attend_certified (and its compilation). --fma-peak measures this core's
// peak rate of 512-bit fused multiply-adds, the floor under the kernels' f32
// arithmetic.
//
//===----------------------------------------------------------------------===//

#include "kvprec/Runtime/CompiledCache.h"

#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
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

/// The formats of the uniform plans.
const std::map<std::string, std::string> &uniformFormats() {
  static const std::map<std::string, std::string> formats = {
      {"f16", "#kvprec.format<f16>"},
      {"bf16", "#kvprec.format<bf16>"},
      {"f8E4M3FN",
       "#kvprec.format<f8E4M3FN, symmetric, token_group = 128, scale = f16>"},
      {"i8", "#kvprec.format<i8, symmetric, token_group = 128, scale = f16>"},
      {"i4", "#kvprec.format<i4, symmetric, token_group = 32, scale = f16>"},
      {"i2", "#kvprec.format<i2, asymmetric, token_group = 32, scale = f16>"},
  };
  return formats;
}

std::string uniformCacheType(const std::string &name, int64_t capacity) {
  std::ostringstream os;
  os << "!kvprec.cache<1x" << kHeads << "x" << capacity << "x" << kHeadDim
     << "xf32, #kvprec.plan<layers = 1, heads = " << kHeads
     << ", capacity = " << capacity << ", block = " << kBlock
     << ", sink = " << kSink << ", window = " << kWindow << ", formats = ["
     << uniformFormats().at(name)
     << "], sink_formats = [0], body_formats = [0], window_formats = [0]>>";
  return os.str();
}

#if defined(__AVX512F__)
/// 512-bit fused multiply-adds per nanosecond on this core: 12 independent
/// chains (more than latency x throughput), in assembly so that the
/// compiler neither spills nor folds them.
double fmaPeakPerNs() {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0,
         a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
  __m512 x = _mm512_set1_ps(0.5f);
  const int64_t iterations = 20000000;
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    auto start = std::chrono::steady_clock::now();
    for (int64_t n = 0; n < iterations; ++n)
      __asm__ volatile("vfmadd231ps %12, %12, %0\n\t"
                       "vfmadd231ps %12, %12, %1\n\t"
                       "vfmadd231ps %12, %12, %2\n\t"
                       "vfmadd231ps %12, %12, %3\n\t"
                       "vfmadd231ps %12, %12, %4\n\t"
                       "vfmadd231ps %12, %12, %5\n\t"
                       "vfmadd231ps %12, %12, %6\n\t"
                       "vfmadd231ps %12, %12, %7\n\t"
                       "vfmadd231ps %12, %12, %8\n\t"
                       "vfmadd231ps %12, %12, %9\n\t"
                       "vfmadd231ps %12, %12, %10\n\t"
                       "vfmadd231ps %12, %12, %11"
                       : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4),
                         "+v"(a5), "+v"(a6), "+v"(a7), "+v"(a8), "+v"(a9),
                         "+v"(a10), "+v"(a11)
                       : "v"(x));
    double ns = std::chrono::duration<double, std::nano>(
                    std::chrono::steady_clock::now() - start)
                    .count();
    best = std::max(best, 12.0 * double(iterations) / ns);
  }
  return best;
}
#endif

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

/// Parses a decimal integer that fills `text`; false otherwise.
bool parseInt(const std::string &text, int64_t &value) {
  if (text.empty())
    return false;
  errno = 0;
  char *end = nullptr;
  long long parsed = std::strtoll(text.c_str(), &end, 10);
  if (errno != 0 || end != text.c_str() + text.size())
    return false;
  value = parsed;
  return true;
}

/// Parses "N[,N...]"; false on an empty or malformed item.
bool parseList(const char *text, std::vector<int64_t> &values) {
  values.clear();
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    int64_t value;
    if (!parseInt(item, value))
      return false;
    values.push_back(value);
  }
  return !values.empty();
}
std::vector<std::string> parseNames(const char *text) {
  std::vector<std::string> values;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ','))
    values.push_back(item);
  return values;
}

constexpr const char *kUsage =
    "usage: kvprec-bench-cpu-decode [--positions N[,N...]] [--gqa G[,G...]]\n"
    "         [--threads T[,T...]] [--formats NAME[,NAME...]] [--reps R]\n"
    "         [--prefetch-distance B[,B...]] [--plan NAME@N=FILE]...\n"
    "         [--certified yes|no]\n"
    "       kvprec-bench-cpu-decode --fma-peak\n"
    "       kvprec-bench-cpu-decode --print-type NAME N\n"
    "Uniform formats: f16 bf16 f8E4M3FN i8 i4 i2; --plan adds NAME at N\n"
    "positions with the planned !kvprec.cache type in FILE. One JSON object\n"
    "per measurement on stdout.\n";

int fail(const std::string &message) {
  std::fprintf(stderr, "kvprec-bench-cpu-decode: error: %s\n", message.c_str());
  return 2;
}

/// Reads a whole file; false if it cannot be read.
bool readFile(const std::string &path, std::string &text) {
  FILE *file = std::fopen(path.c_str(), "rb");
  if (!file)
    return false;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, file)) > 0)
    text.append(buffer, n);
  bool ok = !std::ferror(file);
  std::fclose(file);
  return ok;
}
} // namespace

int main(int argc, char **argv) {
  std::vector<int64_t> positions = {4096, 16384, 65536}, gqas = {1, 4};
  std::vector<std::string> formats;
  int reps = 15;
  std::vector<int64_t> threadCounts = {1, 2};
  // kvprec-to-llvm's prefetch-distance: several for an A/B in one process.
  std::vector<int64_t> prefetchDistances = {8192};
  // Planned cache types given with --plan: (name, positions) -> type.
  std::map<std::pair<std::string, int64_t>, std::string> plans;
  std::vector<std::string> planNames;
  // Also time P_attend_certified (--certified no leaves it out).
  bool timeCertified = true;
  if (argc == 2 && std::string(argv[1]) == "--help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (argc == 2 && std::string(argv[1]) == "--fma-peak") {
#if defined(__AVX512F__)
    std::printf("{\"zmm_fma_per_ns\": %.3f}\n", fmaPeakPerNs());
    return 0;
#else
    return fail("--fma-peak needs a build for an AVX-512 host");
#endif
  }
  // --print-type NAME POSITIONS: the cache type a run uses, for the
  // instruction count of bench/cpu-decode.sh.
  if (argc == 4 && std::string(argv[1]) == "--print-type") {
    if (!uniformFormats().count(argv[2]))
      return fail(std::string("unknown format '") + argv[2] + "'");
    int64_t n;
    if (!parseInt(argv[3], n) || n < 1)
      return fail(std::string("bad positions '") + argv[3] + "'");
    std::printf("%s\n", uniformCacheType(argv[2], n).c_str());
    return 0;
  }
  {
    for (int i = 1; i < argc; i += 2) {
      std::string flag = argv[i];
      if (i + 1 >= argc)
        return fail("option '" + flag + "' needs a value\n" + kUsage);
      const char *value = argv[i + 1];
      if (flag == "--positions") {
        if (!parseList(value, positions))
          return fail("--positions expects N[,N...], not '" +
                      std::string(value) + "'");
      } else if (flag == "--gqa") {
        if (!parseList(value, gqas))
          return fail("--gqa expects N[,N...], not '" + std::string(value) +
                      "'");
      } else if (flag == "--formats")
        formats = parseNames(value);
      else if (flag == "--threads") {
        if (!parseList(value, threadCounts))
          return fail("--threads expects N[,N...], not '" + std::string(value) +
                      "'");
      } else if (flag == "--prefetch-distance") {
        if (!parseList(value, prefetchDistances))
          return fail("--prefetch-distance expects N[,N...], not '" +
                      std::string(value) + "'");
      } else if (flag == "--reps") {
        int64_t r;
        if (!parseInt(value, r) || r < 1 || r > 1000)
          return fail("--reps expects 1 to 1000, not '" + std::string(value) +
                      "'");
        reps = int(r);
      } else if (flag == "--certified") {
        std::string v = value;
        if (v != "yes" && v != "no")
          return fail("--certified expects yes or no, not '" + v + "'");
        timeCertified = v == "yes";
      } else if (flag == "--plan") {
        std::string spec = value;
        size_t at = spec.find('@'), eq = spec.find('=');
        if (at == std::string::npos || eq == std::string::npos || eq < at ||
            at == 0)
          return fail("--plan expects NAME@POSITIONS=FILE, not '" + spec + "'");
        std::string name = spec.substr(0, at);
        int64_t n;
        if (!parseInt(spec.substr(at + 1, eq - at - 1), n))
          return fail("--plan expects NAME@POSITIONS=FILE, not '" + spec + "'");
        std::string text;
        if (!readFile(spec.substr(eq + 1), text))
          return fail("cannot read '" + spec.substr(eq + 1) + "'");
        while (!text.empty() && std::isspace((unsigned char)text.back()))
          text.pop_back();
        if (uniformFormats().count(name))
          return fail("--plan name '" + name + "' is a uniform format's");
        plans[{name, n}] = text;
        if (std::find(planNames.begin(), planNames.end(), name) ==
            planNames.end())
          planNames.push_back(name);
      } else
        return fail("unknown option '" + flag + "'\n" + kUsage);
    }
  }
  for (int64_t n : positions)
    if (n < 1)
      return fail("--positions must be positive");
  for (int64_t g : gqas)
    if (g < 1 || g > 64)
      return fail("--gqa must be 1 to 64");
  for (int64_t t : threadCounts)
    if (t < 1 || t > 256)
      return fail("--threads must be 1 to 256");
  if (formats.empty()) {
    formats = {"f16", "bf16", "f8E4M3FN", "i8", "i4", "i2"};
    formats.insert(formats.end(), planNames.begin(), planNames.end());
  }
  for (const std::string &name : formats) {
    if (uniformFormats().count(name))
      continue;
    if (std::find(planNames.begin(), planNames.end(), name) == planNames.end())
      return fail("unknown format '" + name + "' (give a plan with --plan " +
                  name + "@N=FILE)");
    for (int64_t n : positions)
      if (!plans.count({name, n}))
        return fail("no --plan " + name + "@" + std::to_string(n) + "=FILE");
  }
  auto cacheType = [&](const std::string &name, int64_t capacity) {
    auto plan = plans.find({name, capacity});
    return plan != plans.end() ? plan->second
                               : uniformCacheType(name, capacity);
  };

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
          auto parallel = CompiledCache::compile(
              cacheType(name, capacity), threadCount, timeCertified, distance);
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
              if (timeCertified &&
                  variant.attendCertified(
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
            double certified = timeCertified ? median(certifiedTimes[v]) : 0;
            double attend = median(attendTimes[v]);
            double stream = median(streamTimes[v]);
            double gb = double(arena.size) / 1e9;
            std::printf(
                "{\"format\": \"%s\", \"positions\": %lld, \"gqa\": %lld, "
                "\"threads\": %lld, \"prefetch_distance\": %lld, "
                "\"arena_bytes\": %lld, \"step_us\": %.1f, "
                "\"gbps\": %.2f, \"stream_gbps\": %.2f, "
                "\"ratio_to_stream\": %.3f, \"append_us_per_token\": %.2f",
                name.c_str(), (long long)capacity, (long long)gqa,
                (long long)threadCount, (long long)prefetchDistances[v],
                (long long)arena.size, attend * 1e6, gb / attend, gb / stream,
                stream / attend, appendPerToken * 1e6);
            if (timeCertified)
              std::printf(", \"certified_step_us\": %.1f, "
                          "\"certified_over_attend\": %.3f",
                          certified * 1e6, certified / attend);
            std::printf("}\n");
          }
          std::fflush(stdout);
        }
      }
    }
  return 0;
}
