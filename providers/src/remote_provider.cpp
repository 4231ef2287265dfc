#include "tollgate/providers/remote_provider.hpp"

#include "http_client.hpp"
#include "response_reader.hpp"
#include "tollgate/providers/presets.hpp"
#include "tollgate/wire/anthropic.hpp"
#include "tollgate/wire/gemini.hpp"
#include "tollgate/wire/openai.hpp"
#include "tollgate/wire/responses.hpp"
#include "upstream_errors.hpp"

#include <boost/url/encode.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/rfc/pchars.hpp>
#include <boost/url/url_view.hpp>

#include <utility>

namespace tollgate::providers {
namespace {

using detail::HttpFailure;
using detail::HttpFailureKind;
using detail::HttpResponseHead;

// After the stream's terminator the rest of the body (normally just the
// chunked terminator) is drained so the connection can be reused; more than
// this and we give up on it.
constexpr std::size_t kMaxDrainBytes = 4 * 1024;
constexpr std::string_view kAnthropicVersion = "2023-06-01";  // docs.anthropic.com/en/api/versioning
constexpr std::string_view kOpenAiBaseUrl = "https://api.openai.com/v1";

Error InvalidOption(std::string message, std::string param) {
  return Error{ErrorCode::kInvalidArgument, std::move(message), std::move(param), {}, {}, {}};
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
                    std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
    if (!ok) return false;
  }
  return true;
}

wire::openai::ReasoningStyle StyleOf(PresetReasoning r) {
  switch (r) {
    case PresetReasoning::kNone: return wire::openai::ReasoningStyle::kNone;
    case PresetReasoning::kOpenAi: return wire::openai::ReasoningStyle::kOpenAi;
    case PresetReasoning::kOpenRouter: return wire::openai::ReasoningStyle::kOpenRouter;
    case PresetReasoning::kDeepSeek: return wire::openai::ReasoningStyle::kDeepSeek;
    case PresetReasoning::kQwen: return wire::openai::ReasoningStyle::kQwen;
    case PresetReasoning::kZhipu: return wire::openai::ReasoningStyle::kZhipu;
  }
  return wire::openai::ReasoningStyle::kNone;
}

// Anthropic and Gemini have no legacy completions: a raw prompt goes as one
// user message.
ChatRequest AsChat(const ChatRequest& request) {
  if (request.kind == RequestKind::kChat) return request;
  ChatRequest chat = request;
  chat.kind = RequestKind::kChat;
  chat.messages = {Message{Role::kUser, {TextPart{request.prompt, {}}}, {}}};
  chat.prompt.clear();
  return chat;
}

// Translates one HTTP exchange into StreamSink events. Runs on the call's
// strand (HttpClient guarantees it), so it needs no locking.
class Call final : public detail::HttpResponseHandler {
 public:
  // `hidden`: what no message may show (the upstream's host and host:port,
  // besides the key `secret`), even when the upstream itself writes it into
  // an error text.
  Call(std::shared_ptr<StreamSink> sink, RemoteApi api, RequestKind kind, std::stop_token cancel, std::string secret,
       std::string provider_name, std::vector<std::string> hidden)
      : sink_(std::move(sink)),
        cancel_(std::move(cancel)),
        secret_(secret),
        provider_name_(std::move(provider_name)),
        hidden_(std::move(hidden)),
        reader_(api, kind, std::move(secret)) {}

  void OnHead(const HttpResponseHead& head) override {
    reader_.OnHead(head.status, head.content_type, head.retry_after);
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
    events_.clear();
    auto r = reader_.OnBody(bytes, events_);
    Deliver();
    if (!r) {
      Terminate(r.error());
      return false;
    }
    if (reader_.done()) {
      Complete();
      return true;  // drain the rest so the connection can be pooled
    }
    return true;
  }

  void OnEnd() override {
    if (terminal_) return;
    events_.clear();
    auto r = reader_.OnEnd(events_);
    Deliver();
    if (!r) {
      Terminate(r.error());
      return;
    }
    Complete();
  }

  void OnFailure(const HttpFailure& failure) override {
    if (terminal_) return;
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
        if (failure.head_received) {
          // The body broke off: judge what arrived as if it had ended there.
          // An error status keeps its meaning; a stream is complete only if
          // its finish reason came (else "ended before it finished").
          events_.clear();
          auto r = reader_.OnEnd(events_);
          Deliver();
          if (r) {
            Complete();
          } else {
            Terminate(r.error());
          }
          return;
        }
        code = ErrorCode::kBadGateway;
        break;
    }
    Terminate(Error{code, failure.message, {}, {}, {}, {}});
  }

  bool Ready(std::function<void()> resume) override {
    if (terminal_) return true;
    return sink_->Ready(std::move(resume));
  }

 private:
  static Error CancelledError() { return Error{ErrorCode::kCancelled, "request cancelled", {}, {}, {}, {}}; }

  void Deliver() {
    for (auto& e : events_) sink_->OnEvent(std::move(e));
    events_.clear();
  }

  void Complete() {
    if (terminal_) return;
    terminal_ = true;
    auto sink = std::move(sink_);
    sink->OnComplete();
  }

  void Terminate(Error error) {
    if (terminal_) return;
    terminal_ = true;
    error.message = detail::Redact(std::move(error.message), secret_);
    for (const std::string& h : hidden_) error.message = detail::Redact(std::move(error.message), h);
    if (error.code != ErrorCode::kCancelled) error.provider_name = provider_name_;
    auto sink = std::move(sink_);
    sink->OnError(error);
  }

  std::shared_ptr<StreamSink> sink_;  // released after the terminal event
  std::stop_token cancel_;
  std::string secret_;
  std::string provider_name_;
  std::vector<std::string> hidden_;
  detail::ResponseReader reader_;
  std::vector<StreamEvent> events_;
  std::size_t drained_bytes_ = 0;
  bool terminal_ = false;
};

struct Endpoint {
  detail::HttpUpstream upstream;
  std::string path_prefix;  // "/v1", never ending in '/'
  std::string query;        // "" or "?..."
};

Result<Endpoint> ParseBaseUrl(const std::string& base_url) {
  // The URL itself is not echoed in messages: it might carry credentials.
  auto parsed = boost::urls::parse_uri(base_url);
  if (!parsed) return InvalidOption("base_url is not an absolute URL", "base_url");
  const boost::urls::url_view url = *parsed;
  Endpoint endpoint;
  if (url.scheme_id() == boost::urls::scheme::https) {
    endpoint.upstream.tls = true;
  } else if (url.scheme_id() != boost::urls::scheme::http) {
    return InvalidOption("base_url must use http or https", "base_url");
  }
  if (url.has_userinfo()) return InvalidOption("base_url must not contain user-info; use api_key", "base_url");
  if (url.has_fragment()) return InvalidOption("base_url must not have a fragment", "base_url");
  if (url.host_type() == boost::urls::host_type::ipvfuture || url.host_type() == boost::urls::host_type::none) {
    return InvalidOption("base_url has no usable host", "base_url");
  }
  endpoint.upstream.host = url.host_address();
  if (endpoint.upstream.host.empty()) return InvalidOption("base_url has no host", "base_url");
  if (url.has_port()) {
    if (url.port_number() == 0) return InvalidOption("base_url has an invalid port", "base_url");
    endpoint.upstream.port = url.port_number();
  } else {
    endpoint.upstream.port = endpoint.upstream.tls ? 443 : 80;
  }
  endpoint.path_prefix = std::string(url.encoded_path());
  while (!endpoint.path_prefix.empty() && endpoint.path_prefix.back() == '/') endpoint.path_prefix.pop_back();
  if (url.has_query()) endpoint.query = "?" + std::string(url.encoded_query());
  return endpoint;
}

class RemoteProviderImpl final : public RemoteProvider {
 public:
  RemoteProviderImpl(RemoteProviderOptions options, const Preset& preset, Endpoint endpoint,
                     detail::HttpClient client)
      : options_(std::move(options)), preset_(preset), endpoint_(std::move(endpoint)), client_(std::move(client)) {
    // Longest first, so "host:port" goes before "host".
    hidden_ = {options_.base_url,
               endpoint_.upstream.host + ":" + std::to_string(endpoint_.upstream.port),
               endpoint_.upstream.host};
    // Proxy credentials (a proxy may write them into an error page).
    for (auto& secret : client_.Secrets()) hidden_.insert(hidden_.begin(), std::move(secret));
    switch (options_.api) {
      case RemoteApi::kOpenAiCompatible:
        supported_ = preset_.supported;
        break;
      case RemoteApi::kAnthropic:
        // docs.anthropic.com/en/api/messages: no seed, n, penalties, logprobs;
        // json_schema through structured outputs (wire/anthropic.hpp).
        supported_ = ParameterSet{Param::kTools, Param::kToolChoice, Param::kParallelToolCalls,
                                  Param::kStructuredOutputs, Param::kStop, Param::kTemperature, Param::kTopP,
                                  Param::kTopK, Param::kMaxTokens, Param::kReasoning, Param::kUser,
                                  Param::kImageInput, Param::kDocumentInput};
        break;
      case RemoteApi::kGemini:
        // ai.google.dev/api/generate-content#generationconfig
        supported_ = ParameterSet{Param::kTools, Param::kToolChoice, Param::kResponseFormat,
                                  Param::kStructuredOutputs, Param::kStop, Param::kSeed, Param::kTemperature,
                                  Param::kTopP, Param::kTopK, Param::kFrequencyPenalty, Param::kPresencePenalty,
                                  Param::kMaxTokens, Param::kN, Param::kReasoning, Param::kImageInput};
        break;
      case RemoteApi::kOpenAiResponses:
        // "Create a model response": no stop, seed, penalties, n, top_k,
        // logit_bias; logprobs cannot travel in canonical events (as for the
        // OpenAI preset).
        supported_ = ParameterSet{Param::kTools, Param::kToolChoice, Param::kParallelToolCalls,
                                  Param::kResponseFormat, Param::kStructuredOutputs, Param::kTemperature,
                                  Param::kTopP, Param::kMaxTokens, Param::kReasoning, Param::kUser,
                                  Param::kImageInput};
        break;
    }
  }

  std::string_view Name() const override { return options_.display_name; }
  const ParameterSet& SupportedParameters() const override { return supported_; }

  void Start(const ProviderRequest& request, std::shared_ptr<StreamSink> sink, std::stop_token cancel) override {
    if (sink == nullptr) return;  // nobody to tell; nothing to do
    if (request.request == nullptr) {
      client_.Post([sink] {
        sink->OnError(Error{ErrorCode::kInternal, "provider request without a ChatRequest", {}, {}, {}, {}});
      });
      return;
    }
    const ChatRequest& chat = *request.request;
    // A BYOK key with a control character would split the header: refuse it.
    if (HasControlChars(request.api_key)) {
      client_.Post([sink] {
        sink->OnError(Error{ErrorCode::kInvalidArgument, "the account's provider key contains CR, LF or NUL", {}, {},
                            {}, {}});
      });
      return;
    }
    const std::string& api_key = request.api_key.empty() ? options_.api_key : request.api_key;
    detail::HttpRequest http;
    http.upstream = endpoint_.upstream;
    http.method = "POST";
    http.headers.emplace_back("Content-Type", "application/json");
    http.headers.emplace_back("Accept", "text/event-stream");
    http.headers.emplace_back("User-Agent", "tollgate/0.1");
    RequestKind kind = chat.kind;
    std::string path;
    switch (options_.api) {
      case RemoteApi::kOpenAiCompatible: {
        wire::openai::RequestOptions o;
        o.upstream_model = request.upstream_model;
        o.max_tokens_field = preset_.max_tokens_field;
        o.developer_role = preset_.developer_role;
        o.reasoning = StyleOf(preset_.reasoning);
        o.replay_reasoning_content = preset_.replay_reasoning_content;
        o.cache_control = preset_.cache_control;
        o.stream_options = preset_.stream_options;
        if (preset_.seed_as_random_seed) o.seed_field = "random_seed";
        o.stream = true;
        if (chat.kind == RequestKind::kCompletion) {
          path = "/completions";
          http.body = wire::openai::EncodeCompletionRequest(chat, o);
        } else {
          path = "/chat/completions";
          http.body = wire::openai::EncodeChatRequest(chat, o);
        }
        if (!api_key.empty()) http.headers.emplace_back("Authorization", "Bearer " + api_key);
        break;
      }
      case RemoteApi::kAnthropic: {
        kind = RequestKind::kChat;
        path = "/messages";
        http.body = wire::anthropic::EncodeMessagesRequest(
            AsChat(chat), wire::anthropic::RequestOptions{request.upstream_model, options_.default_max_tokens, true});
        if (!api_key.empty()) http.headers.emplace_back("x-api-key", api_key);
        http.headers.emplace_back("anthropic-version", std::string(kAnthropicVersion));
        std::string betas;
        for (const auto& b : chat.anthropic_beta) {
          if (HasControlChars(b)) continue;
          if (!betas.empty()) betas += ",";
          betas += b;
        }
        if (!betas.empty()) http.headers.emplace_back("anthropic-beta", betas);
        break;
      }
      case RemoteApi::kGemini: {
        kind = RequestKind::kChat;
        std::string_view model = request.upstream_model;
        if (model.starts_with("models/")) model.remove_prefix(7);
        path = "/models/" + boost::urls::encode(model, boost::urls::pchars) + ":streamGenerateContent?alt=sse";
        http.body = wire::gemini::EncodeGenerateContentRequest(AsChat(chat));
        // The key goes in a header, never in the URL (where logs and
        // proxies would keep it).
        if (!api_key.empty()) http.headers.emplace_back("x-goog-api-key", api_key);
        break;
      }
      case RemoteApi::kOpenAiResponses: {
        kind = RequestKind::kChat;
        path = "/responses";
        http.body = wire::responses::EncodeRequest(AsChat(chat), wire::responses::RequestOptions{request.upstream_model, true});
        if (!api_key.empty()) http.headers.emplace_back("Authorization", "Bearer " + api_key);
        break;
      }
    }
    http.target = endpoint_.path_prefix + path;
    if (!endpoint_.query.empty()) {
      http.target += path.find('?') == std::string::npos ? endpoint_.query : "&" + endpoint_.query.substr(1);
    }
    for (const auto& [name, value] : options_.extra_headers) http.headers.emplace_back(name, value);
    http.connect_timeout_ms = options_.connect_timeout_ms;
    http.first_byte_timeout_ms = options_.first_byte_timeout_ms;
    http.read_idle_timeout_ms = options_.first_byte_timeout_ms;
    if (request.deadline != std::chrono::steady_clock::time_point{}) http.deadline = request.deadline;

    auto handler = std::make_shared<Call>(std::move(sink), options_.api, kind, cancel, api_key,
                                          options_.display_name, hidden_);
    client_.Start(std::move(http), std::move(handler), std::move(cancel));
  }

  ConnectionStats Stats() const override {
    const auto s = client_.Stats();
    return ConnectionStats{s.connections_opened, s.connections_reused, s.dead_idle_dropped, s.idle_connections,
                           s.proxy_tunnels,      s.dns_hits,           s.dns_misses};
  }

 private:
  RemoteProviderOptions options_;
  const Preset& preset_;
  Endpoint endpoint_;
  detail::HttpClient client_;
  ParameterSet supported_;
  std::vector<std::string> hidden_;  // in no message: base URL, host:port, host
};

}  // namespace

Result<std::unique_ptr<RemoteProvider>> RemoteProvider::Create(RemoteProviderOptions options,
                                                               boost::asio::io_context& ioc) {
  const Preset* preset = &GenericPreset();
  if (options.api == RemoteApi::kOpenAiCompatible && !options.preset.empty()) {
    preset = FindPreset(options.preset);
    if (preset == nullptr) return InvalidOption("unknown preset '" + options.preset + "'", "preset");
  } else if (options.api != RemoteApi::kOpenAiCompatible && !options.preset.empty()) {
    return InvalidOption("preset applies to openai_compatible providers only", "preset");
  }
  if (options.base_url.empty()) {
    options.base_url = options.api == RemoteApi::kOpenAiResponses ? std::string(kOpenAiBaseUrl) : std::string(preset->base_url);
  }
  if (options.base_url.empty()) return InvalidOption("base_url is required", "base_url");
  if (options.display_name.empty()) options.display_name = std::string(preset->display_name);
  auto endpoint = ParseBaseUrl(options.base_url);
  if (!endpoint) return endpoint.error();
  if (options.connect_timeout_ms <= 0) return InvalidOption("connect_timeout_ms must be positive", "connect_timeout_ms");
  if (options.first_byte_timeout_ms <= 0) {
    return InvalidOption("first_byte_timeout_ms must be positive", "first_byte_timeout_ms");
  }
  if (options.max_idle_connections < 0) {
    return InvalidOption("max_idle_connections must not be negative", "max_idle_connections");
  }
  if (options.dns_ttl_ms < 0) return InvalidOption("dns_ttl_ms must not be negative", "dns_ttl_ms");
  if (options.default_max_tokens < 1) return InvalidOption("default_max_tokens must be positive", "default_max_tokens");
  if (HasControlChars(options.api_key)) return InvalidOption("api_key contains CR, LF or NUL", "api_key");
  for (const auto& [name, value] : options.extra_headers) {
    if (!IsHeaderName(name)) return InvalidOption("extra_headers has an invalid header name", "extra_headers");
    if (HasControlChars(value)) {
      return InvalidOption("extra_headers." + name + " contains CR, LF or NUL", "extra_headers");
    }
  }
  detail::HttpClientOptions client_options;
  client_options.ca_file = options.ca_file;
  client_options.max_idle_connections = static_cast<std::size_t>(options.max_idle_connections);
  client_options.proxy = options.proxy;
  client_options.no_proxy = options.no_proxy;
  client_options.dns_ttl_ms = options.dns_ttl_ms;
  auto client = detail::HttpClient::Create(ioc, std::move(client_options));
  if (!client) return client.error();
  return std::unique_ptr<RemoteProvider>(
      new RemoteProviderImpl(std::move(options), *preset, std::move(*endpoint), std::move(*client)));
}

}  // namespace tollgate::providers
