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
//                                              is the response, anything else {"result": text})
//   Part.thoughtSignature                   <-> ToolCallPart.thought_signature on functionCall
//                                              parts; ReasoningPart kEncrypted with format
//                                              "google-gemini-v1" on the next text part
//   Part.thought = true (text)              -> ReasoningDelta kText (reasoning summaries)
//   generationConfig                        <- max_tokens (maxOutputTokens), stop
//                                              (stopSequences), temperature, top_p (topP),
//                                              top_k (topK), n (candidateCount), seed,
//                                              presence/frequency penalties, response_format
//                                              (responseMimeType "application/json" and, for
//                                              json_schema, responseJsonSchema), logprobs
//                                              (responseLogprobs, logprobs), reasoning
//                                              (thinkingConfig {thinkingBudget, includeThoughts})
//   tools[].functionDeclarations, toolConfig.functionCallingConfig
//                                           <- tools, tool_choice (AUTO, NONE, ANY,
//                                              ANY + allowedFunctionNames)
//   finishReason: STOP -> kStop, or kToolCalls when the candidate made a
//   function call; MAX_TOKENS -> kLength; SAFETY, RECITATION,
//   PROHIBITED_CONTENT, BLOCKLIST, SPII, IMAGE_SAFETY -> kContentFilter;
//   MALFORMED_FUNCTION_CALL and others -> kError (native reason kept);
//   promptFeedback.blockReason without candidates -> kContentFilter.
//   usageMetadata (cumulative; the last chunk's counts win): prompt =
//   promptTokenCount + toolUsePromptTokenCount, cached =
//   cachedContentTokenCount, completion = candidatesTokenCount +
//   thoughtsTokenCount, reasoning = thoughtsTokenCount.
#pragma once

#include "tollgate/core/chat.hpp"
#include "tollgate/core/error.hpp"
#include "tollgate/wire/common.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace tollgate::wire::gemini {

// ---------------------------------------------------------------- outbound requests (providers)

// The JSON body for `POST {base}/models/{model}:generateContent` or
// `:streamGenerateContent?alt=sse` (the body is the same; the model is in the
// path). Only parameters set in `request` are written.
std::string EncodeGenerateContentRequest(const ChatRequest& request);

// The inverse, for tests and mock upstreams: a GenerateContentRequest body
// -> canonical (model left empty). Errors: kInvalidArgument.
Result<ChatRequest> DecodeGenerateContentRequest(std::string_view body);

// ---------------------------------------------------------------- upstream responses (providers)

// Decodes GenerateContentResponse objects: each SSE event of
// streamGenerateContent?alt=sse is one; a generateContent answer is one too.
// Gemini sends no [DONE]: a stream is complete when it ends after a chunk
// with a finishReason (finish_seen()).
class ResponseDecoder {
 public:
  // One GenerateContentResponse JSON text. An `error` object -> the mapped
  // error (kBadGateway by default, with the upstream's message).
  Result<void> OnChunk(std::string_view data, std::vector<StreamEvent>& out);
  // End of body: flushes held-back UTF-8.
  void Finish(std::vector<StreamEvent>& out);
  bool finish_seen() const { return finish_seen_; }

 private:
  bool finish_seen_ = false;
  // (per-candidate state: tool-call counter, call seen, UTF-8 stitchers)
};

// ---------------------------------------------------------------- responses (mock upstreams, tests)

// A whole GenerateContentResponse for `response` (candidates with parts,
// finishReason, usageMetadata, modelVersion = `model_version`).
std::string EncodeGenerateContentResponse(const ChatResponse& response, const Usage& usage,
                                          std::string_view model_version);

}  // namespace tollgate::wire::gemini
