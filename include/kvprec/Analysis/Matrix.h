//===- Matrix.h - Dense row-major matrix of doubles -------------*- C++ -*-===//
//
// The attention analysis works on small dense matrices (positions x channels).
// Rows are positions (tokens), columns are channels (head_dim), matching the
// cache layout; values are doubles so that reference computations carry far
// more precision than the formats they analyse.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_ANALYSIS_MATRIX_H
#define KVPREC_ANALYSIS_MATRIX_H

#include <cassert>
#include <cstddef>
#include <vector>

namespace kvprec {
namespace analysis {

struct Matrix {
  size_t rows = 0;
  size_t cols = 0;
  std::vector<double> values;

  Matrix() = default;
  Matrix(size_t rows, size_t cols, double init = 0.0)
      : rows(rows), cols(cols), values(rows * cols, init) {}

  double &operator()(size_t r, size_t c) {
    assert(r < rows && c < cols && "matrix index out of range");
    return values[r * cols + c];
  }
  double operator()(size_t r, size_t c) const {
    assert(r < rows && c < cols && "matrix index out of range");
    return values[r * cols + c];
  }
  double *row(size_t r) { return values.data() + r * cols; }
  const double *row(size_t r) const { return values.data() + r * cols; }
  bool sameShape(const Matrix &other) const {
    return rows == other.rows && cols == other.cols;
  }
};

} // namespace analysis
} // namespace kvprec

#endif // KVPREC_ANALYSIS_MATRIX_H
