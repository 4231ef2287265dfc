// The bundled inference engine behind the `Provider` interface.
//
// One LocalProvider serves one GGUF model (see model.hpp and tokenizer.hpp
// for the architectures and vocabularies) on one compute backend: the CPU, or
// an NVIDIA GPU through the CUDA backend (cuda_backend.hpp), chosen by
// `device` (see "Device selection" below). Start() only enqueues
// (a bounded queue, in arrival order); one worker thread runs up to
// `max_sequences` requests at once by continuous batching (Yu et al., "Orca",
// OSDI 2022; llama.cpp's server slots, vLLM's scheduler): every step takes one
// token of each generating sequence and chunks of the prompts being
// prefilled, up to `max_batch_tokens`, through the model in one pass
// (LlamaRunner), so the weights are read once per step for all of them.
// Keys and values live in a paged KV cache (kv_cache.hpp) within
// `kv_cache_bytes`: a request is admitted when its prompt fits; when a
// generating sequence needs a page and none is left, the youngest sequence is
// preempted (its pages freed, its prompt and output prefilled again later,
// usually from the prefix cache; the caller only sees a pause). Prompts that
// begin with the same whole pages as an earlier one (a shared system prompt)
// reuse that prefix's keys and values (`prefix_cache`). The sinks are called
// from the worker thread.
//
// Device selection (LocalProviderOptions::device), decided once in Create:
//   - kCpu:  the CPU backend with `threads` threads.
//   - kCuda: the CUDA backend on `gpu_device` (ProbeCudaDevice), with
//            `gpu_memory_bytes` of device memory; weights, the whole KV pool
//            and the activation scratch are taken there at load. If the probe
//            finds no usable device (no CUDA in this build, no driver, no such
//            device, too old), or the backend, model, KV cache or scratch does
//            not fit (kUnavailable or kResourceExhausted from the backend),
//            Create fails with kUnavailable: "device: cuda was requested,
//            but the GPU cannot be used: <why>", <why> being the probe's
//            reason, "too little GPU memory: <the backend's message>", or the
//            backend's own kUnavailable message. Nothing falls back.
//   - kAuto: as kCuda when that works; otherwise one line on stderr saying
//            why the GPU is not used, and the model loads on the CPU as with
//            kCpu (other errors, such as a corrupt file, fail as usual).
// DeviceName() says where the model ended up.
//
// Prompt contract:
//   - RequestKind::kCompletion: `prompt` is tokenized as raw text with BOS
//     (when the vocabulary's add_bos_token says so); no template.
//   - RequestKind::kChat, model with a `tokenizer.chat_template`: the
//     template renders the messages and tools (chat_template.hpp, as Hugging
//     Face's apply_chat_template; OpenRouter's `reasoning` switches Qwen3's
//     enable_thinking) and the text is tokenized with its special tokens and
//     no added BOS (the template writes it). The output goes through
//     OutputParser (output_parser.hpp): `<think>` blocks become reasoning
//     events, Qwen `<tool_call>` and Llama 3.1 JSON calls tool-call events.
//     A template beyond the engine's Jinja subset leaves completions working
//     and answers chats with a 400 naming the model.
//   - RequestKind::kChat, no template: the messages' texts (tool results
//     included) joined with "\n", roles dropped, tokenized like a
//     completion. So one user message "Once upon a time" is exactly the
//     completion prompt "Once upon a time".
//   - Supported parameters (SupportedParameters): max_tokens, temperature,
//     top_p, top_k, min_p, repetition_penalty, presence_penalty,
//     frequency_penalty, logit_bias, stop, seed; `tools` when the template
//     renders them, `reasoning` when it has a thinking switch. tool_choice
//     other than "auto" and image input are not supported, so the gateway
//     refuses such requests with a 400 naming the parameter; other
//     parameters are dropped by the gateway before Start.
//   - `upstream_model` is ignored: the provider serves exactly its one model.
//   - Special-token text such as "<s>" in a caller's text is plain text.
//
// Generation: Sampler (sampler.hpp) with the request's temperature (default
// 1.0, as in the OpenAI API; 0 = greedy), top_p (default 1.0), top_k, min_p,
// penalties (repetition over prompt and output, presence and frequency over
// the output), logit_bias and seed. It ends
//   - at an end-of-generation token (EOS, EOT, <|im_end|>, <|eot_id|>:
//     Tokenizer::IsEndOfGeneration) -> finish kStop (not emitted or counted);
//   - at a `stop` string                  -> finish kStop, the stop string and what
//                                            follows it not emitted;
//   - after `max_tokens` generated tokens -> finish kLength;
//   - when prompt + generated tokens fill the context -> finish kLength.
// Without max_tokens the limit is the rest of the context.
// Deltas are complete UTF-8 (IncrementalDetokenizer) and never contain text
// that may still turn out to be the start of a stop string.
//
// Events: a UsageDelta with the prompt's tokens once it is tokenized, then
// TextDelta (choice 0) per piece of text (with a template: ReasoningDelta and
// ToolCallDelta too; finish kToolCalls after calls), then FinishDelta (with the matched
// `stop_sequence` when a stop string ended it; native
// reason "stop"/"length") and UsageDelta: prompt_tokens counts BOS,
// completion_tokens the generated tokens (EOS excluded, tokens cut by a stop
// string included), cached_tokens the prompt tokens taken from the prefix
// cache (OpenAI's prompt_tokens_details.cached_tokens), then OnComplete. Before each token the worker asks
// StreamSink::Ready; a sequence whose consumer is behind pauses (the others
// go on) until it resumes.
//
// Errors (OnError, nothing emitted before unless stated):
//   kInvalidArgument   prompt_tokens >= context length (no room to generate),
//                      max_tokens < 1;
//   kCancelled         `cancel` was signalled before any delta (checked
//                      before the prompt and between tokens). Signalled after
//                      deltas, the generation ends with OnComplete and the
//                      exact usage of what was generated (finish reason
//                      kLength), so the caller can bill it;
//   kDeadlineExceeded  the request deadline passed before the first delta
//                      (checked before prefill and between tokens). If it
//                      passes after deltas were sent, the generation ends with
//                      OnComplete (finish kLength) instead, so the client keeps what it
//                      got. A default-constructed deadline (time_point{}) means
//                      no deadline;
//   kResourceExhausted `max_queue` requests are already waiting (Retry-After 1),
//                      or the prompt cannot fit the KV cache budget at all;
//   kUnavailable       the provider was destroyed with the request still queued;
//   kInternal          an unexpected failure inside the engine.
//
// Thread-safety: every public method may be called from any thread
// concurrently. Destruction stops the worker after its current step,
// fails queued requests with kUnavailable, and joins; do not destroy it from
// inside a sink callback.
#pragma once

#include "tollgate/core/error.hpp"
#include "tollgate/core/provider.hpp"
#include "tollgate/local_backend/kv_cache.hpp"

#include <memory>
#include <string>
#include <string_view>

namespace tollgate::local_backend {

// Where the model's weights and KV cache live and its steps run (see
// "Device selection" above).
enum class LocalDevice {
  kCpu,
  kCuda,  // the GPU or an error
  kAuto,  // the GPU when one is usable and the model fits, else the CPU
};

struct LocalProviderOptions {
  std::string display_name = "Local";  // returned by Name()
  std::string model_path;              // GGUF file
  int threads = 0;                     // compute threads; 0 = every core
  // Longest sequence (prompt + completion), tokens; 0 = {arch}.context_length
  // from the GGUF. Lowered to what the KV budget holds.
  int context_length = 0;
  int max_sequences = 8;      // sequences decoded together (llama.cpp --parallel)
  int max_queue = 64;         // requests waiting beyond those; more get kResourceExhausted
  int max_batch_tokens = 256; // tokens per step (prompt chunks + one per generating sequence)
  // KV cache memory budget, bytes; 0 = enough for max_sequences full
  // contexts, at most 2 GiB. Taken as sequences need it, kept for reuse.
  int64_t kv_cache_bytes = 0;
  KvType kv_cache_type = KvType::kF16;  // kQ8: about half the bytes per token (backend.hpp)
  bool prefix_cache = true;
  LocalDevice device = LocalDevice::kAuto;
  // kCuda/kAuto: the CUDA device index (as CUDA_VISIBLE_DEVICES leaves them).
  int gpu_device = 0;
  // kCuda/kAuto: device memory the backend may take for weights, KV cache and
  // scratch, bytes; 0 = the backend's default (free memory less 1 GiB,
  // CudaBackendOptions::memory_budget_bytes). `threads` applies to the CPU
  // backend only (kCpu, or kAuto's fallback).
  int64_t gpu_memory_bytes = 0;
};

// A snapshot of the engine's load (LocalProvider::Stats).
struct LocalEngineStats {
  int running = 0;        // sequences admitted (prefilling, generating or preempted)
  int queued = 0;         // requests waiting for a slot or KV pages
  int max_sequences = 0;
  int max_queue = 0;
  PagedKvCacheStats kv;
  int64_t preemptions = 0;  // since start
  std::string device;       // LocalProvider::DeviceName()
  int64_t generated_tokens = 0;  // tokens sampled since start (one per logits row of a step)
  int64_t processed_tokens = 0;  // tokens run through the model since start (prompt chunks and decoded tokens)
  int batch_sequences = 0;       // sequences in the last batched step; 0 when the last step found none
  int batch_tokens = 0;          // tokens in that step
};

class LocalProvider final : public Provider {
 public:
  // Loads the model on the device `options.device` selects (see "Device
  // selection") and starts the worker thread. Errors:
  //   kInvalidArgument unreadable or corrupt GGUF, unsupported
  //                    architecture/tokenizer/tensor type, negative threads,
  //                    context_length, gpu_device or gpu_memory_bytes;
  //   kUnavailable     device kCuda and no usable GPU, or too little GPU
  //                    memory for the model (the message says which).
  static Result<std::unique_ptr<LocalProvider>> Create(const LocalProviderOptions& options);

  ~LocalProvider() override;
  LocalProvider(const LocalProvider&) = delete;
  LocalProvider& operator=(const LocalProvider&) = delete;

  std::string_view Name() const override;
  const ParameterSet& SupportedParameters() const override;
  // The exact prompt tokens (BOS included) of `request`, by this model's
  // tokenizer. Thread-safe.
  std::optional<int64_t> CountPromptTokens(const ChatRequest& request) const override;
  // See the class comment. Copies what it needs from `request` before
  // returning, so `*request.request` need not outlive this call.
  void Start(const ProviderRequest& request, std::shared_ptr<StreamSink> sink,
             std::stop_token cancel) override;

  // The most prompt + generated tokens of one request.
  int ContextLength() const;
  // Requests served at once (the router's concurrency cap for this engine).
  int MaxSequences() const;
  // As of the end of the worker's last step.
  LocalEngineStats Stats() const;
  // Where the model runs: the backend's Name(), e.g. "cpu avx2 x2 threads" or
  // "cuda:0 NVIDIA H200". Fixed after Create.
  std::string DeviceName() const;

  struct Impl;

 private:
  explicit LocalProvider(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tollgate::local_backend
