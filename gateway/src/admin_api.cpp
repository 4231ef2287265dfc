#include "admin_api.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <charconv>
#include <cstring>
#include <exception>
#include <string_view>
#include <type_traits>
#include <vector>

namespace tollgate::gateway {
namespace {

namespace json = boost::json;
using billing::AccountStore;
using billing::TimePoint;

// ------------------------------------------------------------------ output

// json::serialize writes doubles as "1.25E1"; people read this API, so
// doubles go out in their shortest round-trip form ("12.5") instead.
void Write(const json::value& v, std::string& out) {
  switch (v.kind()) {
    case json::kind::object: {
      out.push_back('{');
      bool first = true;
      for (const auto& [k, item] : v.get_object()) {
        if (!first) out.push_back(',');
        first = false;
        out += json::serialize(json::string(k));
        out.push_back(':');
        Write(item, out);
      }
      out.push_back('}');
      return;
    }
    case json::kind::array: {
      out.push_back('[');
      bool first = true;
      for (const auto& item : v.get_array()) {
        if (!first) out.push_back(',');
        first = false;
        Write(item, out);
      }
      out.push_back(']');
      return;
    }
    case json::kind::double_: {
      char buf[64];
      auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v.get_double());
      if (ec != std::errc() || !std::isfinite(v.get_double())) {
        out += "null";
      } else {
        out.append(buf, end);
      }
      return;
    }
    default:
      out += json::serialize(v);
  }
}

std::string Serialize(const json::value& v) {
  std::string out;
  Write(v, out);
  return out;
}

AdminResponse Json(int status, const json::value& v) { return AdminResponse{status, Serialize(v), {}}; }
AdminResponse Data(int status, json::value v) { return Json(status, json::object{{"data", std::move(v)}}); }

AdminResponse Fail(const Error& e) { return AdminResponse{HttpStatus(e.code), ErrorBody(e), {}}; }
AdminResponse Fail(ErrorCode code, std::string message, std::string param = {}, std::string code_string = {}) {
  return Fail(Error{code, std::move(message), std::move(param), std::move(code_string)});
}

json::value OrNull(const std::optional<int64_t>& v) { return v ? json::value(*v) : json::value(nullptr); }
json::value TimeOrNull(const std::optional<TimePoint>& t) {
  return t ? json::value(billing::FormatTimestamp(*t)) : json::value(nullptr);
}

// "name": USD number, "name_nano_usd": exact integer.
void PutMoney(json::object& o, std::string_view name, const std::optional<Money>& m) {
  o[name] = m ? json::value(ToUsd(*m)) : json::value(nullptr);
  o[std::string(name) + "_nano_usd"] = m ? json::value(m->nano_usd) : json::value(nullptr);
}

json::object AccountJson(const billing::AccountInfo& a) {
  json::object o;
  o["id"] = a.id;
  o["name"] = a.name;
  o["prepaid"] = a.prepaid;
  PutMoney(o, "balance", a.balance);
  PutMoney(o, "budget", a.budget);
  o["budget_reset"] = billing::LimitResetName(a.budget_reset);
  PutMoney(o, "budget_period_usage", a.budget_period_usage);
  PutMoney(o, "soft_limit", a.soft_limit);
  o["byok_fee_ppm"] = a.byok_fee_ppm;
  PutMoney(o, "leased_credits", a.leased_credits);
  o["disabled"] = a.disabled;
  o["disabled_at"] = TimeOrNull(a.disabled_at);
  o["created_at"] = billing::FormatTimestamp(a.created_at);
  return o;
}

json::object KeyJson(const billing::KeyDetails& k) {
  json::object o;
  o["id"] = k.id;
  o["account_id"] = k.account_id;
  o["name"] = k.name;
  o["label"] = k.label;
  PutMoney(o, "limit", k.limit);
  o["limit_reset"] = billing::LimitResetName(k.limit_reset);
  PutMoney(o, "soft_limit", k.soft_limit);
  o["expires_at"] = TimeOrNull(k.expires_at);
  if (k.allowed_models) {
    json::array models;
    for (const auto& m : *k.allowed_models) models.emplace_back(m);
    o["allowed_models"] = std::move(models);
  } else {
    o["allowed_models"] = nullptr;
  }
  o["requests_per_minute"] = OrNull(k.requests_per_minute);
  o["tokens_per_minute"] = OrNull(k.tokens_per_minute);
  o["max_concurrent"] = OrNull(k.max_concurrent);
  PutMoney(o, "usage", k.spent);
  o["revoked"] = k.revoked;
  o["revoked_at"] = TimeOrNull(k.revoked_at);
  o["created_at"] = billing::FormatTimestamp(k.created_at);
  return o;
}

json::object EntryJson(const billing::LedgerEntry& e) {
  json::object o;
  o["id"] = e.id;
  o["account_id"] = e.account_id;
  PutMoney(o, "amount", e.amount);
  o["kind"] = e.kind;
  o["reason"] = e.reason;
  o["idempotency_key"] = e.idempotency_key;
  o["request_id"] = e.request_id ? json::value(*e.request_id) : json::value(nullptr);
  o["api_key_id"] = OrNull(e.api_key_id);
  o["created_at"] = billing::FormatTimestamp(e.created_at);
  return o;
}

json::object ProviderKeyJson(const billing::ProviderKeyInfo& p) {
  return json::object{{"account_id", p.account_id},
                      {"provider", p.provider},
                      {"label", p.label},
                      {"created_at", billing::FormatTimestamp(p.created_at)}};
}

// ------------------------------------------------------------------ input

template <class T>
using Maybe = std::optional<T>;  // absent in the body

// The request body as an object whose fields must all be in `allowed`.
Result<json::object> ParseBody(std::string_view body, const std::vector<std::string_view>& allowed) {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  // The parser's message never quotes the body, but ours stays generic anyway:
  // a body may hold a provider key.
  if (ec) return InvalidArgument("the request body must be a JSON object (" + ec.message() + ")");
  if (!v.is_object()) return InvalidArgument("the request body must be a JSON object");
  for (const auto& [k, item] : v.get_object()) {
    if (std::find(allowed.begin(), allowed.end(), std::string_view(k)) == allowed.end()) {
      std::string known;
      for (auto a : allowed) known += (known.empty() ? "" : ", ") + std::string(a);
      return InvalidArgument("unknown field '" + std::string(k) + "' (known: " + known + ")", std::string(k));
    }
  }
  return std::move(v.get_object());
}

const json::value* Find(const json::object& o, std::string_view name) {
  auto it = o.find(name);
  return it == o.end() ? nullptr : &it->value();
}

Error TypeError(std::string_view name, std::string_view what) {
  return InvalidArgument(std::string(name) + " must be " + std::string(what), std::string(name));
}

Result<Maybe<std::string>> GetString(const json::object& o, std::string_view name) {
  const json::value* v = Find(o, name);
  if (!v) return Maybe<std::string>();
  if (!v->is_string()) return TypeError(name, "a string");
  return Maybe<std::string>(std::string(v->get_string()));
}

Result<Maybe<bool>> GetBool(const json::object& o, std::string_view name) {
  const json::value* v = Find(o, name);
  if (!v) return Maybe<bool>();
  if (!v->is_bool()) return TypeError(name, "true or false");
  return Maybe<bool>(v->get_bool());
}

std::optional<int64_t> AsInt(const json::value& v) {
  if (v.is_int64()) return v.get_int64();
  if (v.is_uint64() && v.get_uint64() <= static_cast<uint64_t>(INT64_MAX)) return static_cast<int64_t>(v.get_uint64());
  if (v.is_double()) {
    double d = v.get_double();
    if (d == static_cast<double>(static_cast<int64_t>(d)) && d >= -9e18 && d <= 9e18) return static_cast<int64_t>(d);
  }
  return std::nullopt;
}

// An integer field that null clears: absent, null (Maybe holding nullopt), or a value.
Result<Maybe<std::optional<int64_t>>> GetNullableInt(const json::object& o, std::string_view name) {
  const json::value* v = Find(o, name);
  if (!v) return Maybe<std::optional<int64_t>>();
  if (v->is_null()) return Maybe<std::optional<int64_t>>(std::optional<int64_t>());
  auto i = AsInt(*v);
  if (!i) return TypeError(name, "an integer or null");
  return Maybe<std::optional<int64_t>>(std::optional<int64_t>(*i));
}

// A signed decimal USD text ("12.5", "-3") into nano-USD.
Result<Money> ParseSignedUsd(std::string_view text, std::string_view name) {
  bool negative = !text.empty() && text.front() == '-';
  if (negative) text.remove_prefix(1);
  auto parsed = ParseUsd(text);
  if (!parsed) {
    return InvalidArgument(std::string(name) + " must be a USD amount with at most 9 decimals: " +
                               parsed.error().message,
                           std::string(name));
  }
  return Money{negative ? -parsed->nano_usd : parsed->nano_usd};
}

Result<Money> UsdFromJson(const json::value& v, std::string_view name) {
  if (v.is_string()) return ParseSignedUsd(v.get_string(), name);
  if (auto i = AsInt(v); i && !v.is_double()) {
    if (*i > INT64_MAX / 1'000'000'000 || *i < INT64_MIN / 1'000'000'000) {
      return InvalidArgument(std::string(name) + " is out of range", std::string(name));
    }
    return Money{*i * 1'000'000'000};
  }
  if (v.is_double()) {
    // The shortest decimal that reads back as this double: what was written,
    // for any amount written with up to ~15 significant digits.
    char buf[400];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v.get_double(), std::chars_format::fixed);
    if (ec != std::errc() || !std::isfinite(v.get_double())) {
      return InvalidArgument(std::string(name) + " is out of range", std::string(name));
    }
    return ParseSignedUsd(std::string_view(buf, end - buf), name);
  }
  return TypeError(name, "a USD amount (number or decimal string)");
}

// Money field `base`: one of base / base_usd (USD) / base_nano_usd (integer);
// null clears (Maybe holding nullopt) when `nullable`.
Result<Maybe<std::optional<Money>>> GetMoney(const json::object& o, std::string_view base, bool nullable) {
  const std::string usd_name = std::string(base) + "_usd";
  const std::string nano_name = std::string(base) + "_nano_usd";
  const json::value* plain = Find(o, base);
  const json::value* usd = Find(o, usd_name);
  const json::value* nano = Find(o, nano_name);
  if ((plain != nullptr) + (usd != nullptr) + (nano != nullptr) > 1) {
    return InvalidArgument("give only one of " + std::string(base) + ", " + usd_name + " and " + nano_name,
                           std::string(base));
  }
  using R = Maybe<std::optional<Money>>;
  if (!plain && !usd && !nano) return R();
  std::string name = plain ? std::string(base) : usd ? usd_name : nano_name;
  const json::value& v = plain ? *plain : usd ? *usd : *nano;
  if (v.is_null()) {
    if (!nullable) return TypeError(name, "a USD amount, not null");
    return R(std::optional<Money>());
  }
  if (nano) {
    auto i = AsInt(v);
    if (!i || v.is_double()) return TypeError(name, "an integer (nano-USD)");
    return R(std::optional<Money>(Money{*i}));
  }
  auto m = UsdFromJson(v, name);
  if (!m) return m.error();
  return R(std::optional<Money>(*m));
}

Result<Maybe<billing::LimitReset>> GetReset(const json::object& o, std::string_view name) {
  auto s = GetString(o, name);
  if (!s) return s.error();
  if (!*s) return Maybe<billing::LimitReset>();
  auto r = billing::ParseLimitReset(**s);
  if (!r) return TypeError(name, "one of none, daily, weekly, monthly");
  return Maybe<billing::LimitReset>(*r);
}

Result<Maybe<std::optional<TimePoint>>> GetTime(const json::object& o, std::string_view name) {
  const json::value* v = Find(o, name);
  using R = Maybe<std::optional<TimePoint>>;
  if (!v) return R();
  if (v->is_null()) return R(std::optional<TimePoint>());
  if (!v->is_string()) return TypeError(name, "an RFC 3339 time (\"2026-12-31T23:59:59Z\") or null");
  auto t = billing::ParseTimestamp(v->get_string());
  if (!t) return TypeError(name, "an RFC 3339 time (\"2026-12-31T23:59:59Z\") or null");
  return R(std::optional<TimePoint>(*t));
}

Result<Maybe<std::optional<std::vector<std::string>>>> GetModels(const json::object& o, std::string_view name) {
  const json::value* v = Find(o, name);
  using R = Maybe<std::optional<std::vector<std::string>>>;
  if (!v) return R();
  if (v->is_null()) return R(std::optional<std::vector<std::string>>());
  if (!v->is_array()) return TypeError(name, "an array of model slugs or null");
  std::vector<std::string> models;
  for (const auto& m : v->get_array()) {
    if (!m.is_string()) return TypeError(name, "an array of model slugs or null");
    models.emplace_back(m.get_string());
  }
  return R(std::optional<std::vector<std::string>>(std::move(models)));
}

#define TG_GET(var, expr)                          \
  auto var##_r = (expr);                           \
  if (!var##_r) return Fail(var##_r.error());      \
  auto var = std::move(*var##_r)

std::optional<int64_t> ParseId(std::string_view s) {
  if (s.empty() || s.size() > 18) return std::nullopt;
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v <= 0) return std::nullopt;
  return v;
}

// ------------------------------------------------------------------ routes

const std::vector<std::string_view> kAccountFields = {
    "name",         "prepaid",          "budget",           "budget_usd",     "budget_nano_usd",
    "budget_reset", "soft_limit",       "soft_limit_usd",   "soft_limit_nano_usd", "byok_fee_ppm",
    "credits",      "credits_usd",      "credits_nano_usd", "disabled"};
const std::vector<std::string_view> kKeyFields = {
    "name",        "limit",          "limit_usd",      "limit_nano_usd",      "limit_reset",
    "soft_limit",  "soft_limit_usd", "soft_limit_nano_usd", "expires_at",    "allowed_models",
    "requests_per_minute", "tokens_per_minute", "max_concurrent"};

AdminResponse CreateAccount(const AdminRequest& req, AccountStore& store) {
  TG_GET(body, ParseBody(req.body, kAccountFields));
  if (Find(body, "disabled")) return Fail(InvalidArgument("disabled is not a field of a new account", "disabled"));
  billing::NewAccount a;
  TG_GET(name, GetString(body, "name"));
  if (!name) return Fail(InvalidArgument("name is required", "name"));
  a.name = *name;
  TG_GET(prepaid, GetBool(body, "prepaid"));
  a.prepaid = prepaid.value_or(true);
  TG_GET(budget, GetMoney(body, "budget", true));
  if (budget) a.budget = *budget;
  TG_GET(reset, GetReset(body, "budget_reset"));
  if (reset) a.budget_reset = *reset;
  TG_GET(soft, GetMoney(body, "soft_limit", true));
  if (soft) a.soft_limit = *soft;
  TG_GET(fee, GetNullableInt(body, "byok_fee_ppm"));
  if (fee && !*fee) return Fail(InvalidArgument("byok_fee_ppm must be an integer", "byok_fee_ppm"));
  if (fee) a.byok_fee_ppm = **fee;
  TG_GET(credits, GetMoney(body, "credits", true));
  if (credits && *credits) a.initial_credits = **credits;
  auto created = store.CreateAccount(a);
  if (!created) return Fail(created.error());
  return Data(201, AccountJson(*created));
}

AdminResponse UpdateAccount(const AdminRequest& req, AccountStore& store, int64_t id) {
  TG_GET(body, ParseBody(req.body, kAccountFields));
  for (auto credits : {"credits", "credits_usd", "credits_nano_usd"}) {
    if (Find(body, credits)) {
      return Fail(InvalidArgument("credits move through POST /accounts/{id}/credits (with an idempotency key)",
                                  credits));
    }
  }
  billing::AccountChanges c;
  TG_GET(name, GetString(body, "name"));
  c.name = name;
  TG_GET(prepaid, GetBool(body, "prepaid"));
  c.prepaid = prepaid;
  TG_GET(budget, GetMoney(body, "budget", true));
  c.budget = budget;
  TG_GET(reset, GetReset(body, "budget_reset"));
  c.budget_reset = reset;
  TG_GET(soft, GetMoney(body, "soft_limit", true));
  c.soft_limit = soft;
  TG_GET(fee, GetNullableInt(body, "byok_fee_ppm"));
  if (fee && !*fee) return Fail(InvalidArgument("byok_fee_ppm must be an integer", "byok_fee_ppm"));
  if (fee) c.byok_fee_ppm = **fee;
  TG_GET(disabled, GetBool(body, "disabled"));
  c.disabled = disabled;
  auto updated = store.UpdateAccount(id, c);
  if (!updated) return Fail(updated.error());
  return Data(200, AccountJson(*updated));
}

AdminResponse MoveCredits(const AdminRequest& req, AccountStore& store, int64_t id) {
  TG_GET(body, ParseBody(req.body, {"amount", "amount_usd", "amount_nano_usd", "reason", "idempotency_key"}));
  TG_GET(amount, GetMoney(body, "amount", false));
  if (!amount) return Fail(InvalidArgument("amount (USD, negative removes) or amount_nano_usd is required", "amount"));
  TG_GET(reason, GetString(body, "reason"));
  if (!reason) return Fail(InvalidArgument("reason is required", "reason"));
  TG_GET(key, GetString(body, "idempotency_key"));
  if (key && !req.idempotency_key.empty() && *key != req.idempotency_key) {
    return Fail(InvalidArgument("the idempotency_key field and the Idempotency-Key header differ", "idempotency_key"));
  }
  std::string idempotency_key = key ? *key : req.idempotency_key;
  if (idempotency_key.empty()) {
    return Fail(InvalidArgument(
        "idempotency_key is required (body field or Idempotency-Key header): a retry with the same key moves "
        "credits once",
        "idempotency_key"));
  }
  auto moved = store.MoveCredits({id, **amount, *reason, idempotency_key});
  if (!moved) return Fail(moved.error());
  json::object o{{"data", EntryJson(moved->entry)}};
  PutMoney(o, "balance", moved->balance);
  o["replayed"] = moved->replayed;
  return Json(moved->replayed ? 200 : 201, o);
}

AdminResponse Ledger(const AdminRequest& req, AccountStore& store, int64_t id) {
  int limit = 100;
  if (auto it = req.query.find("limit"); it != req.query.end()) {
    auto v = ParseId(it->second);
    if (!v || *v > 1000) return Fail(InvalidArgument("limit must be an integer from 1 to 1000", "limit"));
    limit = static_cast<int>(*v);
  }
  std::optional<int64_t> before;
  if (auto it = req.query.find("before"); it != req.query.end()) {
    before = ParseId(it->second);
    if (!before) return Fail(InvalidArgument("before must be a ledger entry id", "before"));
  }
  auto entries = store.ListLedger(id, limit, before);
  if (!entries) return Fail(entries.error());
  json::array data;
  for (const auto& e : *entries) data.push_back(EntryJson(e));
  // A full page may have more behind it.
  json::value next = static_cast<int>(entries->size()) == limit ? json::value(entries->back().id) : json::value(nullptr);
  return Json(200, json::object{{"data", std::move(data)}, {"next_before", std::move(next)}});
}

// Fills a NewKey or KeyChanges from the body (the same fields).
template <class Target>
std::optional<AdminResponse> ReadKeyFields(const json::object& body, Target& t) {
  auto fail = [](const Error& e) { return std::optional<AdminResponse>(Fail(e)); };
  auto name = GetString(body, "name");
  if (!name) return fail(name.error());
  auto limit = GetMoney(body, "limit", true);
  if (!limit) return fail(limit.error());
  auto reset = GetReset(body, "limit_reset");
  if (!reset) return fail(reset.error());
  auto soft = GetMoney(body, "soft_limit", true);
  if (!soft) return fail(soft.error());
  auto expires = GetTime(body, "expires_at");
  if (!expires) return fail(expires.error());
  auto models = GetModels(body, "allowed_models");
  if (!models) return fail(models.error());
  auto rpm = GetNullableInt(body, "requests_per_minute");
  if (!rpm) return fail(rpm.error());
  auto tpm = GetNullableInt(body, "tokens_per_minute");
  if (!tpm) return fail(tpm.error());
  auto conc = GetNullableInt(body, "max_concurrent");
  if (!conc) return fail(conc.error());
  if constexpr (std::is_same_v<Target, billing::NewKey>) {
    if (!*name) return fail(InvalidArgument("name is required", "name"));
    t.name = **name;
    if (*limit) t.limit = **limit;
    if (*reset) t.limit_reset = **reset;
    if (*soft) t.soft_limit = **soft;
    if (*expires) t.expires_at = **expires;
    if (*models) t.allowed_models = **models;
    if (*rpm) t.requests_per_minute = **rpm;
    if (*tpm) t.tokens_per_minute = **tpm;
    if (*conc) t.max_concurrent = **conc;
  } else {
    t.name = *name;
    t.limit = *limit;
    t.limit_reset = *reset;
    t.soft_limit = *soft;
    t.expires_at = *expires;
    t.allowed_models = *models;
    t.requests_per_minute = *rpm;
    t.tokens_per_minute = *tpm;
    t.max_concurrent = *conc;
  }
  return std::nullopt;
}

AdminResponse CreateKey(const AdminRequest& req, AccountStore& store, int64_t account_id) {
  TG_GET(body, ParseBody(req.body, kKeyFields));
  billing::NewKey k;
  k.account_id = account_id;
  if (auto failed = ReadKeyFields(body, k)) return *failed;
  auto issued = store.CreateKey(k);
  if (!issued) return Fail(issued.error());
  return Json(201, json::object{{"data", KeyJson(issued->details)}, {"key", issued->plaintext}});
}

AdminResponse UpdateKey(const AdminRequest& req, AccountStore& store, int64_t id) {
  TG_GET(body, ParseBody(req.body, kKeyFields));
  billing::KeyChanges c;
  if (auto failed = ReadKeyFields(body, c)) return *failed;
  auto updated = store.UpdateKey(id, c);
  if (!updated) return Fail(updated.error());
  return Data(200, KeyJson(*updated));
}

AdminResponse KeyList(Result<std::vector<billing::KeyDetails>> keys) {
  if (!keys) return Fail(keys.error());
  json::array data;
  for (const auto& k : *keys) data.push_back(KeyJson(k));
  return Data(200, std::move(data));
}

AdminResponse PutProviderKey(const AdminRequest& req, AccountStore& store, int64_t id, const std::string& provider) {
  TG_GET(body, ParseBody(req.body, {"key"}));
  TG_GET(secret, GetString(body, "key"));
  if (!secret) return Fail(InvalidArgument("key (the provider's API key) is required", "key"));
  if (req.known_providers &&
      std::find(req.known_providers->begin(), req.known_providers->end(), provider) == req.known_providers->end()) {
    std::string known;
    for (const auto& p : *req.known_providers) known += (known.empty() ? "" : ", ") + p;
    return Fail(InvalidArgument("no provider '" + provider + "' in the config (providers: " + known + ")",
                                "provider"));
  }
  auto set = store.SetProviderKey(id, provider, *secret);
  if (!set) return Fail(set.error());
  return Data(200, ProviderKeyJson(*set));
}

AdminResponse ProviderKeys(AccountStore& store, int64_t id, const std::optional<std::string>& provider) {
  auto keys = store.ListProviderKeys(id);
  if (!keys) return Fail(keys.error());
  if (provider) {
    for (const auto& k : *keys) {
      if (k.provider == *provider) return Data(200, ProviderKeyJson(k));
    }
    return Fail(ErrorCode::kNotFound, "account " + std::to_string(id) + " has no key for provider '" + *provider + "'",
                "provider");
  }
  json::array data;
  for (const auto& k : *keys) data.push_back(ProviderKeyJson(k));
  return Data(200, std::move(data));
}

AdminResponse LedgerCheck(AccountStore& store) {
  auto report = store.CheckLedger();
  if (!report) return Fail(report.error());
  json::array accounts, keys;
  for (const auto& m : report->account_mismatches) {
    json::object o{{"account_id", m.account_id}};
    PutMoney(o, "balance", m.balance);
    PutMoney(o, "ledger_sum", m.ledger_sum);
    accounts.push_back(std::move(o));
  }
  for (const auto& m : report->key_mismatches) {
    json::object o{{"key_id", m.key_id}};
    PutMoney(o, "spent", m.spent);
    PutMoney(o, "usage_sum", m.usage_sum);
    keys.push_back(std::move(o));
  }
  return Data(200, json::object{{"ok", report->ok()},
                                {"accounts_checked", report->accounts_checked},
                                {"keys_checked", report->keys_checked},
                                {"account_mismatches", std::move(accounts)},
                                {"key_mismatches", std::move(keys)}});
}

AdminResponse MethodNotAllowed(const std::string& method, std::string allow) {
  AdminResponse r = Fail(InvalidArgument(method + " is not allowed here (allowed: " + allow + ")"));
  r.status = 405;
  r.headers.emplace_back("Allow", std::move(allow));
  return r;
}

bool Authorized(const AdminRequest& req, AdminResponse* refusal) {
  if (req.admin_token.empty()) {
    *refusal = Fail(ErrorCode::kPermissionDenied,
                    "the admin API is off: no admin token is configured", {}, "admin_api_disabled");
    return false;
  }
  std::string_view auth = req.authorization;
  constexpr std::string_view kBearer = "bearer ";
  bool bearer = auth.size() > kBearer.size();
  for (size_t i = 0; bearer && i < kBearer.size(); ++i) {
    bearer = std::tolower(static_cast<unsigned char>(auth[i])) == kBearer[i];
  }
  if (bearer) {
    auth.remove_prefix(kBearer.size());
    while (!auth.empty() && auth.front() == ' ') auth.remove_prefix(1);
    while (!auth.empty() && auth.back() == ' ') auth.remove_suffix(1);
  }
  if (!bearer || !billing::SecretEquals(auth, req.admin_token)) {
    *refusal = Fail(ErrorCode::kUnauthenticated,
                    req.authorization.empty() ? "missing admin token: send Authorization: Bearer <admin token>"
                                              : "invalid admin token",
                    {}, "invalid_admin_token");
    refusal->headers.emplace_back("WWW-Authenticate", "Bearer");
    return false;
  }
  return true;
}

AdminResponse Route(const AdminRequest& req, AccountStore& store) {
  std::vector<std::string> seg;
  {
    std::string_view p = req.path;
    while (!p.empty()) {
      size_t slash = p.find('/');
      std::string_view part = p.substr(0, slash);
      if (!part.empty()) seg.emplace_back(part);
      if (slash == std::string_view::npos) break;
      p.remove_prefix(slash + 1);
    }
  }
  const std::string& m = req.method;
  auto no_route = [&] {
    return Fail(ErrorCode::kNotFound, "no admin route " + req.method + " /admin/v1" + req.path, {}, "not_found");
  };
  auto id_at = [&](size_t i) { return ParseId(seg[i]); };
  auto no_such = [&](std::string_view what, size_t i) {
    return Fail(ErrorCode::kNotFound, "no " + std::string(what) + " '" + seg[i] + "'", std::string(what) + "_id");
  };

  if (seg.empty()) return no_route();
  if (seg[0] == "accounts") {
    if (seg.size() == 1) {
      if (m == "GET") {
        auto accounts = store.ListAccounts();
        if (!accounts) return Fail(accounts.error());
        json::array data;
        for (const auto& a : *accounts) data.push_back(AccountJson(a));
        return Data(200, std::move(data));
      }
      if (m == "POST") return CreateAccount(req, store);
      return MethodNotAllowed(m, "GET, POST");
    }
    auto id = id_at(1);
    if (!id) return no_such("account", 1);
    if (seg.size() == 2) {
      if (m == "GET") {
        auto a = store.GetAccount(*id);
        return a ? Data(200, AccountJson(*a)) : Fail(a.error());
      }
      if (m == "PATCH") return UpdateAccount(req, store, *id);
      return MethodNotAllowed(m, "GET, PATCH");
    }
    const std::string& sub = seg[2];
    if (sub == "credits" && seg.size() == 3) {
      if (m == "POST") return MoveCredits(req, store, *id);
      return MethodNotAllowed(m, "POST");
    }
    if (sub == "ledger" && seg.size() == 3) {
      if (m == "GET") return Ledger(req, store, *id);
      return MethodNotAllowed(m, "GET");
    }
    if (sub == "keys" && seg.size() == 3) {
      if (m == "GET") return KeyList(store.ListKeys(*id));
      if (m == "POST") return CreateKey(req, store, *id);
      return MethodNotAllowed(m, "GET, POST");
    }
    if (sub == "provider_keys" && seg.size() == 3) {
      if (m == "GET") return ProviderKeys(store, *id, std::nullopt);
      return MethodNotAllowed(m, "GET");
    }
    if (sub == "provider_keys" && seg.size() == 4) {
      const std::string& provider = seg[3];
      if (m == "PUT") return PutProviderKey(req, store, *id, provider);
      if (m == "GET") return ProviderKeys(store, *id, provider);
      if (m == "DELETE") {
        auto deleted = store.DeleteProviderKey(*id, provider);
        if (!deleted) return Fail(deleted.error());
        if (!*deleted) {
          return Fail(ErrorCode::kNotFound,
                      "account " + std::to_string(*id) + " has no key for provider '" + provider + "'", "provider");
        }
        return Data(200, json::object{{"deleted", true}, {"account_id", *id}, {"provider", provider}});
      }
      return MethodNotAllowed(m, "GET, PUT, DELETE");
    }
    return no_route();
  }
  if (seg[0] == "keys") {
    if (seg.size() == 1) {
      if (m == "GET") return KeyList(store.ListKeys());
      return MethodNotAllowed(m, "GET");
    }
    if (seg.size() != 2) return no_route();
    auto id = id_at(1);
    if (!id) return no_such("key", 1);
    if (m == "GET") {
      auto k = store.GetKey(*id);
      return k ? Data(200, KeyJson(*k)) : Fail(k.error());
    }
    if (m == "PATCH") return UpdateKey(req, store, *id);
    if (m == "DELETE") {
      auto k = store.RevokeKey(*id);
      return k ? Data(200, KeyJson(*k)) : Fail(k.error());
    }
    return MethodNotAllowed(m, "GET, PATCH, DELETE");
  }
  if (seg[0] == "reload" && seg.size() == 1) {
    if (m != "POST") return MethodNotAllowed(m, "POST");
    if (!req.reload) return Fail(ErrorCode::kUnavailable, "config reload is not available here", {}, "reload_unavailable");
    json::object summary;
    if (std::optional<std::string> error = req.reload(summary)) {
      AdminResponse r = Fail(ErrorCode::kInvalidArgument, "the new config was refused; the old one stays: " + *error, {},
                             "config_refused");
      r.status = 422;
      return r;
    }
    summary["status"] = "reloaded";
    return Data(200, std::move(summary));
  }
  if (seg[0] == "ledger" && seg.size() == 2 && seg[1] == "check") {
    if (m == "GET") return LedgerCheck(store);
    return MethodNotAllowed(m, "GET");
  }
  return no_route();
}

}  // namespace

AdminResponse HandleAdmin(const AdminRequest& request, billing::AccountStore& store) {
  AdminResponse refusal;
  if (!Authorized(request, &refusal)) return refusal;
  try {
    return Route(request, store);
  } catch (const std::exception& e) {
    // Allocation failure or a bug; never a secret in what().
    return Fail(ErrorCode::kInternal, std::string("admin API: ") + e.what());
  }
}

}  // namespace tollgate::gateway
