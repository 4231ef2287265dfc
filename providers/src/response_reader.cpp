#include "response_reader.hpp"

#include "tollgate/wire/anthropic.hpp"
#include "tollgate/wire/gemini.hpp"
#include "tollgate/wire/openai.hpp"
#include "tollgate/wire/responses.hpp"
#include "tollgate/wire/sse_parser.hpp"
#include "upstream_errors.hpp"

#include <optional>

namespace tollgate::providers::detail {
namespace {

constexpr std::size_t kMaxErrorBodyBytes = 16 * 1024;
constexpr std::size_t kMaxWholeBodyBytes = 8 * 1024 * 1024;

bool StartsWithIgnoreCase(std::string_view text, std::string_view prefix) {
  if (text.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    char a = text[i];
    if (a >= 'A' && a <= 'Z') a = static_cast<char>(a - 'A' + 'a');
    if (a != prefix[i]) return false;
  }
  return true;
}

Error Broken(std::string message) { return Error{ErrorCode::kBadGateway, std::move(message), {}, {}, {}, {}}; }

}  // namespace

struct ResponseReader::Impl {
  enum class Mode { kStream, kWholeJson, kError };

  RemoteApi api;
  RequestKind kind;
  std::string secret;
  Mode mode = Mode::kStream;
  int status = 0;
  std::string retry_after;
  std::string body;  // kError / kWholeJson
  wire::SseParser sse;
  std::optional<wire::openai::ResponseDecoder> openai;
  wire::anthropic::ResponseDecoder anthropic;
  wire::gemini::ResponseDecoder gemini;
  wire::responses::ResponseDecoder responses;
  std::size_t events_seen = 0;
  bool finish_seen = false;  // a FinishDelta came (Anthropic)
  bool failed = false;

  // One SSE event through the API's decoder.
  Result<void> Decode(const wire::SseEvent& event, std::vector<StreamEvent>& out) {
    ++events_seen;
    const std::size_t before = out.size();
    Result<void> r;
    switch (api) {
      case RemoteApi::kOpenAiCompatible: r = openai->OnData(event.data, out); break;
      case RemoteApi::kAnthropic: r = anthropic.OnEvent(event.type, event.data, out); break;
      case RemoteApi::kGemini: r = gemini.OnChunk(event.data, out); break;
      case RemoteApi::kOpenAiResponses: r = responses.OnEvent(event.type, event.data, out); break;
    }
    for (std::size_t i = before; i < out.size(); ++i) {
      if (std::holds_alternative<FinishDelta>(out[i])) finish_seen = true;
    }
    if (!r) {
      Error e = r.error();
      e.message = Redact(std::move(e.message), secret);
      return e;
    }
    return {};
  }

  bool Done() const {
    switch (api) {
      case RemoteApi::kOpenAiCompatible: return openai->done();
      case RemoteApi::kAnthropic: return anthropic.done();
      case RemoteApi::kGemini: return false;  // Gemini streams end with the body
      case RemoteApi::kOpenAiResponses: return responses.done();  // response.completed / .incomplete
    }
    return false;
  }

  bool Finished() const {
    switch (api) {
      case RemoteApi::kOpenAiCompatible: return openai->finish_seen();
      case RemoteApi::kAnthropic: return finish_seen;
      case RemoteApi::kGemini: return gemini.finish_seen();
      case RemoteApi::kOpenAiResponses: return responses.done();  // its final event is also its finish
    }
    return false;
  }

  void Flush(std::vector<StreamEvent>& out) {
    switch (api) {
      case RemoteApi::kOpenAiCompatible: openai->Finish(out); break;
      case RemoteApi::kAnthropic: anthropic.Finish(out); break;
      case RemoteApi::kGemini: gemini.Finish(out); break;
      case RemoteApi::kOpenAiResponses: responses.Finish(out); break;
    }
  }
};

ResponseReader::ResponseReader(RemoteApi api, RequestKind kind, std::string secret) : impl_(std::make_unique<Impl>()) {
  impl_->api = api;
  impl_->kind = kind;
  impl_->secret = std::move(secret);
  impl_->openai.emplace(kind);
}

ResponseReader::~ResponseReader() = default;

void ResponseReader::OnHead(int status, std::string_view content_type, std::string_view retry_after) {
  impl_->status = status;
  impl_->retry_after = std::string(retry_after);
  if (status < 200 || status > 299) {
    impl_->mode = Impl::Mode::kError;
  } else if (StartsWithIgnoreCase(content_type, "application/json")) {
    impl_->mode = Impl::Mode::kWholeJson;  // upstream ignored `stream: true`
  } else {
    impl_->mode = Impl::Mode::kStream;
  }
}

Result<void> ResponseReader::OnBody(std::string_view bytes, std::vector<StreamEvent>& out) {
  Impl& s = *impl_;
  if (s.failed || done()) return {};
  switch (s.mode) {
    case Impl::Mode::kError:
      s.body.append(bytes.substr(0, kMaxErrorBodyBytes - s.body.size()));
      if (s.body.size() >= kMaxErrorBodyBytes) {
        s.failed = true;
        return MapUpstreamStatus(s.status, s.body, s.secret, s.retry_after);
      }
      return {};
    case Impl::Mode::kWholeJson:
      if (s.body.size() + bytes.size() > kMaxWholeBodyBytes) {
        s.failed = true;
        return Broken("the upstream's response body is too large");
      }
      s.body.append(bytes);
      return {};
    case Impl::Mode::kStream: {
      std::optional<Error> error;
      auto fed = s.sse.Feed(bytes, [&](const wire::SseEvent& event) {
        auto r = s.Decode(event, out);
        if (!r) {
          error = r.error();
          return false;
        }
        return !s.Done();  // nothing after the terminator matters
      });
      if (!fed) error = Broken("the upstream's stream is malformed: " + fed.error().message);
      if (error) {
        s.failed = true;
        return *error;
      }
      if (s.Done()) s.Flush(out);
      return {};
    }
  }
  return {};
}

Result<void> ResponseReader::OnEnd(std::vector<StreamEvent>& out) {
  Impl& s = *impl_;
  if (s.failed) return Broken("the upstream's response failed");
  switch (s.mode) {
    case Impl::Mode::kError:
      return MapUpstreamStatus(s.status, s.body, s.secret, s.retry_after);
    case Impl::Mode::kWholeJson: {
      Result<void> r;
      switch (s.api) {
        case RemoteApi::kOpenAiCompatible: r = s.openai->OnWholeResponse(s.body, out); break;
        case RemoteApi::kAnthropic: r = s.anthropic.OnWholeResponse(s.body, out); break;
        case RemoteApi::kGemini: r = s.gemini.OnChunk(s.body, out); break;
        case RemoteApi::kOpenAiResponses: r = s.responses.OnWholeResponse(s.body, out); break;
      }
      if (!r) {
        Error e = r.error();
        e.message = Redact(std::move(e.message), s.secret);
        return e;
      }
      s.Flush(out);
      return {};
    }
    case Impl::Mode::kStream:
      if (s.Done()) return {};
      if (s.events_seen == 0) {
        // A 2xx body with no event at all (wrong content type, an HTML page
        // from a proxy): not an empty answer, a broken upstream.
        return Broken("the upstream's response contained no server-sent events");
      }
      // End of body without the terminator. After a finish reason the answer
      // is complete (some servers omit [DONE]; Gemini has none). Without one
      // the upstream was cut off: not a short answer but a broken stream,
      // which must not be billed or shown as finished.
      if (!s.Finished()) return Broken("the upstream's stream ended before it finished");
      s.Flush(out);
      return {};
  }
  return {};
}

bool ResponseReader::done() const { return impl_->mode == Impl::Mode::kStream && impl_->Done(); }

}  // namespace tollgate::providers::detail
