#include "tollgate/billing/key_store.hpp"

#include "pg_test_database.hpp"
#include "tollgate/billing/api_key.hpp"

#include <string>
#include <vector>

namespace tollgate::billing {
namespace {

class KeyStorePg : public testing::MigratedPgTest {
 protected:
};

TEST_F(KeyStorePg, CreateListRevoke) {
  auto a = store_->Create("alice", std::nullopt);
  ASSERT_TRUE(a) << a.error().message;
  auto b = store_->Create("bob", Money{5'000'000'000});
  ASSERT_TRUE(b) << b.error().message;
  EXPECT_TRUE(LooksLikeApiKey(a->key));
  EXPECT_NE(a->key, b->key);
  EXPECT_LT(a->id, b->id);

  auto listed = store_->List();
  ASSERT_TRUE(listed) << listed.error().message;
  ASSERT_EQ(listed->size(), 2u);
  const KeyInfo& alice = (*listed)[0];
  const KeyInfo& bob = (*listed)[1];
  EXPECT_EQ(alice.id, a->id);
  EXPECT_EQ(alice.name, "alice");
  EXPECT_EQ(alice.prefix, ApiKeyLabel(HashApiKey(a->key)));
  EXPECT_EQ(bob.prefix, ApiKeyLabel(HashApiKey(b->key)));
  EXPECT_FALSE(alice.credit_limit);
  EXPECT_EQ(alice.spent, Money{0});
  EXPECT_FALSE(alice.revoked);
  EXPECT_EQ(alice.created_at.size(), 20u) << alice.created_at;  // 2026-11-29T08:04:53Z
  EXPECT_EQ(alice.created_at.back(), 'Z');
  EXPECT_EQ(bob.name, "bob");
  ASSERT_TRUE(bob.credit_limit);
  EXPECT_EQ(bob.credit_limit->nano_usd, 5'000'000'000);

  auto revoked = store_->Revoke(a->id);
  ASSERT_TRUE(revoked) << revoked.error().message;
  EXPECT_TRUE(*revoked);
  auto again = store_->Revoke(a->id);
  ASSERT_TRUE(again);
  EXPECT_FALSE(*again);
  auto missing = store_->Revoke(999999);
  ASSERT_TRUE(missing);
  EXPECT_FALSE(*missing);

  listed = store_->List();
  ASSERT_TRUE(listed);
  EXPECT_TRUE((*listed)[0].revoked);
  EXPECT_FALSE((*listed)[1].revoked);
}

TEST_F(KeyStorePg, StoresOnlyTheHash) {
  auto created = store_->Create("alice", std::nullopt);
  ASSERT_TRUE(created);
  EXPECT_EQ(Query("SELECT key_hash FROM api_keys WHERE id = " + std::to_string(created->id)),
            HashApiKey(created->key));
  // No column of the row holds the plaintext.
  EXPECT_EQ(QueryInt("SELECT count(*) FROM api_keys WHERE row_to_json(api_keys)::text LIKE '%" +
                     created->key + "%'"),
            0);
}

// Every window of `size` characters of `text`; any longer substring contains one.
std::vector<std::string> Windows(const std::string& text, size_t size) {
  std::vector<std::string> out;
  for (size_t i = 0; i + size <= text.size(); ++i) out.push_back(text.substr(i, size));
  return out;
}

TEST_F(KeyStorePg, NoColumnHoldsAnyPartOfAPlaintextKey) {
  std::vector<CreatedKey> created;
  for (int i = 0; i < 5; ++i) {
    auto key = store_->Create("key-" + std::to_string(i), Money{1000 + i});
    ASSERT_TRUE(key) << key.error().message;
    created.push_back(*key);
  }
  ASSERT_TRUE(store_->Revoke(created[0].id).value());
  // key_prefix is gone; what is left is id, name, hash, money and times.
  EXPECT_EQ(QueryInt("SELECT count(*) FROM information_schema.columns "
                     "WHERE table_name = 'api_keys' AND column_name = 'key_prefix'"),
            0);
  // Every column of every row, as text (row_to_json names each column and
  // renders each value).
  std::optional<std::string> rows =
      Query("SELECT string_agg(row_to_json(api_keys)::text, E'\\n' ORDER BY id) FROM api_keys");
  ASSERT_TRUE(rows);
  for (const CreatedKey& key : created) {
    ASSERT_NE(rows->find(HashApiKey(key.key)), std::string::npos) << "the hash is stored";
    // No substring of >= 6 characters of the plaintext: the fixed "tg-"
    // start (3 characters) is too short to count, "tg-" + 3 random ones is not.
    for (const std::string& part : Windows(key.key, 6)) {
      EXPECT_EQ(rows->find(part), std::string::npos)
          << "api_keys holds '" << part << "' of key " << key.id << ": " << *rows;
    }
  }
  // Listing shows labels made from the hashes, no part of the keys either.
  auto listed = store_->List();
  ASSERT_TRUE(listed) << listed.error().message;
  ASSERT_EQ(listed->size(), created.size());
  for (size_t i = 0; i < created.size(); ++i) {
    const KeyInfo& info = (*listed)[i];
    EXPECT_EQ(info.prefix, ApiKeyLabel(HashApiKey(created[i].key)));
    for (const std::string& part : Windows(created[i].key, 6)) {
      EXPECT_EQ(info.prefix.find(part), std::string::npos) << info.prefix;
    }
  }
}

TEST_F(KeyStorePg, RejectsBadArguments) {
  auto empty = store_->Create("", std::nullopt);
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().code, ErrorCode::kInvalidArgument);
  auto negative = store_->Create("x", Money{-1});
  ASSERT_FALSE(negative);
  EXPECT_EQ(negative.error().code, ErrorCode::kInvalidArgument);
}

TEST_F(KeyStorePg, SetCreditLimit) {
  auto created = store_->Create("alice", std::nullopt);
  ASSERT_TRUE(created);
  auto set = store_->SetCreditLimit(created->id, Money{42});
  ASSERT_TRUE(set);
  EXPECT_TRUE(*set);
  EXPECT_EQ(QueryInt("SELECT credit_limit_nano_usd FROM api_keys"), 42);
  set = store_->SetCreditLimit(created->id, std::nullopt);
  ASSERT_TRUE(set);
  EXPECT_EQ(Query("SELECT credit_limit_nano_usd FROM api_keys"), std::nullopt);
  set = store_->SetCreditLimit(424242, Money{1});
  ASSERT_TRUE(set);
  EXPECT_FALSE(*set);
}

TEST_F(KeyStorePg, ReconnectsAfterTheServerDroppedTheConnection) {
  ASSERT_TRUE(store_->Create("alice", std::nullopt));
  KillConnections();
  // Idempotent reads retry once on a fresh connection.
  EXPECT_TRUE(testing::WaitFor([&] { return static_cast<bool>(store_->List()); }));
  auto listed = store_->List();
  ASSERT_TRUE(listed) << listed.error().message;
  EXPECT_EQ(listed->size(), 1u);
}

TEST_F(KeyStorePg, ConnectFailsForAMissingDatabase) {
  auto store = KeyStore::Connect(url() + "_missing");
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code, ErrorCode::kUnavailable);
}

}  // namespace
}  // namespace tollgate::billing
