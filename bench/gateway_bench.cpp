// Per-call CPU cost of the gateway's own wire work: parsing a chat request,
// rendering stream chunks, and parsing an upstream SSE stream. These run on
// the I/O threads for every call, so they bound the gateway's overhead.
//
//   build/bench/tollgate_gateway_bench --benchmark_min_time=0.2
#include "api.hpp"
#include "tollgate/providers/sse_parser.hpp"

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
    auto r = ParseChatRequest(kChatBody, RequestKind::kChat);
    benchmark::DoNotOptimize(r);
  }
  state.SetBytesProcessed(state.iterations() * kChatBody.size());
}
BENCHMARK(BM_ParseChatRequest);

void BM_RenderDeltaEvent(benchmark::State& state) {
  ResponseMeta meta{"gen-1795940389-h58Wv4oy80DBlz5jcPsJ", 1795940389, "openai/gpt-4o-mini", "OpenAI",
                    RequestKind::kChat};
  for (auto _ : state) {
    std::string e = RenderDeltaEvent(meta, " token", false);
    benchmark::DoNotOptimize(e);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RenderDeltaEvent);

// An OpenAI stream of 200 content chunks plus the usage chunk, fed in 1460-byte
// segments (one TCP MSS), as an upstream's bytes arrive.
void BM_ParseUpstreamSse(benchmark::State& state) {
  std::string stream;
  for (int i = 0; i < 200; ++i) {
    stream += R"(data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini",)"
              R"("choices":[{"index":0,"delta":{"content":" word"},"finish_reason":null}]})"
              "\n\n";
  }
  stream += "data: [DONE]\n\n";
  for (auto _ : state) {
    providers::SseParser parser;
    int events = 0;
    for (size_t off = 0; off < stream.size(); off += 1460) {
      auto r = parser.Feed(std::string_view(stream).substr(off, 1460), [&](const providers::SseEvent&) {
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

}  // namespace
}  // namespace tollgate::gateway
