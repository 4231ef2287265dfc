// Fuzz target: the OpenAI codecs (wire/include/tollgate/wire/openai.hpp).
// The input goes, as it is, to every decode function: a caller's Chat
// Completions and legacy Completions body (DecodeChatRequest,
// DecodeCompletionRequest), an upstream's whole answer
// (ResponseDecoder::OnWholeResponse) and one stream chunk (OnData); and,
// parsed as an SSE stream, each event's data to a stream decoder (OnData),
// as providers/ feeds it. Whatever decodes is encoded again
// (wire_common.hpp) and must come out as valid JSON.
#include "wire_common.hpp"

#include <cstddef>
#include <cstdint>

using namespace tollgate;

namespace {

void DecodeUpstream(std::string_view input, RequestKind kind) {
  {
    wire::openai::ResponseDecoder decoder(kind);
    std::vector<StreamEvent> events;
    auto r = decoder.OnWholeResponse(input, events);
    if (!r) fuzz::CheckError(r.error());
    decoder.Finish(events);
    fuzz::EncodeForCallers(events);
  }
  {
    wire::openai::ResponseDecoder decoder(kind);
    std::vector<StreamEvent> events;
    fuzz::ForEachSseEvent(input, [&](std::string_view, std::string_view data) {
      auto r = decoder.OnData(data, events);
      if (!r) {
        fuzz::CheckError(r.error());
        return false;
      }
      return !decoder.done();
    });
    decoder.Finish(events);
    (void)decoder.finish_seen();
    fuzz::EncodeForCallers(events);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  if (auto r = wire::openai::DecodeChatRequest(input)) {
    fuzz::EncodeForUpstreams(*r);
  } else {
    fuzz::CheckError(r.error());
  }
  if (auto r = wire::openai::DecodeCompletionRequest(input)) {
    fuzz::EncodeForUpstreams(*r);
  } else {
    fuzz::CheckError(r.error());
  }
  DecodeUpstream(input, RequestKind::kChat);
  DecodeUpstream(input, RequestKind::kCompletion);
  return 0;
}
