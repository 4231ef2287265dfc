// Tests for the Gemini generateContent codec (wire/src/gemini.cpp).
//
// Response bodies follow the shapes shown in Google's Gemini API reference
// and guides (ai.google.dev/api/generate-content, .../docs/function-calling,
// .../docs/thinking, .../docs/thought-signatures): camelCase fields, one
// GenerateContentResponse per SSE event of streamGenerateContent?alt=sse,
// usageMetadata cumulative, no [DONE].
#include "tollgate/wire/gemini.hpp"

#include "tollgate/wire/sse_parser.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <variant>
#include <vector>

namespace tollgate::wire::gemini {
namespace {

namespace json = boost::json;
using Kind = ReasoningPart::Kind;

// ---------------------------------------------------------------- builders

Message Msg(Role role, std::vector<ContentPart> parts) { return Message{role, std::move(parts), {}}; }
TextPart Text(std::string text) { return TextPart{std::move(text), {}}; }
ImagePart Image(std::string url) { return ImagePart{std::move(url), {}, {}}; }

ToolCallPart Call(std::string id, std::string name, std::string args, std::string signature = {}) {
  ToolCallPart c;
  c.id = std::move(id);
  c.name = std::move(name);
  c.arguments = std::move(args);
  c.thought_signature = std::move(signature);
  return c;
}

ToolResultPart Result(std::string id, std::string name, std::string text, bool is_error = false) {
  ToolResultPart r;
  r.tool_call_id = std::move(id);
  r.name = std::move(name);
  r.content.emplace_back(Text(std::move(text)));
  r.is_error = is_error;
  return r;
}

ReasoningPart Reasoning(Kind kind, std::string text, std::string signature, std::string data, std::string format) {
  ReasoningPart r;
  r.kind = kind;
  r.text = std::move(text);
  r.signature = std::move(signature);
  r.data = std::move(data);
  r.format = std::move(format);
  return r;
}

ChatRequest UserSays(std::string text) {
  ChatRequest r;
  r.model = "google/gemini-2.5-flash";
  r.messages.push_back(Msg(Role::kUser, {Text(std::move(text))}));
  return r;
}

json::object Body(const ChatRequest& request) { return json::parse(EncodeGenerateContentRequest(request)).as_object(); }

json::value J(std::string_view text) { return json::parse(text); }

const json::object& GenerationConfig(const json::object& body) { return body.at("generationConfig").as_object(); }

bool IsValidUtf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    std::size_t n = b < 0x80 ? 1 : (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3 : (b & 0xF8) == 0xF0 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (std::size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

bool IsGeneratedId(const std::string& id) {
  if (id.size() != 5 + 24 || id.rfind("call_", 0) != 0) return false;
  for (std::size_t i = 5; i < id.size(); ++i) {
    const char c = id[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) return false;
  }
  return true;
}

// JSON text in a canonical spelling, so that "2.5" and "2.5E0" compare equal.
std::string NormJson(const std::string& text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  return ec ? "!" + text : json::serialize(v);
}

// ---------------------------------------------------------------- event helpers

// A readable line per event. Tool-call ids are left out (they are made up on
// decoding); tests that care check them separately.
std::string Describe(const StreamEvent& event) {
  if (const auto* e = std::get_if<TextDelta>(&event)) {
    return "text c" + std::to_string(e->choice) + " [" + e->text + "]";
  }
  if (const auto* e = std::get_if<ReasoningDelta>(&event)) {
    return "reasoning c" + std::to_string(e->choice) + " #" + std::to_string(e->index) + " kind" +
           std::to_string(static_cast<int>(e->kind)) + " [" + e->text + "] sig=" + e->signature +
           " data=" + e->data + " format=" + e->format + " id=" + e->id;
  }
  if (const auto* e = std::get_if<ToolCallDelta>(&event)) {
    return "call c" + std::to_string(e->choice) + " #" + std::to_string(e->index) + " " + e->name + " " +
           NormJson(e->arguments) + " sig=" + e->thought_signature + (e->id.empty() ? " no-id" : "");
  }
  if (const auto* e = std::get_if<FinishDelta>(&event)) {
    return "finish c" + std::to_string(e->choice) + " " + std::string(FinishReasonName(e->reason)) + " " +
           e->native_reason;
  }
  const auto& u = std::get<UsageDelta>(event).usage;
  return "usage p" + std::to_string(u.prompt_tokens) + " c" + std::to_string(u.completion_tokens) + " cached" +
         std::to_string(u.cached_tokens) + " cw" + std::to_string(u.cache_write_tokens) + " r" +
         std::to_string(u.reasoning_tokens);
}

std::vector<std::string> Describe(const std::vector<StreamEvent>& events) {
  std::vector<std::string> out;
  for (const auto& e : events) out.push_back(Describe(e));
  return out;
}

std::vector<StreamEvent> DecodeChunks(const std::vector<std::string>& chunks) {
  ResponseDecoder decoder;
  std::vector<StreamEvent> events;
  for (const auto& c : chunks) {
    auto r = decoder.OnChunk(c, events);
    EXPECT_TRUE(r) << (r ? "" : r.error().message) << " in " << c;
  }
  decoder.Finish(events);
  return events;
}

// An SSE body as streamGenerateContent?alt=sse sends it (CRLF line ends).
std::string Sse(const std::vector<std::string>& chunks) {
  std::string out;
  for (const auto& c : chunks) out += "data: " + c + "\r\n\r\n";
  return out;
}

// Feeds `body` to an SseParser `slice` bytes at a time, each event to a decoder.
std::vector<StreamEvent> DecodeSse(std::string_view body, std::size_t slice, bool* finish_seen = nullptr) {
  SseParser parser;
  ResponseDecoder decoder;
  std::vector<StreamEvent> events;
  for (std::size_t i = 0; i < body.size(); i += slice) {
    auto fed = parser.Feed(body.substr(i, slice), [&](const auto& e) {
      auto r = decoder.OnChunk(e.data, events);
      EXPECT_TRUE(r) << (r ? "" : r.error().message);
      return true;
    });
    EXPECT_TRUE(fed);
  }
  decoder.Finish(events);
  if (finish_seen != nullptr) *finish_seen = decoder.finish_seen();
  return events;
}

template <class T>
std::vector<T> Only(const std::vector<StreamEvent>& events) {
  std::vector<T> out;
  for (const auto& e : events) {
    if (const auto* x = std::get_if<T>(&e)) out.push_back(*x);
  }
  return out;
}

ChatResponse Accumulate(const std::vector<StreamEvent>& events) {
  ResponseAccumulator acc;
  for (const auto& e : events) acc.Add(e);
  return acc.Take();
}

// ================================================================ requests: encoding

TEST(GeminiEncode, SystemAndDeveloperMessagesBecomeSystemInstruction) {
  ChatRequest r;
  r.messages.push_back(Msg(Role::kSystem, {Text("Be brief.")}));
  r.messages.push_back(Msg(Role::kUser, {Text("Hi")}));
  r.messages.push_back(Msg(Role::kDeveloper, {Text("Answer in French.")}));
  const json::object body = Body(r);
  EXPECT_EQ(body.at("systemInstruction"), J(R"({"parts":[{"text":"Be brief."},{"text":"Answer in French."}]})"));
  EXPECT_EQ(body.at("contents"), J(R"([{"role":"user","parts":[{"text":"Hi"}]}])"));
}

TEST(GeminiEncode, OnlyParametersThatAreSetAreWritten) {
  const json::object body = Body(UserSays("Hello"));
  EXPECT_EQ(body.size(), 1u) << json::serialize(body);
  EXPECT_TRUE(body.contains("contents"));
}

TEST(GeminiEncode, AssistantTurnsBecomeModelAndSameRoleTurnsMerge) {
  ChatRequest r;
  r.messages.push_back(Msg(Role::kUser, {Text("a")}));
  r.messages.push_back(Msg(Role::kUser, {Text("b")}));
  r.messages.push_back(Msg(Role::kAssistant, {Text("c")}));
  r.messages.push_back(Msg(Role::kAssistant, {Text("d")}));
  r.messages.push_back(Msg(Role::kUser, {Text("e")}));
  EXPECT_EQ(Body(r).at("contents"), J(R"([
      {"role":"user","parts":[{"text":"a"},{"text":"b"}]},
      {"role":"model","parts":[{"text":"c"},{"text":"d"}]},
      {"role":"user","parts":[{"text":"e"}]}])"));
}

TEST(GeminiEncode, CompletionPromptBecomesOneUserTurn) {
  ChatRequest r;
  r.kind = RequestKind::kCompletion;
  r.prompt = "Once upon a time";
  EXPECT_EQ(Body(r).at("contents"), J(R"([{"role":"user","parts":[{"text":"Once upon a time"}]}])"));
}

TEST(GeminiEncode, ImagesBecomeInlineDataOrFileData) {
  ChatRequest r;
  r.messages.push_back(Msg(Role::kUser, {Text("What is in these?"), Image("data:image/png;base64,iVBORw0KGgo="),
                                         Image("https://example.com/cat.JPG?size=large"),
                                         Image("https://example.com/render"), Image("data:text/plain,hi%20there")}));
  EXPECT_EQ(Body(r).at("contents"), J(R"([{"role":"user","parts":[
      {"text":"What is in these?"},
      {"inlineData":{"mimeType":"image/png","data":"iVBORw0KGgo="}},
      {"fileData":{"mimeType":"image/jpeg","fileUri":"https://example.com/cat.JPG?size=large"}},
      {"fileData":{"fileUri":"https://example.com/render"}},
      {"inlineData":{"mimeType":"text/plain","data":"aGkgdGhlcmU="}}]}])"));
}

TEST(GeminiEncode, GenerationConfigCarriesSamplingAndLimits) {
  ChatRequest r = UserSays("Hi");
  r.max_tokens = 256;
  r.stop = {"END", "STOP"};
  r.temperature = 0.5;
  r.top_p = 0.9;
  r.top_k = 40;
  r.n = 2;
  r.seed = 42;
  r.presence_penalty = 0.25;
  r.frequency_penalty = -0.5;
  const json::object config = GenerationConfig(Body(r));
  EXPECT_EQ(config.at("maxOutputTokens"), J("256"));
  EXPECT_EQ(config.at("stopSequences"), J(R"(["END","STOP"])"));
  EXPECT_EQ(config.at("temperature").to_number<double>(), 0.5);
  EXPECT_EQ(config.at("topP").to_number<double>(), 0.9);
  EXPECT_EQ(config.at("topK"), J("40"));
  EXPECT_EQ(config.at("candidateCount"), J("2"));
  EXPECT_EQ(config.at("seed"), J("42"));
  EXPECT_EQ(config.at("presencePenalty").to_number<double>(), 0.25);
  EXPECT_EQ(config.at("frequencyPenalty").to_number<double>(), -0.5);
  EXPECT_EQ(config.size(), 9u) << json::serialize(config);
}

TEST(GeminiEncode, SeedKeepsItsLow32Bits) {
  ChatRequest r = UserSays("Hi");
  r.seed = (uint64_t{1} << 32) + 5;
  EXPECT_EQ(GenerationConfig(Body(r)).at("seed"), J("5"));
  r.seed = 0xFFFFFFFFu;
  EXPECT_EQ(GenerationConfig(Body(r)).at("seed"), J("-1"));
}

TEST(GeminiEncode, LimitsBeyondInt32AreClamped) {
  ChatRequest r = UserSays("Hi");
  r.max_tokens = int64_t{1} << 40;
  EXPECT_EQ(GenerationConfig(Body(r)).at("maxOutputTokens"), J("2147483647"));
}

TEST(GeminiEncode, JsonObjectFormatSetsOnlyTheMimeType) {
  ChatRequest r = UserSays("Hi");
  r.response_format = ResponseFormat{ResponseFormat::Type::kJsonObject, {}, {}, nullptr, {}};
  EXPECT_EQ(json::value(GenerationConfig(Body(r))), J(R"({"responseMimeType":"application/json"})"));
}

TEST(GeminiEncode, JsonSchemaGoesUnchangedToResponseJsonSchema) {
  ChatRequest r = UserSays("Hi");
  ResponseFormat f;
  f.type = ResponseFormat::Type::kJsonSchema;
  f.name = "recipe";
  f.schema = J(R"({"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object",
                  "properties":{"name":{"type":"string"},"steps":{"type":"array","items":{"type":"string"}}},
                  "required":["name"],"additionalProperties":false})");
  r.response_format = f;
  const json::object config = GenerationConfig(Body(r));
  EXPECT_EQ(config.at("responseMimeType"), J(R"("application/json")"));
  EXPECT_EQ(config.at("responseJsonSchema"), f.schema);
  EXPECT_FALSE(config.contains("responseSchema"));
}

TEST(GeminiEncode, LogprobsSetResponseLogprobsAndTheirCount) {
  ChatRequest r = UserSays("Hi");
  r.logprobs = true;
  r.top_logprobs = 3;
  EXPECT_EQ(json::value(GenerationConfig(Body(r))), J(R"({"responseLogprobs":true,"logprobs":3})"));
}

TEST(GeminiEncode, ReasoningSettingsBecomeThinkingConfig) {
  auto thinking = [](ReasoningSettings s) -> json::value {
    ChatRequest r = UserSays("Hi");
    r.reasoning = s;
    const json::object body = Body(r);
    if (!body.contains("generationConfig")) return nullptr;
    return GenerationConfig(body).at("thinkingConfig");
  };
  ReasoningSettings budget;
  budget.max_tokens = 2048;
  EXPECT_EQ(thinking(budget), J(R"({"thinkingBudget":2048,"includeThoughts":true})"));
  budget.exclude = true;
  EXPECT_EQ(thinking(budget), J(R"({"thinkingBudget":2048,"includeThoughts":false})"));

  ReasoningSettings effort;
  effort.effort = "low";
  EXPECT_EQ(thinking(effort), J(R"({"thinkingBudget":1024,"includeThoughts":true})"));
  effort.effort = "medium";
  EXPECT_EQ(thinking(effort), J(R"({"thinkingBudget":8192,"includeThoughts":true})"));
  effort.effort = "high";
  EXPECT_EQ(thinking(effort), J(R"({"thinkingBudget":24576,"includeThoughts":true})"));
  effort.effort = "none";
  EXPECT_EQ(thinking(effort), J(R"({"thinkingBudget":0})"));

  ReasoningSettings enabled;
  enabled.enabled = true;
  EXPECT_EQ(thinking(enabled), J(R"({"thinkingBudget":-1,"includeThoughts":true})"));
  enabled.enabled = false;
  EXPECT_EQ(thinking(enabled), J(R"({"thinkingBudget":0})"));

  ReasoningSettings exclude_only;
  exclude_only.exclude = true;
  EXPECT_TRUE(thinking(exclude_only).is_null());
}

TEST(GeminiEncode, ToolsBecomeFunctionDeclarationsWithPlainJsonSchema) {
  ChatRequest r = UserSays("Weather in Paris?");
  ToolDefinition weather;
  weather.name = "get_weather";
  weather.description = "Current weather for a city";
  weather.parameters = J(R"({"$schema":"http://json-schema.org/draft-07/schema#","type":"object",
      "properties":{"city":{"type":"string"},"unit":{"type":["string","null"],"enum":["c","f",null]}},
      "required":["city"],"additionalProperties":false})");
  weather.strict = true;
  ToolDefinition now;
  now.name = "get_time";
  now.parameters = json::object();
  r.tools = {weather, now};
  const json::object body = Body(r);
  const json::value expected = {
      {{"functionDeclarations",
        {{{"name", "get_weather"}, {"description", "Current weather for a city"}, {"parametersJsonSchema", weather.parameters}},
         {{"name", "get_time"}}}}}};
  EXPECT_EQ(body.at("tools"), expected);
  EXPECT_FALSE(body.contains("toolConfig"));
}

TEST(GeminiEncode, ToolChoiceMapsToFunctionCallingConfig) {
  auto config = [](ToolChoice choice) {
    ChatRequest r = UserSays("Hi");
    ToolDefinition t;
    t.name = "get_weather";
    r.tools = {t};
    r.tool_choice = choice;
    return Body(r).at("toolConfig");
  };
  EXPECT_EQ(config({ToolChoice::Mode::kAuto, {}}), J(R"({"functionCallingConfig":{"mode":"AUTO"}})"));
  EXPECT_EQ(config({ToolChoice::Mode::kNone, {}}), J(R"({"functionCallingConfig":{"mode":"NONE"}})"));
  EXPECT_EQ(config({ToolChoice::Mode::kRequired, {}}), J(R"({"functionCallingConfig":{"mode":"ANY"}})"));
  EXPECT_EQ(config({ToolChoice::Mode::kFunction, "get_weather"}),
            J(R"({"functionCallingConfig":{"mode":"ANY","allowedFunctionNames":["get_weather"]}})"));
}

TEST(GeminiEncode, FunctionPartsCarryNoIdsAndResultsTakeTheCallsName) {
  ChatRequest r = UserSays("Weather in Paris?");
  r.messages.push_back(Msg(Role::kAssistant, {Call("call_abc123", "get_weather", R"({"city":"Paris"})", "c2lnQQ==")}));
  r.messages.push_back(Msg(Role::kTool, {Result("call_abc123", "", R"({"temp_c":21,"sky":"clear"})")}));
  const std::string text = EncodeGenerateContentRequest(r);
  EXPECT_EQ(text.find("call_abc123"), std::string::npos) << text;
  EXPECT_EQ(json::parse(text).at("contents"), J(R"([
      {"role":"user","parts":[{"text":"Weather in Paris?"}]},
      {"role":"model","parts":[{"functionCall":{"name":"get_weather","args":{"city":"Paris"}},"thoughtSignature":"c2lnQQ=="}]},
      {"role":"user","parts":[{"functionResponse":{"name":"get_weather","response":{"temp_c":21,"sky":"clear"}}}]}])"));
}

TEST(GeminiEncode, ParallelResultsShareOneUserTurnInCallOrder) {
  ChatRequest r = UserSays("Weather in Paris and London?");
  r.messages.push_back(Msg(Role::kAssistant, {Call("call_1", "get_weather", R"({"city":"Paris"})", "c2ln"),
                                              Call("call_2", "get_forecast", R"({"city":"London"})")}));
  r.messages.push_back(Msg(Role::kTool, {Result("call_1", "", "sunny")}));
  r.messages.push_back(Msg(Role::kTool, {Result("call_2", "", "city not found", true)}));
  EXPECT_EQ(Body(r).at("contents"), J(R"([
      {"role":"user","parts":[{"text":"Weather in Paris and London?"}]},
      {"role":"model","parts":[
          {"functionCall":{"name":"get_weather","args":{"city":"Paris"}},"thoughtSignature":"c2ln"},
          {"functionCall":{"name":"get_forecast","args":{"city":"London"}}}]},
      {"role":"user","parts":[
          {"functionResponse":{"name":"get_weather","response":{"result":"sunny"}}},
          {"functionResponse":{"name":"get_forecast","response":{"error":"city not found"}}}]}])"));
}

TEST(GeminiEncode, ResultNameGivenByTheCallerWins) {
  ChatRequest r = UserSays("Hi");
  r.messages.push_back(Msg(Role::kAssistant, {Call("call_1", "lookup", "{}", "c2ln")}));
  r.messages.push_back(Msg(Role::kTool, {Result("call_1", "lookup_v2", "ok")}));
  EXPECT_EQ(Body(r).at("contents").as_array()[2], J(R"({"role":"user","parts":[
      {"functionResponse":{"name":"lookup_v2","response":{"result":"ok"}}}]})"));
}

TEST(GeminiEncode, ToolResultImagesFollowTheFunctionResponse) {
  ChatRequest r = UserSays("Take a screenshot");
  r.messages.push_back(Msg(Role::kAssistant, {Call("call_1", "screenshot", "{}", "c2ln")}));
  ToolResultPart result = Result("call_1", "", "captured");
  result.content.emplace_back(Image("data:image/png;base64,AAAA"));
  r.messages.push_back(Msg(Role::kTool, {result}));
  EXPECT_EQ(Body(r).at("contents").as_array()[2], J(R"({"role":"user","parts":[
      {"functionResponse":{"name":"screenshot","response":{"result":"captured"}}},
      {"inlineData":{"mimeType":"image/png","data":"AAAA"}}]})"));
}

TEST(GeminiEncode, CallWithoutArgumentsSendsAnEmptyObject) {
  ChatRequest r = UserSays("What time is it?");
  r.messages.push_back(Msg(Role::kAssistant, {Call("call_1", "get_time", "", "c2ln")}));
  EXPECT_EQ(Body(r).at("contents").as_array()[1].at("parts").as_array()[0].at("functionCall"),
            J(R"({"name":"get_time","args":{}})"));
}

TEST(GeminiEncode, ForeignCallsInTheCurrentTurnGetThePlaceholderSignature) {
  // A function-calling loop that began on another provider and continues on
  // Gemini 3: the first call of each step needs a signature.
  ChatRequest r = UserSays("Plan my day");
  r.messages.push_back(Msg(Role::kAssistant, {Call("call_1", "get_calendar", "{}"), Call("call_2", "get_weather", "{}")}));
  r.messages.push_back(Msg(Role::kTool, {Result("call_1", "", "free")}));
  r.messages.push_back(Msg(Role::kTool, {Result("call_2", "", "rain")}));
  r.messages.push_back(Msg(Role::kAssistant, {Call("call_3", "book", "{}")}));
  r.messages.push_back(Msg(Role::kTool, {Result("call_3", "", "booked")}));
  const json::array contents = Body(r).at("contents").as_array();
  ASSERT_EQ(contents.size(), 5u);
  const json::array& step1 = contents[1].at("parts").as_array();
  EXPECT_EQ(step1[0].at("thoughtSignature"), J(R"("skip_thought_signature_validator")"));
  EXPECT_FALSE(step1[1].as_object().contains("thoughtSignature"));
  EXPECT_EQ(contents[3].at("parts").as_array()[0].at("thoughtSignature"),
            J(R"("skip_thought_signature_validator")"));
}

TEST(GeminiEncode, EarlierTurnsAndRealSignaturesAreLeftAlone) {
  ChatRequest r = UserSays("First question");
  r.messages.push_back(Msg(Role::kAssistant, {Call("call_1", "search", "{}")}));
  r.messages.push_back(Msg(Role::kTool, {Result("call_1", "", "found")}));
  r.messages.push_back(Msg(Role::kAssistant, {Text("Here it is.")}));
  r.messages.push_back(Msg(Role::kUser, {Text("Second question")}));
  r.messages.push_back(Msg(Role::kAssistant, {Call("call_2", "search", "{}", "cmVhbA==")}));
  r.messages.push_back(Msg(Role::kTool, {Result("call_2", "", "found again")}));
  const json::array contents = Body(r).at("contents").as_array();
  ASSERT_EQ(contents.size(), 7u);
  EXPECT_FALSE(contents[1].at("parts").as_array()[0].as_object().contains("thoughtSignature"));
  EXPECT_EQ(contents[5].at("parts").as_array()[0].at("thoughtSignature"), J(R"("cmVhbA==")"));
}

TEST(GeminiEncode, ThoughtSignatureRidesOnTheNextTextPart) {
  ChatRequest r = UserSays("Why is the sky blue?");
  r.messages.push_back(Msg(Role::kAssistant, {Reasoning(Kind::kText, "**Considering scattering**", "", "", "google-gemini-v1"),
                                              Reasoning(Kind::kEncrypted, "", "", "c2lnVA==", "google-gemini-v1"),
                                              Text("Rayleigh scattering.")}));
  r.messages.push_back(Msg(Role::kUser, {Text("Thanks")}));
  EXPECT_EQ(Body(r).at("contents").as_array()[1], J(R"({"role":"model","parts":[
      {"text":"**Considering scattering**","thought":true},
      {"text":"Rayleigh scattering.","thoughtSignature":"c2lnVA=="}]})"));
}

TEST(GeminiEncode, SignatureWithoutTextAfterItBecomesATrailingEmptyTextPart) {
  ChatRequest r = UserSays("Hi");
  r.messages.push_back(Msg(Role::kAssistant, {Text("Hello!"), Reasoning(Kind::kEncrypted, "", "", "c2lnMQ==", "google-gemini-v1"),
                                              Reasoning(Kind::kEncrypted, "", "", "c2lnMg==", "google-gemini-v1")}));
  r.messages.push_back(Msg(Role::kUser, {Text("Bye")}));
  EXPECT_EQ(Body(r).at("contents").as_array()[1], J(R"({"role":"model","parts":[
      {"text":"Hello!"},{"text":"","thoughtSignature":"c2lnMQ=="},{"text":"","thoughtSignature":"c2lnMg=="}]})"));
}

TEST(GeminiEncode, SignedThoughtPartKeepsItsSignature) {
  ChatRequest r = UserSays("Hi");
  r.messages.push_back(Msg(Role::kAssistant, {Reasoning(Kind::kText, "thinking", "c2lnVA==", "", "google-gemini-v1"), Text("Hello")}));
  r.messages.push_back(Msg(Role::kUser, {Text("Bye")}));
  EXPECT_EQ(Body(r).at("contents").as_array()[1].at("parts").as_array()[0],
            J(R"({"text":"thinking","thought":true,"thoughtSignature":"c2lnVA=="})"));
}

TEST(GeminiEncode, ReasoningFromOtherProvidersIsNotReplayed) {
  ChatRequest r = UserSays("Hi");
  r.messages.push_back(Msg(Role::kAssistant, {Reasoning(Kind::kText, "Claude thinking", "EqQBCkYI", "", "anthropic-claude-v1"),
                                              Reasoning(Kind::kEncrypted, "", "", "gAAAAA", "openai-responses-v1"),
                                              Reasoning(Kind::kEncrypted, "", "", "opaque", ""), Text("Hello")}));
  r.messages.push_back(Msg(Role::kUser, {Text("Bye")}));
  EXPECT_EQ(Body(r).at("contents").as_array()[1], J(R"({"role":"model","parts":[{"text":"Hello"}]})"));
}

// ================================================================ requests: decoding

TEST(GeminiDecodeRequest, RejectsWhatIsNotAGenerateContentRequest) {
  auto code_and_param = [](std::string_view body) {
    auto r = DecodeGenerateContentRequest(body);
    EXPECT_FALSE(r) << body;
    return r ? std::string("ok") : std::string(r.error().code == ErrorCode::kInvalidArgument ? "400 " : "? ") + r.error().param;
  };
  EXPECT_EQ(code_and_param("{"), "400 ");
  EXPECT_EQ(code_and_param("[]"), "400 ");
  EXPECT_EQ(code_and_param(R"({"generationConfig":{}})"), "400 contents");
  EXPECT_EQ(code_and_param(R"({"contents":[{"role":"user"}]})"), "400 contents.0");
  EXPECT_EQ(code_and_param(R"({"contents":[{"role":"system","parts":[{"text":"x"}]}]})"), "400 contents.0.role");
  EXPECT_EQ(code_and_param(R"({"contents":[{"role":"user","parts":[{"videoMetadata":{}}]}]})"), "400 contents.0.parts.0");
  EXPECT_EQ(code_and_param(R"({"contents":[],"generationConfig":{"temperature":"hot"}})"),
            "400 generationConfig.temperature");
}

TEST(GeminiDecodeRequest, ReadsTheDocumentedRequestShape) {
  auto r = DecodeGenerateContentRequest(R"({
    "systemInstruction": {"parts": [{"text": "You are a cat. Your name is Neko."}]},
    "contents": [{"parts": [{"text": "Hello there"}]}],
    "generationConfig": {"stopSequences": ["Title"], "temperature": 1.0, "maxOutputTokens": 800,
                         "topP": 0.8, "topK": 10, "seed": -1,
                         "thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": true}}})");
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->messages.size(), 2u);
  EXPECT_EQ(r->messages[0].role, Role::kSystem);
  EXPECT_EQ(MessageText(r->messages[0]), "You are a cat. Your name is Neko.");
  EXPECT_EQ(r->messages[1].role, Role::kUser);
  EXPECT_EQ(MessageText(r->messages[1]), "Hello there");
  EXPECT_EQ(r->stop, std::vector<std::string>{"Title"});
  EXPECT_EQ(r->temperature, 1.0);
  EXPECT_EQ(r->max_tokens, 800);
  EXPECT_EQ(r->top_p, 0.8);
  EXPECT_EQ(r->top_k, 10);
  EXPECT_EQ(r->seed, uint64_t{0xFFFFFFFF});
  ASSERT_TRUE(r->reasoning);
  EXPECT_EQ(r->reasoning->max_tokens, 1024);
  EXPECT_FALSE(r->reasoning->exclude);
}

TEST(GeminiDecodeRequest, IntegersWrittenAsWholeDoublesAreAccepted) {
  auto r = DecodeGenerateContentRequest(R"({"contents":[],"generationConfig":{"maxOutputTokens":8e2,"topK":40.0}})");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->max_tokens, 800);
  EXPECT_EQ(r->top_k, 40);
  auto bad = DecodeGenerateContentRequest(R"({"contents":[],"generationConfig":{"maxOutputTokens":1e300}})");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().param, "generationConfig.maxOutputTokens");
}

TEST(GeminiDecodeRequest, FunctionResponsesPairWithCallsByNameAndOrder) {
  auto r = DecodeGenerateContentRequest(R"({"contents": [
    {"role": "user", "parts": [{"text": "Weather in Paris and London?"}]},
    {"role": "model", "parts": [
      {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"},
      {"functionCall": {"name": "get_weather", "args": {"city": "London"}}}]},
    {"role": "user", "parts": [
      {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}},
      {"functionResponse": {"name": "get_weather", "response": {"temp_c": 12}}}]}]})");
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->messages.size(), 4u);
  const auto& calls = r->messages[1].parts;
  ASSERT_EQ(calls.size(), 2u);
  const auto& paris = std::get<ToolCallPart>(calls[0]);
  const auto& london = std::get<ToolCallPart>(calls[1]);
  EXPECT_TRUE(IsGeneratedId(paris.id)) << paris.id;
  EXPECT_TRUE(IsGeneratedId(london.id)) << london.id;
  EXPECT_NE(paris.id, london.id);
  EXPECT_EQ(paris.thought_signature, "c2ln");
  EXPECT_EQ(london.thought_signature, "");
  EXPECT_EQ(json::parse(london.arguments), J(R"({"city":"London"})"));
  const auto& first = std::get<ToolResultPart>(r->messages[2].parts.at(0));
  const auto& second = std::get<ToolResultPart>(r->messages[3].parts.at(0));
  EXPECT_EQ(r->messages[2].role, Role::kTool);
  EXPECT_EQ(first.tool_call_id, paris.id);
  EXPECT_EQ(first.name, "get_weather");
  EXPECT_EQ(std::get<TextPart>(first.content.at(0)).text, "sunny");
  EXPECT_EQ(second.tool_call_id, london.id);
  EXPECT_EQ(json::parse(std::get<TextPart>(second.content.at(0)).text), J(R"({"temp_c":12})"));
}

TEST(GeminiDecodeRequest, ToolConfigModesMapBack) {
  auto choice = [](std::string_view config) {
    auto r = DecodeGenerateContentRequest(std::string(R"({"contents":[],"toolConfig":{"functionCallingConfig":)") +
                                          std::string(config) + "}}");
    EXPECT_TRUE(r);
    return r->tool_choice.value_or(ToolChoice{ToolChoice::Mode::kAuto, "unset"});
  };
  EXPECT_EQ(choice(R"({"mode":"AUTO"})").mode, ToolChoice::Mode::kAuto);
  EXPECT_EQ(choice(R"({"mode":"NONE"})").mode, ToolChoice::Mode::kNone);
  EXPECT_EQ(choice(R"({"mode":"ANY"})").mode, ToolChoice::Mode::kRequired);
  EXPECT_EQ(choice(R"({"mode":"ANY","allowedFunctionNames":["a","b"]})").mode, ToolChoice::Mode::kRequired);
  const ToolChoice one = choice(R"({"mode":"ANY","allowedFunctionNames":["get_weather"]})");
  EXPECT_EQ(one.mode, ToolChoice::Mode::kFunction);
  EXPECT_EQ(one.function_name, "get_weather");
}

TEST(GeminiDecodeRequest, OpenApiParametersAndResponseSchemaAreReadToo) {
  auto r = DecodeGenerateContentRequest(R"({"contents":[],
    "tools":[{"functionDeclarations":[{"name":"f","description":"d",
      "parameters":{"type":"OBJECT","properties":{"x":{"type":"STRING"}}}}]}],
    "generationConfig":{"responseMimeType":"application/json","responseSchema":{"type":"STRING"}}})");
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->tools.size(), 1u);
  EXPECT_EQ(r->tools[0].parameters, J(R"({"type":"OBJECT","properties":{"x":{"type":"STRING"}}})"));
  ASSERT_TRUE(r->response_format);
  EXPECT_EQ(r->response_format->type, ResponseFormat::Type::kJsonSchema);
  EXPECT_EQ(r->response_format->schema, J(R"({"type":"STRING"})"));
}

// ================================================================ requests: round trip

// Messages as text, with tool-call ids replaced by their order of first
// appearance, so that two conversations compare equal when their results
// answer the same calls.
std::vector<std::string> DescribeMessages(const std::vector<Message>& messages) {
  std::map<std::string, std::string> ids;
  auto id = [&](const std::string& raw) {
    auto [it, inserted] = ids.emplace(raw, "#" + std::to_string(ids.size()));
    return it->second;
  };
  std::vector<std::string> out;
  for (const auto& m : messages) {
    std::string s(RoleName(m.role));
    for (const auto& p : m.parts) {
      if (const auto* t = std::get_if<TextPart>(&p)) {
        s += " text[" + t->text + "]";
      } else if (const auto* i = std::get_if<ImagePart>(&p)) {
        s += " image[" + i->url + "]";
      } else if (const auto* c = std::get_if<ToolCallPart>(&p)) {
        s += " call[" + id(c->id) + " " + c->name + " " + NormJson(c->arguments) + " sig=" + c->thought_signature + "]";
      } else if (const auto* r = std::get_if<ToolResultPart>(&p)) {
        s += " result[" + id(r->tool_call_id) + " " + r->name + (r->is_error ? " error" : "");
        for (const auto& c : r->content) {
          if (const auto* t = std::get_if<TextPart>(&c)) s += " " + t->text;
        }
        s += "]";
      } else if (const auto* r = std::get_if<ReasoningPart>(&p)) {
        s += " reasoning[" + std::to_string(static_cast<int>(r->kind)) + " " + r->text + " sig=" + r->signature +
             " data=" + r->data + " " + r->format + "]";
      }
    }
    out.push_back(std::move(s));
  }
  return out;
}

TEST(GeminiRoundTrip, RequestKeepsEverythingGeminiCarries) {
  ChatRequest in;
  in.messages.push_back(Msg(Role::kSystem, {Text("You are terse.")}));
  in.messages.push_back(Msg(Role::kUser, {Text("Compare these cities"), Image("data:image/jpeg;base64,/9j/4AAQ"),
                                          Image("https://example.com/london.png")}));
  in.messages.push_back(Msg(Role::kAssistant,
                            {Reasoning(Kind::kText, "**Planning lookups**", "dGhvdWdodA==", "", "google-gemini-v1"),
                             Reasoning(Kind::kEncrypted, "", "", "dGV4dA==", "google-gemini-v1"),
                             Text("Let me look both up."),
                             Call("call_p", "get_weather", R"({"city":"Paris","days":3})", "Y2FsbA=="),
                             Call("call_l", "get_weather", R"({"city":"London","days":3})"),
                             Call("call_t", "get_time", "{}")}));
  in.messages.push_back(Msg(Role::kTool, {Result("call_p", "get_weather", R"({"temp_c":21})")}));
  in.messages.push_back(Msg(Role::kTool, {Result("call_l", "get_weather", "rainy")}));
  in.messages.push_back(Msg(Role::kTool, {Result("call_t", "get_time", "clock offline", true)}));
  in.messages.push_back(Msg(Role::kUser, {Text("And tomorrow?")}));

  ToolDefinition weather;
  weather.name = "get_weather";
  weather.description = "Weather for a city";
  weather.parameters = J(R"({"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer"}},
                           "required":["city"],"additionalProperties":false})");
  ToolDefinition time;
  time.name = "get_time";
  time.description = "Local time";
  in.tools = {weather, time};
  in.tool_choice = ToolChoice{ToolChoice::Mode::kFunction, "get_weather"};
  in.max_tokens = 1000;
  in.stop = {"\n\n", "END"};
  in.temperature = 0.7;
  in.top_p = 0.95;
  in.top_k = 32;
  in.n = 2;
  in.seed = 1234;
  in.presence_penalty = 0.5;
  in.frequency_penalty = 0.25;
  ResponseFormat f;
  f.type = ResponseFormat::Type::kJsonSchema;
  f.schema = J(R"({"type":"object","properties":{"answer":{"type":"string"}}})");
  in.response_format = f;
  in.logprobs = true;
  in.top_logprobs = 5;
  ReasoningSettings reasoning;
  reasoning.max_tokens = 4096;
  in.reasoning = reasoning;

  auto out = DecodeGenerateContentRequest(EncodeGenerateContentRequest(in));
  ASSERT_TRUE(out) << out.error().message;
  EXPECT_EQ(DescribeMessages(out->messages), DescribeMessages(in.messages));
  ASSERT_EQ(out->tools.size(), 2u);
  EXPECT_EQ(out->tools[0].name, "get_weather");
  EXPECT_EQ(out->tools[0].description, "Weather for a city");
  EXPECT_EQ(out->tools[0].parameters, weather.parameters);
  EXPECT_EQ(out->tools[1].name, "get_time");
  EXPECT_TRUE(out->tools[1].parameters.is_null());
  ASSERT_TRUE(out->tool_choice);
  EXPECT_EQ(out->tool_choice->mode, ToolChoice::Mode::kFunction);
  EXPECT_EQ(out->tool_choice->function_name, "get_weather");
  EXPECT_EQ(out->max_tokens, in.max_tokens);
  EXPECT_EQ(out->stop, in.stop);
  EXPECT_EQ(out->temperature, in.temperature);
  EXPECT_EQ(out->top_p, in.top_p);
  EXPECT_EQ(out->top_k, in.top_k);
  EXPECT_EQ(out->n, in.n);
  EXPECT_EQ(out->seed, in.seed);
  EXPECT_EQ(out->presence_penalty, in.presence_penalty);
  EXPECT_EQ(out->frequency_penalty, in.frequency_penalty);
  ASSERT_TRUE(out->response_format);
  EXPECT_EQ(out->response_format->type, ResponseFormat::Type::kJsonSchema);
  EXPECT_EQ(out->response_format->schema, f.schema);
  EXPECT_TRUE(out->logprobs);
  EXPECT_EQ(out->top_logprobs, 5);
  ASSERT_TRUE(out->reasoning);
  EXPECT_EQ(out->reasoning->max_tokens, 4096);
  EXPECT_FALSE(out->reasoning->exclude);
  EXPECT_FALSE(out->reasoning->enabled.has_value());
  EXPECT_EQ(out->reasoning->effort, "");
}

TEST(GeminiRoundTrip, RequestFormatsAndReasoningSwitchesSurvive) {
  auto trip = [](ChatRequest r) {
    auto out = DecodeGenerateContentRequest(EncodeGenerateContentRequest(r));
    EXPECT_TRUE(out) << out.error().message;
    return *out;
  };
  ChatRequest text = UserSays("Hi");
  text.response_format = ResponseFormat{};
  EXPECT_EQ(trip(text).response_format->type, ResponseFormat::Type::kText);
  ChatRequest object = UserSays("Hi");
  object.response_format = ResponseFormat{ResponseFormat::Type::kJsonObject, {}, {}, nullptr, {}};
  EXPECT_EQ(trip(object).response_format->type, ResponseFormat::Type::kJsonObject);

  ChatRequest off = UserSays("Hi");
  off.reasoning = ReasoningSettings{};
  off.reasoning->enabled = false;
  EXPECT_EQ(trip(off).reasoning->enabled, false);
  ChatRequest dynamic = UserSays("Hi");
  dynamic.reasoning = ReasoningSettings{};
  dynamic.reasoning->enabled = true;
  dynamic.reasoning->exclude = true;
  const ChatRequest back = trip(dynamic);
  EXPECT_EQ(back.reasoning->enabled, true);
  EXPECT_TRUE(back.reasoning->exclude);
  EXPECT_FALSE(back.reasoning->max_tokens.has_value());
}

// ================================================================ responses: decoding

// streamGenerateContent?alt=sse for "Write a story about a magic backpack",
// shaped as the text-generation guide shows it; usageMetadata on every chunk.
const std::vector<std::string> kTextStream = {
    R"({"candidates":[{"content":{"parts":[{"text":"Once upon"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":8,"totalTokenCount":8,"promptTokensDetails":[{"modality":"TEXT","tokenCount":8}]},"modelVersion":"gemini-2.5-flash","responseId":"r1"})",
    R"({"candidates":[{"content":{"parts":[{"text":" a time, a backpack"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":7,"totalTokenCount":15},"modelVersion":"gemini-2.5-flash","responseId":"r1"})",
    R"({"candidates":[{"content":{"parts":[{"text":" hummed."}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":10,"totalTokenCount":40,"thoughtsTokenCount":22},"modelVersion":"gemini-2.5-flash","responseId":"r1"})",
};

TEST(GeminiDecode, TextStreamBecomesTextDeltasUsageAndFinish) {
  bool finish_seen = false;
  const auto events = DecodeSse(Sse(kTextStream), 1 << 20, &finish_seen);
  EXPECT_EQ(Describe(events), (std::vector<std::string>{
                                  "text c0 [Once upon]",
                                  "usage p8 c0 cached0 cw0 r0",
                                  "text c0 [ a time, a backpack]",
                                  "usage p8 c7 cached0 cw0 r0",
                                  "text c0 [ hummed.]",
                                  "finish c0 stop STOP",
                                  "usage p8 c32 cached0 cw0 r22",
                              }));
  EXPECT_TRUE(finish_seen);
  const ChatResponse r = Accumulate(events);
  EXPECT_EQ(r.choices.at(0).text, "Once upon a time, a backpack hummed.");
  EXPECT_EQ(r.usage, (Usage{8, 32, 0, 22, 0}));
}

// Found by tests/fuzz (wire_gemini): a finishReason or blockReason with
// invalid UTF-8 reached callers as it was (in the Anthropic error event of a
// failed finish), so the gateway wrote JSON that strict parsers refuse.
TEST(GeminiDecode, InvalidUtf8InFinishAndBlockReasonsBecomesReplacementCharacters) {
  const std::string bad = "\x9B\xFF";
  const std::string fffd2 = "\xEF\xBF\xBD\xEF\xBF\xBD";
  ResponseDecoder decoder;
  std::vector<StreamEvent> events;
  ASSERT_TRUE(decoder.OnChunk(
      "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"x\"}]},\"finishReason\":\"S" + bad + "\"}]}", events));
  ResponseDecoder blocked;
  ASSERT_TRUE(blocked.OnChunk("{\"promptFeedback\":{\"blockReason\":\"B" + bad + "\"}}", events));
  std::vector<std::string> reasons;
  for (const auto& e : events) {
    if (const auto* f = std::get_if<FinishDelta>(&e)) reasons.push_back(f->native_reason);
  }
  EXPECT_EQ(reasons, (std::vector<std::string>{"S" + fffd2, "B" + fffd2}));
}

TEST(GeminiDecode, StreamIsNotFinishedBeforeAFinishReason) {
  ResponseDecoder decoder;
  std::vector<StreamEvent> events;
  ASSERT_TRUE(decoder.OnChunk(kTextStream[0], events));
  ASSERT_TRUE(decoder.OnChunk(kTextStream[1], events));
  EXPECT_FALSE(decoder.finish_seen());
  ASSERT_TRUE(decoder.OnChunk(kTextStream[2], events));
  EXPECT_TRUE(decoder.finish_seen());
}

TEST(GeminiDecode, UsageOnlyOnTheLastChunkIsReportedOnce) {
  const auto events = DecodeChunks({
      R"({"candidates":[{"content":{"parts":[{"text":"Hel"}],"role":"model"}}]})",
      R"({"candidates":[{"content":{"parts":[{"text":"lo"}],"role":"model"},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":2,"totalTokenCount":7}})",
  });
  const auto usage = Only<UsageDelta>(events);
  ASSERT_EQ(usage.size(), 1u);
  EXPECT_EQ(usage[0].usage, (Usage{5, 2, 0, 0, 0}));
  EXPECT_EQ(Describe(events.back()), "usage p5 c2 cached0 cw0 r0");
}

TEST(GeminiDecode, UsageCountsFollowOpenAiSemantics) {
  // Cached content is inside promptTokenCount; thoughts are not inside
  // candidatesTokenCount; tool-use prompt is extra prompt.
  const auto events = DecodeChunks({R"({"candidates":[{"content":{"parts":[{"text":"ok"}],"role":"model"},"finishReason":"STOP"}],
      "usageMetadata":{"promptTokenCount":120,"cachedContentTokenCount":100,"candidatesTokenCount":40,
                       "thoughtsTokenCount":60,"toolUsePromptTokenCount":5,"totalTokenCount":225}})"});
  const auto usage = Only<UsageDelta>(events);
  ASSERT_EQ(usage.size(), 1u);
  EXPECT_EQ(usage[0].usage, (Usage{125, 100, 100, 60, 0}));
}

TEST(GeminiDecode, UsageCountsAreSanitised) {
  const auto events = DecodeChunks({R"({"usageMetadata":{"promptTokenCount":-7,"cachedContentTokenCount":50,
      "candidatesTokenCount":18446744073709551615,"thoughtsTokenCount":"many"}})"});
  const auto usage = Only<UsageDelta>(events);
  ASSERT_EQ(usage.size(), 1u);
  EXPECT_EQ(usage[0].usage, (Usage{0, kMaxUsageTokens, 0, 0, 0}));
}

// The function-calling guide's schedule_meeting example, streamed.
TEST(GeminiDecode, FunctionCallBecomesOneToolCallAndFinishesWithToolCalls) {
  const auto events = DecodeChunks({
      R"({"candidates":[{"content":{"parts":[{"functionCall":{"name":"schedule_meeting","args":{"attendees":["Bob","Alice"],"date":"2025-03-14","time":"10:00","topic":"Q3 planning"}},"thoughtSignature":"Q2lBQkJC"}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":97,"candidatesTokenCount":40,"totalTokenCount":137}})",
  });
  const auto calls = Only<ToolCallDelta>(events);
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_TRUE(IsGeneratedId(calls[0].id)) << calls[0].id;
  EXPECT_EQ(calls[0].index, 0);
  EXPECT_EQ(calls[0].name, "schedule_meeting");
  EXPECT_EQ(json::parse(calls[0].arguments),
            J(R"({"attendees":["Bob","Alice"],"date":"2025-03-14","time":"10:00","topic":"Q3 planning"})"));
  EXPECT_EQ(calls[0].thought_signature, "Q2lBQkJC");
  const auto finish = Only<FinishDelta>(events);
  ASSERT_EQ(finish.size(), 1u);
  EXPECT_EQ(finish[0].reason, FinishReason::kToolCalls);
  EXPECT_EQ(finish[0].native_reason, "STOP");
}

// The guide's parallel example (party mode), one call per chunk; only the
// first call carries the signature (thought-signatures guide).
TEST(GeminiDecode, ParallelCallsAcrossChunksGetDistinctIndexes) {
  const auto events = DecodeChunks({
      R"({"candidates":[{"content":{"parts":[{"functionCall":{"name":"power_disco_ball","args":{"power":true}},"thoughtSignature":"U2lnMQ=="}],"role":"model"},"index":0}]})",
      R"({"candidates":[{"content":{"parts":[{"functionCall":{"name":"start_music","args":{"energetic":true,"loud":true}}}],"role":"model"},"index":0}]})",
      R"({"candidates":[{"content":{"parts":[{"functionCall":{"name":"dim_lights","args":{"brightness":0.5}}}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":120,"candidatesTokenCount":30,"totalTokenCount":150}})",
  });
  EXPECT_EQ(Describe(events), (std::vector<std::string>{
                                  R"(call c0 #0 power_disco_ball {"power":true} sig=U2lnMQ==)",
                                  R"(call c0 #1 start_music {"energetic":true,"loud":true} sig=)",
                                  R"(call c0 #2 dim_lights {"brightness":5E-1} sig=)",
                                  "finish c0 tool_calls STOP",
                                  "usage p120 c30 cached0 cw0 r0",
                              }));
  const auto calls = Only<ToolCallDelta>(events);
  std::set<std::string> ids;
  for (const auto& c : calls) {
    EXPECT_TRUE(IsGeneratedId(c.id)) << c.id;
    ids.insert(c.id);
  }
  EXPECT_EQ(ids.size(), 3u);
  const ChatResponse r = Accumulate(events);
  ASSERT_EQ(r.choices.at(0).tool_calls.size(), 3u);
  EXPECT_EQ(r.choices[0].tool_calls[2].name, "dim_lights");
}

TEST(GeminiDecode, CallWithoutArgsHasEmptyObjectArguments) {
  const auto calls = Only<ToolCallDelta>(DecodeChunks({
      R"({"candidates":[{"content":{"parts":[{"functionCall":{"name":"get_time"}}],"role":"model"},"finishReason":"STOP"}]})",
  }));
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].arguments, "{}");
}

TEST(GeminiDecode, TextThenCallInOneCandidateFinishesWithToolCalls) {
  const auto events = DecodeChunks({
      R"({"candidates":[{"content":{"parts":[{"text":"Let me check."}],"role":"model"}}]})",
      R"({"candidates":[{"content":{"parts":[{"functionCall":{"name":"get_weather","args":{"city":"Paris"}}}],"role":"model"},"finishReason":"STOP"}]})",
  });
  EXPECT_EQ(Describe(events), (std::vector<std::string>{
                                  "text c0 [Let me check.]",
                                  R"(call c0 #0 get_weather {"city":"Paris"} sig=)",
                                  "finish c0 tool_calls STOP",
                              }));
}

// includeThoughts: thought summaries stream as parts with "thought": true
// (thinking guide), then the answer.
TEST(GeminiDecode, ThoughtSummariesBecomeOneReasoningBlock) {
  const auto events = DecodeChunks({
      R"({"candidates":[{"content":{"parts":[{"text":"**Analyzing the riddle**\n\n","thought":true}],"role":"model"},"index":0}]})",
      R"({"candidates":[{"content":{"parts":[{"text":"The answer hinges on wordplay.","thought":true}],"role":"model"},"index":0}]})",
      R"({"candidates":[{"content":{"parts":[{"text":"A towel."}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":20,"candidatesTokenCount":3,"thoughtsTokenCount":150,"totalTokenCount":173}})",
  });
  EXPECT_EQ(Describe(events), (std::vector<std::string>{
                                  "reasoning c0 #0 kind0 [**Analyzing the riddle**\n\n] sig= data= format=google-gemini-v1 id=",
                                  "reasoning c0 #0 kind0 [The answer hinges on wordplay.] sig= data= format=google-gemini-v1 id=",
                                  "text c0 [A towel.]",
                                  "finish c0 stop STOP",
                                  "usage p20 c153 cached0 cw0 r150",
                              }));
  const ChatResponse r = Accumulate(events);
  ASSERT_EQ(r.choices.at(0).reasoning.size(), 1u);
  EXPECT_EQ(r.choices[0].reasoning[0].text, "**Analyzing the riddle**\n\nThe answer hinges on wordplay.");
}

TEST(GeminiDecode, ThoughtsSeparatedByAnswerTextAreSeparateBlocks) {
  const auto events = DecodeChunks({
      R"({"candidates":[{"content":{"parts":[{"text":"first","thought":true},{"text":"Answer. "},{"text":"second","thought":true},{"text":"More."}],"role":"model"},"finishReason":"STOP"}]})",
  });
  const auto reasoning = Only<ReasoningDelta>(events);
  ASSERT_EQ(reasoning.size(), 2u);
  EXPECT_EQ(reasoning[0].index, 0);
  EXPECT_EQ(reasoning[1].index, 1);
  EXPECT_EQ(Accumulate(events).choices.at(0).text, "Answer. More.");
}

// Thought-signatures guide: in a stream, the signature of an answer without
// function calls may arrive in a final chunk holding an empty text part.
TEST(GeminiDecode, SignatureOnTheFinalEmptyTextPartIsKept) {
  const auto events = DecodeChunks({
      R"({"candidates":[{"content":{"parts":[{"text":"Paris is the capital."}],"role":"model"},"index":0}]})",
      R"({"candidates":[{"content":{"parts":[{"text":"","thoughtSignature":"RW5kU2ln"}],"role":"model"},"finishReason":"STOP","index":0}]})",
  });
  EXPECT_EQ(Describe(events), (std::vector<std::string>{
                                  "text c0 [Paris is the capital.]",
                                  "reasoning c0 #0 kind2 [] sig= data=RW5kU2ln format=google-gemini-v1 id=",
                                  "finish c0 stop STOP",
                              }));
}

TEST(GeminiDecode, SignatureOnAThoughtPartStaysWithThatBlock) {
  const auto events = DecodeChunks({
      R"({"candidates":[{"content":{"parts":[{"text":"I need the weather.","thought":true,"thoughtSignature":"VEhPVUdIVA=="},{"functionCall":{"name":"get_weather","args":{"city":"Paris"}},"thoughtSignature":"RkM="}]},"finishReason":"STOP"}]})",
  });
  EXPECT_EQ(Describe(events), (std::vector<std::string>{
                                  "reasoning c0 #0 kind0 [I need the weather.] sig=VEhPVUdIVA== data= format=google-gemini-v1 id=",
                                  R"(call c0 #0 get_weather {"city":"Paris"} sig=RkM=)",
                                  "finish c0 tool_calls STOP",
                              }));
}

TEST(GeminiDecode, MaxTokensMapsToLength) {
  const auto finish = Only<FinishDelta>(DecodeChunks({
      R"({"candidates":[{"content":{"parts":[{"text":"The story goes on and"}],"role":"model"},"finishReason":"MAX_TOKENS","index":0}],"usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":5,"totalTokenCount":15}})",
  }));
  ASSERT_EQ(finish.size(), 1u);
  EXPECT_EQ(finish[0].reason, FinishReason::kLength);
  EXPECT_EQ(finish[0].native_reason, "MAX_TOKENS");
}

TEST(GeminiDecode, SafetyFamilyMapsToContentFilter) {
  for (const std::string reason : {"SAFETY", "RECITATION", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY"}) {
    const auto finish = Only<FinishDelta>(DecodeChunks({
        R"({"candidates":[{"content":{"parts":[],"role":"model"},"finishReason":")" + reason +
            R"(","index":0,"safetyRatings":[{"category":"HARM_CATEGORY_DANGEROUS_CONTENT","probability":"HIGH","blocked":true}]}]})",
    }));
    ASSERT_EQ(finish.size(), 1u) << reason;
    EXPECT_EQ(finish[0].reason, FinishReason::kContentFilter) << reason;
    EXPECT_EQ(finish[0].native_reason, reason);
  }
}

TEST(GeminiDecode, OtherReasonsAreErrorsKeepingTheNativeReason) {
  for (const std::string reason : {"MALFORMED_FUNCTION_CALL", "OTHER", "LANGUAGE", "UNEXPECTED_TOOL_CALL"}) {
    const auto finish = Only<FinishDelta>(DecodeChunks({
        R"({"candidates":[{"finishReason":")" + reason + R"(","index":0}]})",
    }));
    ASSERT_EQ(finish.size(), 1u) << reason;
    EXPECT_EQ(finish[0].reason, FinishReason::kError) << reason;
    EXPECT_EQ(finish[0].native_reason, reason);
  }
}

// GenerateContentResponse: no candidates, promptFeedback.blockReason set.
TEST(GeminiDecode, BlockedPromptFinishesWithContentFilter) {
  ResponseDecoder decoder;
  std::vector<StreamEvent> events;
  ASSERT_TRUE(decoder.OnChunk(R"({"promptFeedback":{"blockReason":"SAFETY","safetyRatings":[{"category":"HARM_CATEGORY_HARASSMENT","probability":"HIGH"}]},"usageMetadata":{"promptTokenCount":8,"totalTokenCount":8},"modelVersion":"gemini-2.5-flash"})",
                              events));
  EXPECT_TRUE(decoder.finish_seen());
  EXPECT_EQ(Describe(events), (std::vector<std::string>{
                                  "finish c0 content_filter SAFETY",
                                  "usage p8 c0 cached0 cw0 r0",
                              }));
}

TEST(GeminiDecode, InStreamErrorIsAnErrorResult) {
  struct Case {
    std::string body;
    ErrorCode code;
  };
  const std::vector<Case> cases = {
      {R"({"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}})",
       ErrorCode::kResourceExhausted},
      {R"({"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}})",
       ErrorCode::kUnavailable},
      {R"({"error":{"code":500,"message":"An internal error has occurred.","status":"INTERNAL"}})",
       ErrorCode::kUnavailable},
      {R"({"error":{"code":504,"message":"Deadline expired before operation could complete.","status":"DEADLINE_EXCEEDED"}})",
       ErrorCode::kUpstreamTimeout},
      {R"({"error":{"code":400,"message":"Function call is missing a thought_signature in functionCall parts.","status":"INVALID_ARGUMENT"}})",
       ErrorCode::kInvalidArgument},
      {R"({"error":{"code":403,"message":"Method doesn't allow unregistered callers.","status":"PERMISSION_DENIED"}})",
       ErrorCode::kBadGateway},
  };
  for (const auto& c : cases) {
    ResponseDecoder decoder;
    std::vector<StreamEvent> events;
    auto r = decoder.OnChunk(c.body, events);
    ASSERT_FALSE(r) << c.body;
    EXPECT_EQ(r.error().code, c.code) << c.body;
    EXPECT_EQ(r.error().message, json::parse(c.body).at("error").at("message").as_string()) << c.body;
    EXPECT_TRUE(events.empty());
  }
}

TEST(GeminiDecode, ErrorAfterTextKeepsTheEventsBeforeIt) {
  const std::string body = Sse({kTextStream[0], R"({"error":{"code":500,"message":"boom","status":"INTERNAL"}})"});
  SseParser parser;
  ResponseDecoder decoder;
  std::vector<StreamEvent> events;
  std::vector<ErrorCode> errors;
  ASSERT_TRUE(parser.Feed(body, [&](const auto& e) {
    if (auto r = decoder.OnChunk(e.data, events); !r) errors.push_back(r.error().code);
    return true;
  }));
  EXPECT_EQ(errors, std::vector<ErrorCode>{ErrorCode::kUnavailable});
  EXPECT_EQ(Only<TextDelta>(events).size(), 1u);
  EXPECT_FALSE(decoder.finish_seen());
}

TEST(GeminiDecode, GarbageIsBadGateway) {
  for (const std::string body : {"not json", "[1]", "\"text\"", R"({"candidates":[{"index":1000}]})",
                                 R"({"candidates":[{"index":-1}]})", R"({"candidates":[7]})"}) {
    ResponseDecoder decoder;
    std::vector<StreamEvent> events;
    auto r = decoder.OnChunk(body, events);
    ASSERT_FALSE(r) << body;
    EXPECT_EQ(r.error().code, ErrorCode::kBadGateway) << body;
  }
}

TEST(GeminiDecode, MultipleCandidatesGetTheirOwnChoices) {
  const auto events = DecodeChunks({
      R"({"candidates":[{"content":{"parts":[{"text":"Red"}],"role":"model"},"index":0},{"content":{"parts":[{"text":"Blue"}],"role":"model"},"index":1}]})",
      R"({"candidates":[{"content":{"parts":[{"text":"."}],"role":"model"},"finishReason":"STOP","index":0},{"content":{"parts":[{"text":"!"}],"role":"model"},"finishReason":"MAX_TOKENS","index":1}]})",
  });
  const ChatResponse r = Accumulate(events);
  ASSERT_EQ(r.choices.size(), 2u);
  EXPECT_EQ(r.choices[0].text, "Red.");
  EXPECT_EQ(r.choices[1].text, "Blue!");
  EXPECT_EQ(r.choices[0].finish, FinishReason::kStop);
  EXPECT_EQ(r.choices[1].finish, FinishReason::kLength);
}

TEST(GeminiDecode, WholeGenerateContentAnswerDecodesLikeAStream) {
  const std::string whole = R"({
    "candidates": [{"content": {"parts": [
        {"text": "**Weighing options**", "thought": true},
        {"text": "Take the train.", "thoughtSignature": "V2hvbGU="}], "role": "model"},
      "finishReason": "STOP", "index": 0}],
    "usageMetadata": {"promptTokenCount": 30, "candidatesTokenCount": 4, "thoughtsTokenCount": 12, "totalTokenCount": 46},
    "modelVersion": "gemini-2.5-pro", "responseId": "abc"})";
  EXPECT_EQ(Describe(DecodeChunks({whole})),
            (std::vector<std::string>{
                "reasoning c0 #0 kind0 [**Weighing options**] sig= data= format=google-gemini-v1 id=",
                "reasoning c0 #1 kind2 [] sig= data=V2hvbGU= format=google-gemini-v1 id=",
                "text c0 [Take the train.]",
                "finish c0 stop STOP",
                "usage p30 c16 cached0 cw0 r12",
            }));
}

TEST(GeminiDecode, JsonArrayBodyDecodesEveryResponse) {
  const std::string array = "[" + kTextStream[0] + "," + kTextStream[1] + "," + kTextStream[2] + "]";
  EXPECT_EQ(Describe(DecodeChunks({array})), Describe(DecodeChunks(kTextStream)));
}

// "你好，世界" and "🙂" with chunk boundaries inside characters: 世 is
// E4 B8 96, 🙂 is F0 9F 99 82.
TEST(GeminiDecode, ChineseAndEmojiSplitInsideACharacterComeOutWhole) {
  auto chunk = [](std::string text, bool thought = false) {
    return R"({"candidates":[{"content":{"parts":[{"text":")" + text + "\"" + (thought ? R"(,"thought":true)" : "") +
           R"(}],"role":"model"},"index":0}]})";
  };
  const auto events = DecodeChunks({
      chunk("\xE5\x97\xAF", true),  // 嗯
      chunk("\xE2\x80", true),      // first two bytes of …
      chunk("\xA6", true),
      chunk("\xE4\xBD\xA0\xE5\xA5\xBD\xEF\xBC\x8C\xE4"),  // 你好，+ first byte of 世
      chunk("\xB8\x96\xE7\x95\x8C \xF0\x9F"),            // rest of 世, 界, space, half of 🙂
      chunk("\x99\x82"),
      R"({"candidates":[{"content":{"parts":[{"text":"!"}],"role":"model"},"finishReason":"STOP","index":0}]})",
  });
  for (const auto& e : events) {
    if (const auto* t = std::get_if<TextDelta>(&e)) {
      EXPECT_TRUE(IsValidUtf8(t->text)) << t->text;
    }
    if (const auto* r = std::get_if<ReasoningDelta>(&e)) {
      EXPECT_TRUE(IsValidUtf8(r->text)) << r->text;
    }
  }
  std::vector<std::string> texts;
  for (const auto& t : Only<TextDelta>(events)) texts.push_back(t.text);
  EXPECT_EQ(texts, (std::vector<std::string>{"你好，", "世界 ", "🙂", "!"}));
  const ChatResponse r = Accumulate(events);
  EXPECT_EQ(r.choices.at(0).reasoning.at(0).text, "嗯…");
  EXPECT_EQ(r.choices[0].text, "你好，世界 🙂!");
}

TEST(GeminiDecode, StreamEndingInsideACharacterEndsWithReplacementCharacter) {
  const auto events = DecodeChunks({
      R"({"candidates":[{"content":{"parts":[{"text":"ok )" "\xF0\x9F" R"("}],"role":"model"},"index":0}]})",
  });
  std::string text;
  for (const auto& t : Only<TextDelta>(events)) text += t.text;
  EXPECT_EQ(text, "ok \xEF\xBF\xBD");
}

TEST(GeminiDecode, InvalidBytesBecomeReplacementCharacters) {
  const auto events = DecodeChunks({
      R"({"candidates":[{"content":{"parts":[{"text":"a)" "\xFF" R"(b)" "\xC0\xAF" R"(c"}],"role":"model"},"finishReason":"STOP"}]})",
  });
  const auto texts = Only<TextDelta>(events);
  ASSERT_EQ(texts.size(), 1u);
  EXPECT_EQ(texts[0].text, "a\xEF\xBF\xBD" "b\xEF\xBF\xBD\xEF\xBF\xBD" "c");
}

// Everything at once: thoughts, text split inside characters, a signature on
// an empty text part, parallel calls, usage on every chunk.
const std::vector<std::string> kMixedStream = {
    R"({"candidates":[{"content":{"parts":[{"text":"**Plan** 思考","thought":true}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":50,"totalTokenCount":50}})",
    R"({"candidates":[{"content":{"parts":[{"text":"Answer: )" "\xE4\xB8" R"("}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":50,"candidatesTokenCount":2,"thoughtsTokenCount":9,"totalTokenCount":61}})",
    R"({"candidates":[{"content":{"parts":[{"text":")" "\x96\xE7\x95\x8C \xF0\x9F\x8C\x8D" R"(","thoughtSignature":"VGV4dFNpZw=="}],"role":"model"},"index":0}]})",
    R"({"candidates":[{"content":{"parts":[{"functionCall":{"name":"lookup","args":{"q":"地球"}},"thoughtSignature":"Q2FsbFNpZw=="},{"functionCall":{"name":"get_time"}}],"role":"model"},"index":0}]})",
    R"({"candidates":[{"content":{"parts":[{"functionCall":{"name":"lookup","args":{"q":"moon","n":2}}}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":50,"candidatesTokenCount":20,"thoughtsTokenCount":9,"cachedContentTokenCount":32,"totalTokenCount":79}})",
};

TEST(GeminiDecode, ByteByByteSseReplayGivesIdenticalEvents) {
  const std::string body = Sse(kMixedStream);
  const auto whole = DecodeSse(body, body.size());
  const auto bytewise = DecodeSse(body, 1);
  EXPECT_EQ(Describe(bytewise), Describe(whole));
  EXPECT_EQ(Describe(whole), (std::vector<std::string>{
                                 "reasoning c0 #0 kind0 [**Plan** 思考] sig= data= format=google-gemini-v1 id=",
                                 "usage p50 c0 cached0 cw0 r0",
                                 "text c0 [Answer: ]",
                                 "usage p50 c11 cached0 cw0 r9",
                                 "reasoning c0 #1 kind2 [] sig= data=VGV4dFNpZw== format=google-gemini-v1 id=",
                                 "text c0 [世界 🌍]",
                                 R"(call c0 #0 lookup {"q":"地球"} sig=Q2FsbFNpZw==)",
                                 "call c0 #1 get_time {} sig=",
                                 R"(call c0 #2 lookup {"q":"moon","n":2} sig=)",
                                 "finish c0 tool_calls STOP",
                                 "usage p50 c29 cached32 cw0 r9",
                             }));
  // Also with LF line ends and odd slice sizes.
  std::string lf;
  for (const auto& c : kMixedStream) lf += "data: " + c + "\n\n";
  EXPECT_EQ(Describe(DecodeSse(lf, 7)), Describe(whole));
}

// ================================================================ responses: encoding

TEST(GeminiEncodeResponse, WritesCandidatesUsageAndModelVersion) {
  ChatResponse r;
  r.choices.resize(1);
  r.choices[0].text = "Hello";
  r.choices[0].tool_calls.push_back(Call("call_1", "get_time", "{}"));
  r.choices[0].finish = FinishReason::kToolCalls;
  const json::value body = json::parse(EncodeGenerateContentResponse(r, Usage{10, 7, 4, 3, 0}, "gemini-2.5-flash"));
  EXPECT_EQ(body, J(R"({
      "candidates":[{"content":{"parts":[{"text":"Hello"},{"functionCall":{"name":"get_time","args":{}}}],"role":"model"},
                     "finishReason":"STOP","index":0}],
      "usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":4,"totalTokenCount":17,
                       "cachedContentTokenCount":4,"thoughtsTokenCount":3},
      "modelVersion":"gemini-2.5-flash"})"));
}

TEST(GeminiEncodeResponse, InconsistentUsageIsClampedBeforeWriting) {
  ChatResponse r;
  r.choices.resize(1);
  r.choices[0].text = "x";
  const json::value usage =
      json::parse(EncodeGenerateContentResponse(r, Usage{5, 3, 9, 7, 0}, "m")).at("usageMetadata");
  EXPECT_EQ(usage, J(R"({"promptTokenCount":5,"candidatesTokenCount":0,"totalTokenCount":8,
                         "cachedContentTokenCount":5,"thoughtsTokenCount":3})"));
}

TEST(GeminiEncodeResponse, FinishReasonsWithoutAGeminiNativeAreMapped) {
  auto reason = [](FinishReason f, std::string native) {
    ChatResponse r;
    r.choices.resize(1);
    r.choices[0].finish = f;
    r.choices[0].native_finish_reason = std::move(native);
    return json::parse(EncodeGenerateContentResponse(r, {}, "m")).at("candidates").at(0).at("finishReason");
  };
  EXPECT_EQ(reason(FinishReason::kStop, "end_turn"), J(R"("STOP")"));
  EXPECT_EQ(reason(FinishReason::kLength, ""), J(R"("MAX_TOKENS")"));
  EXPECT_EQ(reason(FinishReason::kContentFilter, "refusal"), J(R"("SAFETY")"));
  EXPECT_EQ(reason(FinishReason::kContentFilter, "RECITATION"), J(R"("RECITATION")"));
  EXPECT_EQ(reason(FinishReason::kError, "MALFORMED_FUNCTION_CALL"), J(R"("MALFORMED_FUNCTION_CALL")"));
}

TEST(GeminiRoundTrip, DecodingAnEncodedResponseGivesBackItsEvents) {
  ChatResponse r;
  r.choices.resize(2);
  ChoiceResult& first = r.choices[0];
  first.reasoning.push_back(Reasoning(Kind::kText, "**Checking the forecast**", "VGhvdWdodA==", "", "google-gemini-v1"));
  first.reasoning.push_back(Reasoning(Kind::kEncrypted, "", "", "VGV4dA==", "google-gemini-v1"));
  first.text = "Checking Paris and London… 🌦";
  first.tool_calls.push_back(Call("call_a", "get_weather", R"({"city":"Paris","days":[1,2]})", "Q2FsbA=="));
  first.tool_calls.push_back(Call("call_b", "get_weather", R"({"city":"London"})"));
  first.tool_calls.push_back(Call("call_c", "get_time", "{}"));
  first.finish = FinishReason::kToolCalls;
  first.native_finish_reason = "STOP";
  ChoiceResult& second = r.choices[1];
  second.text = "天气很好";
  second.finish = FinishReason::kLength;
  second.native_finish_reason = "MAX_TOKENS";
  const Usage usage{1200, 340, 1024, 200, 0};
  r.usage = usage;

  const auto decoded = DecodeChunks({EncodeGenerateContentResponse(r, usage, "gemini-2.5-pro")});
  EXPECT_EQ(Describe(decoded), Describe(ResponseEvents(r)));
  for (const auto& c : Only<ToolCallDelta>(decoded)) EXPECT_TRUE(IsGeneratedId(c.id)) << c.id;
}

TEST(GeminiRoundTrip, EncodedBlockedAnswerDecodesAsContentFilter) {
  ChatResponse r;
  r.choices.resize(1);
  r.choices[0].finish = FinishReason::kContentFilter;
  r.choices[0].native_finish_reason = "PROHIBITED_CONTENT";
  r.usage = Usage{12, 0, 0, 0, 0};
  EXPECT_EQ(Describe(DecodeChunks({EncodeGenerateContentResponse(r, *r.usage, "m")})), Describe(ResponseEvents(r)));
}

}  // namespace
}  // namespace tollgate::wire::gemini
