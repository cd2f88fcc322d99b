//===- Status.h - Success or failure with a message -------------*- C++ -*-===//
//
// The analysis library is built with -fno-exceptions and without an MLIR or
// LLVM dependency, so failures travel as values: a Status is either success or
// carries a human-readable message that callers (the MLIR passes) turn into
// diagnostics.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_FORMAT_STATUS_H
#define KVPREC_FORMAT_STATUS_H

#include <string>
#include <utility>

namespace kvprec {
namespace analysis {

class [[nodiscard]] Status {
public:
  static Status success() { return Status(); }
  static Status failure(std::string message) {
    Status status;
    status.message = message.empty() ? std::string("unspecified failure")
                                     : std::move(message);
    return status;
  }

  bool ok() const { return message.empty(); }
  bool failed() const { return !ok(); }
  const std::string &getMessage() const { return message; }

private:
  Status() = default;
  std::string message;
};

} // namespace analysis
} // namespace kvprec

#endif // KVPREC_FORMAT_STATUS_H
