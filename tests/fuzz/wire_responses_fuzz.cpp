// Fuzz target: the OpenAI Responses codecs (wire/include/tollgate/wire/responses.hpp).
// The input goes to DecodeRequest (a caller's `POST /v1/responses` body; its
// `input` items are then also prepended as a stored context, as
// previous_response_id does), to UnsealReasoning (an encrypted_content a
// caller sends back), to ResponseDecoder::OnWholeResponse (an upstream's
// whole response object), and, parsed as an SSE stream, event by event to
// ResponseDecoder::OnEvent. Whatever decodes is encoded again
// (wire_common.hpp) and must come out as valid JSON.
#include "wire_common.hpp"

#include <cstddef>
#include <cstdint>

using namespace tollgate;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  if (auto r = wire::responses::DecodeRequest(input)) {
    fuzz::EncodeForUpstreams(r->chat);
    fuzz::CheckJson(boost::json::serialize(r->echo), "responses::Request::echo");
    const boost::json::array prior = r->input;
    if (auto error = wire::responses::PrependContext(*r, prior)) {
      fuzz::CheckError(*error);
    } else {
      fuzz::EncodeForUpstreams(r->chat);
    }
  } else {
    fuzz::CheckError(r.error());
  }
  if (auto parts = wire::responses::UnsealReasoning(input)) {
    // What unseals seals back to something that unseals to the same parts.
    auto again = wire::responses::UnsealReasoning(wire::responses::SealReasoning(*parts));
    if (!again || again->size() != parts->size()) fuzz::Fail("SealReasoning does not round-trip", input);
  }
  {
    wire::responses::ResponseDecoder decoder;
    std::vector<StreamEvent> events;
    auto r = decoder.OnWholeResponse(input, events);
    if (!r) fuzz::CheckError(r.error());
    decoder.Finish(events);
    fuzz::EncodeForCallers(events);
  }
  {
    wire::responses::ResponseDecoder decoder;
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
