#include "tollgate/providers/openai_compatible.hpp"

#include "http_client.hpp"
#include "openai_wire.hpp"
#include "tollgate/providers/sse_parser.hpp"

#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>

#include <utility>

namespace tollgate::providers {
namespace {

using detail::HttpFailure;
using detail::HttpFailureKind;
using detail::HttpResponseHead;

constexpr std::size_t kMaxErrorBodyBytes = 16 * 1024;
constexpr std::size_t kMaxWholeBodyBytes = 8 * 1024 * 1024;
// After `[DONE]` the rest of the body (normally just the chunked terminator)
// is drained so the connection can be reused; more than this and we give up.
constexpr std::size_t kMaxDrainBytes = 4 * 1024;

Error InvalidOption(std::string message, std::string param) {
  return Error{ErrorCode::kInvalidArgument, std::move(message), std::move(param), {}};
}

bool HasControlChars(std::string_view value) {
  for (char c : value) {
    if (c == '\r' || c == '\n' || c == '\0') return true;
  }
  return false;
}

// RFC 9110 section 5.6.2 `token`.
bool IsHeaderName(std::string_view name) {
  if (name.empty()) return false;
  for (unsigned char c : name) {
    const bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) !=
                        std::string_view::npos;
    if (!ok) return false;
  }
  return true;
}

bool StartsWithIgnoreCase(std::string_view text, std::string_view prefix) {
  if (text.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    char a = text[i];
    if (a >= 'A' && a <= 'Z') a = static_cast<char>(a - 'A' + 'a');
    if (a != prefix[i]) return false;
  }
  return true;
}

// Translates one HTTP exchange into StreamSink events. Runs on the call's
// strand (HttpClient guarantees it), so it needs no locking.
class OpenAiCall final : public detail::HttpResponseHandler {
 public:
  OpenAiCall(std::shared_ptr<StreamSink> sink, RequestKind kind, std::stop_token cancel,
             std::string secret)
      : sink_(std::move(sink)),
        cancel_(std::move(cancel)),
        secret_(std::move(secret)),
        decoder_(kind) {}

  void OnHead(const HttpResponseHead& head) override {
    status_ = head.status;
    retry_after_ = head.retry_after;
    if (status_ < 200 || status_ > 299) {
      mode_ = Mode::kError;
    } else if (StartsWithIgnoreCase(head.content_type, "application/json")) {
      mode_ = Mode::kWholeJson;  // upstream ignored `stream: true`
    } else {
      mode_ = Mode::kStream;
    }
  }

  bool OnBody(std::string_view bytes) override {
    if (terminal_) {
      drained_bytes_ += bytes.size();
      return drained_bytes_ <= kMaxDrainBytes;
    }
    if (cancel_.stop_requested()) {
      Terminate(CancelledError());
      return false;
    }
    switch (mode_) {
      case Mode::kError:
        error_body_.append(bytes.substr(0, kMaxErrorBodyBytes - error_body_.size()));
        if (error_body_.size() >= kMaxErrorBodyBytes) {
          Terminate(detail::MapUpstreamStatus(status_, error_body_, secret_, retry_after_));
          return false;
        }
        return true;
      case Mode::kWholeJson:
        if (whole_body_.size() + bytes.size() > kMaxWholeBodyBytes) {
          Terminate(Error{ErrorCode::kBadGateway, "upstream response body is too large", {}, {}});
          return false;
        }
        whole_body_.append(bytes);
        return true;
      case Mode::kStream: {
        auto fed = sse_.Feed(bytes, [this](const SseEvent& event) { return OnEvent(event); });
        if (!fed) {
          Terminate(Error{ErrorCode::kBadGateway, "upstream stream: " + fed.error().message, {}, {}});
          return false;
        }
        return !terminal_ || draining_;
      }
    }
    return false;
  }

  void OnEnd() override {
    if (terminal_) return;
    switch (mode_) {
      case Mode::kError:
        Terminate(detail::MapUpstreamStatus(status_, error_body_, secret_, retry_after_));
        return;
      case Mode::kWholeJson: {
        auto step = decoder_.OnWholeResponse(whole_body_, secret_);
        if (step.error) {
          Terminate(*step.error);
          return;
        }
        if (!step.delta.empty()) sink_->OnDelta(step.delta);
        Complete();
        return;
      }
      case Mode::kStream:
        if (events_seen_ == 0) {
          // A 2xx body with no event at all (wrong content type, an HTML
          // page from a proxy): not an empty answer, a broken upstream.
          Terminate(Error{ErrorCode::kBadGateway, "upstream response contained no server-sent events",
                          {}, {}});
          return;
        }
        // End of body without `[DONE]`. Some compatible servers never send
        // the sentinel, so after a chunk with a finish_reason the answer is
        // complete. Without one the upstream was cut off (TCP close, a proxy
        // ending the body): not a short answer but a broken stream, which
        // must not be billed or shown as finished. An event left without its
        // blank line is discarded (WHATWG HTML 9.2.6).
        if (!decoder_.finish_seen()) {
          Terminate(Error{ErrorCode::kBadGateway,
                          "upstream stream ended before it finished (no finish_reason, no [DONE])",
                          {}, {}});
          return;
        }
        Complete();
        return;
    }
  }

  void OnFailure(const HttpFailure& failure) override {
    if (terminal_) return;
    if (mode_ == Mode::kError && failure.kind == HttpFailureKind::kBrokenStream) {
      // The status line already told us what went wrong; the body was cut.
      Terminate(detail::MapUpstreamStatus(status_, error_body_, secret_, retry_after_));
      return;
    }
    ErrorCode code = ErrorCode::kBadGateway;
    switch (failure.kind) {
      case HttpFailureKind::kCancelled:
        Terminate(CancelledError());
        return;
      case HttpFailureKind::kConnect:
        code = ErrorCode::kUnavailable;
        break;
      case HttpFailureKind::kConnectTimeout:
      case HttpFailureKind::kFirstByteTimeout:
      case HttpFailureKind::kReadTimeout:
        code = ErrorCode::kUpstreamTimeout;
        break;
      case HttpFailureKind::kDeadline:
        code = ErrorCode::kDeadlineExceeded;
        break;
      case HttpFailureKind::kBrokenStream:
        code = ErrorCode::kBadGateway;
        break;
    }
    Terminate(Error{code, failure.message, {}, {}});
  }

 private:
  enum class Mode { kStream, kWholeJson, kError };

  static Error CancelledError() {
    return Error{ErrorCode::kCancelled, "request cancelled", {}, {}};
  }

  bool OnEvent(const SseEvent& event) {
    if (cancel_.stop_requested()) {
      Terminate(CancelledError());
      return false;
    }
    ++events_seen_;
    auto step = decoder_.OnData(event.data, secret_);
    if (!step.delta.empty()) sink_->OnDelta(step.delta);
    if (step.error) {
      Terminate(*step.error);
      return false;
    }
    if (step.done) {
      Complete();
      draining_ = true;
      return false;  // nothing after [DONE] matters
    }
    return true;
  }

  void Complete() {
    std::string flushed;
    const Completion completion = decoder_.Finish(&flushed);
    if (!flushed.empty()) sink_->OnDelta(flushed);
    terminal_ = true;
    auto sink = std::move(sink_);
    sink->OnComplete(completion);
  }

  void Terminate(Error error) {
    if (terminal_) return;
    terminal_ = true;
    error.message = detail::Redact(std::move(error.message), secret_);
    auto sink = std::move(sink_);
    sink->OnError(error);
  }

  std::shared_ptr<StreamSink> sink_;  // released after the terminal event
  std::stop_token cancel_;
  std::string secret_;
  detail::OpenAiStreamDecoder decoder_;
  SseParser sse_;
  Mode mode_ = Mode::kStream;
  int status_ = 0;
  std::string retry_after_;
  std::string error_body_;
  std::string whole_body_;
  std::size_t drained_bytes_ = 0;
  std::size_t events_seen_ = 0;
  bool terminal_ = false;
  bool draining_ = false;
};

}  // namespace

struct OpenAiCompatibleProvider::Endpoint {
  detail::HttpUpstream upstream;
  std::string path_prefix;  // "/v1", never ending in '/'
  std::string query;        // "" or "?..."
};

OpenAiCompatibleProvider::OpenAiCompatibleProvider(OpenAiCompatibleOptions options,
                                                   std::unique_ptr<Endpoint> endpoint,
                                                   std::unique_ptr<detail::HttpClient> client)
    : options_(std::move(options)), endpoint_(std::move(endpoint)), client_(std::move(client)) {}

OpenAiCompatibleProvider::~OpenAiCompatibleProvider() = default;

Result<std::unique_ptr<OpenAiCompatibleProvider>> OpenAiCompatibleProvider::Create(
    OpenAiCompatibleOptions options, boost::asio::io_context& ioc) {
  // The URL itself is not echoed in messages: it might carry credentials.
  auto parsed = boost::urls::parse_uri(options.base_url);
  if (!parsed) return InvalidOption("base_url is not an absolute URL", "base_url");
  const boost::urls::url_view url = *parsed;
  auto endpoint = std::make_unique<Endpoint>();
  if (url.scheme_id() == boost::urls::scheme::https) {
    endpoint->upstream.tls = true;
  } else if (url.scheme_id() != boost::urls::scheme::http) {
    return InvalidOption("base_url must use http or https", "base_url");
  }
  if (url.has_userinfo()) {
    return InvalidOption("base_url must not contain user-info; use api_key", "base_url");
  }
  if (url.has_fragment()) return InvalidOption("base_url must not have a fragment", "base_url");
  if (url.host_type() == boost::urls::host_type::ipvfuture ||
      url.host_type() == boost::urls::host_type::none) {
    return InvalidOption("base_url has no usable host", "base_url");
  }
  endpoint->upstream.host = url.host_address();
  if (endpoint->upstream.host.empty()) return InvalidOption("base_url has no host", "base_url");
  if (url.has_port()) {
    if (url.port_number() == 0) return InvalidOption("base_url has an invalid port", "base_url");
    endpoint->upstream.port = url.port_number();
  } else {
    endpoint->upstream.port = endpoint->upstream.tls ? 443 : 80;
  }
  endpoint->path_prefix = std::string(url.encoded_path());
  while (!endpoint->path_prefix.empty() && endpoint->path_prefix.back() == '/') {
    endpoint->path_prefix.pop_back();
  }
  if (url.has_query()) endpoint->query = "?" + std::string(url.encoded_query());

  if (options.connect_timeout_ms <= 0) {
    return InvalidOption("connect_timeout_ms must be positive", "connect_timeout_ms");
  }
  if (options.first_byte_timeout_ms <= 0) {
    return InvalidOption("first_byte_timeout_ms must be positive", "first_byte_timeout_ms");
  }
  if (options.max_idle_connections < 0) {
    return InvalidOption("max_idle_connections must not be negative", "max_idle_connections");
  }
  if (HasControlChars(options.api_key)) {
    return InvalidOption("api_key contains CR, LF or NUL", "api_key");
  }
  for (const auto& [name, value] : options.extra_headers) {
    if (!IsHeaderName(name)) {
      return InvalidOption("extra_headers has an invalid header name", "extra_headers");
    }
    if (HasControlChars(value)) {
      return InvalidOption("extra_headers." + name + " contains CR, LF or NUL", "extra_headers");
    }
  }

  detail::HttpClientOptions client_options;
  client_options.ca_file = options.ca_file;
  client_options.max_idle_connections = static_cast<std::size_t>(options.max_idle_connections);
  auto client = detail::HttpClient::Create(ioc, std::move(client_options));
  if (!client) return client.error();

  return std::unique_ptr<OpenAiCompatibleProvider>(new OpenAiCompatibleProvider(
      std::move(options), std::move(endpoint),
      std::make_unique<detail::HttpClient>(std::move(*client))));
}

void OpenAiCompatibleProvider::Start(const ProviderRequest& request,
                                     std::shared_ptr<StreamSink> sink, std::stop_token cancel) {
  if (sink == nullptr) return;  // nobody to tell; nothing to do
  if (request.request == nullptr) {
    client_->Post([sink] {
      sink->OnError(Error{ErrorCode::kInternal, "provider request without a ChatRequest", {}, {}});
    });
    return;
  }
  const ChatRequest& chat = *request.request;

  detail::HttpRequest http;
  http.upstream = endpoint_->upstream;
  http.method = "POST";
  http.target = endpoint_->path_prefix;
  http.target += detail::EndpointPath(chat.kind);
  http.target += endpoint_->query;
  if (!options_.api_key.empty()) {
    http.headers.emplace_back("Authorization", "Bearer " + options_.api_key);
  }
  http.headers.emplace_back("Content-Type", "application/json");
  http.headers.emplace_back("Accept", "text/event-stream");
  http.headers.emplace_back("User-Agent", "tollgate/0.1");
  for (const auto& [name, value] : options_.extra_headers) http.headers.emplace_back(name, value);
  http.body = detail::BuildRequestBody(chat, request.upstream_model);
  http.connect_timeout_ms = options_.connect_timeout_ms;
  http.first_byte_timeout_ms = options_.first_byte_timeout_ms;
  http.read_idle_timeout_ms = options_.first_byte_timeout_ms;
  if (request.deadline != std::chrono::steady_clock::time_point{}) {
    http.deadline = request.deadline;
  }

  auto handler = std::make_shared<OpenAiCall>(std::move(sink), chat.kind, cancel, options_.api_key);
  client_->Start(std::move(http), std::move(handler), std::move(cancel));
}

ConnectionStats OpenAiCompatibleProvider::Stats() const {
  const auto s = client_->Stats();
  return ConnectionStats{s.connections_opened, s.connections_reused, s.stale_retries,
                         s.idle_connections};
}

}  // namespace tollgate::providers
