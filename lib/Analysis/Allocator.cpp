//===- Allocator.cpp - Multiple-choice knapsack precision allocation ------===//

#include "kvprec/Analysis/Allocator.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <queue>

using namespace kvprec::analysis;

void AllocationProblem::reserve(size_t numItems, size_t numOptions) {
  optionBegin.reserve(numItems + 1);
  costs.reserve(numOptions);
  errors.reserve(numOptions);
}

Status AllocationProblem::addItem(const double *itemCosts,
                                  const double *itemErrors, size_t numOptions) {
  std::string where = "allocation item " + std::to_string(getNumItems());
  if (numOptions == 0)
    return Status::failure(where + " has no options");
  if (numOptions > std::numeric_limits<uint16_t>::max())
    return Status::failure(where + " has more than 65535 options");
  if (costs.size() + numOptions > std::numeric_limits<uint32_t>::max())
    return Status::failure("allocation problem exceeds 2^32-1 options");
  for (size_t i = 0; i < numOptions; ++i)
    if (!(itemCosts[i] >= 0.0) || !std::isfinite(itemCosts[i]) ||
        !(itemErrors[i] >= 0.0) || !std::isfinite(itemErrors[i]))
      return Status::failure(where + ": option " + std::to_string(i) +
                             " needs a finite, non-negative cost and error");
  costs.insert(costs.end(), itemCosts, itemCosts + numOptions);
  errors.insert(errors.end(), itemErrors, itemErrors + numOptions);
  optionBegin.push_back(static_cast<uint32_t>(costs.size()));
  return Status::success();
}

Status AllocationProblem::addItem(const std::vector<double> &itemCosts,
                                  const std::vector<double> &itemErrors) {
  if (itemCosts.size() != itemErrors.size())
    return Status::failure("allocation item " + std::to_string(getNumItems()) +
                           ": costs and errors differ in length");
  return addItem(itemCosts.data(), itemErrors.data(), itemCosts.size());
}

namespace {
/// Neumaier-compensated running sum: millions of upgrades must not let the
/// total error drift across the tolerance.
class CompensatedSum {
public:
  void add(double x) {
    double t = sum + x;
    if (std::fabs(sum) >= std::fabs(x))
      compensation += (sum - t) + x;
    else
      compensation += (x - t) + sum;
    sum = t;
  }
  double value() const { return sum + compensation; }

private:
  double sum = 0.0;
  double compensation = 0.0;
};

/// Lower convex hulls of all items, as option indices in increasing cost
/// (and strictly decreasing error), stored flat.
class Hulls {
public:
  explicit Hulls(const AllocationProblem &problem) : problem(problem) {
    const size_t numItems = problem.getNumItems();
    begin.resize(numItems + 1);
    begin[0] = 0;
    std::vector<uint16_t> order;
    for (size_t item = 0; item < numItems; ++item) {
      const size_t numOptions = problem.getNumOptions(item);
      order.resize(numOptions);
      for (size_t i = 0; i < numOptions; ++i)
        order[i] = static_cast<uint16_t>(i);
      std::sort(order.begin(), order.end(), [&](uint16_t x, uint16_t y) {
        double cx = problem.getCost(item, x), cy = problem.getCost(item, y);
        if (cx != cy)
          return cx < cy;
        double ex = problem.getError(item, x), ey = problem.getError(item, y);
        if (ex != ey)
          return ex < ey;
        return x < y;
      });
      const size_t first = vertex.size();
      for (uint16_t option : order) {
        double c = problem.getCost(item, option);
        double e = problem.getError(item, option);
        // Dominated: no cheaper than the last kept point and no more precise.
        if (vertex.size() > first && e >= errorOf(item, vertex.back()))
          continue;
        // Drop the last point while it lies strictly above the chord.
        while (vertex.size() >= first + 2) {
          uint16_t a = vertex[vertex.size() - 2], b = vertex.back();
          double gainAB = (errorOf(item, a) - errorOf(item, b)) /
                          (costOf(item, b) - costOf(item, a));
          double gainBC = (errorOf(item, b) - e) / (c - costOf(item, b));
          if (gainAB >= gainBC)
            break;
          vertex.pop_back();
        }
        vertex.push_back(option);
      }
      begin[item + 1] = static_cast<uint32_t>(vertex.size());
      for (size_t k = first + 1; k < vertex.size(); ++k)
        maxStep = std::max(maxStep, costOf(item, vertex[k]) -
                                        costOf(item, vertex[k - 1]));
    }
  }

  size_t size(size_t item) const { return begin[item + 1] - begin[item]; }
  uint16_t option(size_t item, size_t k) const {
    return vertex[begin[item] + k];
  }
  double cost(size_t item, size_t k) const {
    return costOf(item, option(item, k));
  }
  double error(size_t item, size_t k) const {
    return errorOf(item, option(item, k));
  }
  /// Gain of the segment from vertex k to k + 1.
  double gain(size_t item, size_t k) const {
    return (error(item, k) - error(item, k + 1)) /
           (cost(item, k + 1) - cost(item, k));
  }
  double getMaxStep() const { return maxStep; }

private:
  double costOf(size_t item, uint16_t option) const {
    return problem.getCost(item, option);
  }
  double errorOf(size_t item, uint16_t option) const {
    return problem.getError(item, option);
  }

  const AllocationProblem &problem;
  std::vector<uint32_t> begin;
  std::vector<uint16_t> vertex;
  double maxStep = 0.0;
};

struct HeapEntry {
  double gain;
  uint32_t item;
};
/// Max-heap on gain; equal gains upgrade the lower item index first so
/// results are deterministic.
struct HeapLess {
  bool operator()(const HeapEntry &x, const HeapEntry &y) const {
    if (x.gain != y.gain)
      return x.gain < y.gain;
    return x.item > y.item;
  }
};
using UpgradeHeap =
    std::priority_queue<HeapEntry, std::vector<HeapEntry>, HeapLess>;

/// Per-item hull positions, with totals.
struct Plan {
  std::vector<uint16_t> position;
  double totalCost = 0.0;
  double totalError = 0.0;
};

Plan makePlanAt(const Hulls &hulls, size_t numItems, bool mostPrecise) {
  Plan plan;
  plan.position.resize(numItems);
  CompensatedSum cost, error;
  for (size_t item = 0; item < numItems; ++item) {
    size_t k = mostPrecise ? hulls.size(item) - 1 : 0;
    plan.position[item] = static_cast<uint16_t>(k);
    cost.add(hulls.cost(item, k));
    error.add(hulls.error(item, k));
  }
  plan.totalCost = cost.value();
  plan.totalError = error.value();
  return plan;
}

void recomputeTotals(const Hulls &hulls, Plan &plan) {
  CompensatedSum cost, error;
  for (size_t item = 0; item < plan.position.size(); ++item) {
    cost.add(hulls.cost(item, plan.position[item]));
    error.add(hulls.error(item, plan.position[item]));
  }
  plan.totalCost = cost.value();
  plan.totalError = error.value();
}

void fillResult(const Hulls &hulls, const Plan &plan, AllocationStatus status,
                std::string message, AllocationResult &result) {
  result.status = status;
  result.message = std::move(message);
  result.choice.resize(plan.position.size());
  for (size_t item = 0; item < plan.position.size(); ++item)
    result.choice[item] = hulls.option(item, plan.position[item]);
  result.totalCost = plan.totalCost;
  result.totalError = plan.totalError;
  result.maxUpgradeCost = hulls.getMaxStep();
}

UpgradeHeap makeInitialHeap(const Hulls &hulls, size_t numItems) {
  std::vector<HeapEntry> entries;
  entries.reserve(numItems);
  for (size_t item = 0; item < numItems; ++item)
    if (hulls.size(item) > 1)
      entries.push_back({hulls.gain(item, 0), static_cast<uint32_t>(item)});
  return UpgradeHeap(HeapLess(), std::move(entries));
}

/// Moves `item` one hull vertex up and returns (Delta cost, Delta error).
std::pair<double, double> upgrade(const Hulls &hulls, Plan &plan,
                                  UpgradeHeap &heap, uint32_t item) {
  size_t k = plan.position[item];
  double deltaCost = hulls.cost(item, k + 1) - hulls.cost(item, k);
  double deltaError = hulls.error(item, k) - hulls.error(item, k + 1);
  plan.position[item] = static_cast<uint16_t>(k + 1);
  if (k + 2 < hulls.size(item))
    heap.push({hulls.gain(item, k + 1), item});
  return {deltaCost, deltaError};
}
} // namespace

AllocationResult
kvprec::analysis::minimizeCostForError(const AllocationProblem &problem,
                                       double errorTolerance) {
  AllocationResult result;
  if (!(errorTolerance >= 0.0)) {
    result.message = "error tolerance must be non-negative";
    return result;
  }
  const size_t numItems = problem.getNumItems();
  Hulls hulls(problem);
  Plan best = makePlanAt(hulls, numItems, /*mostPrecise=*/true);
  if (best.totalError > errorTolerance) {
    fillResult(hulls, best, AllocationStatus::InfeasibleTolerance,
               "tolerance " + std::to_string(errorTolerance) +
                   " is not reachable: the most precise options still give "
                   "total error " +
                   std::to_string(best.totalError),
               result);
    result.lowerBound = best.totalCost;
    return result;
  }

  Plan plan = makePlanAt(hulls, numItems, /*mostPrecise=*/false);
  UpgradeHeap heap = makeInitialHeap(hulls, numItems);
  CompensatedSum cost, error;
  cost.add(plan.totalCost);
  error.add(plan.totalError);
  double costBeforeLast = plan.totalCost, errorBeforeLast = plan.totalError;
  double lastGain = 0.0;
  size_t numUpgrades = 0;
  // Upgrade in decreasing gain order; re-check with exact totals at the end
  // so accumulated rounding cannot certify a plan above the tolerance.
  while (true) {
    while (error.value() > errorTolerance && !heap.empty()) {
      HeapEntry top = heap.top();
      heap.pop();
      costBeforeLast = cost.value();
      errorBeforeLast = error.value();
      lastGain = top.gain;
      auto [deltaCost, deltaError] = upgrade(hulls, plan, heap, top.item);
      cost.add(deltaCost);
      error.add(-deltaError);
      ++numUpgrades;
    }
    recomputeTotals(hulls, plan);
    if (plan.totalError <= errorTolerance || heap.empty())
      break;
    error = CompensatedSum();
    error.add(plan.totalError);
  }
  fillResult(hulls, plan, AllocationStatus::Feasible, "", result);
  result.numUpgrades = numUpgrades;
  // LP relaxation: the last segment taken fractionally, just enough to meet
  // the tolerance.
  result.lowerBound =
      numUpgrades == 0
          ? plan.totalCost
          : costBeforeLast + (errorBeforeLast - errorTolerance) / lastGain;
  result.lowerBound = std::min(result.lowerBound, plan.totalCost);
  result.gap = plan.totalCost - result.lowerBound;
  return result;
}

AllocationResult
kvprec::analysis::minimizeCostForErrorExact(const AllocationProblem &problem,
                                            double errorTolerance,
                                            size_t maxFrontier) {
  AllocationResult result;
  if (!(errorTolerance >= 0.0)) {
    result.message = "error tolerance must be non-negative";
    return result;
  }
  const size_t numItems = problem.getNumItems();
  // One point of a frontier: its partial sums and how it was reached.
  struct Point {
    double cost, error;
    uint32_t parent;
    uint16_t option;
  };
  std::vector<std::vector<Point>> layers(numItems + 1);
  layers[0] = {{0.0, 0.0, 0, 0}};
  std::vector<Point> candidates;
  for (size_t item = 0; item < numItems; ++item) {
    candidates.clear();
    const std::vector<Point> &previous = layers[item];
    for (uint32_t p = 0; p < previous.size(); ++p)
      for (size_t o = 0; o < problem.getNumOptions(item); ++o) {
        double error = previous[p].error + problem.getError(item, o);
        if (error <= errorTolerance)
          candidates.push_back({previous[p].cost + problem.getCost(item, o),
                                error, p, static_cast<uint16_t>(o)});
      }
    // Keep the points no other point beats in both cost and error.
    std::sort(candidates.begin(), candidates.end(),
              [](const Point &a, const Point &b) {
                return a.cost < b.cost ||
                       (a.cost == b.cost && a.error < b.error);
              });
    std::vector<Point> &frontier = layers[item + 1];
    for (const Point &point : candidates)
      if (frontier.empty() || point.error < frontier.back().error)
        frontier.push_back(point);
    if (frontier.empty()) {
      result.status = AllocationStatus::InfeasibleTolerance;
      result.message = "tolerance " + std::to_string(errorTolerance) +
                       " is not reachable: the most precise options of the "
                       "first " +
                       std::to_string(item + 1) + " items already exceed it";
      return result;
    }
    if (frontier.size() > maxFrontier) {
      result.message = "the Pareto frontier after item " +
                       std::to_string(item) + " has " +
                       std::to_string(frontier.size()) + " points, above " +
                       std::to_string(maxFrontier);
      return result;
    }
  }
  // The cheapest point of the last frontier is the optimum.
  result.choice.assign(numItems, 0);
  uint32_t index = 0;
  for (size_t item = numItems; item > 0; --item) {
    const Point &point = layers[item][index];
    result.choice[item - 1] = point.option;
    index = point.parent;
  }
  for (size_t item = 0; item < numItems; ++item) {
    result.totalCost += problem.getCost(item, result.choice[item]);
    result.totalError += problem.getError(item, result.choice[item]);
  }
  result.status = AllocationStatus::Feasible;
  result.lowerBound = result.totalCost;
  return result;
}

AllocationResult
kvprec::analysis::minimizeErrorForCost(const AllocationProblem &problem,
                                       double costBudget) {
  AllocationResult result;
  if (!(costBudget >= 0.0)) {
    result.message = "cost budget must be non-negative";
    return result;
  }
  const size_t numItems = problem.getNumItems();
  Hulls hulls(problem);
  Plan plan = makePlanAt(hulls, numItems, /*mostPrecise=*/false);
  if (plan.totalCost > costBudget) {
    fillResult(hulls, plan, AllocationStatus::InfeasibleBudget,
               "budget " + std::to_string(costBudget) +
                   " is below the cheapest plan's cost " +
                   std::to_string(plan.totalCost),
               result);
    result.lowerBound = plan.totalError;
    return result;
  }
  UpgradeHeap heap = makeInitialHeap(hulls, numItems);
  CompensatedSum cost, error;
  cost.add(plan.totalCost);
  error.add(plan.totalError);
  size_t numUpgrades = 0;
  double nextGain = 0.0;
  while (!heap.empty()) {
    HeapEntry top = heap.top();
    size_t k = plan.position[top.item];
    double deltaCost = hulls.cost(top.item, k + 1) - hulls.cost(top.item, k);
    if (cost.value() + deltaCost > costBudget) {
      nextGain = top.gain;
      break;
    }
    heap.pop();
    auto [stepCost, stepError] = upgrade(hulls, plan, heap, top.item);
    cost.add(stepCost);
    error.add(-stepError);
    ++numUpgrades;
  }
  recomputeTotals(hulls, plan);
  fillResult(hulls, plan, AllocationStatus::Feasible, "", result);
  result.numUpgrades = numUpgrades;
  // LP relaxation: the rejected segment taken fractionally with the leftover
  // budget.
  result.lowerBound =
      std::max(0.0, plan.totalError - (costBudget - plan.totalCost) * nextGain);
  result.lowerBound = std::min(result.lowerBound, plan.totalError);
  result.gap = plan.totalError - result.lowerBound;
  return result;
}
