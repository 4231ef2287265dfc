#include "tollgate/gateway/server.hpp"

#include "api.hpp"
#include "metrics.hpp"
#include "tollgate/billing/api_key.hpp"
#include "tollgate/billing/generation_store.hpp"
#include "tollgate/billing/key_cache.hpp"
#include "tollgate/billing/usage_recorder.hpp"
#include "tollgate/local_backend/local_provider.hpp"
#include "tollgate/providers/openai_compatible.hpp"
#include "tollgate/routing/catalog.hpp"

#include <boost/asio.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/url/parse.hpp>

#include <atomic>
#include <cerrno>
#include <deque>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <thread>

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

constexpr size_t kHeaderLimitBytes = 16 * 1024;
constexpr auto kIdleTimeout = std::chrono::seconds(75);
constexpr auto kWriteTimeout = std::chrono::seconds(60);
constexpr auto kDrainTimeout = std::chrono::seconds(30);
constexpr auto kAcceptBackoff = std::chrono::milliseconds(50);
constexpr auto kMissReloadInterval = std::chrono::milliseconds(100);
// Completion tokens assumed for a reservation when neither max_tokens nor a
// context length is known.
constexpr int64_t kDefaultCompletionBound = 4096;

using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

// Bridges a provider's StreamSink (called from any thread) to the connection's
// coroutine: events are queued under a mutex and the waiting coroutine is woken
// by cancelling a timer on its own strand, so the coroutine never blocks a thread.
class CallSink : public StreamSink, public std::enable_shared_from_this<CallSink> {
 public:
  struct Event {
    enum Kind { kDelta, kComplete, kError } kind = kDelta;
    std::string text;
    Completion completion;
    Error error;
  };

  explicit CallSink(asio::any_io_executor strand) : wake_(strand) {}

  void OnDelta(std::string_view text) override {
    Event e;
    e.text = text;
    Push(std::move(e));
  }
  void OnComplete(const Completion& completion) override {
    Event e;
    e.kind = Event::kComplete;
    e.completion = completion;
    Push(std::move(e));
  }
  void OnError(const Error& error) override {
    Event e;
    e.kind = Event::kError;
    e.error = error;
    Push(std::move(e));
  }

  // Waits for at least one event or the deadline; returns all queued events
  // (empty when the deadline passed first).
  awaitable<std::vector<Event>> Next(Clock::time_point deadline) {
    for (;;) {
      {
        std::lock_guard lock(mu_);
        if (!queue_.empty()) {
          std::vector<Event> out(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.end()));
          queue_.clear();
          co_return out;
        }
      }
      wake_.expires_at(deadline);
      auto [ec] = co_await wake_.async_wait(kUseTuple);
      if (!ec) {
        std::lock_guard lock(mu_);
        if (queue_.empty()) co_return std::vector<Event>{};
      }
    }
  }

 private:
  void Push(Event event) {
    {
      std::lock_guard lock(mu_);
      queue_.push_back(std::move(event));
    }
    asio::post(wake_.get_executor(), [self = shared_from_this()] { self->wake_.cancel(); });
  }

  asio::steady_timer wake_;
  std::mutex mu_;
  std::deque<Event> queue_;
};

struct Services {
  const Config* config = nullptr;
  routing::Catalog catalog;
  std::unique_ptr<billing::KeyCache> keys;
  std::unique_ptr<billing::UsageRecorder> recorder;
  std::unique_ptr<billing::GenerationStore> generations;
  std::unique_ptr<Metrics> metrics;
  asio::thread_pool blocking{2};  // libpq calls off the I/O threads
  std::atomic<int> active_calls{0};
  asio::thread_pool key_reloads{1};     // reloads for key-cache misses, one at a time
  Clock::time_point last_miss_reload;  // when the last miss reload began; key_reloads' thread only
  std::atomic<bool> stopping{false};
};

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

// Errors under OpenRouter's base path /api/v1 take its shape (an integer
// `code`, which @openrouter/sdk requires); elsewhere OpenAI's.
ErrorFlavor FlavorOf(const Request& req) {
  return req.target().starts_with("/api/") ? ErrorFlavor::kOpenRouter : ErrorFlavor::kOpenAi;
}

Response ErrorResponse(const Request& req, const Error& error) {
  return JsonResponse(req, HttpStatus(error.code), ErrorBody(error, FlavorOf(req)));
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

class Connection {
 public:
  Connection(Services& services, tcp::socket socket) : s_(services), stream_(std::move(socket)) {}

  awaitable<void> Run() {
    beast::flat_buffer buffer;
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(kHeaderLimitBytes);
      parser.body_limit(static_cast<uint64_t>(s_.config->server.max_body_bytes));
      stream_.expires_after(kIdleTimeout);
      auto [ec, n] = co_await http::async_read(stream_, buffer, parser, kUseTuple);
      if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset ||
          ec == beast::error::timeout || ec == asio::error::operation_aborted) {
        break;
      }
      if (ec == http::error::body_limit) {
        Request head{parser.get().method(), parser.get().target(), parser.get().version()};
        head.keep_alive(false);
        Error too_large{ErrorCode::kPayloadTooLarge,
                        "request body is larger than " + std::to_string(s_.config->server.max_body_bytes) + " bytes",
                        "", "request_too_large"};
        Response res = ErrorResponse(head, too_large);
        co_await Write(res);
        break;
      }
      if (ec == http::error::header_limit) {
        Request head{http::verb::get, "/", 11};
        head.keep_alive(false);
        Error too_big = InvalidArgument("request headers are larger than " + std::to_string(kHeaderLimitBytes) +
                                        " bytes");
        Response res = JsonResponse(head, 431, ErrorBody(too_big));
        co_await Write(res);
        break;
      }
      if (ec) {
        Request head{http::verb::get, "/", 11};
        head.keep_alive(false);
        Response res = ErrorResponse(head, InvalidArgument("malformed HTTP request: " + ec.message()));
        co_await Write(res);
        break;
      }
      Request req = parser.release();
      bool keep_alive = co_await Handle(req);
      if (!keep_alive || s_.stopping) break;
    }
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }

 private:
  // Returns false when the connection must close.
  //
  // GCC 12 destroys some temporaries of a full-expression that contains
  // co_await twice (an aggregate Error{...} argument crashed here), so every
  // co_await in this file takes named variables only.
  awaitable<bool> Write(Response& res) {
    bool keep = res.keep_alive();
    stream_.expires_after(kWriteTimeout);
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

    if ((route == "/v1/chat/completions" || route == "/v1/completions") && post) {
      auto kind = route == "/v1/completions" ? RequestKind::kCompletion : RequestKind::kChat;
      auto [keep, status] = co_await HandleCompletion(req, kind);
      s_.metrics->CountRequest(route, status);
      co_return keep;
    }
    Response res;
    if (route == "/healthz" && get) {
      res = JsonResponse(req, 200, R"({"status":"ok"})");
    } else if (route == "/readyz" && get) {
      bool ready = co_await Ready();
      res = ready ? JsonResponse(req, 200, R"({"status":"ready"})")
                  : JsonResponse(req, 503, R"({"status":"database unreachable"})");
    } else if (route == "/metrics" && get) {
      const billing::UsageRecorder& r = *s_.recorder;
      s_.metrics->SetBackground({r.rows_written(), r.pending(), r.rows_rejected(), r.rows_lost(), r.failures(),
                                 static_cast<int64_t>(s_.keys->size()), s_.keys->refresh_failures()});
      res = MakeResponse(req, 200, s_.metrics->Serialize(), "text/plain; version=0.0.4");
    } else if (route == "/v1/models" && get) {
      res = JsonResponse(req, 200, RenderModels(s_.catalog));
    } else if (route == "/v1/generation" && get) {
      res = co_await HandleGeneration(req, *url);
    } else if (route.rfind("/v1/models/", 0) == 0 && route.ends_with("/endpoints") && get) {
      // /v1/models/{author}/{slug}/endpoints
      std::string id = route.substr(11, route.size() - 11 - 10);
      const routing::Model* model = s_.catalog.Find(id);
      route = "/v1/models/{id}/endpoints";
      res = model != nullptr ? JsonResponse(req, 200, RenderModelEndpoints(*model))
                             : ErrorResponse(req, Error{ErrorCode::kNotFound, "no model '" + id.substr(0, 200) + "'",
                                                        "", "model_not_found"});
    } else if (route == "/healthz" || route == "/readyz" || route == "/metrics" || route == "/v1/models" ||
               route == "/v1/chat/completions" || route == "/v1/completions" || route == "/v1/generation") {
      Error not_allowed = InvalidArgument("method " + std::string(req.method_string()) + " is not allowed on " + path);
      res = JsonResponse(req, 405, ErrorBody(not_allowed, FlavorOf(req)));
      res.set(http::field::allow, route.find("completions") != std::string::npos ? "POST" : "GET");
    } else {
      route = "unmatched";  // a bounded label set: raw paths would grow /metrics without limit
      res = ErrorResponse(req, Error{ErrorCode::kNotFound,
                                     "no route for " + std::string(req.method_string()) + " " + path, "",
                                     "unknown_url"});
    }
    s_.metrics->CountRequest(route, res.result_int());
    co_return co_await Write(res);
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

  awaitable<Response> HandleGeneration(const Request& req, boost::urls::url_view url) {
    std::optional<billing::KeyRecord> key = co_await Authenticate(req);
    if (!key || key->revoked) co_return ErrorResponse(req, AuthError(req));
    auto it = url.params().find("id");
    if (it == url.params().end() || (*it).value.empty()) {
      co_return ErrorResponse(req, InvalidArgument("query parameter id is required", "id"));
    }
    std::string id = (*it).value;
    std::optional<billing::UsageEvent> event = s_.recorder->FindPending(id);
    if (event && event->api_key_id != key->id) event.reset();
    if (!event) {
      const int64_t key_id = key->id;
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

  static Error AuthError(const Request& req) {
    if (BearerKey(req).empty()) {
      return Error{ErrorCode::kUnauthenticated,
                   "missing API key: send it as 'Authorization: Bearer tg-...'", "", "missing_api_key"};
    }
    return Error{ErrorCode::kUnauthenticated, "invalid or revoked API key", "", "invalid_api_key"};
  }

  // One chat or text completion: authenticate, validate, plan, call the
  // endpoints in order until one answers, stream or assemble, meter.
  awaitable<std::pair<bool, int>> HandleCompletion(const Request& req, RequestKind kind) {
    const auto start = Clock::now();
    const auto created_at = std::chrono::system_clock::now();

    // Rejections before any provider is called: nothing is recorded or billed.
    std::optional<Error> rejection;
    std::optional<billing::KeyRecord> key = co_await Authenticate(req);
    auto parsed = ParseChatRequest(req.body(), kind);
    Result<std::vector<const routing::Endpoint*>> plan = std::vector<const routing::Endpoint*>{};
    Money reserved;
    if (!key || key->revoked) {
      rejection = AuthError(req);
    } else if (!parsed) {
      rejection = parsed.error();
    } else if (plan = routing::Plan(s_.catalog, parsed->model); !plan) {
      rejection = plan.error();
    } else if (reserved = WorstCaseCost(*parsed, *plan); !s_.keys->TryReserve(*key, reserved)) {
      rejection = Error{ErrorCode::kPaymentRequired,
                        "this API key has no credits left; raise its limit or use another key", "",
                        "insufficient_credits"};
    }
    if (rejection) {
      Response res = ErrorResponse(req, *rejection);
      bool keep = co_await Write(res);
      co_return std::pair{keep, HttpStatus(rejection->code)};
    }
    ChatRequest chat = std::move(*parsed);

    // Runs when the call ends, after RecordUsage added the actual cost as
    // pending spend: frees the reservation and lets a graceful stop proceed.
    s_.active_calls++;
    struct Guard {
      Services& s;
      int64_t key_id;
      Money reserved;
      ~Guard() {
        s.keys->Release(key_id, reserved);
        s.active_calls--;
      }
    } guard{s_, key->id, reserved};

    ResponseMeta meta;
    meta.id = NewRequestId();
    meta.created = std::chrono::duration_cast<std::chrono::seconds>(created_at.time_since_epoch()).count();
    meta.model = chat.model;
    meta.kind = kind;
    const auto deadline = start + std::chrono::milliseconds(s_.config->server.request_timeout_ms);
    auto strand = co_await asio::this_coro::executor;

    std::string text;               // all content delivered so far
    bool headers_sent = false;      // streaming: 200 and SSE headers are out
    bool client_gone = false;
    std::optional<Clock::time_point> first_token_at;
    std::optional<Completion> completion;
    std::optional<Error> error;
    const routing::Endpoint* endpoint = nullptr;
    const bool http10 = req.version() < 11;
    http::response<http::empty_body> sse_head{http::status::ok, req.version()};
    http::response_serializer<http::empty_body> sse_serializer{sse_head};

    auto write_sse = [&](const std::string& data) -> awaitable<void> {
      if (client_gone) co_return;
      stream_.expires_after(kWriteTimeout);
      if (http10) {
        auto [ec, n] = co_await asio::async_write(stream_, asio::buffer(data), kUseTuple);
        if (ec) client_gone = true;
        co_return;
      }
      auto chunk = http::make_chunk(asio::buffer(data));
      auto [ec, n] = co_await asio::async_write(stream_, chunk, kUseTuple);
      if (ec) client_gone = true;
    };

    // Cancels the provider: the client went away, or the deadline passed.
    std::stop_source cancel;
    bool deadline_hit = false;
    // A non-streamed call writes nothing until it ends, so a client that
    // leaves is noticed by watching its socket for EOF meanwhile.
    auto closed_early = std::make_shared<std::atomic<bool>>(false);
    if (!chat.stream) asio::co_spawn(strand, WatchForClose(stream_.socket(), cancel, closed_early), asio::detached);

    for (const routing::Endpoint* candidate : *plan) {
      endpoint = candidate;
      meta.provider = std::string(endpoint->provider->Name());
      auto sink = std::make_shared<CallSink>(strand);
      endpoint->provider->Start(ProviderRequest{&chat, endpoint->upstream_model, deadline}, sink, cancel.get_token());
      bool terminal = false;
      while (!terminal) {
        const Clock::time_point wait_until = deadline_hit ? Clock::time_point::max() : deadline;
        std::vector<CallSink::Event> events = co_await sink->Next(wait_until);
        if (events.empty()) {  // deadline: ask the provider to stop, then wait for its terminal event
          deadline_hit = true;
          cancel.request_stop();
          continue;
        }
        std::string batch;
        for (auto& ev : events) {
          if (ev.kind == CallSink::Event::kDelta) {
            if (!first_token_at) first_token_at = Clock::now();
            if (chat.stream) batch += RenderDeltaEvent(meta, ev.text, text.empty() && batch.empty());
            text += ev.text;
          } else if (ev.kind == CallSink::Event::kComplete) {
            completion = ev.completion;
            terminal = true;
          } else {
            error = ev.error;
            // However the provider put it (cancelled by us, its own deadline
            // check), running out of time is a timeout.
            if ((deadline_hit && !client_gone) || error->code == ErrorCode::kDeadlineExceeded) {
              error = Error{ErrorCode::kUpstreamTimeout,
                            "the model did not finish within the request timeout (server.request_timeout_ms)", "",
                            "timeout"};
            }
            terminal = true;
          }
        }
        if (chat.stream && !client_gone && (!batch.empty() || (completion && !headers_sent))) {
          if (!headers_sent) {
            sse_head.set(http::field::server, "tollgate");
            sse_head.set(http::field::content_type, "text/event-stream");
            sse_head.set(http::field::cache_control, "no-cache");
            sse_head.set("x-request-id", meta.id);
            // HTTP/1.0 has no chunked encoding: the body then ends when the
            // connection closes (RFC 9112 section 6.3).
            sse_head.keep_alive(req.keep_alive() && !http10);
            sse_head.chunked(!http10);
            stream_.expires_after(kWriteTimeout);
            auto [ec, n] = co_await http::async_write_header(stream_, sse_serializer, kUseTuple);
            headers_sent = true;
            if (ec) client_gone = true;
            if (batch.empty()) batch = RenderDeltaEvent(meta, "", true);
          }
          co_await write_sse(batch);
          if (client_gone) cancel.request_stop();
        }
      }
      // Fall back to the next endpoint only when nothing reached the client yet.
      if (error && !first_token_at && IsRetryable(error->code) && candidate != plan->back() && !client_gone &&
          !deadline_hit && !closed_early->load()) {
        // The usage row is keyed by the request id, so a failed attempt shows in
        // metrics only; the row records the endpoint that answered.
        s_.metrics->CountCall(meta.model, meta.provider, HttpStatus(error->code), 0, 0, 0, std::nullopt,
                              std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count());
        error.reset();
        continue;
      }
      break;
    }

    if (!chat.stream) {
      beast::error_code ignored;
      stream_.socket().cancel(ignored);  // ends WatchForClose
      if (closed_early->load()) client_gone = true;
    }

    int status = 200;
    bool keep = req.keep_alive();
    // Nothing reached the client when a non-streamed call failed, or a streamed
    // one failed before its headers: answer with the error status, bill nothing.
    const bool delivered = !error || headers_sent;
    // What is reported and billed, once: the provider's usage, else an
    // estimate; nothing when nothing reached the client.
    const Usage usage = delivered ? FinalUsage(chat, text, completion ? &*completion : nullptr) : Usage{};
    const Money cost = CallCost(endpoint->pricing, usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens);
    if (client_gone && !chat.stream) {
      keep = false;  // nobody to answer
    } else if (!delivered) {
      status = HttpStatus(error->code);
      Response res = ErrorResponse(req, *error);
      res.set("x-request-id", meta.id);
      keep = co_await Write(res);
    } else if (chat.stream) {
      std::string tail =
          error ? RenderErrorEvent(*error, FlavorOf(req)) : RenderFinishEvent(meta, completion->finish_reason);
      if (!error && chat.include_usage) tail += RenderUsageEvent(meta, usage, cost);
      tail += kDoneEvent;
      co_await write_sse(tail);
      if (!client_gone && !http10) {
        stream_.expires_after(kWriteTimeout);
        auto last = http::make_chunk_last();
        auto [ec, n] = co_await asio::async_write(stream_, last, kUseTuple);
        if (ec) client_gone = true;
      }
      keep = keep && !client_gone && !http10;
      if (error) status = HttpStatus(error->code);  // recorded; the client already has its 200
    } else {
      Completion final = *completion;
      final.usage = usage;
      Response res = JsonResponse(req, 200, RenderCompletion(meta, text, final, cost));
      res.set("x-request-id", meta.id);
      keep = co_await Write(res);
      client_gone = !keep && req.keep_alive();
    }
    if (client_gone) status = 499;
    // A request the provider found invalid before producing anything (prompt
    // longer than the context) is a rejection like a 400 from validation:
    // no usage row, nothing billed.
    if (!delivered && error->code == ErrorCode::kInvalidArgument) co_return std::pair{keep, status};
    const bool estimated = delivered && !(completion && completion->usage_known);
    RecordUsage(meta, *key, *endpoint, chat.stream, usage, cost, estimated, completion,
                error ? &*error : nullptr, start, created_at, first_token_at, client_gone);
    co_return std::pair{keep, status};
  }

  // Completes when the client closes its connection during a non-streamed
  // call (EOF on the socket), and then cancels the call; returns quietly when
  // the socket is cancelled after the call, or when the client sent more data
  // (a pipelined request: it is still there).
  static awaitable<void> WatchForClose(tcp::socket& socket, std::stop_source cancel,
                                       std::shared_ptr<std::atomic<bool>> closed) {
    for (;;) {
      auto [ec] = co_await socket.async_wait(tcp::socket::wait_read, kUseTuple);
      if (ec) co_return;
      // Never a blocking read here: a readiness report can be stale, and a
      // blocking peek would then hold this I/O thread until the client speaks.
      char byte;
      ssize_t n = ::recv(socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n > 0) co_return;  // a pipelined request: the client is still there
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
      closed->store(true);  // EOF or a socket error: the client is gone
      cancel.request_stop();
      co_return;
    }
  }

  // The most a call can cost, reserved against the key's credit while it runs
  // (billing/README.md): prompt tokens are bounded by the prompt's bytes (+1
  // for BOS, +8 per message for a template; SentencePiece with byte fallback
  // and byte-level BPE emit at most one token per byte), completion tokens by
  // max_tokens, else the endpoint's context length, else
  // kDefaultCompletionBound; priced at the plan's most expensive endpoint.
  static Money WorstCaseCost(const ChatRequest& chat, const std::vector<const routing::Endpoint*>& plan) {
    int64_t prompt_bytes = static_cast<int64_t>(chat.prompt.size()) + 1;
    for (const auto& m : chat.messages) prompt_bytes += static_cast<int64_t>(m.content.size()) + 8;
    Money worst;
    for (const routing::Endpoint* e : plan) {
      int64_t completion = chat.max_tokens ? *chat.max_tokens
                           : e->context_length > 0 ? e->context_length
                                                   : kDefaultCompletionBound;
      worst = std::max(worst, CallCost(e->pricing, prompt_bytes, 0, completion));
    }
    return worst;
  }

  // The usage to report and bill: the provider's when it knows it, else an
  // estimate of 4 bytes per token (OpenAI's rule of thumb for English text).
  static Usage FinalUsage(const ChatRequest& chat, const std::string& text, const Completion* completion) {
    if (completion != nullptr && completion->usage_known) return completion->usage;
    Usage u;
    size_t prompt_bytes = chat.prompt.size();
    for (const auto& m : chat.messages) prompt_bytes += m.content.size();
    u.prompt_tokens = static_cast<int64_t>(prompt_bytes / 4 + 1);
    u.completion_tokens = static_cast<int64_t>((text.size() + 3) / 4);
    return u;
  }

  void RecordUsage(const ResponseMeta& meta, const billing::KeyRecord& key, const routing::Endpoint& endpoint,
                   bool streamed, const Usage& usage, Money cost, bool usage_estimated,
                   const std::optional<Completion>& completion, const Error* error, Clock::time_point start,
                   std::chrono::system_clock::time_point created_at,
                   std::optional<Clock::time_point> first_token_at, bool cancelled) {
    auto ms = [&](Clock::time_point t) {
      return std::chrono::duration_cast<std::chrono::milliseconds>(t - start).count();
    };
    billing::UsageEvent e;
    e.request_id = meta.id;
    e.api_key_id = key.id;
    e.model = meta.model;
    e.provider = meta.provider;
    e.upstream_model = endpoint.upstream_model;
    e.usage = usage;
    e.usage_estimated = usage_estimated;
    e.cost = cost;
    e.latency_ms = ms(Clock::now());
    if (first_token_at) e.ttft_ms = ms(*first_token_at);
    e.status = cancelled ? 499 : error ? HttpStatus(error->code) : 200;
    if (completion) e.finish_reason = std::string(FinishReasonName(completion->finish_reason));
    if (error) {
      e.finish_reason = "error";
      e.error_code = std::string(ErrorType(error->code));
    }
    e.streamed = streamed;
    e.cancelled = cancelled;
    e.created_at = created_at;
    e.finished_at = std::chrono::system_clock::now();
    s_.metrics->CountCall(e.model, e.provider, e.status, e.usage.prompt_tokens, e.usage.completion_tokens,
                          e.cost.nano_usd, e.ttft_ms, e.latency_ms);
    if (e.cost.nano_usd > 0) s_.keys->AddPendingSpend(key.id, e.cost);
    s_.recorder->Record(std::move(e));
  }

  Services& s_;
  beast::tcp_stream stream_;
};

awaitable<void> Accept(Services& services, tcp::acceptor& acceptor) {
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
    socket.set_option(tcp::no_delay(true));
    auto strand = asio::make_strand(acceptor.get_executor());
    asio::co_spawn(
        strand,
        [&services, s = std::move(socket)]() mutable -> awaitable<void> {
          Connection connection(services, std::move(s));
          co_await connection.Run();
        },
        asio::detached);
  }
}

int StartupError(const std::string& what) {
  std::cerr << "tollgate: " << what << "\n";
  return 1;
}

}  // namespace

int Serve(const Config& config, const ServeOptions& options) {
  int threads = config.server.io_threads > 0 ? config.server.io_threads
                                             : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  asio::io_context ioc(threads);
  Services services;
  services.config = &config;
  services.metrics = std::make_unique<Metrics>();

  // Providers: one instance per remote provider, one local engine per model file.
  std::map<std::string, std::unique_ptr<Provider>> remote;
  std::map<std::string, std::unique_ptr<local_backend::LocalProvider>> local;  // by model path
  std::map<std::string, const ProviderConfig*> provider_configs;
  for (const auto& p : config.providers) {
    provider_configs[p.id] = &p;
    if (!p.enabled) {
      std::cerr << "tollgate: provider " << p.id << " disabled: " << p.disabled_reason << "\n";
      continue;
    }
    if (p.type == "openai_compatible") {
      providers::OpenAiCompatibleOptions o;
      o.display_name = p.display_name;
      o.base_url = p.base_url;
      o.api_key = p.api_key;
      o.ca_file = p.ca_file;
      o.connect_timeout_ms = p.connect_timeout_ms;
      o.first_byte_timeout_ms = p.first_byte_timeout_ms;
      auto provider = providers::OpenAiCompatibleProvider::Create(std::move(o), ioc);
      if (!provider) return StartupError("providers." + p.id + ": " + provider.error().message);
      remote[p.id] = std::move(*provider);
    }
  }
  std::vector<routing::Model> models;
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch()).count();
  for (size_t i = 0; i < config.models.size(); ++i) {
    const ModelConfig& mc = config.models[i];
    routing::Model m{mc.id, mc.name, mc.context_length, now, {}};
    for (size_t j = 0; j < mc.endpoints.size(); ++j) {
      const EndpointConfig& ec = mc.endpoints[j];
      const ProviderConfig& pc = *provider_configs.at(ec.provider);
      if (!pc.enabled) continue;
      routing::Endpoint e{ec.provider, nullptr, ec.model, ec.pricing, ec.context_length};
      if (pc.type == "local") {
        auto& engine = local[ec.model];
        if (!engine) {
          local_backend::LocalProviderOptions o;
          o.display_name = pc.display_name;
          o.model_path = ec.model;
          o.context_length = pc.context_length;
          auto created = local_backend::LocalProvider::Create(o);
          if (!created) return StartupError(ec.config_path + " (" + mc.id + "): " + created.error().message);
          engine = std::move(*created);
          std::cerr << "tollgate: loaded " << ec.model << " for " << mc.id << "\n";
        }
        e.provider = engine.get();
        if (e.context_length == 0) e.context_length = engine->ContextLength();
      } else {
        e.provider = remote.at(ec.provider).get();
      }
      m.context_length = std::max(m.context_length, e.context_length);
      m.endpoints.push_back(std::move(e));
    }
    if (m.endpoints.empty()) continue;
    models.push_back(std::move(m));
  }
  if (models.empty()) {
    return StartupError("no model is available: the config lists none, or every model's providers are disabled");
  }
  services.catalog = routing::Catalog(std::move(models));

  auto keys = billing::KeyCache::Start(options.database_url);
  if (!keys) return StartupError("database: " + keys.error().message);
  services.keys = std::move(*keys);
  auto recorder =
      billing::UsageRecorder::Start(options.database_url, config.usage.flush_interval_ms, config.usage.batch_size);
  if (!recorder) return StartupError("database: " + recorder.error().message);
  services.recorder = std::move(*recorder);
  auto generations = billing::GenerationStore::Connect(options.database_url);
  if (!generations) return StartupError("database: " + generations.error().message);
  services.generations = std::move(*generations);

  tcp::acceptor acceptor(ioc);
  {
    beast::error_code ec;
    auto address = asio::ip::make_address(config.server.host, ec);
    if (ec) return StartupError("server.listen: '" + config.server.host + "' is not an IP address");
    tcp::endpoint ep(address, config.server.port);
    acceptor.open(ep.protocol(), ec);
    if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor.bind(ep, ec);
    if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return StartupError("cannot listen on " + config.server.host + ":" + std::to_string(config.server.port) +
                          ": " + ec.message());
    }
  }
  const uint16_t port = acceptor.local_endpoint().port();
  if (!options.port_file.empty()) {
    std::ofstream(options.port_file) << port << "\n";
  }
  std::string shown_host = config.server.host.find(':') != std::string::npos ? "[" + config.server.host + "]"
                                                                            : config.server.host;
  std::cerr << "tollgate: " << services.catalog.models().size() << " models, " << threads
            << " I/O threads; listening on http://" << shown_host << ":" << port << std::endl;

  asio::co_spawn(ioc, Accept(services, acceptor), asio::detached);

  // Stop: close the listener, let in-flight calls finish (bounded), then stop
  // the loop. Usage rows are flushed after the threads are joined.
  asio::signal_set signals(ioc, SIGINT, SIGTERM);
  asio::steady_timer drain(ioc);
  Clock::time_point drain_until;
  std::function<void()> drain_poll = [&] {
    if (services.active_calls == 0 || Clock::now() >= drain_until) {
      ioc.stop();
      return;
    }
    drain.expires_after(std::chrono::milliseconds(20));
    drain.async_wait([&](const beast::error_code&) { drain_poll(); });
  };
  signals.async_wait([&](const beast::error_code& ec, int signo) {
    if (ec) return;
    std::cerr << "tollgate: signal " << signo << ", stopping" << std::endl;
    services.stopping = true;
    beast::error_code ignored;
    acceptor.close(ignored);
    drain_until = Clock::now() + kDrainTimeout;
    drain_poll();
  });

  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back([&] { ioc.run(); });
  ioc.run();
  for (auto& t : pool) t.join();
  services.blocking.join();
  services.key_reloads.join();
  // Bounded: during a database outage the rows still queued after 30 s are
  // logged and counted as lost rather than hanging the shutdown forever.
  if (!services.recorder->StopWithin(std::chrono::seconds(30))) {
    std::cerr << "tollgate: " << services.recorder->rows_lost() << " usage rows could not be written" << std::endl;
  }
  services.keys->Stop();
  std::cerr << "tollgate: stopped; " << services.recorder->rows_written() << " usage rows written" << std::endl;
  return 0;
}

}  // namespace tollgate::gateway
