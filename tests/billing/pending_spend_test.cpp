#include "pending_spend.hpp"

#include "tollgate/billing/key_cache.hpp"

#include <gtest/gtest.h>

namespace tollgate::billing {
namespace {

using internal::PendingSpend;

TEST(PendingSpend, AddsPerKey) {
  PendingSpend p;
  p.Add(1, 100);
  p.Add(1, 50);
  p.Add(2, 7);
  p.Add(3, 0);
  p.Add(3, -5);
  EXPECT_EQ(p.Get(1), 150);
  EXPECT_EQ(p.Get(2), 7);
  EXPECT_EQ(p.Get(3), 0);
  EXPECT_EQ(p.size(), 2u);
}

TEST(PendingSpend, SettlesByGrowthOfSpent) {
  PendingSpend p;
  p.Add(1, 100);
  p.Settle(1, 1000, 1060);  // 60 of it written
  EXPECT_EQ(p.Get(1), 40);
  p.Settle(1, 1060, 1200);  // the rest, and more from elsewhere: never below zero
  EXPECT_EQ(p.Get(1), 0);
  EXPECT_EQ(p.size(), 0u);
}

TEST(PendingSpend, IgnoresSpentDecreaseAndUnknownKeys) {
  PendingSpend p;
  p.Add(1, 100);
  p.Settle(1, 1000, 0);  // an administrator reset spent
  EXPECT_EQ(p.Get(1), 100);
  p.Settle(2, 0, 500);
  EXPECT_EQ(p.Get(2), 0);
}

TEST(HasCredit, UnlimitedAlwaysHasCredit) {
  KeyRecord r;
  r.spent = Money{1'000'000'000'000};
  EXPECT_TRUE(HasCredit(r));
}

TEST(HasCredit, SpentPlusPendingMustStayBelowLimit) {
  KeyRecord r;
  r.credit_limit = Money{1000};
  r.spent = Money{600};
  EXPECT_TRUE(HasCredit(r));
  r.pending_spend = Money{399};
  EXPECT_TRUE(HasCredit(r));
  r.pending_spend = Money{400};
  EXPECT_FALSE(HasCredit(r));
  r.credit_limit = Money{0};
  r.spent = Money{0};
  r.pending_spend = Money{0};
  EXPECT_FALSE(HasCredit(r));
}

}  // namespace
}  // namespace tollgate::billing
