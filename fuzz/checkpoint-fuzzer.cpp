//===- checkpoint-fuzzer.cpp - the llama2.c checkpoint loader -------------===//
//
// Feeds arbitrary bytes to the checkpoint loader. A checkpoint it accepts
// is run for a few positions: every size the forward pass uses must then
// be backed by the weights the loader checked.
//
//===----------------------------------------------------------------------===//

#include "kvprec/Calibration/Model.h"

#include "llvm/Support/Error.h"

#include <algorithm>
#include <cstdint>

using namespace kvprec::calib;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  llvm::Expected<LlamaModel> model = LlamaModel::fromBytes(
      llvm::StringRef(reinterpret_cast<const char *>(data), size),
      "<fuzz input>");
  if (!model) {
    llvm::consumeError(model.takeError());
    return 0;
  }
  const LlamaConfig &config = model->getConfig();
  LlamaRunner runner(*model);
  int positions = std::min(config.seqLen, 3);
  for (int position = 0; position < positions; ++position)
    (void)runner.forward((position * 7 + 1) % config.vocabSize, position);
  return 0;
}
