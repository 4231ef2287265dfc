// Per-call CPU cost of the gateway's own wire work: decoding a chat request
// into the canonical model, encoding stream chunks, and decoding an upstream
// SSE stream into canonical events. These run on the I/O threads for every
// call, so they bound the gateway's overhead.
//
//   build/bench/tollgate_gateway_bench --benchmark_min_time=0.2
#include "tollgate/wire/openai.hpp"
#include "tollgate/wire/sse_parser.hpp"

#include <benchmark/benchmark.h>

#include <string>

namespace tollgate::gateway {
namespace {

constexpr std::string_view kChatBody =
    R"({"model":"openai/gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},)"
    R"({"role":"user","content":"Write a haiku about gateways and tokens, please."}],"max_tokens":256,)"
    R"("temperature":0.7,"top_p":0.95,"stream":true,"stream_options":{"include_usage":true},"user":"u-123"})";

void BM_ParseChatRequest(benchmark::State& state) {
  for (auto _ : state) {
    auto r = wire::openai::DecodeChatRequest(kChatBody);
    benchmark::DoNotOptimize(r);
  }
  state.SetBytesProcessed(state.iterations() * kChatBody.size());
}
BENCHMARK(BM_ParseChatRequest);

void BM_RenderDeltaEvent(benchmark::State& state) {
  wire::ResponseMeta meta{"gen-1795940389-h58Wv4oy80DBlz5jcPsJ", 1795940389, "openai/gpt-4o-mini", "OpenAI"};
  wire::openai::StreamEncoder encoder(meta, wire::openai::ResponseOptions{});
  benchmark::DoNotOptimize(encoder.Encode(TextDelta{0, "first"}));  // the role chunk goes out once
  const StreamEvent event = TextDelta{0, " token"};
  for (auto _ : state) {
    std::string e = encoder.Encode(event);
    benchmark::DoNotOptimize(e);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RenderDeltaEvent);

// An OpenAI stream of 200 content chunks plus [DONE], fed in 1460-byte
// segments (one TCP MSS), as an upstream's bytes arrive.
std::string UpstreamStream() {
  std::string stream;
  for (int i = 0; i < 200; ++i) {
    stream += R"(data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini",)"
              R"("choices":[{"index":0,"delta":{"content":" word"},"finish_reason":null}]})"
              "\n\n";
  }
  stream += "data: [DONE]\n\n";
  return stream;
}

// SSE framing only.
void BM_ParseUpstreamSse(benchmark::State& state) {
  const std::string stream = UpstreamStream();
  for (auto _ : state) {
    wire::SseParser parser;
    int events = 0;
    for (size_t off = 0; off < stream.size(); off += 1460) {
      auto r = parser.Feed(std::string_view(stream).substr(off, 1460), [&](const wire::SseEvent&) {
        ++events;
        return true;
      });
      benchmark::DoNotOptimize(r);
    }
    benchmark::DoNotOptimize(events);
  }
  state.SetBytesProcessed(state.iterations() * stream.size());
  state.SetItemsProcessed(state.iterations() * 201);
}
BENCHMARK(BM_ParseUpstreamSse);

// SSE framing plus the OpenAI decoder: upstream bytes to canonical events.
void BM_DecodeUpstreamStream(benchmark::State& state) {
  const std::string stream = UpstreamStream();
  std::vector<StreamEvent> out;
  for (auto _ : state) {
    wire::SseParser parser;
    wire::openai::ResponseDecoder decoder(RequestKind::kChat);
    out.clear();
    for (size_t off = 0; off < stream.size(); off += 1460) {
      auto r = parser.Feed(std::string_view(stream).substr(off, 1460), [&](const wire::SseEvent& e) {
        return static_cast<bool>(decoder.OnData(e.data, out));
      });
      benchmark::DoNotOptimize(r);
    }
    benchmark::DoNotOptimize(out.size());
  }
  state.SetBytesProcessed(state.iterations() * stream.size());
  state.SetItemsProcessed(state.iterations() * 201);
}
BENCHMARK(BM_DecodeUpstreamStream);

}  // namespace
}  // namespace tollgate::gateway
