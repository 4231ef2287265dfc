#include "tollgate/core/parameters.hpp"

namespace tollgate {

std::string_view ParamName(Param param) {
  switch (param) {
    case Param::kTools: return "tools";
    case Param::kToolChoice: return "tool_choice";
    case Param::kParallelToolCalls: return "parallel_tool_calls";
    case Param::kResponseFormat: return "response_format";
    case Param::kStructuredOutputs: return "structured_outputs";
    case Param::kStop: return "stop";
    case Param::kSeed: return "seed";
    case Param::kTemperature: return "temperature";
    case Param::kTopP: return "top_p";
    case Param::kTopK: return "top_k";
    case Param::kFrequencyPenalty: return "frequency_penalty";
    case Param::kPresencePenalty: return "presence_penalty";
    case Param::kRepetitionPenalty: return "repetition_penalty";
    case Param::kMinP: return "min_p";
    case Param::kLogitBias: return "logit_bias";
    case Param::kMaxTokens: return "max_tokens";
    case Param::kN: return "n";
    case Param::kLogprobs: return "logprobs";
    case Param::kTopLogprobs: return "top_logprobs";
    case Param::kReasoning: return "reasoning";
    case Param::kUser: return "user";
    case Param::kMetadata: return "metadata";
    case Param::kImageInput: return "image_input";
    case Param::kDocumentInput: return "document_input";
    case Param::kCount_: break;
  }
  return "unknown";
}

std::optional<Param> ParamFromName(std::string_view name) {
  for (unsigned i = 0; i < static_cast<unsigned>(Param::kCount_); ++i) {
    if (ParamName(static_cast<Param>(i)) == name) return static_cast<Param>(i);
  }
  if (name == "max_completion_tokens") return Param::kMaxTokens;
  if (name == "reasoning_effort") return Param::kReasoning;
  return std::nullopt;
}

bool IsEssential(Param param) {
  return param == Param::kTools || param == Param::kToolChoice || param == Param::kImageInput ||
         param == Param::kDocumentInput;
}

ParameterSet::ParameterSet(std::initializer_list<Param> params) {
  for (Param p : params) Add(p);
}

ParameterSet ParameterSet::All() {
  ParameterSet all;
  for (unsigned i = 0; i < static_cast<unsigned>(Param::kCount_); ++i) all.Add(static_cast<Param>(i));
  return all;
}

ParameterSet ParameterSet::Minus(const ParameterSet& other) const {
  ParameterSet out;
  out.bits_ = bits_ & ~other.bits_;
  return out;
}

std::vector<Param> ParameterSet::List() const {
  std::vector<Param> out;
  for (unsigned i = 0; i < static_cast<unsigned>(Param::kCount_); ++i) {
    if (Has(static_cast<Param>(i))) out.push_back(static_cast<Param>(i));
  }
  return out;
}

std::string ParameterSet::Names() const {
  std::string out;
  for (Param p : List()) {
    if (!out.empty()) out += ", ";
    out += ParamName(p);
  }
  return out;
}

ParameterSet ParametersUsed(const ChatRequest& r) {
  ParameterSet used;
  if (!r.tools.empty()) used.Add(Param::kTools);
  // An explicit "auto" is the default: it asks nothing of the provider.
  if (r.tool_choice && r.tool_choice->mode != ToolChoice::Mode::kAuto) used.Add(Param::kToolChoice);
  if (r.parallel_tool_calls) used.Add(Param::kParallelToolCalls);
  if (r.response_format) {
    if (r.response_format->type == ResponseFormat::Type::kJsonObject) used.Add(Param::kResponseFormat);
    if (r.response_format->type == ResponseFormat::Type::kJsonSchema) used.Add(Param::kStructuredOutputs);
  }
  if (!r.stop.empty()) used.Add(Param::kStop);
  if (r.seed) used.Add(Param::kSeed);
  if (r.temperature) used.Add(Param::kTemperature);
  if (r.top_p) used.Add(Param::kTopP);
  if (r.top_k) used.Add(Param::kTopK);
  if (r.frequency_penalty) used.Add(Param::kFrequencyPenalty);
  if (r.presence_penalty) used.Add(Param::kPresencePenalty);
  if (r.repetition_penalty) used.Add(Param::kRepetitionPenalty);
  if (r.min_p) used.Add(Param::kMinP);
  if (!r.logit_bias.empty()) used.Add(Param::kLogitBias);
  if (r.max_tokens) used.Add(Param::kMaxTokens);
  if (r.n && *r.n > 1) used.Add(Param::kN);
  if (r.logprobs) used.Add(Param::kLogprobs);
  if (r.top_logprobs) used.Add(Param::kTopLogprobs);
  if (r.reasoning) used.Add(Param::kReasoning);
  if (!r.user.empty()) used.Add(Param::kUser);
  if (!r.metadata.empty()) used.Add(Param::kMetadata);
  for (const auto& m : r.messages) {
    for (const auto& part : m.parts) {
      if (std::holds_alternative<ImagePart>(part)) used.Add(Param::kImageInput);
      if (const auto* opaque = std::get_if<OpaquePart>(&part); opaque != nullptr && opaque->essential) {
        used.Add(Param::kDocumentInput);
      }
      if (const auto* result = std::get_if<ToolResultPart>(&part)) {
        for (const auto& c : result->content) {
          if (std::holds_alternative<ImagePart>(c)) used.Add(Param::kImageInput);
        }
      }
    }
  }
  return used;
}

void DropParameters(ChatRequest& r, const ParameterSet& drop) {
  for (Param p : drop.List()) {
    switch (p) {
      case Param::kParallelToolCalls: r.parallel_tool_calls.reset(); break;
      case Param::kResponseFormat:
        if (r.response_format && r.response_format->type == ResponseFormat::Type::kJsonObject) {
          r.response_format.reset();
        }
        break;
      case Param::kStructuredOutputs:
        if (r.response_format && r.response_format->type == ResponseFormat::Type::kJsonSchema) {
          r.response_format.reset();
        }
        break;
      case Param::kStop: r.stop.clear(); break;
      case Param::kSeed: r.seed.reset(); break;
      case Param::kTemperature: r.temperature.reset(); break;
      case Param::kTopP: r.top_p.reset(); break;
      case Param::kTopK: r.top_k.reset(); break;
      case Param::kFrequencyPenalty: r.frequency_penalty.reset(); break;
      case Param::kPresencePenalty: r.presence_penalty.reset(); break;
      case Param::kRepetitionPenalty: r.repetition_penalty.reset(); break;
      case Param::kMinP: r.min_p.reset(); break;
      case Param::kLogitBias: r.logit_bias.clear(); break;
      case Param::kMaxTokens:
        r.max_tokens.reset();
        r.max_tokens_field = MaxTokensField::kNone;
        break;
      case Param::kN: r.n.reset(); break;
      case Param::kLogprobs: r.logprobs = false; break;
      case Param::kTopLogprobs: r.top_logprobs.reset(); break;
      case Param::kReasoning: r.reasoning.reset(); break;
      case Param::kUser: r.user.clear(); break;
      case Param::kMetadata: r.metadata.clear(); break;
      case Param::kTools:
      case Param::kToolChoice:
      case Param::kImageInput:
      case Param::kDocumentInput:
      case Param::kCount_:
        break;  // essential: never dropped
    }
  }
}

}  // namespace tollgate
