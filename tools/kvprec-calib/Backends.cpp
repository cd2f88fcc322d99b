//===- Backends.cpp - planned caches behind the model's attention ---------===//

#include "Backends.h"

#include "kvprec/Calibration/InputFile.h"
#include "kvprec/Certify/PlanEmulation.h"
#include "kvprec/Dialect/KVPrec/IR/KVPrecOps.h"
#include "kvprec/Dialect/KVPrec/Transforms/PlanUtils.h"
#include "kvprec/InitKVPrec.h"
#include "kvprec/Runtime/CompiledCache.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"

#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cmath>

using namespace llvm;
using namespace kvprec::calib;
namespace cf = kvprec::certify;

static Error makeError(const Twine &message) {
  return createStringError(inconvertibleErrorCode(), message.str());
}

std::string kvprec::calib::formatLocation(mlir::Location loc) {
  if (auto file = loc->findInstanceOf<mlir::FileLineColLoc>())
    return formatv("{0}:{1}:{2}", file.getFilename().getValue(), file.getLine(),
                   file.getColumn())
        .str();
  return "<unknown location>";
}

Expected<mlir::OwningOpRef<mlir::ModuleOp>>
kvprec::calib::parseModuleFile(StringRef path, StringRef what,
                               mlir::MLIRContext &context,
                               const std::string &diagnostics) {
  Expected<std::unique_ptr<MemoryBuffer>> buffer =
      openRegularFile(path, what, uint64_t(4) << 30, /*isText=*/true);
  if (!buffer)
    return buffer.takeError();
  SourceMgr sourceMgr;
  sourceMgr.AddNewSourceBuffer(std::move(*buffer), SMLoc());
  mlir::OwningOpRef<mlir::ModuleOp> module =
      mlir::parseSourceFile<mlir::ModuleOp>(sourceMgr,
                                            mlir::ParserConfig(&context));
  if (!module)
    return makeError(diagnostics.empty() ? path + ": cannot parse the module"
                                         : StringRef(diagnostics));
  return module;
}

Error kvprec::calib::withPlannedCache(
    StringRef path,
    function_ref<Error(mlir::kvprec::AllocOp, const PlannedCacheType &,
                       const std::string &)>
        use) {
  mlir::DialectRegistry registry;
  ::kvprec::registerKVPrecToolDialects(registry);
  mlir::MLIRContext context(registry);
  // Collect diagnostics (the parser's, the verifier's, and those of what
  // `use` reads) so they reach the user as one located error.
  std::string diagnostics;
  mlir::ScopedDiagnosticHandler handler(&context, [&](mlir::Diagnostic &diag) {
    if (!diagnostics.empty())
      diagnostics += "\n";
    diagnostics += formatLocation(diag.getLocation()) + ": " + diag.str();
    for (mlir::Diagnostic &note : diag.getNotes())
      diagnostics +=
          "\n" + formatLocation(note.getLocation()) + ": note: " + note.str();
    return mlir::success();
  });

  Expected<mlir::OwningOpRef<mlir::ModuleOp>> parsed =
      parseModuleFile(path, "the planned module", context, diagnostics);
  if (!parsed)
    return parsed.takeError();
  mlir::OwningOpRef<mlir::ModuleOp> module = std::move(*parsed);

  mlir::kvprec::AllocOp firstAlloc, planned;
  module->walk([&](mlir::kvprec::AllocOp alloc) {
    if (!firstAlloc)
      firstAlloc = alloc;
    if (alloc.getCache().getType().getPlan()) {
      planned = alloc;
      return mlir::WalkResult::interrupt();
    }
    return mlir::WalkResult::advance();
  });
  if (!firstAlloc)
    return makeError(path + ": the module has no kvprec.alloc");
  if (!planned)
    return makeError(formatLocation(firstAlloc.getLoc()) +
                     ": no kvprec.alloc has a #kvprec.plan in its cache type "
                     "(run --kvprec-assign-precision first)");

  mlir::kvprec::CacheType cache = planned.getCache().getType();
  PlannedCacheType result;
  result.location = formatLocation(planned.getLoc());
  std::optional<cf::Plan> plan = mlir::kvprec::toPlainPlan(cache);
  if (!plan)
    return makeError(result.location + ": cannot read the plan");
  result.plan = std::move(*plan);
  raw_string_ostream os(result.typeText);
  mlir::Type(cache).print(os);
  result.f32Elements = cache.getElementType().isF32();
  return use(planned, result, diagnostics);
}

Expected<PlannedCacheType> kvprec::calib::loadPlannedCacheType(StringRef path) {
  PlannedCacheType result;
  if (Error error = withPlannedCache(path, [&](mlir::kvprec::AllocOp,
                                               const PlannedCacheType &cache,
                                               const std::string &) {
        result = cache;
        return Error::success();
      }))
    return std::move(error);
  return result;
}

namespace {
/// The runner's fp32 attention (Model.cpp, the same operations in the same
/// order) over keys and values read through `key(kvHead, t, i)` and
/// `value(kvHead, t, i)`.
template <typename KeyAt, typename ValueAt>
void referenceAttention(const LlamaConfig &config, int length,
                        ArrayRef<float> queries, float scale,
                        MutableArrayRef<float> output,
                        std::vector<float> &scores, KeyAt key, ValueAt value) {
  const int headSize = config.getHeadSize();
  scores.resize(length);
  for (int h = 0; h < config.numHeads; ++h) {
    int kvHead = h / config.getQueryHeadsPerKVHead();
    const float *q = queries.data() + h * headSize;
    for (int t = 0; t < length; ++t) {
      float score = 0.0f;
      for (int i = 0; i < headSize; ++i)
        score += q[i] * key(kvHead, t, i);
      scores[t] = score * scale;
    }
    float maxValue = *std::max_element(scores.begin(), scores.end());
    float sum = 0.0f;
    for (float &s : scores) {
      s = std::exp(s - maxValue);
      sum += s;
    }
    for (float &s : scores)
      s /= sum;
    float *out = output.data() + h * headSize;
    std::fill_n(out, headSize, 0.0f);
    for (int t = 0; t < length; ++t)
      for (int i = 0; i < headSize; ++i)
        out[i] += scores[t] * value(kvHead, t, i);
  }
}

/// One layer's attention through `inner`, the others exact (fp32 cache).
class SingleLayerBackend : public AttentionBackend {
public:
  SingleLayerBackend(AttentionBackend &inner, int layer,
                     const LlamaConfig &config)
      : inner(&inner), layer(layer), config(config), keys(config.numLayers),
        values(config.numLayers) {}

  std::string reset() override {
    for (int l = 0; l < config.numLayers; ++l) {
      keys[l].clear();
      values[l].clear();
    }
    return inner->reset();
  }
  std::string append(int l, int position, ArrayRef<float> key,
                     ArrayRef<float> value) override {
    if (l == layer)
      return inner->append(l, position, key, value);
    keys[l].insert(keys[l].end(), key.begin(), key.end());
    values[l].insert(values[l].end(), value.begin(), value.end());
    return "";
  }
  std::string attend(int l, int position, ArrayRef<float> queries, float scale,
                     MutableArrayRef<float> output) override {
    if (l == layer)
      return inner->attend(l, position, queries, scale, output);
    const int kvDim = config.getKVDim(), headSize = config.getHeadSize();
    referenceAttention(
        config, position + 1, queries, scale, output, scores,
        [&](int kvHead, int t, int i) {
          return keys[l][size_t(t) * kvDim + kvHead * headSize + i];
        },
        [&](int kvHead, int t, int i) {
          return values[l][size_t(t) * kvDim + kvHead * headSize + i];
        });
    return "";
  }

private:
  AttentionBackend *inner;
  int layer;
  LlamaConfig config;
  std::vector<std::vector<float>> keys, values;
  std::vector<float> scores;
};

/// The plan emulator, with the runner's fp32 attention over its values.
class EmulatedBackend : public AttentionBackend {
public:
  EmulatedBackend(const cf::Plan &plan, const LlamaConfig &config)
      : plan(plan), config(config) {}

  std::string reset() override {
    streams.clear();
    for (int64_t item = 0; item < plan.getNumItems(); ++item)
      streams.emplace_back(plan, item, kvprec::analysis::DequantizerConfig());
    return "";
  }

  std::string append(int layer, int position, ArrayRef<float> key,
                     ArrayRef<float> value) override {
    const int headSize = config.getHeadSize();
    for (int h = 0; h < config.numKVHeads; ++h)
      for (int kv = 0; kv < 2; ++kv) {
        const float *row = (kv ? value : key).data() + h * headSize;
        kvprec::analysis::Status status =
            streams[plan.getItem(layer, h, kv)].append(row);
        if (status.failed())
          return formatv("layer {0}, KV head {1}, {2}: the emulated cache "
                         "cannot store position {3}: {4}",
                         layer, h, kv ? "V" : "K", position,
                         status.getMessage())
              .str();
      }
    return "";
  }

  std::string attend(int layer, int position, ArrayRef<float> queries,
                     float scale, MutableArrayRef<float> output) override {
    referenceAttention(
        config, position + 1, queries, scale, output, scores,
        [&](int kvHead, int t, int i) {
          return float(
              streams[plan.getItem(layer, kvHead, 0)].getStored()(t, i));
        },
        [&](int kvHead, int t, int i) {
          return float(
              streams[plan.getItem(layer, kvHead, 1)].getStored()(t, i));
        });
    return "";
  }

private:
  const cf::Plan &plan;
  LlamaConfig config;
  std::vector<cf::EmulatedStream> streams;
  std::vector<float> scores;
};

/// The generated code for the cache type.
class CompiledBackend : public AttentionBackend {
public:
  CompiledBackend(std::unique_ptr<kvprec::runtime::CompiledCache> code,
                  const LlamaConfig &config)
      : code(std::move(code)), arena(this->code->getArenaBytes()),
        config(config) {}

  std::string reset() override {
    return check(code->init(arena.data, arena.size), "init", 0);
  }
  std::string append(int layer, int position, ArrayRef<float> key,
                     ArrayRef<float> value) override {
    return check(code->append(arena.data, arena.size, layer, key.data(),
                              value.data(), 1, position),
                 "append", position);
  }
  std::string attend(int layer, int position, ArrayRef<float> queries,
                     float scale, MutableArrayRef<float> output) override {
    return check(code->attend(arena.data, arena.size, layer, queries.data(),
                              config.numHeads, position + 1, output.data(),
                              scale),
                 "attend", position);
  }

private:
  static std::string check(int32_t status, const char *what, int position) {
    if (status == 0)
      return "";
    return formatv("the compiled cache's {0} at position {1} returned status "
                   "{2} (docs/abi.md lists the codes)",
                   what, position, status)
        .str();
  }
  std::unique_ptr<kvprec::runtime::CompiledCache> code;
  kvprec::runtime::Arena arena;
  LlamaConfig config;
};
} // namespace

std::unique_ptr<AttentionBackend>
kvprec::calib::createSingleLayerBackend(AttentionBackend &inner, int layer,
                                        const LlamaConfig &config) {
  return std::make_unique<SingleLayerBackend>(inner, layer, config);
}

Expected<std::unique_ptr<AttentionBackend>>
kvprec::calib::createAttentionBackend(BackendKind kind,
                                      const PlannedCacheType &cache,
                                      const LlamaConfig &config,
                                      int64_t positions) {
  const cf::Geometry &g = cache.plan.geometry;
  if (g.layers != config.numLayers || g.heads != config.numKVHeads ||
      g.headDim != config.getHeadSize())
    return makeError(formatv("{0}: the planned cache is {1} layers x {2} KV "
                             "heads x head_dim {3}, but the model has {4} x "
                             "{5} x {6}",
                             cache.location, g.layers, g.heads, g.headDim,
                             config.numLayers, config.numKVHeads,
                             config.getHeadSize()));
  if (positions < 0 && g.capacity < config.seqLen)
    return makeError(formatv("{0}: the planned cache holds {1} positions, "
                             "fewer than the model's seq_len {2}",
                             cache.location, g.capacity, config.seqLen));
  if (positions >= 0 && g.capacity < positions)
    return makeError(formatv("{0}: the planned cache holds {1} positions, "
                             "fewer than the {2} that run",
                             cache.location, g.capacity, positions));
  if (kind == BackendKind::Emulated)
    return std::unique_ptr<AttentionBackend>(
        new EmulatedBackend(cache.plan, config));
  if (!cache.f32Elements)
    return makeError(cache.location +
                     ": the compiled backend needs a cache of f32 elements");
  auto code = kvprec::runtime::CompiledCache::compile(cache.typeText);
  if (!code)
    return makeError(cache.location + ": cannot compile the cache: " +
                     toString(code.takeError()));
  return std::unique_ptr<AttentionBackend>(
      new CompiledBackend(std::move(*code), config));
}
