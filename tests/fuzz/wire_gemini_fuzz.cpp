// Fuzz target: the Gemini codecs (wire/include/tollgate/wire/gemini.hpp).
// The input goes to DecodeGenerateContentRequest (a request body, as the mock
// upstreams read it), to ResponseDecoder::OnChunk as one
// GenerateContentResponse (or an array of them: a whole answer), and, parsed
// as an SSE stream (streamGenerateContent?alt=sse), event by event to
// OnChunk. Whatever decodes is encoded again (wire_common.hpp) and must come
// out as valid JSON.
#include "wire_common.hpp"

#include <cstddef>
#include <cstdint>

using namespace tollgate;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  if (auto r = wire::gemini::DecodeGenerateContentRequest(input)) {
    fuzz::EncodeForUpstreams(*r);
  } else {
    fuzz::CheckError(r.error());
  }
  {
    wire::gemini::ResponseDecoder decoder;
    std::vector<StreamEvent> events;
    auto r = decoder.OnChunk(input, events);
    if (!r) fuzz::CheckError(r.error());
    decoder.Finish(events);
    fuzz::EncodeForCallers(events);
  }
  {
    wire::gemini::ResponseDecoder decoder;
    std::vector<StreamEvent> events;
    fuzz::ForEachSseEvent(input, [&](std::string_view, std::string_view data) {
      auto r = decoder.OnChunk(data, events);
      if (!r) {
        fuzz::CheckError(r.error());
        return false;
      }
      return true;
    });
    decoder.Finish(events);
    (void)decoder.finish_seen();
    fuzz::EncodeForCallers(events);
  }
  return 0;
}
