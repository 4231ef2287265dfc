#include "admin_api.hpp"

#include "pg_test_database.hpp"
#include "tollgate/billing/api_key.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace tollgate::gateway {
namespace {

namespace json = boost::json;

constexpr const char* kToken = "admin-secret-token-0123456789";
constexpr std::string_view kBoxKey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

class AdminApiPg : public billing::testing::MigratedPgTest {
 protected:
  void SetUp() override {
    MigratedPgTest::SetUp();
    if (HasFatalFailure()) return;
    auto store = billing::AccountStore::Connect(url(), billing::SecretBox::FromHex(kBoxKey).value());
    ASSERT_TRUE(store) << store.error().message;
    accounts_ = std::move(*store);
  }
  void TearDown() override {
    accounts_.reset();
    MigratedPgTest::TearDown();
  }

  AdminResponse Call(std::string method, std::string path, std::string body = "",
                     std::map<std::string, std::string> query = {}, std::string idempotency_key = "") {
    AdminRequest req;
    req.method = std::move(method);
    req.path = std::move(path);
    req.body = std::move(body);
    req.query = std::move(query);
    req.idempotency_key = std::move(idempotency_key);
    req.authorization = std::string("Bearer ") + kToken;
    req.admin_token = kToken;
    req.known_providers = known_providers_;
    AdminResponse r = HandleAdmin(req, *accounts_);
    responses_.push_back(r.body);
    return r;
  }

  static json::value Parse(const AdminResponse& r) {
    boost::system::error_code ec;
    json::value v = json::parse(r.body, ec);
    EXPECT_FALSE(ec) << r.body;
    return v;
  }
  static json::object Data(const AdminResponse& r) {
    json::value v = Parse(r);
    if (!v.is_object() || !v.as_object().contains("data") || !v.at("data").is_object()) {
      ADD_FAILURE() << "no data object: " << r.body;
      return {};
    }
    return v.at("data").as_object();
  }
  // An OpenAI-shaped error with this status (and param, when given).
  static void ExpectError(const AdminResponse& r, int status, std::string param = "") {
    EXPECT_EQ(r.status, status) << r.body;
    json::value v = Parse(r);
    ASSERT_TRUE(v.is_object() && v.as_object().contains("error")) << r.body;
    const json::object& e = v.at("error").as_object();
    EXPECT_TRUE(e.at("message").is_string());
    EXPECT_TRUE(e.at("type").is_string());
    EXPECT_TRUE(e.contains("code"));
    EXPECT_TRUE(e.contains("param"));
    if (!param.empty()) {
      EXPECT_EQ(e.at("param"), json::value(param)) << r.body;
    }
  }
  int64_t CreateAccount(std::string body) {
    AdminResponse r = Call("POST", "/accounts", body);
    EXPECT_EQ(r.status, 201) << r.body;
    return Data(r).at("id").as_int64();
  }

  std::unique_ptr<billing::AccountStore> accounts_;
  std::optional<std::vector<std::string>> known_providers_;
  std::vector<std::string> responses_;  // every body returned
};

// ------------------------------------------------------------------ auth

TEST_F(AdminApiPg, RefusesWithoutTheAdminToken) {
  auto call = [&](std::string authorization, std::string token, std::string path = "/accounts") {
    AdminRequest req;
    req.method = "GET";
    req.path = path;
    req.authorization = std::move(authorization);
    req.admin_token = std::move(token);
    return HandleAdmin(req, *accounts_);
  };
  for (std::string auth : {std::string(), std::string("Bearer"), std::string("Bearer wrong"),
                           std::string("Bearer ") + kToken + "x", std::string("Basic ") + kToken,
                           std::string(kToken), std::string("Bearer ") + std::string(kToken).substr(1)}) {
    AdminResponse r = call(auth, kToken);
    ExpectError(r, 401);
    EXPECT_EQ(r.body.find(kToken), std::string::npos) << "the token is never echoed";
    ASSERT_EQ(r.headers.size(), 1u);
    EXPECT_EQ(r.headers[0].first, "WWW-Authenticate");
  }
  // Before routing: an unknown route is a 401 too.
  ExpectError(call("Bearer wrong", kToken, "/nowhere"), 401);
  // No token configured: the API is off, whatever is sent.
  ExpectError(call("Bearer ", ""), 403);
  ExpectError(call(std::string("Bearer ") + kToken, ""), 403);
  // The scheme is case-insensitive (RFC 7235 section 2.1).
  EXPECT_EQ(call(std::string("bearer ") + kToken, kToken).status, 200);
  EXPECT_EQ(call(std::string("BEARER  ") + kToken, kToken).status, 200);
}

// ------------------------------------------------------------------ accounts

TEST_F(AdminApiPg, AccountsCreateGetListPatch) {
  AdminResponse r = Call("POST", "/accounts",
                         R"({"name":"acme","budget":100,"budget_reset":"monthly","soft_limit_nano_usd":80000000000,
                             "byok_fee_ppm":20000,"credits":"12.5"})");
  ASSERT_EQ(r.status, 201) << r.body;
  json::object a = Data(r);
  int64_t id = a.at("id").as_int64();
  EXPECT_EQ(a.at("name"), "acme");
  EXPECT_EQ(a.at("prepaid"), true);
  EXPECT_EQ(a.at("balance").as_double(), 12.5);
  EXPECT_EQ(a.at("balance_nano_usd"), 12'500'000'000);
  EXPECT_EQ(a.at("budget_nano_usd"), 100'000'000'000);
  EXPECT_EQ(a.at("budget_reset"), "monthly");
  EXPECT_EQ(a.at("soft_limit_nano_usd"), 80'000'000'000);
  EXPECT_EQ(a.at("byok_fee_ppm"), 20000);
  EXPECT_EQ(a.at("disabled"), false);
  EXPECT_TRUE(a.at("disabled_at").is_null());
  EXPECT_EQ(a.at("created_at").as_string().size(), 20u);
  // USD numbers are written plainly, not as 1.25E1.
  EXPECT_NE(r.body.find("\"balance\":12.5,"), std::string::npos) << r.body;

  int64_t post = CreateAccount(R"({"name":"post","prepaid":false})");
  r = Call("GET", "/accounts");
  ASSERT_EQ(r.status, 200);
  json::array list = Parse(r).at("data").as_array();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[1].at("id"), post);
  EXPECT_EQ(list[1].at("prepaid"), false);
  EXPECT_TRUE(list[1].at("budget").is_null());

  r = Call("GET", "/accounts/" + std::to_string(id));
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(Data(r).at("name"), "acme");

  r = Call("PATCH", "/accounts/" + std::to_string(id),
           R"({"name":"acme corp","budget":null,"soft_limit_usd":"1.5","disabled":true})");
  ASSERT_EQ(r.status, 200) << r.body;
  a = Data(r);
  EXPECT_EQ(a.at("name"), "acme corp");
  EXPECT_TRUE(a.at("budget").is_null());
  EXPECT_TRUE(a.at("budget_nano_usd").is_null());
  EXPECT_EQ(a.at("soft_limit_nano_usd"), 1'500'000'000);
  EXPECT_EQ(a.at("disabled"), true);
  EXPECT_TRUE(a.at("disabled_at").is_string());
  r = Call("PATCH", "/accounts/" + std::to_string(id), R"({"disabled":false})");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(Data(r).at("disabled"), false);
}

TEST_F(AdminApiPg, AccountErrors) {
  ExpectError(Call("POST", "/accounts", R"({"prepaid":true})"), 400, "name");
  ExpectError(Call("POST", "/accounts", R"({"name":"a","nmae":"b"})"), 400, "nmae");
  ExpectError(Call("POST", "/accounts", R"({"name":5})"), 400, "name");
  ExpectError(Call("POST", "/accounts", R"({"name":"a","prepaid":"yes"})"), 400, "prepaid");
  ExpectError(Call("POST", "/accounts", R"({"name":"a","budget":-1})"), 400, "budget");
  ExpectError(Call("POST", "/accounts", R"({"name":"a","budget":1,"budget_nano_usd":1})"), 400, "budget");
  ExpectError(Call("POST", "/accounts", R"({"name":"a","budget":0.0000000001})"), 400, "budget");
  ExpectError(Call("POST", "/accounts", R"({"name":"a","budget_reset":"hourly"})"), 400, "budget_reset");
  ExpectError(Call("POST", "/accounts", R"({"name":"a","byok_fee_ppm":2000000})"), 400, "byok_fee_ppm");
  ExpectError(Call("POST", "/accounts", "not json"), 400);
  ExpectError(Call("POST", "/accounts", "[1]"), 400);
  ExpectError(Call("POST", "/accounts", ""), 400);
  ExpectError(Call("GET", "/accounts/999999"), 404);
  ExpectError(Call("GET", "/accounts/abc"), 404);
  ExpectError(Call("GET", "/accounts/-1"), 404);
  ExpectError(Call("PATCH", "/accounts/999999", R"({"name":"x"})"), 404);
  int64_t id = CreateAccount(R"({"name":"a"})");
  ExpectError(Call("PATCH", "/accounts/" + std::to_string(id), R"({"credits":5})"), 400, "credits");
  AdminResponse r = Call("DELETE", "/accounts/" + std::to_string(id));
  ExpectError(r, 405);
  ASSERT_EQ(r.headers.size(), 1u);
  EXPECT_EQ(r.headers[0], std::make_pair(std::string("Allow"), std::string("GET, PATCH")));
  ExpectError(Call("GET", "/nowhere"), 404);
  ExpectError(Call("GET", "/"), 404);
  ExpectError(Call("GET", "/accounts/1/unknown"), 404);
  EXPECT_EQ(QueryInt("SELECT count(*) FROM accounts"), 1);
}

// ------------------------------------------------------------------ credits and ledger

TEST_F(AdminApiPg, CreditsAreIdempotent) {
  int64_t id = CreateAccount(R"({"name":"acme"})");
  std::string path = "/accounts/" + std::to_string(id) + "/credits";
  AdminResponse r = Call("POST", path, R"({"amount_usd":12.5,"reason":"invoice 17","idempotency_key":"inv-17"})");
  ASSERT_EQ(r.status, 201) << r.body;
  json::value v = Parse(r);
  EXPECT_EQ(v.at("balance_nano_usd"), 12'500'000'000);
  EXPECT_EQ(v.at("balance").as_double(), 12.5);
  EXPECT_EQ(v.at("replayed"), false);
  int64_t entry = v.at("data").at("id").as_int64();
  EXPECT_EQ(v.at("data").at("kind"), "credit");
  EXPECT_EQ(v.at("data").at("amount_nano_usd"), 12'500'000'000);
  EXPECT_EQ(v.at("data").at("reason"), "invoice 17");

  // The same again: 200, the same entry, no second movement.
  r = Call("POST", path, R"({"amount_usd":12.5,"reason":"invoice 17","idempotency_key":"inv-17"})");
  ASSERT_EQ(r.status, 200) << r.body;
  v = Parse(r);
  EXPECT_EQ(v.at("replayed"), true);
  EXPECT_EQ(v.at("data").at("id"), entry);
  EXPECT_EQ(v.at("balance_nano_usd"), 12'500'000'000);
  // Other values under the same key: 409.
  ExpectError(Call("POST", path, R"({"amount_usd":13,"reason":"invoice 17","idempotency_key":"inv-17"})"), 409,
              "idempotency_key");

  // The header works as the key; negative amounts remove; exact nano-USD and strings.
  r = Call("POST", path, R"({"amount_nano_usd":-2500000000,"reason":"correction"})", {}, "corr-1");
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(Parse(r).at("balance_nano_usd"), 10'000'000'000);
  r = Call("POST", path, R"({"amount":"0.000000001","reason":"tiny","idempotency_key":"tiny-1"})");
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(Parse(r).at("balance_nano_usd"), 10'000'000'001);
  r = Call("POST", path, R"({"amount":0.1,"reason":"dime","idempotency_key":"dime-1"})");
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(Parse(r).at("data").at("amount_nano_usd"), 100'000'000);

  // Removing more than the balance of a prepaid account: 409.
  ExpectError(Call("POST", path, R"({"amount":-100,"reason":"too much","idempotency_key":"big"})"), 409, "amount");
  // Missing or contradictory fields: 400.
  ExpectError(Call("POST", path, R"({"amount":1,"reason":"no key"})"), 400, "idempotency_key");
  ExpectError(Call("POST", path, R"({"amount":1,"reason":"r","idempotency_key":"a"})", {}, "b"), 400,
              "idempotency_key");
  ExpectError(Call("POST", path, R"({"reason":"r","idempotency_key":"a"})"), 400, "amount");
  ExpectError(Call("POST", path, R"({"amount":0,"reason":"r","idempotency_key":"a"})"), 400, "amount");
  ExpectError(Call("POST", path, R"({"amount":null,"reason":"r","idempotency_key":"a"})"), 400, "amount");
  ExpectError(Call("POST", path, R"({"amount":1,"idempotency_key":"a"})"), 400, "reason");
  ExpectError(Call("POST", path, R"({"amount":1,"amount_nano_usd":1,"reason":"r","idempotency_key":"a"})"), 400,
              "amount");
  ExpectError(Call("POST", "/accounts/999999/credits", R"({"amount":1,"reason":"r","idempotency_key":"zz"})"), 404);
  ExpectError(Call("GET", path), 405);

  EXPECT_EQ(QueryInt("SELECT balance_nano_usd FROM accounts"),
            QueryInt("SELECT sum(amount_nano_usd)::bigint FROM ledger_entries"));
}

TEST_F(AdminApiPg, LedgerPages) {
  int64_t id = CreateAccount(R"({"name":"acme"})");
  std::string base = "/accounts/" + std::to_string(id);
  for (int i = 1; i <= 5; ++i) {
    ASSERT_EQ(Call("POST", base + "/credits",
                   R"({"amount_nano_usd":)" + std::to_string(i) + R"(,"reason":"r","idempotency_key":"k)" +
                       std::to_string(i) + "\"}")
                  .status,
              201);
  }
  AdminResponse r = Call("GET", base + "/ledger", "", {{"limit", "2"}});
  ASSERT_EQ(r.status, 200) << r.body;
  json::value v = Parse(r);
  ASSERT_EQ(v.at("data").as_array().size(), 2u);
  EXPECT_EQ(v.at("data").at(0).at("amount_nano_usd"), 5);
  EXPECT_EQ(v.at("data").at(0).at("idempotency_key"), "admin:k5");
  std::vector<int64_t> amounts;
  std::map<std::string, std::string> query{{"limit", "2"}};
  for (int page = 0; page < 10; ++page) {
    r = Call("GET", base + "/ledger", "", query);
    ASSERT_EQ(r.status, 200);
    v = Parse(r);
    for (const auto& e : v.at("data").as_array()) amounts.push_back(e.at("amount_nano_usd").as_int64());
    if (v.at("next_before").is_null()) break;
    query["before"] = std::to_string(v.at("next_before").as_int64());
  }
  EXPECT_EQ(amounts, (std::vector<int64_t>{5, 4, 3, 2, 1}));
  ExpectError(Call("GET", base + "/ledger", "", {{"limit", "0"}}), 400, "limit");
  ExpectError(Call("GET", base + "/ledger", "", {{"limit", "1001"}}), 400, "limit");
  ExpectError(Call("GET", base + "/ledger", "", {{"before", "x"}}), 400, "before");
  ExpectError(Call("GET", "/accounts/999999/ledger"), 404);
}

TEST_F(AdminApiPg, LedgerCheckReportsMismatches) {
  int64_t id = CreateAccount(R"({"name":"acme","credits":3})");
  AdminResponse r = Call("GET", "/ledger/check");
  ASSERT_EQ(r.status, 200) << r.body;
  json::object d = Data(r);
  EXPECT_EQ(d.at("ok"), true);
  EXPECT_EQ(d.at("accounts_checked"), 1);
  Query("UPDATE accounts SET balance_nano_usd = 1 WHERE id = " + std::to_string(id));
  r = Call("GET", "/ledger/check");
  ASSERT_EQ(r.status, 200);
  d = Data(r);
  EXPECT_EQ(d.at("ok"), false);
  ASSERT_EQ(d.at("account_mismatches").as_array().size(), 1u);
  EXPECT_EQ(d.at("account_mismatches").at(0).at("account_id"), id);
  EXPECT_EQ(d.at("account_mismatches").at(0).at("balance_nano_usd"), 1);
  EXPECT_EQ(d.at("account_mismatches").at(0).at("ledger_sum_nano_usd"), 3'000'000'000);
  ExpectError(Call("POST", "/ledger/check"), 405);
}

// ------------------------------------------------------------------ keys

TEST_F(AdminApiPg, KeysCreateListPatchRevoke) {
  int64_t id = CreateAccount(R"({"name":"acme"})");
  std::string base = "/accounts/" + std::to_string(id);
  AdminResponse r = Call("POST", base + "/keys",
                         R"({"name":"ci","limit":5,"limit_reset":"daily","soft_limit":"4",
                             "expires_at":"2031-01-02T03:04:05Z","allowed_models":["openai/gpt-4o-mini"],
                             "requests_per_minute":60,"tokens_per_minute":100000,"max_concurrent":2})");
  ASSERT_EQ(r.status, 201) << r.body;
  json::value v = Parse(r);
  std::string plaintext(v.at("key").as_string());
  EXPECT_TRUE(billing::LooksLikeApiKey(plaintext));
  json::object k = v.at("data").as_object();
  int64_t key_id = k.at("id").as_int64();
  EXPECT_EQ(k.at("account_id"), id);
  EXPECT_EQ(k.at("label"), json::value(billing::ApiKeyLabel(billing::HashApiKey(plaintext))));
  EXPECT_EQ(k.at("limit_nano_usd"), 5'000'000'000);
  EXPECT_EQ(k.at("limit").to_number<double>(), 5.0);
  EXPECT_EQ(k.at("limit_reset"), "daily");
  EXPECT_EQ(k.at("soft_limit_nano_usd"), 4'000'000'000);
  EXPECT_EQ(k.at("expires_at"), "2031-01-02T03:04:05Z");
  EXPECT_EQ(k.at("allowed_models"), json::array{"openai/gpt-4o-mini"});
  EXPECT_EQ(k.at("requests_per_minute"), 60);
  EXPECT_EQ(k.at("tokens_per_minute"), 100000);
  EXPECT_EQ(k.at("max_concurrent"), 2);
  EXPECT_EQ(k.at("usage_nano_usd"), 0);
  EXPECT_EQ(k.at("revoked"), false);
  size_t after_create = responses_.size();

  int64_t other = CreateAccount(R"({"name":"other"})");
  ASSERT_EQ(Call("POST", "/accounts/" + std::to_string(other) + "/keys", R"({"name":"x"})").status, 201);
  r = Call("GET", base + "/keys");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(Parse(r).at("data").as_array().size(), 1u);
  r = Call("GET", "/keys");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(Parse(r).at("data").as_array().size(), 2u);
  r = Call("GET", "/keys/" + std::to_string(key_id));
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(Data(r).at("name"), "ci");
  EXPECT_FALSE(Parse(r).as_object().contains("key"));

  r = Call("PATCH", "/keys/" + std::to_string(key_id),
           R"({"name":"ci-2","limit":null,"allowed_models":null,"expires_at":null,"requests_per_minute":null,
               "max_concurrent":5,"limit_reset":"monthly"})");
  ASSERT_EQ(r.status, 200) << r.body;
  k = Data(r);
  EXPECT_EQ(k.at("name"), "ci-2");
  EXPECT_TRUE(k.at("limit").is_null());
  EXPECT_TRUE(k.at("limit_nano_usd").is_null());
  EXPECT_TRUE(k.at("allowed_models").is_null());
  EXPECT_TRUE(k.at("expires_at").is_null());
  EXPECT_TRUE(k.at("requests_per_minute").is_null());
  EXPECT_EQ(k.at("tokens_per_minute"), 100000);
  EXPECT_EQ(k.at("max_concurrent"), 5);
  EXPECT_EQ(k.at("limit_reset"), "monthly");

  r = Call("DELETE", "/keys/" + std::to_string(key_id));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Data(r).at("revoked"), true);
  EXPECT_TRUE(Data(r).at("revoked_at").is_string());
  EXPECT_EQ(Call("DELETE", "/keys/" + std::to_string(key_id)).status, 200);  // again: harmless

  // Errors.
  ExpectError(Call("POST", base + "/keys", R"({"limit":5})"), 400, "name");
  ExpectError(Call("POST", base + "/keys", R"({"name":"x","expires_at":"tomorrow"})"), 400, "expires_at");
  ExpectError(Call("POST", base + "/keys", R"({"name":"x","allowed_models":"all"})"), 400, "allowed_models");
  ExpectError(Call("POST", base + "/keys", R"({"name":"x","allowed_models":[]})"), 400, "allowed_models");
  ExpectError(Call("POST", base + "/keys", R"({"name":"x","requests_per_minute":0})"), 400, "requests_per_minute");
  ExpectError(Call("POST", base + "/keys", R"({"name":"x","requests_per_minute":1.5})"), 400, "requests_per_minute");
  ExpectError(Call("POST", base + "/keys", R"({"name":"x","account_id":3})"), 400, "account_id");
  ExpectError(Call("POST", "/accounts/999999/keys", R"({"name":"x"})"), 404);
  ExpectError(Call("GET", "/accounts/999999/keys"), 404);
  ExpectError(Call("GET", "/keys/999999"), 404);
  ExpectError(Call("PATCH", "/keys/999999", R"({"name":"x"})"), 404);
  ExpectError(Call("DELETE", "/keys/999999"), 404);
  ExpectError(Call("POST", "/keys"), 405);
  ExpectError(Call("PUT", "/keys/" + std::to_string(key_id), "{}"), 405);

  // The plaintext appeared in the create response only.
  for (size_t i = after_create; i < responses_.size(); ++i) {
    EXPECT_EQ(responses_[i].find(plaintext.substr(3, 12)), std::string::npos) << responses_[i];
  }
}

// ------------------------------------------------------------------ BYOK

TEST_F(AdminApiPg, ProviderKeysNeverShowTheSecret) {
  int64_t id = CreateAccount(R"({"name":"acme"})");
  std::string base = "/accounts/" + std::to_string(id) + "/provider_keys";
  const std::string secret = "sk-proj-VERYSECRETvalue0123456789wxyz";
  responses_.clear();
  AdminResponse r = Call("PUT", base + "/openai", R"({"key":")" + secret + "\"}");
  ASSERT_EQ(r.status, 200) << r.body;
  json::object d = Data(r);
  EXPECT_EQ(d.at("provider"), "openai");
  EXPECT_EQ(d.at("label"), "sk-...wxyz");
  ASSERT_EQ(Call("PUT", base + "/anthropic", R"({"key":"sk-ant-ANOTHERSECRET-abcd"})").status, 200);

  r = Call("GET", base);
  ASSERT_EQ(r.status, 200);
  json::array list = Parse(r).at("data").as_array();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].at("provider"), "anthropic");
  EXPECT_EQ(list[1].at("label"), "sk-...wxyz");
  r = Call("GET", base + "/openai");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(Data(r).at("label"), "sk-...wxyz");
  ExpectError(Call("GET", base + "/mistral"), 404, "provider");

  // Errors never echo the secret either.
  ExpectError(Call("PUT", base + "/openai", R"({"key":"sk-with\nVERYSECRETnewline"})"), 400, "key");
  ExpectError(Call("PUT", base + "/openai", R"({"key":")" + secret + R"(","extra":1})"), 400, "extra");
  ExpectError(Call("PUT", base + "/openai", R"({"secret":")" + secret + "\"}"), 400, "secret");
  ExpectError(Call("PUT", base + "/openai", "{\"key\":\"" + secret), 400);  // truncated JSON
  ExpectError(Call("PUT", base + "/bad%20id", R"({"key":")" + secret + "\"}"), 400, "provider");
  ExpectError(Call("PUT", "/accounts/999999/provider_keys/openai", R"({"key":")" + secret + "\"}"), 404);
  known_providers_ = std::vector<std::string>{"openai", "anthropic"};
  ExpectError(Call("PUT", base + "/mistral", R"({"key":")" + secret + "\"}"), 400, "provider");
  known_providers_.reset();
  ExpectError(Call("POST", base + "/openai", R"({"key":")" + secret + "\"}"), 405);

  r = Call("DELETE", base + "/openai");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Data(r).at("deleted"), true);
  ExpectError(Call("DELETE", base + "/openai"), 404, "provider");
  EXPECT_EQ(QueryInt("SELECT count(*) FROM provider_keys"), 1);

  for (const std::string& body : responses_) {
    EXPECT_EQ(body.find("VERYSECRET"), std::string::npos) << body;
    EXPECT_EQ(body.find("ANOTHERSECRET"), std::string::npos) << body;
    // No 8-character window of the secret either.
    for (size_t i = 0; i + 8 <= secret.size(); ++i) {
      EXPECT_EQ(body.find(secret.substr(i, 8)), std::string::npos) << body;
    }
  }
}

TEST_F(AdminApiPg, ProviderKeysWithoutSecretBoxAre503) {
  auto store = billing::AccountStore::Connect(url());
  ASSERT_TRUE(store);
  int64_t id = CreateAccount(R"({"name":"acme"})");
  AdminRequest req;
  req.method = "PUT";
  req.path = "/accounts/" + std::to_string(id) + "/provider_keys/openai";
  req.body = R"({"key":"sk-0123456789abcdefSECRET"})";
  req.authorization = std::string("Bearer ") + kToken;
  req.admin_token = kToken;
  AdminResponse r = HandleAdmin(req, **store);
  ExpectError(r, 503);
  EXPECT_NE(r.body.find("TOLLGATE_SECRET_KEY"), std::string::npos);
  EXPECT_EQ(r.body.find("SECRET\""), std::string::npos);
}

}  // namespace
}  // namespace tollgate::gateway
