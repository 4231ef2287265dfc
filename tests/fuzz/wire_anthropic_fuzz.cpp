// Fuzz target: the Anthropic Messages codecs (wire/include/tollgate/wire/anthropic.hpp).
// The input goes to DecodeMessagesRequest and DecodeCountTokensRequest (a
// caller's body), to ResponseDecoder::OnWholeResponse (an upstream's whole
// Message), and, parsed as an SSE stream, event by event (type and data) to
// ResponseDecoder::OnEvent. Whatever decodes is encoded again
// (wire_common.hpp) and must come out as valid JSON.
#include "wire_common.hpp"

#include <cstddef>
#include <cstdint>

using namespace tollgate;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  if (auto r = wire::anthropic::DecodeMessagesRequest(input)) {
    fuzz::EncodeForUpstreams(*r);
  } else {
    fuzz::CheckError(r.error());
  }
  if (auto r = wire::anthropic::DecodeCountTokensRequest(input); !r) fuzz::CheckError(r.error());
  {
    wire::anthropic::ResponseDecoder decoder;
    std::vector<StreamEvent> events;
    auto r = decoder.OnWholeResponse(input, events);
    if (!r) fuzz::CheckError(r.error());
    decoder.Finish(events);
    fuzz::EncodeForCallers(events);
  }
  {
    wire::anthropic::ResponseDecoder decoder;
    std::vector<StreamEvent> events;
    fuzz::ForEachSseEvent(input, [&](std::string_view type, std::string_view data) {
      auto r = decoder.OnEvent(type, data, events);
      if (!r) {
        fuzz::CheckError(r.error());
        return false;
      }
      return !decoder.done();
    });
    decoder.Finish(events);
    fuzz::EncodeForCallers(events);
  }
  return 0;
}
