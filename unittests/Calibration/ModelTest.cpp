//===- ModelTest.cpp - llama2.c checkpoint loader and forward pass --------===//

#include "kvprec/Calibration/Model.h"
#include "kvprec/Calibration/Generation.h"
#include "kvprec/Calibration/Tokenizer.h"

#include "TestUtils.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/Endian.h"

#include "gtest/gtest.h"

#include <cmath>

using namespace llvm;
using namespace kvprec::calib;
using namespace kvprec::calib::test;

namespace {

std::string loadError(const TempDir &dir, StringRef bytes) {
  std::string path = dir.path("model.bin");
  writeFile(path, bytes);
  Expected<LlamaModel> model = LlamaModel::load(path);
  return errorMessage(model);
}

/// Overwrites header field `index` (0 = dim ... 6 = seq_len).
std::string withHeaderField(std::string bytes, int index, int32_t value) {
  support::endian::write32le(&bytes[4 * index], static_cast<uint32_t>(value));
  return bytes;
}

#define EXPECT_CONTAINS(haystack, needle)                                      \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos)             \
      << "message: \"" << (haystack) << "\"\nexpected: \"" << (needle) << "\""

TEST(ModelTest, LoadsTinyCheckpoint) {
  TempDir dir;
  LlamaConfig config = getTinyConfig();
  std::string path = dir.path("tiny.bin");
  writeFile(path, makeCheckpoint(config, 1));
  Expected<LlamaModel> model = LlamaModel::load(path);
  ASSERT_TRUE(bool(model)) << errorMessage(model);
  const LlamaConfig &loaded = model->getConfig();
  EXPECT_EQ(loaded.dim, 16);
  EXPECT_EQ(loaded.numKVHeads, 2);
  EXPECT_EQ(loaded.getHeadSize(), 4);
  EXPECT_EQ(loaded.getKVDim(), 8);
  EXPECT_EQ(loaded.getQueryHeadsPerKVHead(), 2);
  EXPECT_TRUE(loaded.sharedClassifier);
  EXPECT_EQ(model->getName(), "tiny");
  EXPECT_LT(model->getRopeTableDeviation(), 1e-5f);
  EXPECT_EQ(model->getClassifier().data(), model->getEmbedding().data());
  EXPECT_EQ(model->getW2(1).size(), 16u * 24u);
}

TEST(ModelTest, SeparateClassifier) {
  TempDir dir;
  LlamaConfig config = getTinyConfig();
  config.sharedClassifier = false;
  std::string path = dir.path("untied.bin");
  writeFile(path, makeCheckpoint(config, 2));
  Expected<LlamaModel> model = LlamaModel::load(path);
  ASSERT_TRUE(bool(model)) << errorMessage(model);
  EXPECT_FALSE(model->getConfig().sharedClassifier);
  EXPECT_EQ(model->getConfig().vocabSize, 32);
  EXPECT_NE(model->getClassifier().data(), model->getEmbedding().data());
  EXPECT_EQ(model->getClassifier().size(), 32u * 16u);
}

TEST(ModelTest, RejectsBadCheckpoints) {
  TempDir dir;
  std::string good = makeCheckpoint(getTinyConfig(), 3);
  EXPECT_CONTAINS(
      errorMessage(LlamaModel::load(dir.path("none.bin")).takeError()),
      "none.bin: cannot open checkpoint");
  EXPECT_CONTAINS(loadError(dir, good.substr(0, 20)),
                  "model.bin: file is 20 bytes, shorter than the 28-byte "
                  "llama2.c header");
  EXPECT_CONTAINS(loadError(dir, good.substr(0, good.size() - 4)),
                  "checkpoint is truncated");
  EXPECT_CONTAINS(loadError(dir, good + "xxxx"), "4 more than the header");
  EXPECT_CONTAINS(loadError(dir, withHeaderField(good, 4, 3)),
                  "n_heads 4 is not divisible by n_kv_heads 3");
  EXPECT_CONTAINS(loadError(dir, withHeaderField(good, 3, 3)),
                  "dim 16 is not divisible by n_heads 3");
  EXPECT_CONTAINS(loadError(dir, withHeaderField(good, 0, -16)),
                  "dim is -16, must be positive");
  EXPECT_CONTAINS(loadError(dir, withHeaderField(good, 4, 0)),
                  "n_kv_heads is 0, must be positive");
  EXPECT_CONTAINS(loadError(dir, withHeaderField(good, 5, INT32_MIN)),
                  "vocab_size is 0, must be positive");
  // dim 16 / 16 heads = head size 1: RoPE needs pairs.
  EXPECT_CONTAINS(
      loadError(dir, withHeaderField(withHeaderField(good, 3, 16), 4, 16)),
      "head size 1 (dim / n_heads) is odd");
  // Huge sizes must not wrap around to a small expected size.
  EXPECT_CONTAINS(loadError(dir, withHeaderField(good, 2, INT32_MAX)),
                  "checkpoint is truncated");

  LlamaConfig config = getTinyConfig();
  EXPECT_CONTAINS(loadError(dir, makeCheckpoint(config, 3, 500000.0)),
                  "RoPE tables");
}

/// Records a copy of every attention step.
struct RecordedStep {
  int layer, position;
  std::vector<float> queries, key, value, weights; // weights [heads, p+1]
};
class Recorder : public AttentionObserver {
public:
  explicit Recorder(int numHeads) : numHeads(numHeads) {}
  void observe(const AttentionStep &step) override {
    RecordedStep copy{step.layer,     step.position,    step.queries.vec(),
                      step.key.vec(), step.value.vec(), {}};
    for (int h = 0; h < numHeads; ++h) {
      ArrayRef<float> w = step.getWeights(h);
      copy.weights.insert(copy.weights.end(), w.begin(), w.end());
    }
    steps.push_back(std::move(copy));
  }
  int numHeads;
  std::vector<RecordedStep> steps;
};

TEST(ModelTest, ForwardMatchesIndependentAttention) {
  TempDir dir;
  LlamaConfig config = getTinyConfig();
  std::string path = dir.path("tiny.bin");
  writeFile(path, makeCheckpoint(config, 4));
  Expected<LlamaModel> model = LlamaModel::load(path);
  ASSERT_TRUE(bool(model));
  LlamaRunner runner(*model);
  Recorder recorder(config.numHeads);
  std::vector<int> tokens = {1, 7, 19, 3, 30, 12};
  for (size_t pos = 0; pos < tokens.size(); ++pos)
    (void)runner.forward(tokens[pos], pos, &recorder);
  ASSERT_EQ(recorder.steps.size(), tokens.size() * config.numLayers);

  const int hs = config.getHeadSize(), kvDim = config.getKVDim();
  // Layer 0 recomputed from the weights in double: RMSNorm, projections,
  // RoPE with theta 10000 on adjacent pairs.
  for (size_t pos = 0; pos < tokens.size(); ++pos) {
    const RecordedStep &step = recorder.steps[pos * config.numLayers];
    ASSERT_EQ(step.layer, 0);
    ASSERT_EQ(step.position, static_cast<int>(pos));
    ArrayRef<float> x =
        model->getEmbedding().slice(tokens[pos] * config.dim, config.dim);
    double ss = 0;
    for (float v : x)
      ss += double(v) * v;
    double scale = 1.0 / std::sqrt(ss / config.dim + 1e-5);
    std::vector<double> xn(config.dim);
    for (int j = 0; j < config.dim; ++j)
      xn[j] = model->getAttentionNorm(0)[j] * scale * x[j];
    auto project = [&](ArrayRef<float> w, int rows) {
      std::vector<double> out(rows, 0.0);
      for (int r = 0; r < rows; ++r)
        for (int c = 0; c < config.dim; ++c)
          out[r] += w[r * config.dim + c] * xn[c];
      for (int i = 0; i < rows; i += 2) {
        double freq = std::pow(10000.0, -double(i % hs) / hs);
        double c = std::cos(pos * freq), s = std::sin(pos * freq);
        double a = out[i], b = out[i + 1];
        out[i] = a * c - b * s;
        out[i + 1] = a * s + b * c;
      }
      return out;
    };
    std::vector<double> q = project(model->getWq(0), config.dim);
    std::vector<double> k = project(model->getWk(0), kvDim);
    for (int i = 0; i < config.dim; ++i)
      EXPECT_NEAR(step.queries[i], q[i], 1e-4) << "q " << i << " pos " << pos;
    for (int i = 0; i < kvDim; ++i)
      EXPECT_NEAR(step.key[i], k[i], 1e-4) << "k " << i << " pos " << pos;
  }

  // Every layer: weights are softmax(q_h . K_{h / G, t} / sqrt(hs)) over the
  // keys recorded at earlier positions, so GQA maps head h to KV head h / G.
  const int group = config.getQueryHeadsPerKVHead();
  for (const RecordedStep &step : recorder.steps) {
    int p = step.position;
    for (int h = 0; h < config.numHeads; ++h) {
      int kvHead = h / group;
      std::vector<double> scores(p + 1);
      double maxScore = -1e300;
      for (int t = 0; t <= p; ++t) {
        const RecordedStep &past =
            recorder.steps[t * config.numLayers + step.layer];
        double dot = 0;
        for (int i = 0; i < hs; ++i)
          dot += double(step.queries[h * hs + i]) * past.key[kvHead * hs + i];
        scores[t] = dot / std::sqrt(double(hs));
        maxScore = std::max(maxScore, scores[t]);
      }
      double sum = 0;
      for (double &s : scores)
        sum += (s = std::exp(s - maxScore));
      double total = 0;
      for (int t = 0; t <= p; ++t) {
        float w = step.weights[h * (p + 1) + t];
        EXPECT_NEAR(w, scores[t] / sum, 1e-5);
        total += w;
      }
      EXPECT_NEAR(total, 1.0, 1e-5);
    }
  }
}

TEST(ModelTest, GenerationStopsAtContextAndIsDeterministic) {
  TempDir dir;
  LlamaConfig config = getTinyConfig();
  std::string path = dir.path("tiny.bin");
  writeFile(path, makeCheckpoint(config, 5));
  Expected<LlamaModel> model = LlamaModel::load(path);
  ASSERT_TRUE(bool(model));
  LlamaRunner runner(*model);

  GenerationOptions options;
  options.steps = 1000;
  options.runLastToken = true;
  // Start from a token other than BOS so greedy argmax cannot stop early
  // unless it picks BOS.
  std::vector<int> prompt = {1, 5, 6};
  Sampler greedy(0.0f, 0);
  Expected<GenerationResult> first = generate(runner, prompt, greedy, options);
  ASSERT_TRUE(bool(first)) << errorMessage(first);
  EXPECT_EQ(first->numPromptTokens, 3u);
  EXPECT_LE(first->positionsRun, config.seqLen);
  EXPECT_LE(first->tokens.size(), size_t(config.seqLen) + 1);
  Expected<GenerationResult> second = generate(runner, prompt, greedy, options);
  ASSERT_TRUE(bool(second));
  EXPECT_EQ(first->tokens, second->tokens);

  Sampler sampledA(1.0f, 9), sampledB(1.0f, 9);
  options.steps = 20;
  Expected<GenerationResult> a = generate(runner, prompt, sampledA, options);
  Expected<GenerationResult> b = generate(runner, prompt, sampledB, options);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->tokens, b->tokens);

  std::vector<int> tooLong(config.seqLen + 1, 5);
  Expected<GenerationResult> rejected =
      generate(runner, tooLong, greedy, options);
  EXPECT_CONTAINS(errorMessage(rejected),
                  "prompt has 41 tokens, more than the model's seq_len 40");
  Expected<GenerationResult> badToken =
      generate(runner, {1, 99}, greedy, options);
  EXPECT_CONTAINS(errorMessage(badToken), "prompt token 99 is outside");
}

TEST(ModelTest, SamplerIsUniformAndGreedyAtZero) {
  Sampler sampler(1.0f, 123);
  double sum = 0;
  for (int i = 0; i < 10000; ++i) {
    float u = sampler.nextUniform();
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    sum += u;
  }
  EXPECT_NEAR(sum / 10000, 0.5, 0.02);
  Sampler greedy(0.0f, 1);
  std::vector<float> logits = {0.1f, 3.0f, 3.0f, -1.0f};
  EXPECT_EQ(greedy.sample(logits), 1);
  EXPECT_EQ(argmax(logits), 1);
  // A very peaked distribution is sampled at its peak.
  std::vector<float> peaked = {0.0f, 0.0f, 100.0f};
  EXPECT_EQ(sampler.sample(peaked), 2);
}

/// Reads whitespace-separated integers.
std::vector<int> parseIds(StringRef text) {
  SmallVector<StringRef> fields;
  SplitString(text, fields);
  std::vector<int> ids;
  for (StringRef field : fields) {
    int id;
    EXPECT_FALSE(field.getAsInteger(10, id)) << field.str();
    ids.push_back(id);
  }
  return ids;
}

TEST(ModelTest, Stories260KGreedyOracle) {
  std::optional<std::string> models = getStories260KDir();
  if (!models)
    GTEST_SKIP() << "KVPREC_MODELS_DIR/stories260K not available";
  Expected<LlamaModel> model = LlamaModel::load(*models + "/stories260K.bin");
  ASSERT_TRUE(bool(model)) << errorMessage(model);
  const LlamaConfig &config = model->getConfig();
  EXPECT_EQ(config.dim, 64);
  EXPECT_EQ(config.hiddenDim, 172);
  EXPECT_EQ(config.numLayers, 5);
  EXPECT_EQ(config.numHeads, 8);
  EXPECT_EQ(config.numKVHeads, 4);
  EXPECT_EQ(config.vocabSize, 512);
  EXPECT_EQ(config.seqLen, 512);
  EXPECT_TRUE(config.sharedClassifier);
  EXPECT_LT(model->getRopeTableDeviation(), 1e-4f);
  Expected<Tokenizer> tokenizer = Tokenizer::load(*models + "/tok512.bin", 512);
  ASSERT_TRUE(bool(tokenizer)) << errorMessage(tokenizer);

  LlamaRunner runner(*model);
  Sampler greedy(0.0f, 0);
  GenerationOptions options;
  options.steps = 256;
  Expected<GenerationResult> result =
      generate(runner, {Tokenizer::kBOSToken}, greedy, options);
  ASSERT_TRUE(bool(result)) << errorMessage(result);
  std::vector<int> expected =
      parseIds(readFile(*models + "/greedy_ref_ids.txt"));
  ASSERT_EQ(expected.size(), 257u);
  EXPECT_EQ(result->tokens, expected);
  EXPECT_EQ(tokenizer->decode(result->tokens) + "\n",
            readFile(*models + "/greedy_ref_text.txt"));
}

} // namespace
