// Gemini generateContent / streamGenerateContent <-> canonical, both
// directions.
//
// Sources: Gemini API reference (ai.google.dev/api/generate-content:
// GenerateContentRequest, GenerateContentResponse, Candidate, FinishReason,
// UsageMetadata; ai.google.dev/api/caching: Content, Part, FunctionCall,
// FunctionResponse, Tool, ToolConfig; ai.google.dev/gemini-api/docs/
// thinking and .../thought-signatures), API version v1beta;
// shared/WIRE-FORMATS.md section 3.3.
//
// Mapping to the canonical model:
//   systemInstruction                       <- every system and developer message, in order
//   contents[] role "user" / "model"        <- user / assistant turns (consecutive same-role
//                                              turns merged; tool results are "user" turns)
//   Part.text                               <- TextPart
//   Part.inlineData {mimeType, data}        <- ImagePart with a data URI
//   Part.fileData {mimeType, fileUri}       <- ImagePart with a URL
//   Part.functionCall {name, args}          <- ToolCallPart (no id sent: Gemini's function parts
//                                              carry none; ids are made up on the way back)
//   Part.functionResponse {name, response}  <- ToolResultPart (name looked up from the call
//                                              when the result has none; a JSON-object result
//                                              is the response, anything else {"result": text};
//                                              is_error -> {"error": result}, the key the
//                                              FunctionResponse reference names for errors;
//                                              images of a result follow it as parts of the
//                                              same user turn)
//   Part.thoughtSignature                   <-> ToolCallPart.thought_signature on functionCall
//                                              parts; ReasoningPart kEncrypted with format
//                                              "google-gemini-v1" on the next text part (a
//                                              trailing {"text": "", thoughtSignature} part when
//                                              no text follows, as streams deliver it); on a
//                                              thought part: that ReasoningPart's `signature`
//   Part.thought = true (text)              <-> ReasoningPart / ReasoningDelta kText with format
//                                              "google-gemini-v1" (thought summaries); reasoning
//                                              of other formats is never sent to Gemini
//   generationConfig                        <- max_tokens (maxOutputTokens), stop
//                                              (stopSequences), temperature, top_p (topP),
//                                              top_k (topK), n (candidateCount), seed,
//                                              presence/frequency penalties, response_format
//                                              (responseMimeType "application/json" and, for
//                                              json_schema, responseJsonSchema), logprobs
//                                              (responseLogprobs, logprobs), reasoning
//                                              (thinkingConfig {thinkingBudget, includeThoughts}:
//                                              max_tokens is the budget; effort low 1024,
//                                              medium 8192, high/xhigh 24576 as Google maps
//                                              OpenAI's reasoning_effort; none/disabled 0;
//                                              enabled alone -1, dynamic). Seed is int32 on the
//                                              wire: its low 32 bits are sent.
//   tools[].functionDeclarations            <- tools (parametersJsonSchema: plain JSON Schema,
//                                              passed unchanged; `parameters` takes only an
//                                              OpenAPI subset)
//   toolConfig.functionCallingConfig        <- tool_choice (AUTO, NONE, ANY,
//                                              ANY + allowedFunctionNames)
//   finishReason: STOP -> kStop, or kToolCalls when the candidate made a
//   function call; MAX_TOKENS -> kLength; SAFETY, RECITATION,
//   PROHIBITED_CONTENT, BLOCKLIST, SPII, IMAGE_SAFETY, IMAGE_PROHIBITED_CONTENT,
//   IMAGE_RECITATION -> kContentFilter;
//   MALFORMED_FUNCTION_CALL and others -> kError (native reason kept);
//   promptFeedback.blockReason without candidates -> kContentFilter.
//   usageMetadata (cumulative; the last chunk's counts win): prompt =
//   promptTokenCount + toolUsePromptTokenCount, cached =
//   cachedContentTokenCount, completion = candidatesTokenCount +
//   thoughtsTokenCount, reasoning = thoughtsTokenCount.
//
// Foreign history: in the current function-calling turn (after the last user
// turn with content of its own), the first functionCall of each model step
// that has no signature (calls another provider made) gets the placeholder
// "skip_thought_signature_validator" that the thought-signatures guide gives
// for such history; Gemini 3 answers 400 to a step without one.
#pragma once

#include "tollgate/core/chat.hpp"
#include "tollgate/core/error.hpp"
#include "tollgate/core/text.hpp"
#include "tollgate/wire/common.hpp"

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::wire::gemini {

// ---------------------------------------------------------------- outbound requests (providers)

// The JSON body for `POST {base}/models/{model}:generateContent` or
// `:streamGenerateContent?alt=sse` (the body is the same; the model is in the
// path). Only parameters set in `request` are written. Gemini has no field
// for, so this drops: repetition_penalty, parallel_tool_calls, user,
// metadata, cache_control, ToolDefinition.strict, the name, description and
// strict of a json_schema response_format, ImagePart.detail, Message.name,
// tool-call ids, and non-text parts of system messages.
std::string EncodeGenerateContentRequest(const ChatRequest& request);

// The inverse, for tests and mock upstreams: a GenerateContentRequest body
// -> canonical (model left empty; stream false). Each systemInstruction part
// becomes a kSystem message; each functionCall a ToolCallPart with Gemini's
// `id` when given, else a new one; each functionResponse a kTool message
// answering the oldest unanswered call of that name; thinkingConfig budget 0
// -> enabled false, -1 -> enabled true, N -> max_tokens N. Unknown part
// kinds (executableCode, videoMetadata, ...) are rejected.
// Errors: kInvalidArgument, `param` naming the field ("contents.2.parts.0").
Result<ChatRequest> DecodeGenerateContentRequest(std::string_view body);

// ---------------------------------------------------------------- upstream responses (providers)

// Decodes GenerateContentResponse objects: each SSE event of
// streamGenerateContent?alt=sse is one; a generateContent answer is one too.
// Gemini sends no [DONE]: a stream is complete when it ends after a chunk
// with a finishReason (finish_seen()).
class ResponseDecoder {
 public:
  // One GenerateContentResponse JSON text (a JSON array of them, the body of
  // streamGenerateContent without alt=sse, is accepted too). Appends its
  // events to `out`: per candidate, in part order, reasoning / text / tool
  // calls, then its finish; then the chunk's usage. Every functionCall part
  // is one whole ToolCallDelta with a new id (wire::NewToolCallId) and the
  // next tool-call index of its candidate. Text is passed on in complete
  // UTF-8 (a character split across chunks is held back until it completes;
  // invalid bytes become U+FFFD).
  // Errors: an `error` object -> its mapped code (RESOURCE_EXHAUSTED / 429
  // -> kResourceExhausted, UNAVAILABLE / INTERNAL / 5xx -> kUnavailable,
  // DEADLINE_EXCEEDED / 504 -> kUpstreamTimeout, INVALID_ARGUMENT / 400 ->
  // kInvalidArgument, anything else kBadGateway) with the upstream's
  // message; text that is not a JSON object (or array of objects), or a
  // candidate index outside [0, 64) -> kBadGateway. Events appended before
  // an error stay in `out`.
  Result<void> OnChunk(std::string_view data, std::vector<StreamEvent>& out);
  // End of body: flushes held-back UTF-8 (a character the stream never
  // completed comes out as U+FFFD).
  void Finish(std::vector<StreamEvent>& out);
  bool finish_seen() const { return finish_seen_; }

 private:
  // What one candidate (choice) has seen so far.
  struct Candidate {
    int next_tool_index = 0;
    bool call_seen = false;           // a functionCall arrived: STOP means tool_calls
    int next_reasoning_index = 0;
    int open_thought_block = -1;      // reasoning index of the thought block being streamed
    Utf8Stitcher text;
    Utf8Stitcher thought;
  };

  Result<void> OnResponse(const boost::json::value& response, std::vector<StreamEvent>& out);
  void OnPart(int choice, Candidate& candidate, const boost::json::object& part,
              std::vector<StreamEvent>& out);
  static void CloseText(int choice, Candidate& candidate, std::vector<StreamEvent>& out);
  static void CloseThought(int choice, Candidate& candidate, std::vector<StreamEvent>& out);

  bool finish_seen_ = false;
  std::map<int, Candidate> candidates_;  // by candidate index
};

// ---------------------------------------------------------------- responses (mock upstreams, tests)

// A whole GenerateContentResponse for `response` (candidates with parts,
// finishReason, usageMetadata, modelVersion = `model_version`).
std::string EncodeGenerateContentResponse(const ChatResponse& response, const Usage& usage,
                                          std::string_view model_version);

}  // namespace tollgate::wire::gemini
