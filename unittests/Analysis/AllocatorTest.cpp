//===- AllocatorTest.cpp - Multiple-choice knapsack allocation ------------===//

#include "kvprec/Analysis/Allocator.h"
#include "kvprec/Format/StorageFormat.h"

#include "TestUtil.h"

#include "gtest/gtest.h"

#include <chrono>
#include <cmath>
#include <limits>

using namespace kvprec::analysis;
using namespace kvprec::analysis::test;

namespace {

struct SmallInstance {
  std::vector<std::vector<double>> costs, errors;
};

SmallInstance randomSmallInstance(Rng &rng, bool integerErrors) {
  SmallInstance instance;
  size_t numItems = uniformIndex(rng, 1, 6);
  for (size_t i = 0; i < numItems; ++i) {
    size_t numOptions = uniformIndex(rng, 1, 5);
    std::vector<double> costs(numOptions), errors(numOptions);
    for (size_t k = 0; k < numOptions; ++k) {
      costs[k] = double(uniformIndex(rng, 1, 40));
      errors[k] = integerErrors ? double(uniformIndex(rng, 0, 100))
                                : std::pow(10.0, uniform(rng, -3, 1));
    }
    instance.costs.push_back(costs);
    instance.errors.push_back(errors);
  }
  return instance;
}

AllocationProblem toProblem(const SmallInstance &instance) {
  AllocationProblem problem;
  for (size_t i = 0; i < instance.costs.size(); ++i)
    EXPECT_TRUE(problem.addItem(instance.costs[i], instance.errors[i]).ok());
  return problem;
}

/// Enumerates every plan; calls visit(cost, error).
template <typename F>
void enumeratePlans(const SmallInstance &instance, F visit) {
  std::vector<size_t> choice(instance.costs.size(), 0);
  while (true) {
    double cost = 0.0, error = 0.0;
    for (size_t i = 0; i < choice.size(); ++i) {
      cost += instance.costs[i][choice[i]];
      error += instance.errors[i][choice[i]];
    }
    visit(cost, error);
    size_t i = 0;
    while (i < choice.size() && ++choice[i] == instance.costs[i].size())
      choice[i++] = 0;
    if (i == choice.size())
      return;
  }
}

double bruteForceMinCost(const SmallInstance &instance, double tolerance) {
  double best = std::numeric_limits<double>::infinity();
  enumeratePlans(instance, [&](double cost, double error) {
    if (error <= tolerance)
      best = std::min(best, cost);
  });
  return best;
}

double bruteForceMinError(const SmallInstance &instance, double budget) {
  double best = std::numeric_limits<double>::infinity();
  enumeratePlans(instance, [&](double cost, double error) {
    if (cost <= budget)
      best = std::min(best, error);
  });
  return best;
}

/// The optimum of the LP relaxation, by its dual: the largest over lambda >= 0
/// of sum_i min_k (cost_ik + lambda error_ik) - lambda tolerance. That is a
/// concave piecewise-linear function of lambda, so its maximum sits at
/// lambda = 0 or where two options of one item tie.
double bruteForceLpBound(const SmallInstance &instance, double tolerance) {
  std::vector<double> lambdas = {0.0};
  for (size_t i = 0; i < instance.costs.size(); ++i)
    for (size_t a = 0; a < instance.costs[i].size(); ++a)
      for (size_t b = 0; b < instance.costs[i].size(); ++b) {
        double dCost = instance.costs[i][b] - instance.costs[i][a];
        double dError = instance.errors[i][a] - instance.errors[i][b];
        if (dCost > 0 && dError > 0)
          lambdas.push_back(dCost / dError);
      }
  double best = -std::numeric_limits<double>::infinity();
  for (double lambda : lambdas) {
    double dual = -lambda * tolerance;
    for (size_t i = 0; i < instance.costs.size(); ++i) {
      double itemMin = std::numeric_limits<double>::infinity();
      for (size_t k = 0; k < instance.costs[i].size(); ++k)
        itemMin = std::min(itemMin, instance.costs[i][k] +
                                        lambda * instance.errors[i][k]);
      dual += itemMin;
    }
    best = std::max(best, dual);
  }
  return best;
}

double minTotal(const std::vector<std::vector<double>> &values) {
  double total = 0.0;
  for (const std::vector<double> &v : values)
    total += *std::min_element(v.begin(), v.end());
  return total;
}

/// A tolerance between the most precise plan's error and the least precise
/// plan's.
double randomReachableTolerance(Rng &rng, const SmallInstance &instance) {
  double minError = minTotal(instance.errors), maxError = 0.0;
  for (const std::vector<double> &errors : instance.errors)
    maxError += *std::max_element(errors.begin(), errors.end());
  return minError + uniform(rng, 0.0, 1.0) * (maxError - minError);
}

/// The result's totals are those of its choices.
void checkConsistent(const SmallInstance &instance,
                     const AllocationResult &result) {
  ASSERT_EQ(result.choice.size(), instance.costs.size());
  double cost = 0.0, error = 0.0;
  for (size_t i = 0; i < result.choice.size(); ++i) {
    ASSERT_LT(result.choice[i], instance.costs[i].size());
    cost += instance.costs[i][result.choice[i]];
    error += instance.errors[i][result.choice[i]];
  }
  EXPECT_NEAR(result.totalCost, cost, 1e-9);
  EXPECT_NEAR(result.totalError, error, 1e-9 * (1 + error));
}

TEST(AllocatorTest, ToleranceModeAgainstBruteForce) {
  Rng rng(1);
  size_t exact = 0, total = 0;
  for (int c = 0; c < 400; ++c) {
    SmallInstance instance = randomSmallInstance(rng, c % 2);
    AllocationProblem problem = toProblem(instance);
    double tolerance = randomReachableTolerance(rng, instance);
    double opt = bruteForceMinCost(instance, tolerance);
    ASSERT_TRUE(std::isfinite(opt));

    AllocationResult greedy = minimizeCostForError(problem, tolerance);
    ASSERT_TRUE(greedy.ok()) << greedy.message;
    checkConsistent(instance, greedy);
    EXPECT_LE(greedy.totalError, tolerance);
    EXPECT_GE(greedy.totalCost, opt);
    EXPECT_LE(greedy.totalCost, opt + greedy.maxUpgradeCost);
    EXPECT_LE(greedy.lowerBound, opt + 1e-9);
    EXPECT_NEAR(greedy.gap, greedy.totalCost - greedy.lowerBound, 1e-9);
    ++total;
    exact += greedy.totalCost == opt;

    // The greedy's lower bound is the LP optimum, found here by its dual.
    double lpOptimum = bruteForceLpBound(instance, tolerance);
    EXPECT_NEAR(greedy.lowerBound, lpOptimum, 1e-6 * (1 + lpOptimum));
  }
  std::printf("[allocator] greedy equals the brute-force optimum on %zu of "
              "%zu small instances (within max Delta cost on all)\n",
              exact, total);
}

TEST(AllocatorTest, GreedyIsExactAtItsOwnErrorLevels) {
  // Everett: every greedy prefix is a Lagrangian minimiser, hence optimal
  // for its own error level. Integer errors keep the sums exact.
  Rng rng(2);
  for (int c = 0; c < 400; ++c) {
    SmallInstance instance = randomSmallInstance(rng, /*integerErrors=*/true);
    AllocationProblem problem = toProblem(instance);
    double tolerance =
        minTotal(instance.errors) + double(uniformIndex(rng, 0, 300));
    AllocationResult first = minimizeCostForError(problem, tolerance);
    ASSERT_TRUE(first.ok());
    AllocationResult prefix = minimizeCostForError(problem, first.totalError);
    ASSERT_TRUE(prefix.ok());
    EXPECT_EQ(prefix.totalCost, bruteForceMinCost(instance, first.totalError));
  }
}

TEST(AllocatorTest, BudgetModeAgainstBruteForce) {
  Rng rng(3);
  for (int c = 0; c < 400; ++c) {
    SmallInstance instance = randomSmallInstance(rng, c % 2);
    AllocationProblem problem = toProblem(instance);
    double minCost = minTotal(instance.costs);
    double budget = minCost + double(uniformIndex(rng, 0, 120));
    double opt = bruteForceMinError(instance, budget);
    AllocationResult greedy = minimizeErrorForCost(problem, budget);
    ASSERT_TRUE(greedy.ok()) << greedy.message;
    checkConsistent(instance, greedy);
    EXPECT_LE(greedy.totalCost, budget);
    EXPECT_GE(greedy.totalError, opt - 1e-9 * (1 + opt));
    EXPECT_LE(greedy.lowerBound, opt + 1e-9 * (1 + opt));
  }
}

TEST(AllocatorTest, HullDropsDominatedAndNonConvexOptions) {
  // Options (cost, error): A(0,100) B(10,60) C(20,50) D(30,0), plus a
  // dominated E(25,60) and an fp8-like F(15,70) above the hull. The hull is
  // A-B-D: C lies above chord B-D.
  AllocationProblem problem;
  ASSERT_TRUE(problem
                  .addItem({0.0, 10.0, 20.0, 30.0, 25.0, 15.0},
                           {100.0, 60.0, 50.0, 0.0, 60.0, 70.0})
                  .ok());
  AllocationResult result = minimizeCostForError(problem, 55.0);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result.choice[0], 3); // D: greedy skips the non-hull C.
  EXPECT_EQ(result.totalCost, 30.0);
  EXPECT_EQ(result.maxUpgradeCost, 20.0);
  // OPT is C at 20 (within max Delta cost); the LP bound 10 + 5/3 is below.
  EXPECT_NEAR(result.lowerBound, 10.0 + 5.0 / 3.0, 1e-12);
  result = minimizeCostForError(problem, 60.0);
  EXPECT_EQ(result.choice[0], 1); // B.
  result = minimizeErrorForCost(problem, 29.0);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result.choice[0], 1); // D does not fit; C is not on the hull.
  EXPECT_NEAR(result.lowerBound, 60.0 - 19.0 * 3.0, 1e-12);
}

TEST(AllocatorTest, InfeasibleAndInvalidInputsAreReported) {
  AllocationProblem problem;
  ASSERT_TRUE(problem.addItem({1.0, 2.0}, {5.0, 1.0}).ok());
  ASSERT_TRUE(problem.addItem({4.0, 8.0}, {3.0, 2.0}).ok());
  AllocationResult result = minimizeCostForError(problem, 2.5);
  EXPECT_EQ(result.status, AllocationStatus::InfeasibleTolerance);
  EXPECT_NE(result.message.find("not reachable"), std::string::npos);
  EXPECT_EQ(result.totalError, 3.0); // The most precise plan is returned.
  EXPECT_EQ(minimizeCostForErrorExact(problem, 2.5).status,
            AllocationStatus::InfeasibleTolerance);
  result = minimizeErrorForCost(problem, 4.5);
  EXPECT_EQ(result.status, AllocationStatus::InfeasibleBudget);
  EXPECT_NE(result.message.find("cheapest"), std::string::npos);
  EXPECT_EQ(result.totalCost, 5.0);
  EXPECT_EQ(minimizeCostForError(problem, -1.0).status,
            AllocationStatus::InvalidInput);
  EXPECT_EQ(minimizeErrorForCost(problem, NAN).status,
            AllocationStatus::InvalidInput);

  EXPECT_TRUE(problem.addItem({1.0}, {NAN}).failed());
  EXPECT_TRUE(problem.addItem({-1.0}, {1.0}).failed());
  EXPECT_TRUE(problem.addItem(std::vector<double>(), {}).failed());
  EXPECT_TRUE(problem.addItem({1.0, 2.0}, {1.0}).failed());
  EXPECT_EQ(problem.getNumItems(), 2u);

  // Exactly reachable edges are feasible.
  EXPECT_TRUE(minimizeCostForError(problem, 3.0).ok());
  EXPECT_TRUE(minimizeErrorForCost(problem, 5.0).ok());
  AllocationProblem empty;
  EXPECT_TRUE(minimizeCostForError(empty, 0.0).ok());
}

/// A realistic large problem: one item per (block, K or V) with the eight
/// formats' byte costs for a 32 x 64 block and errors ~ g * 2^-bits with
/// noise (so some options are dominated or non-convex).
AllocationProblem makeLargeProblem(Rng &rng, size_t numItems,
                                   double &referenceError) {
  const StorageKind kinds[] = {StorageKind::Int2,     StorageKind::Int3,
                               StorageKind::Int4,     StorageKind::F8E5M2,
                               StorageKind::F8E4M3FN, StorageKind::Int8,
                               StorageKind::F16,      StorageKind::F32};
  const double relativeError[] = {0.5,    0.25,    0.125,   0.125,
                                  0.0625, 0.00787, 0.00049, 0.0};
  double costs[8], errors[8];
  for (size_t k = 0; k < 8; ++k) {
    StorageFormat format =
        isScaledKind(kinds[k])
            ? StorageFormat::scaled(kinds[k], QuantScheme::Symmetric,
                                    Granularity::TokenGroup, 32,
                                    StorageKind::F16)
            : StorageFormat::unscaled(kinds[k]);
    // Packed elements plus one scale (and zero point) per group of 32.
    const double elements = 32 * 64;
    const double groups = isScaled(format) ? elements / 32 : 0.0;
    costs[k] = elements * getBitWidth(kinds[k]) / 8 +
               groups * getGroupOverheadBits(format) / 8;
  }
  AllocationProblem problem;
  problem.reserve(numItems, numItems * 8);
  referenceError = 0.0;
  for (size_t i = 0; i < numItems; ++i) {
    double g = std::exp(normal(rng, 0.0, 2.0));
    for (size_t k = 0; k < 8; ++k)
      errors[k] = g * relativeError[k] * uniform(rng, 0.7, 1.3);
    referenceError += errors[2]; // int4 everywhere.
    (void)problem.addItem(costs, errors, 8);
  }
  return problem;
}

double secondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
      .count();
}

void runScale(size_t numItems) {
  Rng rng(42);
  double int4Error;
  auto start = std::chrono::steady_clock::now();
  AllocationProblem problem = makeLargeProblem(rng, numItems, int4Error);
  double buildSeconds = secondsSince(start);

  start = std::chrono::steady_clock::now();
  AllocationResult tolerance = minimizeCostForError(problem, int4Error * 0.5);
  double toleranceSeconds = secondsSince(start);
  ASSERT_TRUE(tolerance.ok()) << tolerance.message;
  EXPECT_LE(tolerance.totalError, int4Error * 0.5);
  EXPECT_LE(tolerance.gap, tolerance.maxUpgradeCost);

  start = std::chrono::steady_clock::now();
  AllocationResult budget = minimizeErrorForCost(problem, tolerance.totalCost);
  double budgetSeconds = secondsSince(start);
  ASSERT_TRUE(budget.ok()) << budget.message;
  EXPECT_LE(budget.totalCost, tolerance.totalCost);
  // The same upgrade sequence: the budget run stops no later.
  EXPECT_LE(budget.totalError, int4Error * 0.5 * (1 + 1e-9));

  std::printf("[allocator] %zu items x 8 options: build %.2f s, tolerance "
              "mode %.2f s (%zu upgrades, cost %.0f B, LP gap %.1f B <= max "
              "step %.0f B), budget mode %.2f s\n",
              numItems, buildSeconds, toleranceSeconds, tolerance.numUpgrades,
              tolerance.totalCost, tolerance.gap, tolerance.maxUpgradeCost,
              budgetSeconds);
  EXPECT_LT(toleranceSeconds, 30.0);
}

TEST(AllocatorTest, ScalesToAMillionItems) { runScale(1000000); }

// The project's largest target (2.6 million items); run with
// --gtest_also_run_disabled_tests.
TEST(AllocatorTest, DISABLED_ScalesToTwoPointSixMillionItems) {
  runScale(2600000);
}

// The realistic problem at a size the exact DP solves (the byte costs are
// 5 to 64 times 128, so the frontier after n items has at most 59 n + 1
// points): the greedy stays within its last step of the optimum, and its LP
// bound stays below the optimum.
TEST(AllocatorTest, ExactCrossCheckOnARealisticProblem) {
  Rng rng(7);
  double int4Error;
  AllocationProblem problem = makeLargeProblem(rng, 100, int4Error);
  for (double fraction : {0.05, 0.3, 0.9}) {
    double tolerance = int4Error * fraction;
    AllocationResult greedy = minimizeCostForError(problem, tolerance);
    AllocationResult exact = minimizeCostForErrorExact(problem, tolerance);
    ASSERT_TRUE(greedy.ok()) << greedy.message;
    ASSERT_TRUE(exact.ok()) << exact.message;
    EXPECT_LE(exact.totalError, tolerance);
    EXPECT_LE(exact.totalCost, greedy.totalCost);
    EXPECT_LE(greedy.totalCost - exact.totalCost, greedy.maxUpgradeCost);
    EXPECT_LE(greedy.lowerBound, exact.totalCost * (1 + 1e-12));
    std::printf("[allocator] 100 items at %.2f x int4 error: greedy %.0f B, "
                "exact %.0f B, LP bound %.1f B\n",
                fraction, greedy.totalCost, exact.totalCost, greedy.lowerBound);
  }
}

TEST(AllocatorTest, ExactModeMatchesBruteForce) {
  Rng rng(11);
  size_t closedGaps = 0;
  for (int c = 0; c < 400; ++c) {
    SmallInstance instance = randomSmallInstance(rng, c % 2);
    AllocationProblem problem = toProblem(instance);
    double tolerance = randomReachableTolerance(rng, instance);
    double opt = bruteForceMinCost(instance, tolerance);
    AllocationResult exact = minimizeCostForErrorExact(problem, tolerance);
    ASSERT_TRUE(exact.ok()) << exact.message;
    checkConsistent(instance, exact);
    EXPECT_LE(exact.totalError, tolerance);
    EXPECT_EQ(exact.totalCost, opt) << "instance " << c;
    AllocationResult greedy = minimizeCostForError(problem, tolerance);
    ASSERT_TRUE(greedy.ok());
    EXPECT_LE(exact.totalCost, greedy.totalCost);
    closedGaps += exact.totalCost < greedy.totalCost;
  }
  std::printf("[allocator] exact DP cheaper than the greedy in %zu of 400 "
              "small instances\n",
              closedGaps);
  EXPECT_GT(closedGaps, 0u);
}

TEST(AllocatorTest, ExactModeRefusals) {
  AllocationProblem problem;
  ASSERT_TRUE(problem.addItem({1.0, 2.0}, {1.0, 0.5}).ok());
  ASSERT_TRUE(problem.addItem({1.0, 3.0}, {2.0, 0.25}).ok());
  AllocationResult infeasible = minimizeCostForErrorExact(problem, 0.5);
  EXPECT_EQ(infeasible.status, AllocationStatus::InfeasibleTolerance);
  EXPECT_NE(infeasible.message.find("is not reachable"), std::string::npos);
  EXPECT_EQ(minimizeCostForErrorExact(problem, -1.0).status,
            AllocationStatus::InvalidInput);
  // Four points after the second item (all on the frontier) exceed 3.
  AllocationResult large = minimizeCostForErrorExact(problem, 10.0, 3);
  EXPECT_EQ(large.status, AllocationStatus::InvalidInput);
  EXPECT_NE(large.message.find("Pareto frontier after item 1 has 4 points"),
            std::string::npos)
      << large.message;
  AllocationResult ok = minimizeCostForErrorExact(problem, 0.75);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok.totalCost, 5.0);
  EXPECT_EQ(ok.choice, (std::vector<uint16_t>{1, 1}));
}

} // namespace
