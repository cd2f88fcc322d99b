//===- PassRegistration.cpp - anchor for the kvprec pass library ----------===//
//
// Passes.h defines registerKVPrecPasses() inline from Passes.td; this file
// makes sure the library has an object that includes it.
//
//===----------------------------------------------------------------------===//

#include "kvprec/Dialect/KVPrec/Transforms/Passes.h"
