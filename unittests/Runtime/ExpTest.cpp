//===- ExpTest.cpp - the error of the generated exp
//------------------------===//
//
// Decode attention computes its softmax weights with emitExp (no library
// call, vectorised). The certificate's arithmetic contract (`exp_ulps` of
// #kvprec.certificate, the kernel model's theta) allows exp a relative
// error of 4u = 2^-22 (about 2 ulps); this test measures the
// generated code against double-precision exp on every 61st f32 in
// [-104, 88.8] (about 35 million values, all exponents), plus the edges,
// compiled for this CPU.
//
//===----------------------------------------------------------------------===//

#include "FormatCodegen.h"

#include "kvprec/Conversion/Passes.h"
#include "kvprec/InitKVPrec.h"

#include "mlir/ExecutionEngine/CRunnerUtils.h"
#include "mlir/ExecutionEngine/ExecutionEngine.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Pass/PassManager.h"

#include "llvm/Support/TargetSelect.h"

#include "gtest/gtest.h"

#include <cmath>
#include <cstring>
#include <vector>

using namespace mlir;

namespace {
/// ulps of `got` from the exact value, in units of the f32 spacing at the
/// exact value (subnormal spacing below the normal range).
double ulpError(float got, double exact) {
  if (exact == 0)
    return got == 0 ? 0 : INFINITY;
  int exponent;
  std::frexp(exact, &exponent);
  double ulp = std::ldexp(1.0, std::max(exponent - 24, -149));
  return std::fabs(double(got) - exact) / ulp;
}
} // namespace

TEST(GeneratedExp, WithinTheKernelModel) {
  llvm::InitializeNativeTarget();
  llvm::InitializeNativeTargetAsmPrinter();
  DialectRegistry registry;
  ::kvprec::registerKVPrecToolDialects(registry);
  MLIRContext context(registry);
  context.loadAllAvailableDialects();

  // func @exp(%in, %out: memref<?xf32>, %n: index): 16 lanes at a time.
  OpBuilder builder(&context);
  Location loc = builder.getUnknownLoc();
  OwningOpRef<ModuleOp> module = ModuleOp::create(loc);
  builder.setInsertionPointToEnd(module->getBody());
  auto memref = MemRefType::get({ShapedType::kDynamic}, builder.getF32Type());
  auto fn = func::FuncOp::create(
      builder, loc, "exp",
      builder.getFunctionType({memref, memref, builder.getIndexType()}, {}));
  fn->setAttr("llvm.emit_c_interface", builder.getUnitAttr());
  Block *entry = fn.addEntryBlock();
  ImplicitLocOpBuilder b(loc, OpBuilder::atBlockEnd(entry));
  VectorType lanes = VectorType::get({16}, b.getF32Type());
  scf::ForOp::create(
      b, arith::ConstantIndexOp::create(b, 0), entry->getArgument(2),
      arith::ConstantIndexOp::create(b, 16), ValueRange{},
      [&](OpBuilder &nested, Location l, Value i, ValueRange) {
        ImplicitLocOpBuilder lb(l, nested);
        Value x = vector::LoadOp::create(lb, lanes, entry->getArgument(0),
                                         ValueRange{i});
        vector::StoreOp::create(lb, mlir::kvprec::emitExp(lb, x),
                                entry->getArgument(1), ValueRange{i});
        scf::YieldOp::create(lb);
      });
  func::ReturnOp::create(b);

  PassManager pm(&context);
  mlir::kvprec::buildKVPrecToLLVMPipeline(pm);
  ASSERT_TRUE(succeeded(pm.run(*module)));
  ExecutionEngineOptions options;
  auto transformer = makeOptimizingTransformer(3, 0, nullptr);
  options.transformer = transformer;
  auto engine = ExecutionEngine::create(*module, options);
  ASSERT_TRUE(bool(engine)) << llvm::toString(engine.takeError());
  auto symbol = (*engine)->lookup("_mlir_ciface_exp");
  ASSERT_TRUE(bool(symbol));
  using Fn = void (*)(StridedMemRefType<float, 1> *,
                      StridedMemRefType<float, 1> *, int64_t);
  auto run = reinterpret_cast<Fn>(*symbol);

  std::vector<float> inputs;
  uint32_t lowBits, highBits;
  float low = -104.0f, high = 88.8f;
  std::memcpy(&lowBits, &low, 4);
  std::memcpy(&highBits, &high, 4);
  // Negative values: bits from 0x80000000 (-0) up to -104; positive from 0.
  for (uint32_t bits = 0x80000000u; bits <= lowBits; bits += 61) {
    float x;
    std::memcpy(&x, &bits, 4);
    inputs.push_back(x);
  }
  for (uint32_t bits = 0; bits <= highBits; bits += 61) {
    float x;
    std::memcpy(&x, &bits, 4);
    inputs.push_back(x);
  }
  for (float edge : {-104.0f, -103.97f, -87.3f, -87.34f, -0.5f * float(M_LN2),
                     0.5f * float(M_LN2), 88.7f, 88.72f, 0.0f, -0.0f})
    inputs.push_back(edge);
  while (inputs.size() % 16)
    inputs.push_back(0.0f);
  std::vector<float> outputs(inputs.size());
  auto describe = [](std::vector<float> &v) {
    StridedMemRefType<float, 1> m;
    m.basePtr = m.data = v.data();
    m.offset = 0;
    m.sizes[0] = int64_t(v.size());
    m.strides[0] = 1;
    return m;
  };
  auto in = describe(inputs), out = describe(outputs);
  run(&in, &out, int64_t(inputs.size()));

  double worst = 0, worstRelative = 0;
  float worstAt = 0, worstRelativeAt = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    double exact = std::exp(double(inputs[i]));
    if (exact > 3.4028234663852886e38)
      continue; // Overflows f32: inf is the right answer.
    double error = ulpError(outputs[i], exact);
    if (error > worst) {
      worst = error;
      worstAt = inputs[i];
    }
    // The kernel model (Bound.h KernelRoundingModel) takes exp's error as
    // relative, theta = 4u = 2^-22, where the result is normal.
    if (exact >= 1.1754943508222875e-38) {
      double relative = std::fabs(double(outputs[i]) - exact) / exact;
      if (relative > worstRelative) {
        worstRelative = relative;
        worstRelativeAt = inputs[i];
      }
    }
  }
  std::printf("generated exp: %zu inputs, max error %.3f ulp at x = %.9g, "
              "max relative error %.3f u at x = %.9g\n",
              inputs.size(), worst, double(worstAt), worstRelative / 0x1p-24,
              double(worstRelativeAt));
  EXPECT_LE(worst, 4.0) << "at x = " << worstAt;
  EXPECT_LE(worstRelative, 4 * 0x1p-24) << "at x = " << worstRelativeAt;
}
