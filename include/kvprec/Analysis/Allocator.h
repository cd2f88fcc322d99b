//===- Allocator.h - Multiple-choice knapsack precision allocation -*- C++ -*-//
//
// error-bounds.md §4: every block of the cache (one item per block per K or
// V) picks one storage option with a cost (bytes) and an error contribution.
// Minimising total cost subject to total error <= eps' (or total error subject
// to a byte budget) is a separable multiple-choice knapsack. The solver
//  1. reduces every item to the lower convex hull of its (cost, error) points
//     (dominated and non-convex options dropped, so fp8 and int options that
//     are not nested are handled uniformly; collinear points are kept because
//     they give the greedy finer steps);
//  2. starts every item at its cheapest hull vertex;
//  3. upgrades along hull segments in order of decreasing gain
//     -Delta err / Delta cost with a max-heap until the tolerance is met (or
//     the next upgrade would break the budget).
// The result is LP-optimal up to the last upgrade, so cost <= OPT + max Delta
// cost; the LP lower bound and the gap are reported. For small problems an
// exact dynamic program over Pareto frontiers closes that last-step gap.
//
// Storage is compact (flat arrays indexed by item, no per-item allocations):
// about 16 bytes per option for the problem and 2 per option for the hulls.
// Limits: at most 65535 options per item and 2^32 - 1 options in all.
//
//===----------------------------------------------------------------------===//

#ifndef KVPREC_ANALYSIS_ALLOCATOR_H
#define KVPREC_ANALYSIS_ALLOCATOR_H

#include "kvprec/Format/Status.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace kvprec {
namespace analysis {

class AllocationProblem {
public:
  AllocationProblem() : optionBegin(1, 0) {}

  void reserve(size_t numItems, size_t numOptions);
  /// Appends an item with `numOptions` (cost, error) options, all finite and
  /// non-negative.
  Status addItem(const double *costs, const double *errors, size_t numOptions);
  Status addItem(const std::vector<double> &costs,
                 const std::vector<double> &errors);

  size_t getNumItems() const { return optionBegin.size() - 1; }
  size_t getNumOptions(size_t item) const {
    return optionBegin[item + 1] - optionBegin[item];
  }
  double getCost(size_t item, size_t option) const {
    return costs[optionBegin[item] + option];
  }
  double getError(size_t item, size_t option) const {
    return errors[optionBegin[item] + option];
  }

private:
  std::vector<uint32_t> optionBegin;
  std::vector<double> costs;
  std::vector<double> errors;
};

enum class AllocationStatus {
  Feasible,
  /// The tolerance is below the total error of the most precise options.
  InfeasibleTolerance,
  /// The budget is below the total cost of the cheapest options.
  InfeasibleBudget,
  InvalidInput,
};

struct AllocationResult {
  AllocationStatus status = AllocationStatus::InvalidInput;
  /// Why the result is infeasible or invalid; empty when feasible.
  std::string message;
  /// Per item, the chosen option (index into the item's options). When the
  /// tolerance is infeasible this is the most precise plan; when the budget
  /// is infeasible, the cheapest plan.
  std::vector<uint16_t> choice;
  double totalCost = 0.0;
  double totalError = 0.0;
  /// Lower bound on the optimal objective (cost for a tolerance, error for a
  /// budget) from the LP relaxation; the exact solver reports its optimum.
  double lowerBound = 0.0;
  /// Objective minus lowerBound.
  double gap = 0.0;
  /// Largest cost step of any hull segment: the greedy's cost is within this
  /// of the optimum.
  double maxUpgradeCost = 0.0;
  size_t numUpgrades = 0;

  bool ok() const { return status == AllocationStatus::Feasible; }
};

/// Tolerance -> minimum bytes: min sum cost s.t. sum error <= errorTolerance
/// (pass eps' = eps e^{-E_cap} of §4).
AllocationResult minimizeCostForError(const AllocationProblem &problem,
                                      double errorTolerance);
/// The exact optimum of minimizeCostForError by dynamic programming over the
/// Pareto frontier of (cost, error) partial sums, item by item (partial sums
/// above the tolerance are dropped, since errors only add). For the small
/// problems of one (layer, head) this closes the greedy's last-step gap.
/// Fails with InvalidInput when a frontier would hold more than
/// `maxFrontier` points (use the greedy then).
AllocationResult minimizeCostForErrorExact(const AllocationProblem &problem,
                                           double errorTolerance,
                                           size_t maxFrontier = 1 << 16);
/// Byte budget -> minimum error: min sum error s.t. sum cost <= costBudget,
/// stopping when the next upgrade in gain order would exceed the budget.
AllocationResult minimizeErrorForCost(const AllocationProblem &problem,
                                      double costBudget);

} // namespace analysis
} // namespace kvprec

#endif // KVPREC_ANALYSIS_ALLOCATOR_H
