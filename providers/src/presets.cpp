#include "tollgate/providers/presets.hpp"

namespace tollgate::providers {
namespace {

using P = Param;

// What nearly every OpenAI-compatible chat API takes. Not logprobs: the
// canonical events carry no log probabilities back yet, so asking for them
// would bill for an answer the caller never sees; they are dropped and named.
ParameterSet Common() {
  return ParameterSet{P::kTools,        P::kToolChoice,       P::kParallelToolCalls, P::kResponseFormat,
                      P::kStructuredOutputs, P::kStop,        P::kSeed,              P::kTemperature,
                      P::kTopP,         P::kFrequencyPenalty, P::kPresencePenalty,   P::kMaxTokens,
                      P::kN,            P::kUser,             P::kImageInput};
}

ParameterSet With(ParameterSet set, std::initializer_list<Param> add) {
  for (Param p : add) set.Add(p);
  return set;
}

ParameterSet Without(ParameterSet set, std::initializer_list<Param> remove) {
  for (Param p : remove) set.Remove(p);
  return set;
}

std::vector<Preset> MakePresets() {
  constexpr auto kAsGiven = MaxTokensField::kNone;
  std::vector<Preset> p;
  // OpenAI: reasoning models (o-series, gpt-5) reject max_tokens and take
  // developer messages; max_completion_tokens works for every chat model.
  // `metadata` only with `store: true` ("The 'metadata' parameter is only
  // allowed when 'store' is enabled"), which Tollgate never sets: not declared.
  p.push_back({"openai", "OpenAI", "https://api.openai.com/v1", "OPENAI_API_KEY", MaxTokensField::kMaxCompletionTokens,
               true, PresetReasoning::kOpenAi, false, false, false, true, With(Common(), {P::kReasoning, P::kLogitBias})});
  p.push_back({"deepseek", "DeepSeek", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY", MaxTokensField::kMaxTokens,
               false, PresetReasoning::kDeepSeek, true, false, false, true,
               ParameterSet{P::kTools, P::kToolChoice, P::kResponseFormat, P::kStop, P::kTemperature, P::kTopP,
                            P::kFrequencyPenalty, P::kPresencePenalty, P::kMaxTokens}});
  p.push_back({"moonshot", "Moonshot AI", "https://api.moonshot.ai/v1", "MOONSHOT_API_KEY", MaxTokensField::kMaxTokens,
               false, PresetReasoning::kDeepSeek, true, false, false, true,
               ParameterSet{P::kTools, P::kToolChoice, P::kResponseFormat, P::kStop, P::kTemperature, P::kTopP,
                            P::kFrequencyPenalty, P::kPresencePenalty, P::kMaxTokens, P::kN, P::kImageInput}});
  p.push_back({"qwen", "Alibaba Cloud (Qwen)", "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
               "DASHSCOPE_API_KEY", MaxTokensField::kMaxTokens, false, PresetReasoning::kQwen, false, false, false, true,
               ParameterSet{P::kTools, P::kToolChoice, P::kParallelToolCalls, P::kResponseFormat, P::kStop, P::kSeed,
                            P::kTemperature, P::kTopP, P::kTopK, P::kPresencePenalty, P::kMaxTokens, P::kN,
                            P::kReasoning, P::kUser, P::kImageInput}});
  p.push_back({"zhipu", "Z.ai (GLM)", "https://api.z.ai/api/paas/v4", "ZAI_API_KEY", MaxTokensField::kMaxTokens, false,
               PresetReasoning::kZhipu, false, false, false, true,
               ParameterSet{P::kTools, P::kToolChoice, P::kResponseFormat, P::kStop, P::kTemperature, P::kTopP,
                            P::kMaxTokens, P::kReasoning, P::kUser, P::kImageInput}});
  p.push_back({"minimax", "MiniMax", "https://api.minimax.io/v1", "MINIMAX_API_KEY", MaxTokensField::kMaxTokens, false,
               PresetReasoning::kNone, false, false, false, true,
               ParameterSet{P::kTools, P::kToolChoice, P::kStop, P::kTemperature, P::kTopP, P::kMaxTokens, P::kN,
                            P::kImageInput}});
  p.push_back({"hunyuan", "Tencent Hunyuan", "https://api.hunyuan.cloud.tencent.com/v1", "HUNYUAN_API_KEY",
               MaxTokensField::kMaxTokens, false, PresetReasoning::kNone, false, false, false, true,
               ParameterSet{P::kTools, P::kToolChoice, P::kStop, P::kSeed, P::kTemperature, P::kTopP, P::kMaxTokens,
                            P::kImageInput}});
  p.push_back({"mistral", "Mistral", "https://api.mistral.ai/v1", "MISTRAL_API_KEY", MaxTokensField::kMaxTokens, false,
               PresetReasoning::kNone, false, true, false, /*stream_options=*/false,
               ParameterSet{P::kTools, P::kToolChoice, P::kParallelToolCalls, P::kResponseFormat,
                            P::kStructuredOutputs, P::kStop, P::kSeed, P::kTemperature, P::kTopP,
                            P::kFrequencyPenalty, P::kPresencePenalty, P::kMaxTokens, P::kN, P::kImageInput}});
  p.push_back({"groq", "Groq", "https://api.groq.com/openai/v1", "GROQ_API_KEY", kAsGiven, false,
               PresetReasoning::kOpenAi, false, false, false, true,
               Without(With(Common(), {P::kReasoning}), {P::kN})});
  p.push_back({"together", "Together", "https://api.together.xyz/v1", "TOGETHER_API_KEY", MaxTokensField::kMaxTokens,
               false, PresetReasoning::kNone, false, false, false, true,
               With(Common(), {P::kTopK, P::kRepetitionPenalty, P::kMinP, P::kLogitBias})});
  p.push_back({"fireworks", "Fireworks", "https://api.fireworks.ai/inference/v1", "FIREWORKS_API_KEY",
               MaxTokensField::kMaxTokens, false, PresetReasoning::kNone, false, false, false, true,
               With(Common(), {P::kTopK, P::kRepetitionPenalty, P::kMinP, P::kLogitBias})});
  p.push_back({"xai", "xAI", "https://api.x.ai/v1", "XAI_API_KEY", kAsGiven, false, PresetReasoning::kOpenAi, false, false, false, true, With(Common(), {P::kReasoning})});
  p.push_back({"openrouter", "OpenRouter", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY", kAsGiven, true,
               PresetReasoning::kOpenRouter, false, false, true, true,
               ParameterSet::All().Minus({P::kLogprobs, P::kTopLogprobs})});
  p.push_back({"vllm", "vLLM", "http://127.0.0.1:8000/v1", "VLLM_API_KEY", kAsGiven, false, PresetReasoning::kNone,
               false, false, false, true, With(Common(), {P::kTopK, P::kRepetitionPenalty, P::kMinP, P::kLogitBias})});
  p.push_back({"sglang", "SGLang", "http://127.0.0.1:30000/v1", "SGLANG_API_KEY", kAsGiven, false,
               PresetReasoning::kNone, false, false, false, true,
               With(Common(), {P::kTopK, P::kRepetitionPenalty, P::kMinP})});
  p.push_back({"ollama", "Ollama", "http://127.0.0.1:11434/v1", "OLLAMA_API_KEY", MaxTokensField::kMaxTokens, false,
               PresetReasoning::kNone, false, false, false, true,
               ParameterSet{P::kTools, P::kResponseFormat, P::kStructuredOutputs, P::kStop, P::kSeed, P::kTemperature,
                            P::kTopP, P::kFrequencyPenalty, P::kPresencePenalty, P::kMaxTokens, P::kImageInput}});
  p.push_back({"llamacpp", "llama.cpp", "http://127.0.0.1:8080/v1", "LLAMACPP_API_KEY", MaxTokensField::kMaxTokens,
               false, PresetReasoning::kNone, false, false, false, true,
               With(Without(Common(), {P::kN}), {P::kTopK, P::kMinP, P::kLogitBias})});
  return p;
}

}  // namespace

const std::vector<Preset>& Presets() {
  static const std::vector<Preset> presets = MakePresets();
  return presets;
}

const Preset* FindPreset(std::string_view name) {
  for (const Preset& p : Presets()) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

const Preset& GenericPreset() {
  static const Preset generic{"",    "",    "",    "",    MaxTokensField::kNone,
                              true,  PresetReasoning::kNone, false, false, false,
                              true,  ParameterSet::All().Minus({Param::kLogprobs, Param::kTopLogprobs})};
  return generic;
}

}  // namespace tollgate::providers
