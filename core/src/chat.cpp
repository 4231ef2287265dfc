#include "tollgate/core/chat.hpp"

#include <algorithm>

namespace tollgate {

std::string_view RoleName(Role role) {
  switch (role) {
    case Role::kSystem: return "system";
    case Role::kDeveloper: return "developer";
    case Role::kUser: return "user";
    case Role::kAssistant: return "assistant";
    case Role::kTool: return "tool";
  }
  return "user";
}

std::optional<Role> ParseRole(std::string_view name) {
  if (name == "system") return Role::kSystem;
  if (name == "developer") return Role::kDeveloper;
  if (name == "user") return Role::kUser;
  if (name == "assistant") return Role::kAssistant;
  if (name == "tool") return Role::kTool;
  return std::nullopt;
}

std::string MessageText(const Message& message) {
  std::string text;
  for (const auto& part : message.parts) {
    if (const auto* t = std::get_if<TextPart>(&part)) text += t->text;
  }
  return text;
}

bool ReasoningSettings::Requested() const {
  if (enabled.has_value()) return *enabled;
  if (!effort.empty()) return effort != "none";
  return max_tokens.has_value() && *max_tokens > 0;
}

std::string_view FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kToolCalls: return "tool_calls";
    case FinishReason::kContentFilter: return "content_filter";
    case FinishReason::kError: return "error";
  }
  return "stop";
}

std::size_t EventBytes(const StreamEvent& event) {
  struct Size {
    std::size_t operator()(const TextDelta& e) const { return e.text.size(); }
    std::size_t operator()(const ReasoningDelta& e) const {
      return e.text.size() + e.signature.size() + e.data.size() + e.format.size() + e.id.size();
    }
    std::size_t operator()(const ToolCallDelta& e) const {
      return e.id.size() + e.name.size() + e.arguments.size() + e.thought_signature.size();
    }
    std::size_t operator()(const FinishDelta& e) const { return e.native_reason.size() + e.stop_sequence.size(); }
    std::size_t operator()(const UsageDelta&) const { return 0; }
  };
  // A fixed overhead per event, so that empty events still count.
  return 32 + std::visit(Size{}, event);
}

ChoiceResult* ResponseAccumulator::Choice(int index) {
  if (index < 0 || index >= kMaxChoices) return nullptr;
  const auto i = static_cast<std::size_t>(index);
  if (response_.choices.size() <= i) response_.choices.resize(i + 1);
  return &response_.choices[i];
}

void ResponseAccumulator::Add(const StreamEvent& event) {
  auto part_index = [](int index) { return index >= 0 && index < kMaxParts; };
  if (const auto* e = std::get_if<TextDelta>(&event)) {
    ChoiceResult* choice = Choice(e->choice);
    if (choice == nullptr) return;
    choice->text += e->text;
  } else if (const auto* e = std::get_if<ReasoningDelta>(&event)) {
    ChoiceResult* choice = Choice(e->choice);
    if (choice == nullptr || !part_index(e->index)) return;
    auto& blocks = choice->reasoning;
    const auto i = static_cast<std::size_t>(e->index);
    if (blocks.size() <= i) blocks.resize(i + 1);
    ReasoningPart& block = blocks[i];
    block.kind = e->kind;
    block.text += e->text;
    if (!e->signature.empty()) block.signature = e->signature;
    if (!e->data.empty()) block.data += e->data;
    if (!e->format.empty()) block.format = e->format;
    if (!e->id.empty()) block.id = e->id;
  } else if (const auto* e = std::get_if<ToolCallDelta>(&event)) {
    ChoiceResult* choice = Choice(e->choice);
    if (choice == nullptr || !part_index(e->index)) return;
    auto& calls = choice->tool_calls;
    const auto i = static_cast<std::size_t>(e->index);
    if (calls.size() <= i) calls.resize(i + 1);
    ToolCallPart& call = calls[i];
    if (!e->id.empty()) call.id = e->id;
    if (!e->name.empty()) call.name = e->name;
    call.arguments += e->arguments;
    if (!e->thought_signature.empty()) call.thought_signature = e->thought_signature;
  } else if (const auto* e = std::get_if<FinishDelta>(&event)) {
    ChoiceResult* choice = Choice(e->choice);
    if (choice == nullptr) return;
    choice->finish = e->reason;
    choice->native_finish_reason = e->native_reason;
    choice->stop_sequence = e->stop_sequence;
  } else if (const auto* e = std::get_if<UsageDelta>(&event)) {
    response_.usage = e->usage;
  }
}

ChatResponse ResponseAccumulator::Take() const {
  ChatResponse out = response_;
  if (out.choices.empty()) out.choices.resize(1);
  for (auto& choice : out.choices) {
    for (auto& call : choice.tool_calls) {
      if (call.arguments.empty()) call.arguments = "{}";
    }
  }
  return out;
}

std::vector<StreamEvent> ResponseEvents(const ChatResponse& response) {
  std::vector<StreamEvent> events;
  for (std::size_t c = 0; c < response.choices.size(); ++c) {
    const ChoiceResult& choice = response.choices[c];
    const int ci = static_cast<int>(c);
    for (std::size_t r = 0; r < choice.reasoning.size(); ++r) {
      const ReasoningPart& p = choice.reasoning[r];
      events.emplace_back(ReasoningDelta{ci, static_cast<int>(r), p.kind, p.text, p.signature, p.data,
                                         p.format, p.id});
    }
    if (!choice.text.empty()) events.emplace_back(TextDelta{ci, choice.text});
    for (std::size_t t = 0; t < choice.tool_calls.size(); ++t) {
      const ToolCallPart& call = choice.tool_calls[t];
      events.emplace_back(ToolCallDelta{ci, static_cast<int>(t), call.id, call.name, call.arguments,
                                        call.thought_signature});
    }
    if (choice.finish) {
      events.emplace_back(FinishDelta{ci, *choice.finish, choice.native_finish_reason, choice.stop_sequence});
    }
  }
  if (response.usage) events.emplace_back(UsageDelta{*response.usage});
  return events;
}

}  // namespace tollgate
