// Request parameters a provider may or may not support, named as OpenRouter
// names them in a model's `supported_parameters`
// (openrouter.ai/docs/api-reference/list-available-models; "Parameters" page:
// openrouter.ai/docs/api-reference/parameters), plus `n` and the image input
// modality.
//
// Each provider declares the set it honours (Provider::SupportedParameters).
// Before a call, the gateway compares it with ParametersUsed(request):
//   - an essential parameter (tools, tool_choice, image input) is never
//     dropped: an endpoint without it is not used, and with none left the
//     caller gets 400 naming it;
//   - any other unsupported parameter is dropped from the request
//     (DropParameters) and named in the response, unless the caller set
//     provider.require_parameters, in which case that endpoint is not used.
#pragma once

#include "tollgate/core/chat.hpp"

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate {

enum class Param : uint8_t {
  kTools,              // "tools"
  kToolChoice,         // "tool_choice"
  kParallelToolCalls,  // "parallel_tool_calls"
  kResponseFormat,     // "response_format": json_object
  kStructuredOutputs,  // "structured_outputs": response_format json_schema
  kStop,               // "stop"
  kSeed,               // "seed"
  kTemperature,        // "temperature"
  kTopP,               // "top_p"
  kTopK,               // "top_k"
  kFrequencyPenalty,   // "frequency_penalty"
  kPresencePenalty,    // "presence_penalty"
  kRepetitionPenalty,  // "repetition_penalty"
  kMinP,               // "min_p"
  kLogitBias,          // "logit_bias"
  kMaxTokens,          // "max_tokens" (max_completion_tokens too)
  kN,                  // "n"
  kLogprobs,           // "logprobs"
  kTopLogprobs,        // "top_logprobs"
  kReasoning,          // "reasoning" (and reasoning_effort)
  kUser,               // "user"
  kMetadata,           // "metadata"
  kImageInput,         // "image_input": image content parts (a modality, not a field)
  kDocumentInput,      // "document_input": essential OpaquePart blocks (Anthropic documents)
  kCount_,
};

// The OpenRouter name of `param` (above).
std::string_view ParamName(Param param);

// The inverse of ParamName: the parameter named `name` (exact, lower case as
// above), or nullopt for any other name. "max_completion_tokens" and
// "reasoning_effort" name kMaxTokens and kReasoning, whose spellings they are.
std::optional<Param> ParamFromName(std::string_view name);

// Tools, tool_choice, image and document input: dropping them would change
// what the conversation means, so they are never dropped.
bool IsEssential(Param param);

class ParameterSet {
 public:
  ParameterSet() = default;
  ParameterSet(std::initializer_list<Param> params);
  static ParameterSet All();

  void Add(Param p) { bits_ |= Bit(p); }
  void Remove(Param p) { bits_ &= ~Bit(p); }
  bool Has(Param p) const { return (bits_ & Bit(p)) != 0; }
  bool empty() const { return bits_ == 0; }
  // The parameters in `*this` and not in `other`.
  ParameterSet Minus(const ParameterSet& other) const;
  // In enum order.
  std::vector<Param> List() const;
  // Names joined with ", " in enum order ("top_k, logprobs").
  std::string Names() const;
  friend bool operator==(const ParameterSet&, const ParameterSet&) = default;

 private:
  static uint32_t Bit(Param p) { return uint32_t{1} << static_cast<unsigned>(p); }
  uint32_t bits_ = 0;
};

// The parameters `request` uses: set fields (tool_choice only when it is not
// "auto", the default; n only when > 1; logprobs only when true) and image
// parts in its messages.
ParameterSet ParametersUsed(const ChatRequest& request);

// Clears the fields of the parameters in `drop` (image input and tools are
// essential: dropping them is a caller error and does nothing).
void DropParameters(ChatRequest& request, const ParameterSet& drop);

}  // namespace tollgate
