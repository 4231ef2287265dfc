#include "tollgate/gateway/server.hpp"

#include "access_log.hpp"
#include "admin_api.hpp"
#include "api.hpp"
#include "app_attribution.hpp"
#include "call_driver.hpp"
#include "dashboard.hpp"
#include "metrics.hpp"
#include "responses.hpp"
#include "stats_api.hpp"
#include "tollgate/billing/account_store.hpp"
#include "tollgate/billing/api_key.hpp"
#include "tollgate/billing/credit_guard.hpp"
#include "tollgate/billing/generation_store.hpp"
#include "tollgate/billing/key_cache.hpp"
#include "tollgate/billing/rate_limiter.hpp"
#include "tollgate/billing/response_store.hpp"
#include "tollgate/billing/secret_box.hpp"
#include "tollgate/billing/stats_store.hpp"
#include "tollgate/billing/usage_maintenance.hpp"
#include "tollgate/billing/usage_recorder.hpp"
#include "tollgate/core/text.hpp"
#include "tollgate/local_backend/local_provider.hpp"
#include "tollgate/providers/remote_provider.hpp"
#include "tollgate/routing/catalog.hpp"
#include "tollgate/wire/anthropic.hpp"
#include "tollgate/wire/common.hpp"
#include "tollgate/wire/openai.hpp"
#include "tollgate/wire/responses.hpp"

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/json/serialize.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/url/parse.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <filesystem>
#include <map>
#include <random>
#include <mutex>
#include <thread>
#include <unordered_map>

#include <sys/socket.h>

namespace tollgate::gateway {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;
template <class T>
using awaitable = asio::awaitable<T>;
constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);

namespace {

// Seeds one call's routing draws: a per-thread generator, seeded once from
// the OS, so draws are independent across calls and threads.
uint64_t CallSeed() {
  thread_local std::mt19937_64 generator{std::random_device{}()};
  return generator();
}

constexpr uint64_t kBodyReadReserveBytes = 64 * 1024;
constexpr size_t kIdleBufferBytes = 4 * 1024;
// A request's first bytes are read in pieces of this size.
constexpr size_t kFirstReadBytes = 4 * 1024;
// The read buffer's bound beyond the header limit (or the body read reserve).
constexpr size_t kBufferSlackBytes = 64 * 1024;
constexpr auto kTlsHandshakeTimeout = std::chrono::seconds(10);
// After server.drain_timeout_ms, calls still running are cancelled; this long is
// left for them to end (CallDriver::kCancelGrace plus writing the end).
constexpr auto kShutdownGrace = std::chrono::seconds(8);
constexpr auto kAcceptBackoff = std::chrono::milliseconds(50);
constexpr auto kMissReloadInterval = std::chrono::milliseconds(100);
// Encoded output a connection buffers for a slow client before the call
// driver stops handing it events (and so the provider stops producing).
constexpr size_t kClientBufferBytes = 64 * 1024;

using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

// ---------------------------------------------------------------- adapters of the call driver's seams

// The driver's executor: the connection's strand and Asio timers on it.
class StrandExecutor final : public Executor {
 public:
  explicit StrandExecutor(asio::any_io_executor strand) : strand_(std::move(strand)) {}

  void Post(std::function<void()> fn) override { asio::post(strand_, std::move(fn)); }

  std::unique_ptr<Timer> StartTimer(SteadyTime at, std::function<void()> fn) override {
    auto timer = std::make_unique<AsioTimer>(strand_);
    timer->timer.expires_at(at);
    timer->timer.async_wait([cancelled = timer->cancelled, fn = std::move(fn)](const beast::error_code& ec) {
      if (!ec && !*cancelled) fn();
    });
    return timer;
  }

  SteadyTime Now() const override { return Clock::now(); }
  WallTime WallNow() const override { return std::chrono::system_clock::now(); }

 private:
  struct AsioTimer final : Timer {
    explicit AsioTimer(const asio::any_io_executor& ex) : timer(ex) {}
    ~AsioTimer() override { Cancel(); }
    void Cancel() override {
      *cancelled = true;
      timer.cancel();
    }
    asio::steady_timer timer;
    // An expiry whose handler is already queued still sees this.
    std::shared_ptr<bool> cancelled = std::make_shared<bool>(false);
  };
  asio::any_io_executor strand_;
};

// The driver's admission: credit leases (billing::CreditGuard).
class GuardAdmission final : public Admission {
 public:
  GuardAdmission(billing::CreditGuard& guard, Metrics& metrics) : guard_(guard), metrics_(metrics) {}

  void Reserve(const billing::KeyRecord& key, Money worst_case, WallTime at,
               std::function<void(Result<Reservation>)> done) override {
    guard_.Admit(key, worst_case, at, [this, worst_case, done = std::move(done)](billing::AdmitResult r) {
      if (!r.admitted()) {
        metrics_.CountRefusal(r.outcome == billing::AdmitOutcome::kRefused
                                  ? "payment_required:" + std::string(billing::PotScopeName(r.refused_pot))
                                  : std::string("credit_unavailable"));
        return done(billing::AdmitError(r));
      }
      Reservation reservation;
      reservation.worst_case = worst_case;
      reservation.lease_holder = r.ticket.lease_holder;
      for (const billing::PotRef& pot : r.ticket.pots) {
        reservation.pots.push_back(
            billing::LeasedPot{std::string(billing::PotScopeName(pot.scope)), pot.owner_id, pot.period_start});
      }
      if (r.soft_limit_pot) {
        reservation.soft_limit_reached = true;
        reservation.soft_limit_what = std::string(billing::PotScopeName(*r.soft_limit_pot));
        metrics_.CountSoftLimitWarning(reservation.soft_limit_what);
      }
      reservation.handle = std::make_shared<const billing::AdmitTicket>(std::move(r.ticket));
      done(std::move(reservation));
    });
  }

  Money Settle(const Reservation& reservation, Money cost) override {
    return guard_.Settle(*std::static_pointer_cast<const billing::AdmitTicket>(reservation.handle), cost);
  }

 private:
  billing::CreditGuard& guard_;
  Metrics& metrics_;
};

class RecorderSink final : public UsageSink {
 public:
  // `wait_for_spool`: config usage.answer_after_spool.
  RecorderSink(billing::UsageRecorder& recorder, bool wait_for_spool)
      : recorder_(recorder), wait_for_spool_(wait_for_spool) {}
  void Record(billing::UsageEvent event, std::function<void()> durable) override {
    if (wait_for_spool_) return recorder_.Record(std::move(event), std::move(durable));
    recorder_.Record(std::move(event));
    durable();  // the driver answers now; the row is spooled right behind
  }

 private:
  billing::UsageRecorder& recorder_;
  const bool wait_for_spool_;
};

// Metrics and the access log of each call (gateway/src/metrics.hpp, access_log.hpp).
class MetricsObserver final : public CallObserver {
 public:
  MetricsObserver(Metrics& metrics, bool access_log) : metrics_(metrics), access_log_(access_log) {}
  // Counted with the call's row (its attempts), not here: a call is counted once.
  void OnAttemptFailed(const std::string&, const std::string&, int, int64_t) override {}
  void OnCall(const billing::UsageEvent& e) override {
    metrics_.CountMeteredCall(e);
    // The served attempt's record keeps what the call cost; the row what was charged.
    for (const billing::AttemptRecord& a : e.attempts) {
      if (a.outcome == "served" && !e.byok && a.cost > e.cost) {
        metrics_.CountUncharged(e.model, e.provider, a.cost.nano_usd - e.cost.nano_usd);
      }
    }
    if (access_log_) WriteLogLine(AccessLogLine(e, metrics_.ModelLabel(e.model), /*metered=*/true));
  }
  void OnUnmetered(const CallSpec& spec, int status, const Error* error,
                   const std::vector<billing::AttemptRecord>& attempts) override {
    metrics_.CountUnmeteredCall(routing::SplitVariant(spec.request.model).first, status, attempts);
    if (!access_log_) return;
    if (attempts.empty() && error != nullptr) {  // refused before any provider was asked
      const std::string model = metrics_.ModelLabel(routing::SplitVariant(spec.request.model).first);
      WriteLogLine(RefusedCallLine(RefusedCall{
          spec.request_id, spec.key.id, spec.key.account_id, model, spec.app, error,
          std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - spec.received).count(),
          spec.request.stream}));
      return;
    }
    billing::UsageEvent row;
    row.request_id = spec.request_id;
    row.api_key_id = spec.key.id;
    row.account_id = spec.key.account_id;
    if (!attempts.empty()) {
      row.provider = attempts.back().provider;
      row.endpoint_id = attempts.back().endpoint_id;
      row.error_code = attempts.back().error_code;
    }
    row.status = status;
    row.latency_ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - spec.received).count();
    row.streamed = spec.request.stream;
    row.finished_at = std::chrono::system_clock::now();
    row.attempts = attempts;
    WriteLogLine(AccessLogLine(row, metrics_.ModelLabel(routing::SplitVariant(spec.request.model).first),
                               /*metered=*/false));
  }

 private:
  Metrics& metrics_;
  const bool access_log_;
};

// What one loaded config serves: its settings, providers, catalog, router
// and listener TLS. A reload (SIGHUP, POST /admin/v1/reload) builds a new
// one and swaps it in; each request takes the current one and keeps it to
// its end (a call: until its driver is done), so calls in flight finish with
// the providers, prices and limits they started with.
struct Runtime {
  Config config;
  // Providers by provider id (remote) and by provider id + '\n' + model path
  // (local). A reload shares those whose settings are unchanged (Serve keeps
  // the others alive while calls may still use them).
  std::map<std::string, std::shared_ptr<providers::RemoteProvider>> remote;
  std::map<std::string, std::shared_ptr<local_backend::LocalProvider>> local;
  // The local engines by metrics label (<provider>/<file stem>).
  std::vector<std::pair<std::string, const local_backend::LocalProvider*>> engines;
  routing::Catalog catalog;
  std::unique_ptr<routing::Router> router;  // over `catalog`; health starts anew on a reload
  std::shared_ptr<asio::ssl::context> tls;  // server.tls; null: plain HTTP
};

struct Services {
  // The current Runtime (Current()); replaced whole by a reload.
  std::atomic<std::shared_ptr<const Runtime>> runtime;
  std::shared_ptr<const Runtime> Current() const { return runtime.load(); }
  // Reloads the config file (blocking: may load models; one at a time).
  // Returns the error, or nullopt with `summary` filled. Set by Serve.
  std::function<std::optional<std::string>(boost::json::object& summary)> reload;

  // Open client connections, in all and per client address.
  std::atomic<int> connections{0};
  std::mutex clients_mu;
  std::unordered_map<std::string, int> per_client;  // guarded by clients_mu

  std::unique_ptr<billing::KeyCache> keys;
  std::unique_ptr<billing::UsageRecorder> recorder;
  std::unique_ptr<billing::CreditGuard> guard;
  std::unique_ptr<billing::RateLimiter> limiter;
  std::unique_ptr<billing::GenerationStore> generations;
  std::unique_ptr<billing::ResponseStore> responses;  // blocking: on the `blocking` pool only
  std::unique_ptr<billing::StatsStore> stats;  // blocking: on the `stats_pool` only
  std::unique_ptr<billing::AccountStore> accounts;  // blocking: on the `blocking` pool only
  std::unique_ptr<Metrics> metrics;
  std::unique_ptr<GuardAdmission> admission;
  std::unique_ptr<RecorderSink> usage;
  std::unique_ptr<MetricsObserver> observer;
  asio::thread_pool blocking{2};  // libpq calls off the I/O threads
  // Stored responses apart (a write holds back the end of an answer): as
  // many threads as ResponseStore's connections.
  static constexpr int kResponseStoreConnections = 4;
  asio::thread_pool responses_pool{kResponseStoreConnections};
  // Stats queries apart (a long series must not delay key and generation
  // lookups): 2 threads, as many as StatsStore's connections; at most
  // kMaxStatsRequests running or queued, more are answered 503.
  static constexpr int kMaxStatsRequests = 16;
  asio::thread_pool stats_pool{2};
  std::atomic<int> stats_requests{0};
  asio::thread_pool key_reloads{1};     // reloads for key-cache misses, one at a time
  Clock::time_point last_miss_reload;  // when the last miss reload began; key_reloads' thread only
  std::atomic<bool> stopping{false};

  // Calls in flight: counted until their connection wrote the end, and
  // registered so that a stop can cancel them.
  std::atomic<int> active_calls{0};
  std::mutex calls_mu;
  std::map<uint64_t, std::weak_ptr<CallDriver>> calls;  // guarded by calls_mu
  uint64_t next_call = 0;                                // guarded by calls_mu

  CallDeps Deps(const Runtime& rt) const {
    return CallDeps{rt.router.get(), admission.get(), usage.get(), observer.get()};
  }

  uint64_t Register(const std::shared_ptr<CallDriver>& driver) {
    std::lock_guard lock(calls_mu);
    calls.emplace(++next_call, driver);
    return next_call;
  }
  void Unregister(uint64_t id) {
    std::lock_guard lock(calls_mu);
    calls.erase(id);
  }
  void CancelAll() {
    std::vector<std::shared_ptr<CallDriver>> live;
    {
      std::lock_guard lock(calls_mu);
      for (auto& [id, weak] : calls) {
        if (auto d = weak.lock()) live.push_back(std::move(d));
      }
    }
    for (auto& d : live) d->Shutdown();
  }
};

// 8 random bytes in hex: tells this run of a process from its earlier ones.
std::string BootNonce() {
  std::random_device rd;
  char out[17];
  std::snprintf(out, sizeof out, "%08x%08x", rd(), rd());
  return out;
}

std::string_view Reason(int status) {
  if (status == 499) return "Client Closed Request";
  return http::obsolete_reason(static_cast<http::status>(status));
}

Response MakeResponse(const Request& req, int status, std::string body, std::string_view content_type) {
  Response res{static_cast<http::status>(status), req.version()};
  res.reason(Reason(status));
  res.set(http::field::server, "tollgate");
  res.set(http::field::content_type, content_type);
  res.keep_alive(req.keep_alive());
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

Response JsonResponse(const Request& req, int status, std::string body) {
  return MakeResponse(req, status, std::move(body), "application/json");
}

// The error shape by path: Anthropic's under /v1/messages, OpenRouter's (an
// integer `code`, which @openrouter/sdk requires) under /api/, else OpenAI's.
ErrorFlavor FlavorOf(const Request& req) {
  std::string_view target = req.target();
  return ErrorFlavorForPath(target.substr(0, target.find('?')));
}

Response ErrorResponse(const Request& req, const Error& error) {
  Response res = JsonResponse(req, error.status != 0 ? error.status : HttpStatus(error.code),
                              ErrorBody(error, FlavorOf(req)));
  if (!error.retry_after.empty()) res.set(http::field::retry_after, error.retry_after);
  return res;
}

// The API key from `Authorization: Bearer KEY` (or `x-api-key: KEY`, as
// Anthropic's clients send it), or empty.
std::string_view BearerKey(const Request& req) {
  auto auth = req[http::field::authorization];
  constexpr std::string_view kBearer = "Bearer ";
  if (auth.size() > kBearer.size() && beast::iequals(auth.substr(0, kBearer.size()), kBearer)) {
    return auth.substr(kBearer.size());
  }
  return req["x-api-key"];
}

// `anthropic-beta: a,b` (possibly repeated) -> {"a", "b"}.
std::vector<std::string> AnthropicBetas(const Request& req) {
  std::vector<std::string> out;
  auto [begin, end] = req.equal_range("anthropic-beta");
  for (auto it = begin; it != end; ++it) {
    std::string_view v = it->value();
    while (!v.empty()) {
      const size_t comma = v.find(',');
      const std::string_view item = TrimOws(v.substr(0, comma));
      if (!item.empty()) out.emplace_back(item);
      if (comma == std::string_view::npos) break;
      v.remove_prefix(comma + 1);
    }
  }
  return out;
}

// The connection's side of a call (ClientSink), on the connection's strand:
// encodes what the driver hands over into `out_` and wakes the connection's
// writer. Bounded: above kClientBufferBytes it tells the driver to wait until
// the writer has sent what is buffered.
class ConnectionSink final : public ClientSink {
 public:
  ConnectionSink(asio::any_io_executor strand, ResponseEncoder encoder)
      : wake_(std::move(strand)), encoder_(std::move(encoder)) {}

  void OnCommit(const CommitInfo& info) override {
    committed_ = true;
    info_ = info;
    encoder_.Commit(info);
    Wake();
  }
  void OnEvent(const StreamEvent& event) override {
    if (gone_) return;
    if (encoder_.stream()) {
      out_ += encoder_.Event(event);
      if (!out_.empty()) Wake();
    } else {
      encoder_.Accumulate(event);
    }
  }
  void OnSuccess(const CallSummary& summary) override {
    billed_tokens_ = summary.usage.total_tokens();
    if (!gone_) {
      if (encoder_.stream()) {
        out_ += encoder_.StreamEnd(summary);
      } else {
        body_ = encoder_.WholeBody(summary);
      }
    }
    done_ = true;
    Wake();
  }
  void OnFailure(const Error& error, bool committed) override {
    error_ = error;
    if (!gone_ && committed && encoder_.stream()) out_ += encoder_.StreamError(error);
    done_ = true;
    Wake();
  }
  bool Ready(std::function<void()> resume) override {
    if (gone_ || out_.size() < kClientBufferBytes) return true;
    resume_ = std::move(resume);
    return false;
  }

  // For the connection's writer, on the same strand.
  awaitable<void> Wait() {
    while (!HasWork()) {
      wake_.expires_at(Clock::time_point::max());
      co_await wake_.async_wait(kUseTuple);  // woken by cancel
    }
  }
  std::string TakeOutput() { return std::exchange(out_, std::string()); }
  bool has_output() const { return !out_.empty(); }
  // The writer sent what it took: let a waiting driver go on.
  void Written() {
    if (resume_ && out_.size() < kClientBufferBytes) {
      auto resume = std::exchange(resume_, nullptr);
      resume();
    }
  }
  // The client is gone: drop output, never hold the driver back again.
  void SetGone() {
    gone_ = true;
    out_.clear();
    if (resume_) std::exchange(resume_, nullptr)();
  }

  bool done() const { return done_; }
  bool committed() const { return committed_; }
  // Tokens of a successful call (prompt + completion), or -1.
  int64_t billed_tokens() const { return billed_tokens_; }
  // Streamed: the commit came and the writer has not sent the headers yet.
  bool headers_pending() const { return committed_ && !headers_written_; }
  void HeadersWritten() { headers_written_ = true; }
  const CommitInfo& info() const { return info_; }
  const std::optional<Error>& error() const { return error_; }
  std::string& body() { return body_; }
  const ResponseEncoder& encoder() const { return encoder_; }
  // The Responses answer's response could not be stored: say so in it
  // (MarkNotStored) before it goes out.
  void MarkNotStored() {
    if (encoder_.stream()) {
      out_ = gateway::MarkNotStored(std::move(out_), true);
    } else {
      body_ = gateway::MarkNotStored(std::move(body_), false);
    }
  }

 private:
  // Streamed calls wake the writer for output and for the commit (headers);
  // whole answers only at the end.
  bool HasWork() const { return done_ || (encoder_.stream() && (!out_.empty() || headers_pending())); }
  void Wake() { wake_.cancel(); }

  asio::steady_timer wake_;
  ResponseEncoder encoder_;
  std::string out_;
  std::string body_;
  std::function<void()> resume_;
  std::optional<Error> error_;
  CommitInfo info_;
  int64_t billed_tokens_ = -1;
  bool committed_ = false;
  bool headers_written_ = false;
  bool done_ = false;
  bool gone_ = false;
};

// A request deadline: when `after` passes before Done(), the socket's
// operations are cancelled and fired() says so. Unlike tcp_stream's expiry
// (which closes the socket), the connection can still answer 408.
class ReadDeadline {
 public:
  ReadDeadline(const asio::any_io_executor& strand, tcp::socket& socket, std::chrono::milliseconds after)
      : timer_(strand, after) {
    timer_.async_wait([&socket, state = state_](const beast::error_code& ec) {
      if (ec || !state->armed) return;
      state->fired = true;
      beast::error_code ignored;
      socket.cancel(ignored);
    });
  }
  ~ReadDeadline() { Done(); }
  ReadDeadline(const ReadDeadline&) = delete;
  ReadDeadline& operator=(const ReadDeadline&) = delete;
  void Done() {
    state_->armed = false;
    timer_.cancel();
  }
  bool fired() const { return state_->fired; }

 private:
  struct State {
    bool armed = true;
    bool fired = false;
  };
  std::shared_ptr<State> state_ = std::make_shared<State>();  // outlives this object in the handler
  asio::steady_timer timer_;
};

// One client connection: HTTP/1.1 requests in turn (keep-alive), over plain
// TCP (Stream = beast::tcp_stream) or TLS (beast::ssl_stream<tcp_stream>).
template <class Stream>
class Connection {
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;

 public:
  // `admin_only`: the connection came in on billing.admin_listen, which
  // serves the admin API and nothing else.
  Connection(Services& services, Stream stream, bool admin_only)
      : s_(services), stream_(std::move(stream)), admin_only_(admin_only) {}

  awaitable<void> Run() {
    beast::flat_buffer buffer;
    auto strand = co_await asio::this_coro::executor;
    for (;;) {
      // Idle: wait for the next request's first bytes (server.idle_timeout_ms),
      // holding no Runtime, so an idle connection keeps no replaced config alive.
      if (buffer.size() == 0) {
        Lowest().expires_after(std::chrono::milliseconds(s_.Current()->config.server.idle_timeout_ms));
        auto [ec, n] = co_await stream_.async_read_some(buffer.prepare(kFirstReadBytes), kUseTuple);
        if (ec) break;  // closed, reset or idle too long: nothing to answer
        buffer.commit(n);
      }
      Lowest().expires_never();
      rt_ = s_.Current();
      const ServerConfig& limits = rt_->config.server;
      write_timeout_ = std::chrono::milliseconds(limits.write_timeout_ms);
      // The read buffer is bounded too: Beast holds a chunk-size line (or
      // extension) whole in it, so without a bound one that never ends grows
      // it until a timeout (boostorg/beast#3077). Its overflow is a 400.
      buffer.max_size(static_cast<std::size_t>(std::max<int64_t>(limits.max_header_bytes, kBodyReadReserveBytes)) +
                      kBufferSlackBytes);
      http::request_parser<http::string_body> parser;
      parser.header_limit(static_cast<std::uint32_t>(limits.max_header_bytes));
      parser.body_limit(static_cast<uint64_t>(limits.max_body_bytes));
      beast::error_code ec;
      std::optional<Error> refusal;  // a limit passed: answered, then the connection closes
      std::string_view limit;        // its tollgate_limit_rejections_total label
      {
        ReadDeadline deadline(strand, Lowest().socket(), std::chrono::milliseconds(limits.header_timeout_ms));
        auto [head_ec, head_n] = co_await http::async_read_header(stream_, buffer, parser, kUseTuple);
        deadline.Done();
        ec = head_ec;
        if (deadline.fired()) {
          limit = "header_timeout";
          refusal = LimitError(408, "request_timeout", "request headers were not received within " +
                                                           std::to_string(limits.header_timeout_ms) +
                                                           " ms (server.header_timeout_ms)");
        } else if (ec == http::error::header_limit) {
          limit = "header_bytes";
          refusal = LimitError(431, "request_header_fields_too_large",
                               "request headers are larger than " + std::to_string(limits.max_header_bytes) +
                                   " bytes (server.max_header_bytes)");
        }
      }
      if (!ec && !refusal) {
        const auto& head = parser.get();
        const std::string_view coding = TrimOws(head[http::field::transfer_encoding]);
        if (head.target().size() > static_cast<std::size_t>(limits.max_url_bytes)) {
          limit = "url_bytes";
          refusal = LimitError(414, "uri_too_long",
                               "the request URL is " + std::to_string(head.target().size()) + " bytes; at most " +
                                   std::to_string(limits.max_url_bytes) + " are allowed (server.max_url_bytes)");
        } else if (const auto fields = std::distance(head.begin(), head.end()); fields > limits.max_headers) {
          limit = "headers";
          refusal = LimitError(431, "request_header_fields_too_large",
                               "the request has " + std::to_string(fields) + " header fields; at most " +
                                   std::to_string(limits.max_headers) + " are allowed (server.max_headers)");
        } else if ((!coding.empty() && !beast::iequals(coding, "chunked")) ||
                   head.count(http::field::transfer_encoding) > 1) {
          // RFC 9112 section 6: chunked must be the last coding, and we decode
          // no other; a body framed some other way would be read as the next
          // request (request smuggling), so it is refused and the connection closed.
          limit = "transfer_encoding";
          const bool chunked_inside = coding.find("chunked") != std::string_view::npos ||
                                      coding.find("CHUNKED") != std::string_view::npos;
          refusal = LimitError(chunked_inside ? 400 : 501, "unsupported_transfer_encoding",
                               "Transfer-Encoding must be chunked alone (or absent, with Content-Length)");
        }
      }
      if (!ec && !refusal && !parser.is_done()) {
        // The body in reads as large as it is (up to kBodyReadReserveBytes),
        // not in the buffer's 512 bytes at a time: a coding agent's prompt of
        // 100 KB would otherwise take 200 reads.
        if (auto length = parser.content_length()) {
          buffer.reserve(static_cast<std::size_t>(std::min<uint64_t>(*length, kBodyReadReserveBytes)));
        }
        ReadDeadline deadline(strand, Lowest().socket(), std::chrono::milliseconds(limits.body_timeout_ms));
        auto [body_ec, body_n] = co_await http::async_read(stream_, buffer, parser, kUseTuple);
        deadline.Done();
        ec = body_ec;
        if (deadline.fired()) {
          limit = "body_timeout";
          refusal = LimitError(408, "request_timeout", "the request body was not received within " +
                                                           std::to_string(limits.body_timeout_ms) +
                                                           " ms (server.body_timeout_ms)");
        }
      }
      // From the header's Content-Length, or while reading a chunked body.
      if (!refusal && ec == http::error::body_limit) {
        limit = "body_bytes";
        refusal = Error{ErrorCode::kPayloadTooLarge,
                        "request body is larger than " + std::to_string(limits.max_body_bytes) +
                            " bytes (server.max_body_bytes)",
                        "", "request_too_large"};
      }
      if (!refusal && (ec == http::error::end_of_stream || ec == asio::error::eof ||
                       ec == asio::error::connection_reset || ec == beast::error::timeout ||
                       ec == asio::error::operation_aborted)) {
        break;
      }
      if (refusal || ec) {
        if (!refusal) refusal = InvalidArgument("malformed HTTP request: " + ec.message());
        // In the caller's API shape: the path from the request line, parsed
        // (Beast parses it before the fields) or still raw in the buffer.
        Request head{http::verb::get, "/", 11};
        if (!parser.get().target().empty()) {
          head = Request{parser.get().method(), parser.get().target(), parser.get().version()};
        } else {
          head.target(RawRequestTarget(buffer));
        }
        head.keep_alive(false);
        Response res = ErrorResponse(head, *refusal);
        if (!limit.empty()) s_.metrics->CountLimitRejection(limit);
        if (limit == "body_bytes" && head.method() == http::verb::post && CallApiOf(head.target())) {
          LogRefused(res, *refusal, std::nullopt, "", false, Clock::now());
        }
        // TLS: a read cancelled by a deadline leaves no usable stream.
        if (!kTls || (limit != "header_timeout" && limit != "body_timeout")) co_await Write(res);
        break;
      }
      Request req = parser.release();
      bool keep_alive = co_await Handle(req);
      rt_.reset();
      if (!keep_alive || s_.stopping) break;
      // An idle connection keeps a small buffer, not its largest request's.
      if (buffer.size() == 0 && buffer.capacity() > kIdleBufferBytes) buffer.shrink_to_fit();
    }
    rt_.reset();
    beast::error_code ignored;
    if constexpr (kTls) {
      Lowest().expires_after(std::chrono::seconds(2));
      co_await stream_.async_shutdown(asio::redirect_error(asio::use_awaitable, ignored));
    }
    Lowest().socket().shutdown(tcp::socket::shutdown_send, ignored);
  }

 private:
  static Error LimitError(int status, std::string code_string, std::string message) {
    Error error = InvalidArgument(std::move(message));
    error.code_string = std::move(code_string);
    error.status = status;
    return error;
  }

  // The target of a request line still in `buffer` ("POST /v1/messages
  // HTTP/1.1"), or "/" when there is none to read.
  static std::string RawRequestTarget(const beast::flat_buffer& buffer) {
    std::string_view text(static_cast<const char*>(buffer.data().data()), std::min<std::size_t>(buffer.size(), 8192));
    text = text.substr(0, text.find_first_of("\r\n"));
    const std::size_t start = text.find(' ');
    if (start == std::string_view::npos) return "/";
    text.remove_prefix(start + 1);
    text = text.substr(0, text.find(' '));
    return text.empty() || text.front() != '/' ? "/" : std::string(text);
  }

  beast::tcp_stream& Lowest() { return beast::get_lowest_layer(stream_); }

  // Returns false when the connection must close.
  //
  // GCC 12 destroys some temporaries of a full-expression that contains
  // co_await twice (an aggregate Error{...} argument crashed here), so every
  // co_await in this file takes named variables only.
  awaitable<bool> Write(Response& res) {
    bool keep = res.keep_alive();
    Lowest().expires_after(write_timeout_);
    auto [ec, n] = co_await http::async_write(stream_, res, kUseTuple);
    co_return !ec && keep;
  }

  awaitable<bool> Handle(Request& req) {
    auto url = boost::urls::parse_origin_form(req.target());
    if (!url) {
      Response res = ErrorResponse(req, InvalidArgument("malformed request target"));
      co_return co_await Write(res);
    }
    std::string path = url->path();
    if (path.size() > 1 && path.back() == '/') path.pop_back();
    // OpenRouter's base path /api/v1 and OpenAI's /v1 serve the same routes.
    std::string route = path;
    if (route.rfind("/api/v1/", 0) == 0) route = route.substr(4);
    if (route == "/v1/healthz" || route == "/v1/readyz" || route == "/v1/metrics") route = route.substr(3);
    const bool get = req.method() == http::verb::get;
    const bool post = req.method() == http::verb::post;

    // The admin API: on its own listener when billing.admin_listen is set,
    // else on this one; off (403) without billing.admin_token.
    // The admin API routes the path as received, percent-encoded ("/keys/%31" is not key 1).
    const std::string raw_path(url->encoded_path());
    const bool admin_path = raw_path == "/admin/v1" || raw_path.rfind("/admin/v1/", 0) == 0;
    const bool admin_here = admin_only_ || rt_->config.billing.admin_host.empty();
    if (admin_path && admin_here) {
      Response res = co_await HandleAdminRequest(req, *url, raw_path);
      s_.metrics->CountRequest("/admin/v1", res.result_int());
      co_return co_await Write(res);
    }
    if (admin_only_) {
      Response res = ErrorResponse(req, Error{ErrorCode::kNotFound, "this listener serves only /admin/v1/...", "",
                                              "unknown_url"});
      s_.metrics->CountRequest("unmatched", res.result_int());
      co_return co_await Write(res);
    }

    const std::optional<ApiFlavor> call_api = CallApiOf(route);
    const bool stored_route = route.starts_with("/v1/responses/");  // a stored response (HandleStoredResponse)
    const bool input_items = stored_route && route.ends_with("/input_items");
    if (call_api && post) {
      auto [keep, status] = co_await HandleCall(req, *call_api);
      s_.metrics->CountRequest(route, status);
      co_return keep;
    }
    Response res;
    if (route == "/healthz" && get) {
      res = JsonResponse(req, 200, R"({"status":"ok"})");
    } else if (route == "/readyz" && get) {
      // Draining after SIGTERM: not ready at once, so load balancers stop
      // sending while the calls in flight finish.
      bool ready = !s_.stopping && co_await Ready();
      res = ready           ? JsonResponse(req, 200, R"({"status":"ready"})")
            : s_.stopping ? JsonResponse(req, 503, R"({"status":"draining"})")
                          : JsonResponse(req, 503, R"({"status":"database unreachable"})");
    } else if (route == "/metrics" && get) {
      const billing::UsageRecorder& r = *s_.recorder;
      const billing::CreditGuardCounters g = s_.guard->counters();
      Metrics::BackgroundStats b;
      b.usage_rows_written = r.rows_written();
      b.usage_rows_pending = r.pending();
      b.usage_rows_rejected = r.rows_rejected();
      b.usage_rows_lost = r.rows_lost();
      b.usage_write_failures = r.failures();
      b.keys_loaded = static_cast<int64_t>(s_.keys->size());
      b.key_reload_failures = s_.keys->refresh_failures();
      b.key_notifications = s_.keys->notifications_received();
      b.usage_rows_replayed = r.rows_replayed();
      b.credit_lease_grants = g.lease_grants;
      b.credit_leased_nano_usd = g.granted_nano_usd;
      b.credit_returned_nano_usd = g.returned_nano_usd;
      b.credit_lost_nano_usd = g.lost_nano_usd;
      b.credit_db_errors = g.db_errors;
      b.rate_limit_sync_failures = s_.limiter->sync_failures();
      s_.metrics->SetBackground(b);
      s_.metrics->SetCallsInFlight(s_.active_calls.load());
      const auto now = Clock::now();
      for (const routing::Model& m : rt_->catalog.models()) {
        const auto queued = static_cast<int64_t>(rt_->router->queued(m));
        s_.metrics->SetCallsQueued(m.id, queued);
        for (const routing::Endpoint& e : m.endpoints) {
          const routing::HealthSnapshot h = rt_->router->health(e).Snapshot(now);
          const bool waiting = h.availability != routing::Availability::kAvailable && h.available_at > now;
          s_.metrics->SetEndpoint(m.id, e.id,
                                  {h.in_flight, queued,
                                   h.circuit == routing::CircuitState::kOpen       ? 2
                                   : h.circuit == routing::CircuitState::kHalfOpen ? 1
                                                                                   : 0,
                                   h.availability == routing::Availability::kCoolingDown,
                                   waiting ? std::chrono::duration<double>(h.available_at - now).count() : 0.0});
        }
      }
      for (const auto& [name, engine] : rt_->engines) {
        const local_backend::LocalEngineStats es = engine->Stats();
        s_.metrics->SetLocalEngineInfo(name, engine->DeviceName());
        s_.metrics->SetLocalEngine(name, {es.running, es.queued, es.max_sequences, es.max_queue, es.kv.used_pages,
                                          es.kv.cached_pages, es.kv.total_pages, es.preemptions,
                                          es.kv.prefix_hit_tokens, es.generated_tokens, es.processed_tokens,
                                          es.batch_sequences, es.batch_tokens});
      }
      res = MakeResponse(req, 200, s_.metrics->Serialize(), "text/plain; version=0.0.4");
    } else if (route == "/v1/models" && get) {
      res = JsonResponse(req, 200, RenderModels(rt_->catalog));
    } else if (route == "/v1/providers" && get) {
      res = JsonResponse(req, 200, RenderProviders(rt_->catalog));
    } else if (route == "/v1/messages/count_tokens" && post) {
      res = co_await HandleCountTokens(req);
    } else if (route == "/v1/generation" && get) {
      res = co_await HandleGeneration(req, *url);
    } else if (IsStatsRoute(route) && get) {
      res = co_await HandleStatsRequest(req, *url, route);
    } else if ((route == "/v1/key" || route == "/v1/credits") && get) {
      res = co_await HandleKeyInfo(req, route == "/v1/credits");
    } else if (route.rfind("/v1/models/", 0) == 0 && route.ends_with("/endpoints") && get) {
      // /v1/models/{author}/{slug}/endpoints
      std::string id = route.substr(11, route.size() - 11 - 10);
      const routing::Model* model = rt_->catalog.Find(id);
      route = "/v1/models/{id}/endpoints";
      res = model != nullptr ? JsonResponse(req, 200, RenderModelEndpoints(*model, *rt_->router, Clock::now()))
                             : ErrorResponse(req, Error{ErrorCode::kNotFound, "no model '" + id.substr(0, 200) + "'",
                                                        "", "model_not_found"});
    } else if (stored_route && (get || (req.method() == http::verb::delete_ && !input_items))) {
      // GET|DELETE /v1/responses/{id}, GET /v1/responses/{id}/input_items
      std::string id = route.substr(14);
      if (input_items) id.resize(id.size() - 12);
      route = input_items ? "/v1/responses/{id}/input_items" : "/v1/responses/{id}";
      const StoredOp op = input_items ? StoredOp::kInputItems : get ? StoredOp::kGet : StoredOp::kDelete;
      res = co_await HandleStoredResponse(req, *url, id, op);
    } else if (IsDashboardPath(path) && get) {
      route = "/dashboard";  // one label for all its files
      const DashboardReply d = ServeDashboard(path, req[http::field::if_none_match]);
      res = MakeResponse(req, d.status, std::string(d.body), d.content_type);
      for (const auto& [name, value] : d.headers) res.set(name, value);
    } else if (route == "/healthz" || route == "/readyz" || route == "/metrics" || route == "/v1/models" ||
               route == "/v1/providers" || route == "/v1/key" || route == "/v1/credits" ||
               call_api || route == "/v1/messages/count_tokens" || route == "/v1/generation" ||
               IsStatsRoute(route) || stored_route) {
      Error not_allowed = InvalidArgument("method " + std::string(req.method_string()) + " is not allowed on " + path);
      res = JsonResponse(req, 405, ErrorBody(not_allowed, FlavorOf(req)));
      res.set(http::field::allow, call_api || route == "/v1/messages/count_tokens" ? "POST"
                                  : stored_route && !input_items              ? "GET, DELETE"
                                                                              : "GET");
      if (stored_route) route = input_items ? "/v1/responses/{id}/input_items" : "/v1/responses/{id}";
    } else {
      route = "unmatched";  // a bounded label set: raw paths would grow /metrics without limit
      res = ErrorResponse(req, Error{ErrorCode::kNotFound,
                                     "no route for " + std::string(req.method_string()) + " " + path, "",
                                     "unknown_url"});
    }
    s_.metrics->CountRequest(route, res.result_int());
    co_return co_await Write(res);
  }

  // One admin API request (gateway/src/admin_api.hpp), on the blocking pool.
  awaitable<Response> HandleAdminRequest(const Request& req, boost::urls::url_view url, const std::string& path) {
    AdminRequest admin;
    admin.method = std::string(req.method_string());
    admin.path = path.substr(std::string_view("/admin/v1").size());
    for (const auto& param : url.params()) admin.query[std::string(param.key)] = std::string(param.value);
    admin.body = req.body();
    admin.authorization = std::string(req[http::field::authorization]);
    admin.idempotency_key = std::string(req["idempotency-key"]);
    admin.admin_token = rt_->config.billing.admin_token;
    admin.reload = s_.reload;
    admin.known_providers.emplace();
    for (const auto& p : rt_->config.providers) admin.known_providers->push_back(p.id);
    auto handle = [this, admin = std::move(admin)]() -> awaitable<AdminResponse> {
      co_return HandleAdmin(admin, *s_.accounts);
    };
    AdminResponse answer = co_await asio::co_spawn(s_.blocking, handle, asio::use_awaitable);
    Response res = JsonResponse(req, answer.status, std::move(answer.body));
    for (const auto& [name, value] : answer.headers) res.set(name, value);
    co_return res;
  }

  awaitable<bool> Ready() {
    auto probe = [this]() -> awaitable<bool> {
      // A lookup that finds nothing proves the database answers.
      auto r = s_.generations->Find("gen-readiness-probe", -1);
      co_return static_cast<bool>(r);
    };
    bool ok = co_await asio::co_spawn(s_.blocking, probe, asio::use_awaitable);
    co_return ok;
  }

  // GET /v1/stats/..., /v1/datasets/..., /v1/activity (gateway/src/stats_api.hpp)
  // on the stats pool; the key cache answers who the bearer is first.
  awaitable<Response> HandleStatsRequest(const Request& req, boost::urls::url_view url, const std::string& route) {
    StatsRequest stats;
    stats.route = route;
    for (const auto& param : url.params()) stats.query[std::string(param.key)] = std::string(param.value);
    stats.bearer = std::string(BearerKey(req));
    stats.admin_token = rt_->config.billing.admin_token;
    stats.error_flavor = FlavorOf(req);
    if (!IsAdminToken(req)) {
      std::optional<billing::KeyRecord> key = co_await Authenticate(req);
      if (Usable(key)) {
        stats.key_id = key->id;
        stats.account_id = key->account_id;
      } else {
        stats.auth_error = AuthError(req, key);
      }
    }
    if (s_.stats_requests.fetch_add(1) >= Services::kMaxStatsRequests) {
      --s_.stats_requests;
      co_return ErrorResponse(req, Error{ErrorCode::kUnavailable, "too many statistics queries at once; try again",
                                         "", "stats_busy"});
    }
    auto handle = [this, stats = std::move(stats)]() -> awaitable<StatsResponse> {
      StatsResponse r = HandleStats(stats, s_.stats.get());
      --s_.stats_requests;
      co_return r;
    };
    StatsResponse answer = co_await asio::co_spawn(s_.stats_pool, handle, asio::use_awaitable);
    co_return MakeResponse(req, answer.status, std::move(answer.body), answer.content_type);
  }

  // The bearer is billing.admin_token (constant-time compare).
  bool IsAdminToken(const Request& req) const {
    const std::string& token = rt_->config.billing.admin_token;
    return !token.empty() && billing::SecretEquals(BearerKey(req), token);
  }

  awaitable<Response> HandleGeneration(const Request& req, boost::urls::url_view url) {
    // The admin token reads any call's record; a key only its own.
    const bool admin = IsAdminToken(req);
    std::optional<billing::KeyRecord> key;
    if (!admin) key = co_await Authenticate(req);
    if (!admin && !Usable(key)) co_return ErrorResponse(req, AuthError(req, key));
    auto it = url.params().find("id");
    if (it == url.params().end() || (*it).value.empty()) {
      co_return ErrorResponse(req, InvalidArgument("query parameter id is required", "id"));
    }
    std::string id = (*it).value;
    std::optional<billing::UsageEvent> event = s_.recorder->FindPending(id);
    if (event && !admin && event->api_key_id != key->id) event.reset();
    if (!event) {
      const std::optional<int64_t> key_id = admin ? std::nullopt : std::optional<int64_t>(key->id);
      auto lookup = [this, id, key_id]() -> awaitable<Result<std::optional<billing::UsageEvent>>> {
        co_return s_.generations->Find(id, key_id);
      };
      Result<std::optional<billing::UsageEvent>> found =
          co_await asio::co_spawn(s_.blocking, lookup, asio::use_awaitable);
      if (!found) {
        co_return ErrorResponse(req, Error{ErrorCode::kUnavailable, "the usage database is unavailable; try again",
                                           "", {}});
      }
      event = std::move(*found);
    }
    if (!event) {
      co_return ErrorResponse(req, Error{ErrorCode::kNotFound, "generation " + id + " not found", "id",
                                         "generation_not_found"});
    }
    co_return JsonResponse(req, 200, RenderGeneration(*event));
  }

  enum class StoredOp { kGet, kDelete, kInputItems };

  // An id NewResponseId could have made ("resp_" + base62, at most 64
  // characters in all). No other id is ever stored, so any other is
  // answered 404 without a query (nor reaches libpq: no NUL, no bad UTF-8).
  static bool IsResponseId(std::string_view id) {
    if (!id.starts_with("resp_") || id.size() <= 5 || id.size() > 64) return false;
    return std::all_of(id.begin() + 5, id.end(), [](char c) {
      return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    });
  }

  // What the store says when it cannot answer: the details go to the log,
  // never to the caller (they may name the database host).
  static Error StoreUnavailable(const Error& error) {
    std::cerr << "tollgate: stored responses: " << error.message << std::endl;
    return Error{ErrorCode::kUnavailable, "stored responses are unavailable; try again", "", {}};
  }

  // A stored response of key `key_id` with its context parsed, read on the
  // responses pool; nullopt when unknown, another key's or expired.
  struct LoadedResponse {
    billing::StoredResponse row;
    boost::json::array context;
  };
  awaitable<Result<std::optional<LoadedResponse>>> FindStoredResponse(std::string id, int64_t key_id) {
    if (!IsResponseId(id)) co_return std::optional<LoadedResponse>();
    auto lookup = [this, id, key_id]() -> awaitable<Result<std::optional<LoadedResponse>>> {
      Result<std::optional<billing::StoredResponse>> found =
          s_.responses->Get(id, key_id, std::chrono::system_clock::now());
      if (!found) co_return StoreUnavailable(found.error());
      if (!*found) co_return std::optional<LoadedResponse>();
      std::optional<boost::json::value> context = wire::ParseJson((*found)->context);
      if (!context || !context->is_array()) {
        co_return Error{ErrorCode::kInternal, "the stored response " + id + " is unreadable", "", {}};
      }
      co_return LoadedResponse{std::move(**found), std::move(context->as_array())};
    };
    Result<std::optional<LoadedResponse>> loaded =
        co_await asio::co_spawn(s_.responses_pool, lookup, asio::use_awaitable);
    co_return loaded;
  }

  // A stored response of the calling key (wire/responses.hpp; OpenAI's
  // "Get a model response", "Delete a model response", "List input items"):
  // kGet: the response object as it was sent; kDelete: {"id", "object":
  // "response", "deleted": true}; kInputItems: the items of its context
  // before its output (previous conversation and input), newest first
  // unless order=asc, `limit` 1..100 (20), `after` an item id. Unknown,
  // another key's or expired: 404.
  awaitable<Response> HandleStoredResponse(const Request& req, boost::urls::url_view url, std::string id, StoredOp op) {
    std::optional<billing::KeyRecord> key = co_await Authenticate(req);
    if (!Usable(key)) co_return ErrorResponse(req, AuthError(req, key));
    const int64_t key_id = key->id;
    const Error not_found{ErrorCode::kNotFound, "Response with id '" + id.substr(0, 200) + "' not found.", "",
                          "response_not_found"};
    if (op == StoredOp::kDelete) {
      if (!IsResponseId(id)) co_return ErrorResponse(req, not_found);
      auto remove = [this, id, key_id]() -> awaitable<Result<bool>> {
        Result<bool> deleted = s_.responses->Delete(id, key_id, std::chrono::system_clock::now());
        if (!deleted) co_return StoreUnavailable(deleted.error());
        co_return deleted;
      };
      Result<bool> deleted = co_await asio::co_spawn(s_.responses_pool, remove, asio::use_awaitable);
      if (!deleted) co_return ErrorResponse(req, deleted.error());
      if (!*deleted) co_return ErrorResponse(req, not_found);
      co_return JsonResponse(
          req, 200, boost::json::serialize(boost::json::object{{"id", id}, {"object", "response"}, {"deleted", true}}));
    }
    Result<std::optional<LoadedResponse>> found = co_await FindStoredResponse(id, key_id);
    if (!found) co_return ErrorResponse(req, found.error());
    if (!*found) co_return ErrorResponse(req, not_found);
    if (op == StoredOp::kGet) co_return JsonResponse(req, 200, std::move((*found)->row.response));
    // input_items: the context without the response's own output items.
    std::optional<boost::json::value> response = wire::ParseJson((*found)->row.response);
    if (!response || !response->is_object()) {
      co_return ErrorResponse(req, Error{ErrorCode::kInternal, "the stored response is unreadable", "", {}});
    }
    boost::json::array items = std::move((*found)->context);
    const boost::json::value* output = response->as_object().if_contains("output");
    const std::size_t outputs = output != nullptr && output->is_array() ? output->as_array().size() : 0;
    items.resize(items.size() >= outputs ? items.size() - outputs : 0);
    bool ascending = false;
    std::size_t limit = 20;
    std::string after;
    for (const auto& param : url.params()) {
      if (param.key == "order") {
        if (param.value != "asc" && param.value != "desc") {
          co_return ErrorResponse(req, InvalidArgument("order must be 'asc' or 'desc'", "order"));
        }
        ascending = param.value == "asc";
      } else if (param.key == "limit") {
        const std::string& v = param.value;
        if (v.empty() || v.size() > 3 || v.find_first_not_of("0123456789") != std::string::npos ||
            std::stoi(v) < 1 || std::stoi(v) > 100) {
          co_return ErrorResponse(req, InvalidArgument("limit must be an integer from 1 to 100", "limit"));
        }
        limit = static_cast<std::size_t>(std::stoi(v));
      } else if (param.key == "after") {
        after = param.value;
      }
    }
    if (!ascending) std::reverse(items.begin(), items.end());
    std::size_t start = 0;
    if (!after.empty()) {
      while (start < items.size()) {
        const auto* item_id = items[start].is_object() ? items[start].as_object().if_contains("id") : nullptr;
        ++start;
        if (item_id != nullptr && item_id->is_string() && item_id->as_string() == after) break;
      }
    }
    boost::json::array data;
    for (std::size_t i = start; i < items.size() && data.size() < limit; ++i) data.push_back(items[i]);
    auto item_id = [](const boost::json::value& item) -> boost::json::value {
      const auto* v = item.is_object() ? item.as_object().if_contains("id") : nullptr;
      return v != nullptr ? *v : boost::json::value(nullptr);
    };
    boost::json::object list{{"object", "list"},
                             {"first_id", data.empty() ? boost::json::value(nullptr) : item_id(data.front())},
                             {"last_id", data.empty() ? boost::json::value(nullptr) : item_id(data.back())},
                             {"has_more", start + data.size() < items.size()}};
    list["data"] = std::move(data);
    co_return JsonResponse(req, 200, boost::json::serialize(list));
  }

  // POST /v1/messages/count_tokens: the prompt's tokens at the model's first
  // endpoint, exact where the provider can count (the local engine's
  // tokenizer), else estimated like an unreported usage (call_driver.hpp).
  awaitable<Response> HandleCountTokens(const Request& req) {
    std::optional<billing::KeyRecord> key = co_await Authenticate(req);
    if (!Usable(key)) co_return ErrorResponse(req, AuthError(req, key));
    Result<ChatRequest> parsed =
        DecodeWithinLimits(ApiFlavor::kAnthropicMessages, req.body(), wire::anthropic::DecodeCountTokensRequest);
    if (!parsed) co_return ErrorResponse(req, parsed.error());
    const routing::Model* model = rt_->catalog.Find(routing::SplitVariant(parsed->model).first);
    if (model == nullptr) {
      co_return ErrorResponse(req, Error{ErrorCode::kNotFound,
                                         "The model '" + parsed->model.substr(0, 200) +
                                             "' does not exist; GET /v1/models lists the models",
                                         "model", "model_not_found"});
    }
    std::optional<int64_t> counted = model->endpoints.front().provider->CountPromptTokens(*parsed);
    const int64_t tokens = counted ? *counted : EstimateUsage(*parsed, ChatResponse{}).prompt_tokens;
    co_return JsonResponse(req, 200, wire::anthropic::EncodeCountTokensResponse(tokens));
  }

  // Looks the key up in the in-memory cache. On a miss of a well-formed key,
  // waits for a reload of the key table that began after the miss, then looks
  // again: a key created a moment ago works at once. Reloads for misses run
  // on their own thread, one at a time and at most every kMissReloadInterval;
  // misses share them (KeyCache::RefreshIfLoadedBefore), so a stream of
  // unknown keys costs at most that many reloads, and nothing else waits.
  awaitable<std::optional<billing::KeyRecord>> Authenticate(const Request& req) {
    const auto missed_at = Clock::now();
    std::string_view presented = BearerKey(req);
    std::optional<billing::KeyRecord> key = s_.keys->Lookup(presented);
    if (key || !billing::LooksLikeApiKey(presented)) co_return key;
    auto reload = [this, missed_at]() -> awaitable<void> {
      // This thread runs one job at a time: a reload it began after the miss has finished.
      if (missed_at <= s_.last_miss_reload) co_return;
      std::this_thread::sleep_until(s_.last_miss_reload + kMissReloadInterval);
      s_.last_miss_reload = Clock::now();
      (void)s_.keys->RefreshIfLoadedBefore(missed_at);  // a no-op when a periodic reload began after the miss
      co_return;
    };
    co_await asio::co_spawn(s_.key_reloads, reload, asio::use_awaitable);
    co_return s_.keys->Lookup(presented);
  }

  static bool Usable(const std::optional<billing::KeyRecord>& key) {
    return key && billing::KeyUsable(*key, std::chrono::system_clock::now());
  }

  // Why `key` (Authenticate's answer) may not be used. Says only what the
  // holder of the key may know: missing, unknown, revoked, expired, or its
  // account disabled.
  static Error AuthError(const Request& req, const std::optional<billing::KeyRecord>& key) {
    if (BearerKey(req).empty()) {
      return Error{ErrorCode::kUnauthenticated,
                   "missing API key: send it as 'Authorization: Bearer tg-...' (or 'x-api-key')", "",
                   "missing_api_key"};
    }
    if (key && key->revoked) return Error{ErrorCode::kUnauthenticated, "this API key was revoked", "", "revoked_api_key"};
    if (key && key->account.disabled) {
      return Error{ErrorCode::kUnauthenticated, "this API key's account is disabled", "", "account_disabled"};
    }
    if (key && key->expires_at && *key->expires_at <= std::chrono::system_clock::now()) {
      return Error{ErrorCode::kUnauthenticated, "this API key expired", "", "expired_api_key"};
    }
    return Error{ErrorCode::kUnauthenticated, "invalid API key", "", "invalid_api_key"};
  }

  // GET /api/v1/key and /api/v1/credits (OpenRouter's shapes) for the calling
  // key: one query on the blocking pool.
  awaitable<Response> HandleKeyInfo(const Request& req, bool credits) {
    std::optional<billing::KeyRecord> key = co_await Authenticate(req);
    if (!Usable(key)) co_return ErrorResponse(req, AuthError(req, key));
    const int64_t key_id = key->id;
    auto lookup = [this, key_id]() -> awaitable<Result<billing::KeyUsage>> {
      co_return s_.accounts->GetKeyUsage(key_id);
    };
    Result<billing::KeyUsage> usage = co_await asio::co_spawn(s_.blocking, lookup, asio::use_awaitable);
    if (!usage) {
      Error unavailable{ErrorCode::kUnavailable, "the billing database is unavailable; try again", "", {}};
      co_return ErrorResponse(req, unavailable);
    }
    co_return JsonResponse(req, 200, credits ? RenderCredits(*usage) : RenderKey(*usage, *key));
  }

  // The call API of a route ("/v1/chat/completions"; a request target is
  // normalized as Handle() does: query, trailing '/' and "/api" dropped).
  static std::optional<ApiFlavor> CallApiOf(std::string_view target) {
    target = target.substr(0, target.find('?'));
    if (target.size() > 1 && target.back() == '/') target.remove_suffix(1);
    if (target.starts_with("/api/v1/")) target.remove_prefix(4);
    if (target == "/v1/chat/completions") return ApiFlavor::kOpenAiChat;
    if (target == "/v1/completions") return ApiFlavor::kOpenAiCompletions;
    if (target == "/v1/messages") return ApiFlavor::kAnthropicMessages;
    if (target == "/v1/responses") return ApiFlavor::kOpenAiResponses;
    return std::nullopt;
  }

  // A call route's request refused before the call driver: a request id
  // made as the driver's are (NewRequestId), sent as x-request-id for the
  // caller to quote, and its access-log line (RefusedCallLine). `key`: the
  // key that authenticated, or none; `model`: the model named (raw input,
  // logged as its catalog id or "other").
  void LogRefused(Response& res, const Error& error, const std::optional<billing::KeyRecord>& key,
                  std::string_view model, bool stream, Clock::time_point received) {
    const auto now = std::chrono::system_clock::now();
    const std::string request_id =
        NewRequestId(std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count());
    res.set("x-request-id", request_id);
    if (!rt_->config.log.access) return;
    const std::string label = s_.metrics->ModelLabel(model);
    WriteLogLine(RefusedCallLine(RefusedCall{
        request_id, key ? key->id : 0, key ? key->account_id : 0, label, "", &error,
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - received).count(), stream}));
  }

  // The canonical request of a call body; a Responses API body also fills
  // `responses` (what the canonical request does not carry: store,
  // previous_response_id, the fields its answer echoes).
  static Result<ChatRequest> Decode(ApiFlavor api, std::string_view body,
                                    std::optional<wire::responses::Request>& responses) {
    switch (api) {
      case ApiFlavor::kOpenAiChat: return wire::openai::DecodeChatRequest(body);
      case ApiFlavor::kOpenAiCompletions: return wire::openai::DecodeCompletionRequest(body);
      case ApiFlavor::kAnthropicMessages: return wire::anthropic::DecodeMessagesRequest(body);
      case ApiFlavor::kOpenAiResponses: {
        Result<wire::responses::Request> decoded = wire::responses::DecodeRequest(body);
        if (!decoded) return decoded.error();
        responses = std::move(*decoded);
        // The canonical request moves out; PrependContext rebuilds only
        // responses->chat.messages from the rest.
        ChatRequest chat = std::move(responses->chat);
        return chat;
      }
    }
    return InvalidArgument("unknown API");
  }

  // `decode(body)` within the server's limits on JSON nesting (checked
  // first, so the message names the depth) and on the numbers of messages,
  // tools and content parts: a 400 that names the limit, counted.
  template <class Decoder>
  Result<ChatRequest> DecodeWithinLimits(ApiFlavor api, std::string_view body, Decoder&& decode) {
    const ServerConfig& limits = rt_->config.server;
    if (const int depth = wire::JsonNestingDepth(body); depth > limits.max_json_depth) {
      s_.metrics->CountLimitRejection("json_depth");
      return InvalidArgument("the JSON body nests " + std::to_string(depth) + " levels deep; at most " +
                             std::to_string(limits.max_json_depth) + " are allowed (server.max_json_depth)");
    }
    Result<ChatRequest> decoded = decode(body);
    if (!decoded) return decoded;
    const CallLimits call_limits{limits.max_messages, limits.max_tools, limits.max_content_parts};
    if (std::optional<CallLimitPassed> over = CheckCallLimits(*decoded, api, call_limits)) {
      s_.metrics->CountLimitRejection(over->limit);
      return std::move(over->error);
    }
    return decoded;
  }

  // previous_response_id: the stored conversation of key `key_id` goes
  // before `responses`' input (its context items, after the new
  // instructions); `prior` gets those items and `prior_bytes` their stored
  // size. Errors: 404 for an id that is unknown, another key's or expired;
  // 503 when the store is unreachable; 400 when the conversation is not
  // valid (PrependContext).
  awaitable<std::optional<Error>> LoadPreviousResponse(wire::responses::Request& responses, int64_t key_id,
                                                       boost::json::array& prior, std::size_t& prior_bytes) {
    const std::string id = responses.previous_response_id;
    Result<std::optional<LoadedResponse>> found = co_await FindStoredResponse(id, key_id);
    if (!found) co_return found.error();
    if (!*found) {
      co_return Error{ErrorCode::kNotFound, "Previous response with id '" + id.substr(0, 200) + "' not found.",
                      "previous_response_id", "previous_response_not_found"};
    }
    prior_bytes = (*found)->row.context.size();
    prior = std::move((*found)->context);
    co_return wire::responses::PrependContext(responses, prior);
  }

  // Keeps a finished Responses API call (`store: true`) for
  // previous_response_id and GET /v1/responses/{id}: its answer as sent, and
  // its context (the prior context, this input, the output with encrypted
  // reasoning; `prior` and `responses.input` are moved from). Runs before the
  // answer's last bytes go out, so a caller that continues at once finds it.
  // Returns whether it was stored; a failure is logged, and the answer still
  // goes (saying store: false).
  awaitable<bool> StoreResponse(const ConnectionSink& sink, wire::responses::Request& responses,
                                boost::json::array& prior, const billing::KeyRecord& key, const std::string& model,
                                const std::string& request_id, std::chrono::system_clock::time_point created_at) {
    const wire::responses::BuiltResponse* built = sink.encoder().responses_result();
    if (built == nullptr) co_return false;
    billing::StoredResponse row;
    if (const auto* id = built->client.if_contains("id"); id != nullptr && id->is_string()) row.id = id->as_string();
    row.request_id = request_id;
    row.api_key_id = key.id;
    row.account_id = key.account_id;
    row.model = model;
    row.created_at = created_at;
    row.expires_at = created_at + std::chrono::days(rt_->config.responses.ttl_days);
    boost::json::array context = std::move(prior);
    for (auto& item : responses.input) context.push_back(std::move(item));
    for (const auto& item : built->stored_output) context.push_back(item);
    // Serialized on the pool: a long conversation is megabytes of JSON.
    auto put = [this, row = std::move(row), context = std::move(context),
                client = built->client]() mutable -> awaitable<Result<void>> {
      row.response = boost::json::serialize(client);
      row.context = boost::json::serialize(context);
      co_return s_.responses->Put(row);
    };
    Result<void> stored = co_await asio::co_spawn(s_.responses_pool, std::move(put), asio::use_awaitable);
    if (!stored) std::cerr << "tollgate: response not stored: " << stored.error().message << std::endl;
    co_return stored.has_value();
  }

  // One model call in the caller's API: authenticate and decode here, then
  // the call driver (admission, plan, attempts, metering) while this
  // coroutine writes what the ConnectionSink encodes. Returns {keep-alive,
  // HTTP status for metrics}.
  awaitable<std::pair<bool, int>> HandleCall(const Request& req, ApiFlavor api) {
    const auto received = Clock::now();
    const auto created_at = std::chrono::system_clock::now();

    // Rejections before the driver: nothing is recorded or billed.
    std::optional<billing::KeyRecord> key = co_await Authenticate(req);
    // The decoded request, the Responses API request and the call's spec
    // (about 3.5 KiB together) live on the heap and go once the driver has
    // its copy: GCC keeps every local of a coroutine in its frame for the
    // coroutine's whole life, and this one lives as long as its stream.
    auto responses_holder = std::make_unique<std::optional<wire::responses::Request>>();
    std::optional<wire::responses::Request>& responses = *responses_holder;
    auto parsed_holder = std::make_unique<Result<ChatRequest>>(DecodeWithinLimits(
        api, req.body(), [&](std::string_view body) { return Decode(api, body, responses); }));
    Result<ChatRequest>& parsed = *parsed_holder;
    std::optional<Error> rejection;
    boost::json::array prior_context;  // previous_response_id's stored conversation
    std::size_t prior_bytes = 0;       // its serialized size
    if (!Usable(key)) {
      rejection = AuthError(req, key);
    } else if (!parsed) {
      rejection = parsed.error();
    } else if (s_.stopping) {
      rejection = Error{ErrorCode::kUnavailable, "the server is shutting down; retry the request", "", "shutting_down"};
      rejection->retry_after = "1";
    } else if (responses && !responses->previous_response_id.empty()) {
      rejection = co_await LoadPreviousResponse(*responses, key->id, prior_context, prior_bytes);
      if (!rejection) parsed->messages = std::move(responses->chat.messages);
    }
    if (!rejection && responses && responses->store && prior_bytes + req.body().size() > billing::kMaxStoredJsonBytes) {
      // Refused before it costs anything, rather than answered and then lost
      // (the body bounds the new input from above).
      rejection = InvalidArgument("the conversation is over the " + std::to_string(billing::kMaxStoredJsonBytes >> 20) +
                                      " MiB a stored response keeps; send it with store: false",
                                  "input");
    }
    if (rejection) {
      const std::string_view model = parsed ? routing::SplitVariant(parsed->model).first : std::string_view();
      s_.metrics->CountUnmeteredCall(model, HttpStatus(rejection->code));
      Response res = ErrorResponse(req, *rejection);
      if (s_.stopping) res.keep_alive(false);
      LogRefused(res, *rejection, Usable(key) ? key : std::optional<billing::KeyRecord>(), model, parsed && parsed->stream, received);
      bool keep = co_await Write(res);
      co_return std::pair{keep, HttpStatus(rejection->code)};
    }
    ChatRequest& chat = *parsed;
    if (api == ApiFlavor::kAnthropicMessages) chat.anthropic_beta = AnthropicBetas(req);
    if (chat.session_id.empty()) chat.session_id = std::string(req["x-session-id"]).substr(0, 256);

    // Rate limits (requests and tokens per minute, concurrent calls; shared
    // across replicas, billing/rate_limiter.hpp). Tokens are counted as
    // OpenAI counts them at admission: the prompt's estimate plus max_tokens,
    // corrected to what the call used when it ends.
    const int64_t prompt_estimate = EstimateUsage(chat, ChatResponse{}).prompt_tokens;
    const int64_t estimated_tokens = prompt_estimate + chat.max_tokens.value_or(0);
    const billing::RateDecision rate = s_.limiter->Acquire(*key, estimated_tokens, created_at);
    std::vector<std::pair<std::string, std::string>> rate_headers = billing::RateLimitHeaders(rate);
    if (!rate.allowed) {
      s_.metrics->CountRefusal(rate.refused_by == billing::RateLimitKind::kRequests ? "rate_limited:requests"
                               : rate.refused_by == billing::RateLimitKind::kTokens ? "rate_limited:tokens"
                                                                                     : "rate_limited:concurrency");
      s_.metrics->CountUnmeteredCall(routing::SplitVariant(chat.model).first, 429);
      Error limited{ErrorCode::kResourceExhausted, rate.message, "", "rate_limit_exceeded"};
      Response res = ErrorResponse(req, limited);
      for (const auto& [name, value] : rate_headers) res.set(name, value);
      LogRefused(res, limited, key, routing::SplitVariant(chat.model).first, chat.stream, received);
      bool keep = co_await Write(res);
      co_return std::pair{keep, 429};
    }

    s_.active_calls++;
    std::shared_ptr<ConnectionSink> sink;
    // Ends the rate-limit admission once, however this coroutine ends: the
    // tokens billed (estimated for a call that failed after its commit,
    // none for one that failed before).
    struct Guard {
      Services& s;
      const billing::RateDecision& rate;
      const std::shared_ptr<ConnectionSink>& sink;
      int64_t estimated;
      ~Guard() {
        s.active_calls--;
        int64_t used = 0;
        if (sink && sink->billed_tokens() >= 0) {
          used = sink->billed_tokens();
        } else if (sink && sink->committed()) {
          used = estimated;
        }
        s.limiter->Release(rate, used, std::chrono::system_clock::now());
      }
    } guard{s_, rate, sink, estimated_tokens};

    const int64_t created = std::chrono::duration_cast<std::chrono::seconds>(created_at.time_since_epoch()).count();
    const std::string request_id = NewRequestId(created);
    // A Responses API answer has its own id ("resp_..."), kept with the request id when stored.
    wire::ResponseMeta meta{responses ? wire::responses::NewResponseId() : request_id, created, chat.model, ""};
    const bool stream = chat.stream;
    const bool http10 = req.version() < 11;
    auto strand = co_await asio::this_coro::executor;
    std::optional<wire::responses::ResponseOptions> responses_options;
    if (responses) {
      responses_options = wire::responses::ResponseOptions{responses->echo, responses->include_encrypted_reasoning,
                                                           true, responses->dropped_tools,
                                                           !responses->reasoning_summary.empty()};
    }
    sink = std::make_shared<ConnectionSink>(
        strand, ResponseEncoder(chat, meta, FlavorOf(req), prompt_estimate, std::move(responses_options)));
    // store: true keeps the answer; it is written before its last bytes go out.
    bool store_pending = responses && responses->store;

    auto spec_holder = std::make_unique<CallSpec>();
    CallSpec& spec = *spec_holder;
    spec.request = std::move(chat);
    spec.key = *key;
    spec.request_id = request_id;
    spec.received = received;
    spec.created_at = created_at;
    spec.deadline = received + std::chrono::milliseconds(rt_->config.server.request_timeout_ms);
    spec.session = routing::SessionKey(spec.request, spec.key.id);
    spec.seed = CallSeed();
    // OpenRouter app attribution (app_attribution.hpp).
    const std::string_view title = req.count("x-title") ? req["x-title"] : req["x-openrouter-title"];
    AppAttribution app = AppFromHeaders(req["http-referer"], title);
    spec.app = std::move(app.app);
    spec.app_title = std::move(app.app_title);
    uint64_t registration = 0;
    Services* services = &s_;
    // The driver's router and providers are the runtime's: it stays alive
    // until the driver is done (its on_done), past a reload.
    auto driver = CallDriver::Create(s_.Deps(*rt_), std::make_shared<StrandExecutor>(strand), std::move(spec), sink,
                                     [services, &registration, runtime = rt_] {
                                       services->Unregister(registration);
                                     });
    // Not used past here (`chat`, `parsed` and `spec` refer into these).
    spec_holder.reset();
    parsed_holder.reset();
    if (!store_pending) responses_holder.reset();  // only StoreResponse reads it below
    registration = s_.Register(driver);
    driver->Start();

    // A client that leaves is noticed by watching its socket for EOF: a
    // non-streamed call writes nothing until it ends, and a stream nothing
    // before its first event (a failed write notices it after that).
    asio::co_spawn(strand, WatchForClose(Lowest().socket(), driver), asio::detached);

    bool client_gone = false;
    bool cancelled = false;
    bool headers_sent = false;
    int status = 200;
    bool keep = req.keep_alive();
    for (;;) {
      co_await sink->Wait();
      if (store_pending && sink->done() && !sink->error() && !client_gone) {
        store_pending = false;
        bool stored =
            co_await StoreResponse(*sink, **responses_holder, prior_context, *key, meta.model, request_id, created_at);
        if (!stored) sink->MarkNotStored();
      }
      if (!sink->committed()) {
        // Failed before anything was committed: answer with the error status.
        const Error error = sink->error().value_or(Error{ErrorCode::kInternal, "call ended without an outcome"});
        status = HttpStatus(error.code);
        if (error.code == ErrorCode::kCancelled) {
          keep = false;  // the client is gone: nobody to answer
          break;
        }
        Response res = ErrorResponse(req, InCallersTerms(api, error));
        res.set("x-request-id", request_id);
        for (const auto& [name, value] : rate_headers) res.set(name, value);
        keep = co_await Write(res);
        break;
      }
      if (!stream) {
        if (!sink->done()) continue;
        if (sink->error()) {
          status = sink->error()->code == ErrorCode::kCancelled ? 499 : HttpStatus(sink->error()->code);
          if (sink->error()->code == ErrorCode::kCancelled) {
            keep = false;
            break;
          }
          Response res = ErrorResponse(req, InCallersTerms(api, *sink->error()));
          res.set("x-request-id", request_id);
          for (const auto& [name, value] : rate_headers) res.set(name, value);
          keep = co_await Write(res);
          break;
        }
        Response res = JsonResponse(req, 200, std::move(sink->body()));
        SetCallHeaders(res, request_id, sink->info(), rate_headers);
        keep = co_await Write(res);
        break;
      }
      // Streamed: the 200 and SSE headers go out at the commit.
      if (sink->headers_pending()) sink->HeadersWritten();
      if (!headers_sent && !client_gone) {
        http::response<http::empty_body> head{http::status::ok, req.version()};
        head.set(http::field::server, "tollgate");
        head.set(http::field::content_type, "text/event-stream");
        head.set(http::field::cache_control, "no-cache");
        SetCallHeaders(head, request_id, sink->info(), rate_headers);
        // HTTP/1.0 has no chunked encoding: the body then ends when the
        // connection closes (RFC 9112 section 6.3).
        head.keep_alive(req.keep_alive() && !http10);
        head.chunked(!http10);
        http::response_serializer<http::empty_body> serializer{head};
        Lowest().expires_after(write_timeout_);
        auto [ec, n] = co_await http::async_write_header(stream_, serializer, kUseTuple);
        headers_sent = true;
        if (ec) client_gone = true;
      }
      std::string out = sink->TakeOutput();
      if (!out.empty() && !client_gone) {
        Lowest().expires_after(write_timeout_);
        beast::error_code ec;
        if (http10) {
          auto [wec, n] = co_await asio::async_write(stream_, asio::buffer(out), kUseTuple);
          ec = wec;
        } else {
          auto chunk = http::make_chunk(asio::buffer(out));
          auto [wec, n] = co_await asio::async_write(stream_, chunk, kUseTuple);
          ec = wec;
        }
        if (ec) client_gone = true;
      }
      if (client_gone && !cancelled) {
        cancelled = true;
        sink->SetGone();
        driver->Cancel();
      }
      sink->Written();
      // The call may have ended while the write was in flight, adding its
      // last events: write those first, so a stream always ends whole.
      if (sink->has_output() && !client_gone) continue;
      if (sink->done() && !client_gone) {
        if (!http10) {
          Lowest().expires_after(write_timeout_);
          auto last = http::make_chunk_last();
          auto [ec, n] = co_await asio::async_write(stream_, last, kUseTuple);
          if (ec) client_gone = true;
        }
        if (sink->error()) status = HttpStatus(sink->error()->code);  // the client already has its 200
        break;
      }
      if (sink->done()) break;
    }
    if (stream) {
      keep = keep && !client_gone && !http10;
      if (client_gone) status = 499;
    }
    {
      beast::error_code ignored;
      Lowest().socket().cancel(ignored);  // ends WatchForClose
    }
    // Keep the driver alive until it finished (its on_done unregisters it).
    while (!sink->done()) co_await sink->Wait();
    co_return std::pair{keep, status};
  }

  template <class Message>
  static void SetCallHeaders(Message& res, const std::string& request_id, const CommitInfo& info,
                             const std::vector<std::pair<std::string, std::string>>& rate_headers) {
    res.set("x-request-id", request_id);
    for (const auto& [name, value] : rate_headers) res.set(name, value);
    // A soft limit passed: the call ran, and the next ones may soon be refused.
    if (!info.soft_limit.empty()) res.set("x-tollgate-soft-limit", info.soft_limit);
    // Parameters the serving endpoint does not support were dropped
    // (core/parameters.hpp); say which, in OpenRouter's parameter names.
    if (!info.dropped.empty()) res.set("x-tollgate-unsupported-parameters", info.dropped.Names());
    res.set("x-tollgate-endpoint", info.endpoint_id);
  }

  // Completes when the client closes its connection during a non-streamed
  // call (EOF on the socket), and then cancels the call; returns quietly when
  // the socket is cancelled after the call, or when the client sent more data
  // (a pipelined request: it is still there).
  static awaitable<void> WatchForClose(tcp::socket& socket, std::shared_ptr<CallDriver> driver) {
    for (;;) {
      auto [ec] = co_await socket.async_wait(tcp::socket::wait_read, kUseTuple);
      if (ec) co_return;
      // Never a blocking read here: a readiness report can be stale, and a
      // blocking peek would then hold this I/O thread until the client speaks.
      char byte;
      ssize_t n = ::recv(socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n > 0) co_return;  // a pipelined request: the client is still there
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
      driver->Cancel();  // EOF or a socket error: the client is gone
      co_return;
    }
  }

  Services& s_;
  Stream stream_;
  const bool admin_only_;
  // The Runtime of the request being handled (none while idle), and its
  // server.write_timeout_ms.
  std::shared_ptr<const Runtime> rt_;
  std::chrono::milliseconds write_timeout_{60'000};
};

// One open client connection, counted for server.max_connections and
// server.max_connections_per_client while it lives.
class ConnectionSlot {
 public:
  ConnectionSlot(Services& services, std::string client) : s_(&services), client_(std::move(client)) {
    s_->connections++;
    s_->metrics->AddOpenConnections(1);
    std::lock_guard lock(s_->clients_mu);
    ++s_->per_client[client_];
  }
  ConnectionSlot(ConnectionSlot&& other) noexcept
      : s_(std::exchange(other.s_, nullptr)), client_(std::move(other.client_)) {}
  ConnectionSlot(const ConnectionSlot&) = delete;
  ConnectionSlot& operator=(const ConnectionSlot&) = delete;
  ConnectionSlot& operator=(ConnectionSlot&&) = delete;
  ~ConnectionSlot() {
    if (s_ == nullptr) return;
    s_->connections--;
    s_->metrics->AddOpenConnections(-1);
    std::lock_guard lock(s_->clients_mu);
    if (auto it = s_->per_client.find(client_); it != s_->per_client.end() && --it->second <= 0) {
      s_->per_client.erase(it);
    }
  }

 private:
  Services* s_;
  std::string client_;
};

// Why a new connection from `client` may not open, or "" (the limit's
// metrics label: "total", "per_client").
std::string_view ConnectionLimitPassed(Services& services, const ServerConfig& limits, const std::string& client) {
  if (services.connections.load() >= limits.max_connections) return "total";
  std::lock_guard lock(services.clients_mu);
  auto it = services.per_client.find(client);
  if (it != services.per_client.end() && it->second >= limits.max_connections_per_client) return "per_client";
  return "";
}

// Answers a connection refused at accept and closes it: best effort, one
// non-blocking send of a short response in OpenAI's error shape (no request
// is read, so its API is unknown), on a plain listener only.
void RefuseConnection(tcp::socket& socket, std::string_view reason, bool tls) {
  if (!tls) {
    const bool total = reason == "total";
    const Error error{total ? ErrorCode::kUnavailable : ErrorCode::kResourceExhausted,
                      total ? "the server has too many open connections (server.max_connections); retry shortly"
                            : "too many open connections from your address (server.max_connections_per_client)",
                      "", total ? "server_busy" : "too_many_connections"};
    const std::string body = ErrorBody(error);
    const std::string response = std::string(total ? "HTTP/1.1 503 Service Unavailable" : "HTTP/1.1 429 Too Many Requests") +
                                 "\r\nServer: tollgate\r\nContent-Type: application/json\r\nContent-Length: " +
                                 std::to_string(body.size()) + "\r\nRetry-After: 1\r\nConnection: close\r\n\r\n" + body;
    (void)::send(socket.native_handle(), response.data(), response.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  beast::error_code ignored;
  socket.shutdown(tcp::socket::shutdown_send, ignored);
  socket.close(ignored);
}

awaitable<void> Accept(Services& services, tcp::acceptor& acceptor, bool admin_only) {
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(kUseTuple);
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
    if (ec) {
      // EMFILE and friends: keep serving the connections we have, and do not
      // spin on accept while the condition lasts.
      asio::steady_timer backoff(acceptor.get_executor(), kAcceptBackoff);
      co_await backoff.async_wait(kUseTuple);
      continue;
    }
    // TLS on the main listener when server.tls is set; the admin listener
    // (billing.admin_listen, meant for a private network) stays plain.
    std::shared_ptr<asio::ssl::context> tls;
    std::string client;
    {
      const std::shared_ptr<const Runtime> rt = services.Current();
      if (!admin_only) tls = rt->tls;
      beast::error_code peer_ec;
      client = socket.remote_endpoint(peer_ec).address().to_string();
      if (const std::string_view passed = ConnectionLimitPassed(services, rt->config.server, client); !passed.empty()) {
        services.metrics->CountConnectionRefused(passed);
        RefuseConnection(socket, passed, tls != nullptr);
        continue;
      }
    }
    socket.set_option(tcp::no_delay(true));
    auto strand = asio::make_strand(acceptor.get_executor());
    asio::co_spawn(
        strand,
        [&services, s = std::move(socket), admin_only, tls = std::move(tls),
         slot = ConnectionSlot(services, std::move(client))]() mutable -> awaitable<void> {
          if (!tls) {
            Connection<beast::tcp_stream> connection(services, beast::tcp_stream(std::move(s)), admin_only);
            co_await connection.Run();
            co_return;
          }
          beast::ssl_stream<beast::tcp_stream> stream(beast::tcp_stream(std::move(s)), *tls);
          beast::get_lowest_layer(stream).expires_after(kTlsHandshakeTimeout);
          auto [handshake_ec] = co_await stream.async_handshake(asio::ssl::stream_base::server, kUseTuple);
          if (handshake_ec) co_return;  // not TLS, a bad client certificate choice, or too slow
          Connection<beast::ssl_stream<beast::tcp_stream>> connection(services, std::move(stream), admin_only);
          co_await connection.Run();
        },
        asio::detached);
  }
}

// Opens `acceptor` on host:port; the error ("" when none) names `setting`.
std::string Listen(tcp::acceptor& acceptor, const std::string& host, uint16_t port, std::string_view setting) {
  beast::error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec) return std::string(setting) + ": '" + host + "' is not an IP address";
  tcp::endpoint ep(address, port);
  acceptor.open(ep.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(ep, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return "cannot listen on " + host + ":" + std::to_string(port) + " (" + std::string(setting) + "): " + ec.message();
  return "";
}

int StartupError(const std::string& what) {
  std::cerr << "tollgate: " << what << "\n";
  return 1;
}

providers::RemoteApi RemoteApiOf(const std::string& type) {
  if (type == "anthropic") return providers::RemoteApi::kAnthropic;
  if (type == "gemini") return providers::RemoteApi::kGemini;
  if (type == "openai_responses") return providers::RemoteApi::kOpenAiResponses;
  return providers::RemoteApi::kOpenAiCompatible;
}


// The listener's TLS context from server.tls (TLS 1.2 and later), or null
// when it is off. Errors name the setting.
Result<std::shared_ptr<asio::ssl::context>> ListenerTls(const ServerConfig& server) {
  if (server.tls_cert_file.empty()) return std::shared_ptr<asio::ssl::context>();
  auto tls = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
  tls->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                   asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1 |
                   asio::ssl::context::single_dh_use);
  // An encrypted key is refused, never a pass phrase prompt on a terminal.
  tls->set_password_callback([](std::size_t, asio::ssl::context::password_purpose) { return std::string(); });
  beast::error_code ec;
  tls->use_certificate_chain_file(server.tls_cert_file, ec);
  if (ec) return InvalidArgument("server.tls.cert_file: cannot use '" + server.tls_cert_file + "': " + ec.message());
  tls->use_private_key_file(server.tls_key_file, asio::ssl::context::pem, ec);
  if (ec) return InvalidArgument("server.tls.key_file: cannot use '" + server.tls_key_file + "': " + ec.message());
  if (SSL_CTX_check_private_key(tls->native_handle()) != 1) {
    return InvalidArgument("server.tls.key_file: the key does not match server.tls.cert_file");
  }
  return tls;
}

providers::RemoteProviderOptions RemoteOptions(const ProviderConfig& p, const OutboundConfig& outbound) {
  providers::RemoteProviderOptions o;
  o.api = RemoteApiOf(p.type);
  o.preset = p.preset;
  o.display_name = p.display_name;
  o.base_url = p.base_url;
  o.api_key = p.api_key;
  o.ca_file = p.ca_file;
  o.connect_timeout_ms = p.connect_timeout_ms;
  o.first_byte_timeout_ms = p.first_byte_timeout_ms;
  o.max_idle_connections = p.max_idle_connections;
  o.default_max_tokens = p.default_max_tokens;
  o.extra_headers = p.extra_headers;
  o.proxy = outbound.proxy;
  o.no_proxy = outbound.no_proxy;
  o.dns_ttl_ms = outbound.dns_ttl_ms;
  return o;
}

// Builds what `config` serves: providers, catalog, router, listener TLS.
// Providers of `previous` whose settings are unchanged are shared, not
// rebuilt (their connection pools and loaded models stay). Logs disabled
// providers and loaded models. Errors name the setting; nothing of a failed
// build stays.
Result<std::shared_ptr<Runtime>> BuildRuntime(Config config, const Runtime* previous, asio::io_context& ioc) {
  auto rt = std::make_shared<Runtime>();
  rt->config = std::move(config);
  const Config& cfg = rt->config;
  auto tls = ListenerTls(cfg.server);
  if (!tls) return tls.error();
  rt->tls = std::move(*tls);
  auto previous_config = [&](const std::string& id) -> const ProviderConfig* {
    if (previous == nullptr) return nullptr;
    for (const ProviderConfig& p : previous->config.providers) {
      if (p.id == id) return &p;
    }
    return nullptr;
  };
  // Providers: one instance per remote provider, one local engine per model file.
  std::map<std::string, const ProviderConfig*> provider_configs;
  for (const auto& p : cfg.providers) {
    provider_configs[p.id] = &p;
    if (!p.enabled) {
      std::cerr << "tollgate: provider " << p.id << " disabled: " << p.disabled_reason << "\n";
      continue;
    }
    if (p.type == "local") continue;
    if (const ProviderConfig* old = previous_config(p.id); old != nullptr && *old == p &&
                                                          previous->config.outbound == cfg.outbound &&
                                                          previous->remote.count(p.id)) {
      rt->remote[p.id] = previous->remote.at(p.id);
      continue;
    }
    auto provider = providers::RemoteProvider::Create(RemoteOptions(p, cfg.outbound), ioc);
    if (!provider) return InvalidArgument("providers." + p.id + ": " + provider.error().message);
    rt->remote[p.id] = std::move(*provider);
  }
  std::vector<routing::Model> models;
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch()).count();
  for (size_t i = 0; i < cfg.models.size(); ++i) {
    const ModelConfig& mc = cfg.models[i];
    routing::Model m{mc.id, mc.name, mc.context_length, now, {}, mc.routing};
    for (size_t j = 0; j < mc.endpoints.size(); ++j) {
      const EndpointConfig& ec = mc.endpoints[j];
      const ProviderConfig& pc = *provider_configs.at(ec.provider);
      if (!pc.enabled) continue;
      routing::Endpoint e;
      e.id = ec.id;
      e.provider_id = ec.provider;
      e.upstream_model = ec.model;
      e.pricing = ec.pricing;
      e.tiers = ec.tiers;
      e.context_length = ec.context_length;
      e.max_output_tokens = ec.max_output_tokens;
      e.quantization = ec.quantization;
      e.data_policy = ec.data_policy;
      e.max_concurrency = ec.max_concurrency;
      e.weight = ec.weight;
      if (pc.type == "local") {
        // One engine per (provider, file): two providers may run one file
        // with different settings.
        const std::string engine_key = ec.provider + '\n' + ec.model;
        auto& engine = rt->local[engine_key];
        if (!engine) {
          const ProviderConfig* old = previous_config(ec.provider);
          if (old != nullptr && *old == pc && previous->local.count(engine_key)) {
            engine = previous->local.at(engine_key);
          }
        }
        if (!engine) {
          local_backend::LocalProviderOptions o;
          o.display_name = pc.display_name;
          o.model_path = ec.model;
          o.context_length = pc.context_length;
          o.threads = pc.threads;
          o.max_sequences = pc.max_sequences;
          o.max_queue = pc.max_queue;
          o.max_batch_tokens = pc.max_batch_tokens;
          o.kv_cache_bytes = pc.kv_cache_mib << 20;
          o.kv_cache_type = pc.kv_cache_type == "q8"    ? local_backend::KvType::kQ8
                            : pc.kv_cache_type == "f32" ? local_backend::KvType::kF32
                                                        : local_backend::KvType::kF16;
          o.prefix_cache = pc.prefix_cache;
          o.device = pc.device == "cpu"    ? local_backend::LocalDevice::kCpu
                     : pc.device == "cuda" ? local_backend::LocalDevice::kCuda
                                           : local_backend::LocalDevice::kAuto;
          o.gpu_device = pc.gpu_device;
          o.gpu_memory_bytes = pc.gpu_memory_mib << 20;
          auto created = local_backend::LocalProvider::Create(o);
          if (!created) {
            rt->local.erase(engine_key);
            // Device errors are the provider's settings, not the endpoint's.
            const std::string& param = created.error().param;
            if (param == "device" || param == "gpu_device" || param == "gpu_memory_bytes") {
              const std::string key = param == "gpu_memory_bytes" ? "gpu_memory_mib" : param;
              return InvalidArgument("providers." + ec.provider + "." + key + ": " + created.error().message);
            }
            return InvalidArgument(ec.config_path + " (" + mc.id + "): " + created.error().message);
          }
          engine = std::move(*created);
          std::cerr << "tollgate: loaded " << ec.model << " for " << mc.id << " on " << engine->DeviceName() << "\n";
        }
        // The metrics label: <provider>/<file stem>, made unique.
        if (std::none_of(rt->engines.begin(), rt->engines.end(),
                         [&](const auto& named) { return named.second == engine.get(); })) {
          std::string label = ec.provider + "/" + std::filesystem::path(ec.model).stem().string();
          const std::string base = label;
          for (int n = 2; std::any_of(rt->engines.begin(), rt->engines.end(),
                                      [&](const auto& named) { return named.first == label; });
               ++n) {
            label = base + "#" + std::to_string(n);
          }
          rt->engines.emplace_back(std::move(label), engine.get());
        }
        e.provider = engine.get();
        if (e.context_length == 0) e.context_length = engine->ContextLength();
        if (e.max_concurrency == 0) e.max_concurrency = engine->MaxSequences();
      } else {
        e.provider = rt->remote.at(ec.provider).get();
      }
      // What the endpoint honours: its provider's parameters, narrowed by the config.
      e.supported = e.provider->SupportedParameters();
      if (ec.supported_parameters) e.supported = e.supported.Minus(e.supported.Minus(*ec.supported_parameters));
      m.context_length = std::max(m.context_length, e.context_length);
      m.endpoints.push_back(std::move(e));
    }
    if (m.endpoints.empty()) continue;
    models.push_back(std::move(m));
  }
  if (models.empty()) {
    return InvalidArgument("no model is available: the config lists none, or every model's providers are disabled");
  }
  rt->catalog = routing::Catalog(std::move(models));
  rt->router = std::make_unique<routing::Router>(&rt->catalog, cfg.routing);
  return rt;
}

// Metric labels come from the catalog only (metrics.hpp, "Cardinality").
void SetKnownLabels(Metrics& metrics, const routing::Catalog& catalog) {
  std::vector<std::string> model_ids, provider_names;
  for (const routing::Model& m : catalog.models()) {
    model_ids.push_back(m.id);
    for (const routing::Endpoint& e : m.endpoints) provider_names.emplace_back(e.provider->Name());
  }
  metrics.SetKnownLabels(model_ids, provider_names);
}

// Settings a reload cannot change (they take effect at restart): copied from
// `running` into `next`, and named in the returned list when they differed.
std::vector<std::string> KeepRestartOnlySettings(const Config& running, Config& next) {
  std::vector<std::string> changed;
  auto keep = [&](auto& field, const auto& value, const char* name) {
    if (!(field == value)) changed.emplace_back(name);
    field = value;
  };
  keep(next.server.host, running.server.host, "server.listen");
  keep(next.server.port, running.server.port, "server.listen");
  keep(next.server.io_threads, running.server.io_threads, "server.io_threads");
  keep(next.database_url, running.database_url, "database.url");
  keep(next.usage.spool_dir, running.usage.spool_dir, "usage.spool_dir");
  keep(next.usage.flush_interval_ms, running.usage.flush_interval_ms, "usage.flush_interval_ms");
  keep(next.usage.batch_size, running.usage.batch_size, "usage.batch_size");
  keep(next.usage.answer_after_spool, running.usage.answer_after_spool, "usage.answer_after_spool");
  keep(next.billing.admin_host, running.billing.admin_host, "billing.admin_listen");
  keep(next.billing.admin_port, running.billing.admin_port, "billing.admin_listen");
  keep(next.billing.lease_ttl_ms, running.billing.lease_ttl_ms, "billing.lease_ttl_ms");
  keep(next.billing.lease_idle_return_ms, running.billing.lease_idle_return_ms, "billing.lease_idle_return_ms");
  keep(next.billing.rate_limit_sync_ms, running.billing.rate_limit_sync_ms, "billing.rate_limit_sync_ms");
  keep(next.log.access, running.log.access, "log.access");
  keep(next.stats.retention_days, running.stats.retention_days, "stats.retention_days");
  changed.erase(std::unique(changed.begin(), changed.end()), changed.end());
  return changed;
}

}  // namespace

std::optional<std::string> CheckServeConfig(const Config& config) {
  if (auto tls = ListenerTls(config.server); !tls) return tls.error().message;
  asio::io_context ioc;  // the remote providers' pools are built, never used
  std::map<std::string, const ProviderConfig*> enabled;
  for (const ProviderConfig& p : config.providers) {
    if (!p.enabled) continue;
    enabled[p.id] = &p;
    if (p.type == "local") continue;
    auto provider = providers::RemoteProvider::Create(RemoteOptions(p, config.outbound), ioc);
    if (!provider) return "providers." + p.id + ": " + provider.error().message;
  }
  bool any_model = false;
  for (const ModelConfig& m : config.models) {
    for (const EndpointConfig& e : m.endpoints) {
      auto it = enabled.find(e.provider);
      if (it == enabled.end()) continue;
      if (it->second->type == "local" && !std::ifstream(e.model)) {
        return e.config_path + ".model (" + m.id + "): cannot read " + e.model;
      }
      any_model = true;
    }
  }
  if (!any_model) return "no model is available: the config lists none, or every model's providers are disabled";
  return std::nullopt;
}

int Serve(const Config& config, const ServeOptions& options) {
  // SIGHUP before the reload handler is installed (during startup: database
  // connections, model loading) is ignored rather than fatal.
  std::signal(SIGHUP, SIG_IGN);
  int threads = config.server.io_threads > 0 ? config.server.io_threads
                                             : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  // Destruction order matters: the io_context (with every connection's and
  // call's frame) goes before the Services those frames use, and the
  // providers go before the io_context their work posts to.
  Services services;
  services.metrics = std::make_unique<Metrics>();
  services.observer = std::make_unique<MetricsObserver>(*services.metrics, config.log.access);

  // BYOK provider keys are sealed with TOLLGATE_SECRET_KEY; without it they are not used.
  std::optional<billing::SecretBox> secrets;
  if (const char* env = std::getenv(std::string(billing::kSecretKeyEnv).c_str()); env != nullptr && *env != '\0') {
    auto box = billing::SecretBox::FromEnv();
    if (!box) return StartupError(std::string(billing::kSecretKeyEnv) + ": " + box.error().message);
    secrets = *box;
  }
  auto keys = billing::KeyCache::Start(options.database_url, secrets);
  if (!keys) return StartupError("database: " + keys.error().message);
  services.keys = std::move(*keys);
  billing::UsageRecorderOptions recorder_options;
  recorder_options.flush_interval_ms = config.usage.flush_interval_ms;
  recorder_options.batch_size = config.usage.batch_size;
  recorder_options.spool_dir = config.usage.spool_dir;
  auto recorder = billing::UsageRecorder::Start(options.database_url, recorder_options);
  if (!recorder) {
    return StartupError((config.usage.spool_dir.empty() ? "database: " : "usage: ") + recorder.error().message);
  }
  services.recorder = std::move(*recorder);
  if (config.usage.spool_dir.empty()) {
    std::cerr << "tollgate: warning: usage.spool_dir is not set: usage rows wait in memory until written, so a "
                 "crash loses those not written yet (set it to make every answered call durable)"
              << std::endl;
  }
  if (services.recorder->rows_replayed() > 0) {
    std::cerr << "tollgate: " << services.recorder->rows_replayed() << " usage rows replayed from the spool"
              << std::endl;
  }
  services.usage = std::make_unique<RecorderSink>(*services.recorder, config.usage.answer_after_spool);
  // This process in credit leases and rate counters: the spool's stable id
  // (so a restart finds its earlier boots' leases) and a boot nonce.
  const std::string replica_id = services.recorder->replica_stable_id() + ":" + BootNonce();
  billing::CreditGuardOptions guard_options;
  guard_options.lease_ttl = std::chrono::milliseconds(config.billing.lease_ttl_ms);
  guard_options.renew_interval = guard_options.lease_ttl / 4;
  guard_options.expiry_margin = guard_options.lease_ttl / 4;
  guard_options.idle_return_after = std::chrono::milliseconds(config.billing.lease_idle_return_ms);
  auto guard = billing::CreditGuard::Start(options.database_url, replica_id, guard_options);
  if (!guard) return StartupError("database: " + guard.error().message);
  services.guard = std::move(*guard);
  services.admission = std::make_unique<GuardAdmission>(*services.guard, *services.metrics);
  // Limit or credit changes (LISTEN/NOTIFY through the key cache): the
  // leases of that key or account are given back and taken anew.
  services.keys->OnChange([guard = services.guard.get()](std::string_view kind, int64_t id) {
    if (kind == "key") guard->InvalidateKey(id);
    if (kind == "account") guard->InvalidateAccount(id);
  });
  auto limiter = billing::RateLimiter::Start(options.database_url, replica_id,
                                             static_cast<int>(config.billing.rate_limit_sync_ms));
  if (!limiter) return StartupError("database: " + limiter.error().message);
  services.limiter = std::move(*limiter);
  auto generations = billing::GenerationStore::Connect(options.database_url);
  if (!generations) return StartupError("database: " + generations.error().message);
  services.generations = std::move(*generations);
  auto stored_responses = billing::ResponseStore::Connect(options.database_url, Services::kResponseStoreConnections);
  if (!stored_responses) return StartupError("database: " + stored_responses.error().message);
  services.responses = std::move(*stored_responses);
  auto stats = billing::StatsStore::Connect(options.database_url, 2);
  if (!stats) return StartupError("database: " + stats.error().message);
  services.stats = std::move(*stats);
  auto accounts = billing::AccountStore::Connect(options.database_url, secrets);
  if (!accounts) return StartupError("database: " + accounts.error().message);
  services.accounts = std::move(*accounts);
  // Once the spool's rows of earlier boots are in the database, their
  // leases are no longer needed: free them now rather than at their expiry.
  std::jthread drop_earlier_boots([&services](std::stop_token stop) {
    while (!stop.stop_requested()) {
      if (services.recorder->FlushFor(std::chrono::milliseconds(500))) {
        auto dropped = services.guard->DropEarlierBoots();
        if (dropped && *dropped > 0) {
          std::cerr << "tollgate: " << *dropped << " credit leases of earlier runs released" << std::endl;
        }
        if (dropped) return;
      }
    }
  });
  // Usage partitions a week ahead and retention of raw usage rows
  // (stats.retention_days), at start and hourly, on its own thread and
  // connection: the statements block and may wait for locks
  // (billing/usage_maintenance.hpp). A failure is logged and retried in 5
  // minutes; rows meanwhile land in the default partition.
  std::jthread usage_maintenance([url = options.database_url,
                                  retention_days = config.stats.retention_days](std::stop_token stop) {
    std::mutex mutex;
    std::condition_variable_any wake;
    std::unique_ptr<billing::UsageMaintenance> maintenance;
    while (!stop.stop_requested()) {
      std::string error;
      if (!maintenance) {
        auto connected = billing::UsageMaintenance::Connect(url);
        if (connected) {
          maintenance = std::move(*connected);
        } else {
          error = connected.error().message;
        }
      }
      if (maintenance) {
        auto report = maintenance->Run(std::chrono::system_clock::now(), retention_days);
        if (!report) {
          error = report.error().message;
        } else if (report->partitions_dropped > 0) {
          std::cerr << "tollgate: usage retention: " << report->partitions_dropped << " daily partitions older than "
                    << retention_days << " days dropped" << std::endl;
        }
        if (report && report->responses_pruned > 0) {
          std::cerr << "tollgate: " << report->responses_pruned << " expired stored responses deleted" << std::endl;
        }
      }
      if (!error.empty()) std::cerr << "tollgate: usage maintenance: " << error << std::endl;
      std::unique_lock lock(mutex);
      wake.wait_for(lock, stop, error.empty() ? std::chrono::minutes(60) : std::chrono::minutes(5),
                    [] { return false; });
    }
  });

  {
    asio::io_context ioc(threads);
    {
      auto built = BuildRuntime(config, nullptr, ioc);
      if (!built) return StartupError(built.error().message);
      services.runtime.store(std::move(*built));
    }
    SetKnownLabels(*services.metrics, services.Current()->catalog);

    // Reload (SIGHUP, POST /admin/v1/reload): the file again, restart-only
    // settings kept, providers with unchanged settings shared; swapped in
    // whole, or refused with the running config left as it was.
    //
    // A replaced runtime stays here until no request has held it for two
    // sweeps in a row (5 s apart): work a call posted (a capacity-queue wake)
    // may still reach its router a moment after the call ended. Remote
    // providers the new config no longer uses stay until exit (a request may
    // still be unwinding on one); local engines until idle and unused (their
    // memory is the model's).
    std::mutex reload_mu;
    std::vector<std::pair<std::shared_ptr<const Runtime>, int>> retired;       // idle sweeps; guarded by reload_mu
    std::vector<std::shared_ptr<providers::RemoteProvider>> replaced_remote;    // guarded by reload_mu
    std::vector<std::shared_ptr<local_backend::LocalProvider>> replaced_local;  // guarded by reload_mu
    auto sweep_replaced = [&] {  // with reload_mu held
      for (auto& [runtime, idle_sweeps] : retired) idle_sweeps = runtime.use_count() == 1 ? idle_sweeps + 1 : 0;
      std::erase_if(retired, [](const auto& entry) { return entry.second >= 2; });
      std::erase_if(replaced_local, [](const std::shared_ptr<local_backend::LocalProvider>& engine) {
        if (engine.use_count() > 1) return false;  // a runtime still uses it
        const local_backend::LocalEngineStats stats = engine->Stats();
        return stats.running == 0 && stats.queued == 0;
      });
    };
    services.reload = [&](boost::json::object& summary) -> std::optional<std::string> {
      std::lock_guard lock(reload_mu);
      auto refuse = [&](std::string why) {
        services.metrics->CountConfigReload(false);
        std::cerr << "tollgate: config reload refused; the running config stays: " << why << std::endl;
        return std::optional<std::string>(std::move(why));
      };
      if (options.config_path.empty()) return refuse("the server was started without a config file");
      auto loaded = LoadConfig(options.config_path, ProcessEnv());
      if (!loaded) return refuse(loaded.error().message);
      const std::shared_ptr<const Runtime> running = services.Current();
      if (options.listen_overridden) {
        loaded->server.host = running->config.server.host;
        loaded->server.port = running->config.server.port;
      }
      for (const std::string& setting : KeepRestartOnlySettings(running->config, *loaded)) {
        std::cerr << "tollgate: config reload: " << setting << " changed; it takes effect at restart" << std::endl;
      }
      auto next = BuildRuntime(std::move(*loaded), running.get(), ioc);
      if (!next) return refuse(next.error().message);
      for (const auto& [id, provider] : running->remote) {
        auto it = (*next)->remote.find(id);
        if (it == (*next)->remote.end() || it->second != provider) replaced_remote.push_back(provider);
      }
      for (const auto& [key, engine] : running->local) {
        auto it = (*next)->local.find(key);
        if (it == (*next)->local.end() || it->second != engine) replaced_local.push_back(engine);
      }
      const std::shared_ptr<const Runtime> installed = std::move(*next);
      services.runtime.store(installed);
      retired.emplace_back(running, 0);
      SetKnownLabels(*services.metrics, installed->catalog);
      services.metrics->CountConfigReload(true);
      sweep_replaced();
      summary["models"] = installed->catalog.models().size();
      summary["providers"] = installed->remote.size() + installed->engines.size();
      const std::size_t models = installed->catalog.models().size();
      std::cerr << "tollgate: config reloaded from " << options.config_path << ": " << models
                << (models == 1 ? " model" : " models") << std::endl;
      return std::nullopt;
    };
    asio::steady_timer sweep_timer(ioc);
    std::function<void()> sweep_later = [&] {
      sweep_timer.expires_after(std::chrono::seconds(5));
      sweep_timer.async_wait([&](const beast::error_code& ec) {
        if (ec) return;
        asio::post(services.blocking, [&] {
          std::lock_guard lock(reload_mu);
          sweep_replaced();
        });
        sweep_later();
      });
    };
    sweep_later();
    asio::signal_set hangup(ioc, SIGHUP);
    std::function<void()> wait_for_hangup = [&] {
      hangup.async_wait([&](const beast::error_code& ec, int) {
        if (ec) return;
        std::cerr << "tollgate: SIGHUP: reloading the config" << std::endl;
        asio::post(services.blocking, [&] {
          boost::json::object summary;
          (void)services.reload(summary);
        });
        wait_for_hangup();
      });
    };
    wait_for_hangup();

    tcp::acceptor acceptor(ioc);
    if (std::string error = Listen(acceptor, config.server.host, config.server.port, "server.listen");
        !error.empty()) {
      return StartupError(error);
    }
    const uint16_t port = acceptor.local_endpoint().port();
    if (!options.port_file.empty()) {
      std::ofstream(options.port_file) << port << "\n";
    }
    std::string shown_host = config.server.host.find(':') != std::string::npos ? "[" + config.server.host + "]"
                                                                              : config.server.host;
    const size_t model_count = services.Current()->catalog.models().size();
    std::cerr << "tollgate: " << model_count << (model_count == 1 ? " model, " : " models, ") << threads
              << (threads == 1 ? " I/O thread" : " I/O threads") << "; listening on "
              << (services.Current()->tls ? "https://" : "http://") << shown_host << ":"
              << port << std::endl;

    asio::co_spawn(ioc, Accept(services, acceptor, false), asio::detached);
    tcp::acceptor admin_acceptor(ioc);
    if (!config.billing.admin_host.empty()) {
      if (std::string error =
              Listen(admin_acceptor, config.billing.admin_host, config.billing.admin_port, "billing.admin_listen");
          !error.empty()) {
        return StartupError(error);
      }
      std::cerr << "tollgate: admin API on " << config.billing.admin_host << ":"
                << admin_acceptor.local_endpoint().port() << std::endl;
      asio::co_spawn(ioc, Accept(services, admin_acceptor, true), asio::detached);
    }

    // Stop: close the listener, let in-flight calls finish (up to
    // server.drain_timeout_ms), then cancel the ones left and wait for them to
    // end (up to kShutdownGrace), then stop the loop. Usage rows are flushed after
    // the threads are joined.
    asio::signal_set signals(ioc, SIGINT, SIGTERM);
    asio::steady_timer drain(ioc);
    Clock::time_point drain_until;
    bool cancelled_all = false;
    std::function<void()> drain_poll = [&] {
      const auto now = Clock::now();
      if (services.active_calls == 0 || now >= drain_until + kShutdownGrace) {
        ioc.stop();
        return;
      }
      if (now >= drain_until && !cancelled_all) {
        cancelled_all = true;
        std::cerr << "tollgate: " << services.active_calls << " calls still running; cancelling them" << std::endl;
        services.CancelAll();
      }
      drain.expires_after(std::chrono::milliseconds(20));
      drain.async_wait([&](const beast::error_code&) { drain_poll(); });
    };
    signals.async_wait([&](const beast::error_code& ec, int signo) {
      if (ec) return;
      std::cerr << "tollgate: signal " << signo << ", stopping" << std::endl;
      services.stopping = true;  // /readyz answers 503 from now on
      beast::error_code ignored;
      acceptor.close(ignored);
      admin_acceptor.close(ignored);
      hangup.cancel(ignored);
      sweep_timer.cancel();
      drain_until = Clock::now() + std::chrono::milliseconds(services.Current()->config.server.drain_timeout_ms);
      drain_poll();
    });

    std::vector<std::thread> pool;
    for (int i = 1; i < threads; ++i) pool.emplace_back([&] { ioc.run(); });
    ioc.run();
    for (auto& t : pool) t.join();
    services.blocking.join();
    services.stats_pool.join();
    services.key_reloads.join();
    // The local engines' workers may still post to the (stopped) loop; join
    // them while it exists (the runtime and the replaced providers hold the
    // last references, unless a call's frame still does). Then the loop
    // itself with every frame it still holds.
    services.runtime.store(nullptr);
    retired.clear();
    replaced_local.clear();
    replaced_remote.clear();
  }
  // Bounded: during a database outage the rows still queued after 30 s are
  // logged and counted as lost rather than hanging the shutdown forever.
  // Exit 3 when usage rows were left unwritten: in the spool (replayed by
  // the next start on the same spool_dir) or lost; the orchestrator and the
  // operator should know.
  int exit_code = 0;
  if (!services.recorder->StopWithin(std::chrono::seconds(30))) {
    std::cerr << "tollgate: " << services.recorder->rows_lost() << " usage rows could not be written" << std::endl;
  }
  if (services.recorder->rows_lost() > 0 || services.recorder->rows_left_in_spool() > 0) exit_code = 3;
  drop_earlier_boots.request_stop();
  if (drop_earlier_boots.joinable()) drop_earlier_boots.join();
  usage_maintenance.request_stop();
  if (usage_maintenance.joinable()) usage_maintenance.join();
  services.limiter->Stop();
  services.guard->Stop();
  services.keys->Stop();
  std::cerr << "tollgate: stopped; " << services.recorder->rows_written() << " usage rows written" << std::endl;
  return exit_code;
}

}  // namespace tollgate::gateway
