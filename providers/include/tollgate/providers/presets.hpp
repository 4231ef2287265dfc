// Presets of OpenAI-compatible providers: each a small declaration (base URL,
// the environment variable the shipped config reads its key from, which
// parameters it takes, and its quirks), not new code. The quirks are applied
// by the OpenAI codec (wire/openai.hpp RequestOptions) and the response
// decoder, which reads every documented variant anyway.
//
// Sources, per preset (API references, read 2026-12):
//   openai      platform.openai.com/docs/api-reference/chat (reasoning models take
//               max_completion_tokens and `developer` messages, not max_tokens)
//   deepseek    api-docs.deepseek.com (reasoning_content, prompt_cache_hit_tokens;
//               thinking-mode tool calls need reasoning_content sent back)
//   moonshot    platform.moonshot.ai/docs (Kimi: reasoning_content, cached_tokens)
//   qwen        Alibaba Model Studio, OpenAI-compatible mode (enable_thinking,
//               thinking_budget, reasoning_content)
//   zhipu       docs.z.ai (GLM: thinking {type}, reasoning_content)
//   minimax     platform.minimax.io/docs (OpenAI-compatible chat)
//   hunyuan     cloud.tencent.com/document/product/1729 (OpenAI-compatible)
//   mistral     docs.mistral.ai/api (random_seed instead of seed; rejects unknown fields)
//   groq        console.groq.com/docs/openai
//   together    docs.together.ai/reference/chat-completions
//   fireworks   docs.fireworks.ai/api-reference/post-chatcompletions
//   xai         docs.x.ai/docs/api-reference
//   openrouter  openrouter.ai/docs/api-reference (reasoning object, reasoning_details,
//               cache_control)
//   vllm, sglang, ollama, llamacpp  self-hosted OpenAI-compatible servers
//               (vLLM and SGLang: reasoning_content from their reasoning parsers;
//               llama.cpp's llama-server; Ollama's /v1)
#pragma once

#include "tollgate/core/chat.hpp"
#include "tollgate/core/parameters.hpp"

#include <string_view>
#include <vector>

namespace tollgate::providers {

// How an OpenAI-compatible upstream takes reasoning settings (mirrors
// wire::openai::ReasoningStyle, kept apart so this header stays wire-free).
enum class PresetReasoning { kNone, kOpenAi, kOpenRouter, kDeepSeek, kQwen, kZhipu };

struct Preset {
  std::string_view name;              // config `preset:` value
  std::string_view display_name;      // default display name
  std::string_view base_url;          // default base_url
  std::string_view api_key_env;       // environment variable of the shipped config
  MaxTokensField max_tokens_field;    // kNone: as the caller wrote it
  bool developer_role;                // false: developer messages go as system
  PresetReasoning reasoning;
  bool replay_reasoning_content;      // assistant tool-call turns carry reasoning_content
  bool seed_as_random_seed;           // Mistral: `random_seed`
  bool cache_control;                 // passes cache_control on content parts
  bool stream_options;                // sends stream_options.include_usage (Mistral rejects it)
  ParameterSet supported;
};

// Every preset, in README order.
const std::vector<Preset>& Presets();

// The preset called `name`, or nullptr.
const Preset* FindPreset(std::string_view name);

// What a generic OpenAI-compatible server without a preset gets: every
// parameter passed on as given, but logprobs (the canonical events do not
// carry them back yet).
const Preset& GenericPreset();

}  // namespace tollgate::providers
