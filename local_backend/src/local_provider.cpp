#include "tollgate/local_backend/local_provider.hpp"

#include "tollgate/local_backend/chat_template.hpp"
#include "tollgate/local_backend/cuda_backend.hpp"
#include "tollgate/local_backend/gguf.hpp"
#include "tollgate/local_backend/model.hpp"
#include "tollgate/local_backend/output_parser.hpp"
#include "tollgate/local_backend/sampler.hpp"
#include "tollgate/local_backend/tokenizer.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <iostream>
#include <mutex>
#include <new>
#include <optional>
#include <thread>

namespace tollgate::local_backend {
namespace {

// The default KV budget's ceiling (LocalProviderOptions::kv_cache_bytes).
constexpr int64_t kDefaultKvBudget = int64_t{2} << 30;

// A request's prompt as the model reads it.
struct Prompt {
  std::string text;
  EncodeOptions encode;      // a rendered template already holds its special tokens
  std::string param;         // request field named in errors: "prompt" or "messages"
  std::optional<OutputParserOptions> output;  // reasoning and tool calls to parse (templated chats)
};

struct Job {
  std::string prompt;
  std::string prompt_param;  // request field named in errors: "prompt" or "messages"
  EncodeOptions encode;
  std::optional<OutputParserOptions> output;
  std::optional<int64_t> max_tokens;
  SamplingParams sampling;
  std::vector<std::string> stop;
  std::chrono::steady_clock::time_point deadline;
  std::shared_ptr<StreamSink> sink;
  std::stop_token cancel;
};

Error MakeError(ErrorCode code, std::string message, std::string param = {}) {
  return Error{code, std::move(message), std::move(param), {}};
}

// What every model of this engine honours (core/parameters.hpp): sampling,
// limits and stop strings. Tools and reasoning come with a chat template that
// renders them; image input never (refused with a 400 naming it, never
// silently flattened).
ParameterSet BaseParameters() {
  return ParameterSet{Param::kMaxTokens,       Param::kTemperature,      Param::kTopP,      Param::kTopK,
                      Param::kMinP,            Param::kRepetitionPenalty, Param::kPresencePenalty,
                      Param::kFrequencyPenalty, Param::kLogitBias,       Param::kStop,      Param::kSeed};
}

// The prompt of a chat for a model without a chat template: the messages'
// texts joined with "\n" (roles dropped). Tool results count as their text.
std::string PlainChatPrompt(const ChatRequest& req) {
  std::string prompt;
  for (size_t i = 0; i < req.messages.size(); ++i) {
    if (i > 0) prompt += '\n';
    const Message& m = req.messages[i];
    for (const auto& part : m.parts) {
      if (const auto* t = std::get_if<TextPart>(&part)) prompt += t->text;
      if (const auto* r = std::get_if<ToolResultPart>(&part)) {
        for (const auto& c : r->content) {
          if (const auto* t = std::get_if<TextPart>(&c)) prompt += t->text;
        }
      }
    }
  }
  return prompt;
}

// A request the worker is running: its KV pages, where its prompt is, and
// the generation state that survives preemption.
struct Sequence {
  Job job;
  uint64_t order = 0;  // admission order: the youngest is preempted first
  int64_t prompt_tokens = 0;
  int64_t cached_tokens = 0;  // prompt tokens found in the prefix cache on admission
  std::vector<TokenId> history;  // prompt, then every accepted token
  KvSequence kv;
  // Tokens to store next, from history[kv.tokens()]: the rest of the prompt
  // (or, after a preemption, of the whole history), then one token per step.
  size_t fed = 0;  // history[0 .. fed) stored in kv
  int64_t limit = 0;
  std::optional<Sampler> sampler;
  std::optional<IncrementalDetokenizer> detokenizer;
  std::optional<StopMatcher> stop_matcher;
  std::optional<OutputParser> parser;
  int64_t generated = 0;
  int64_t reasoning_tokens = 0;  // of `generated`
  bool emitted = false;
  bool preempted = false;  // its pages were taken; the history is prefilled again
  bool in_batch = false;   // has an item in the step being built
  // Flow control: the sink said its consumer is behind; `resumed` is set by
  // its callback (on any thread).
  bool blocked = false;
  std::shared_ptr<std::atomic<bool>> resumed = std::make_shared<std::atomic<bool>>(false);
  std::vector<StreamEvent> events;  // scratch for the parser
};

// What Start() and the sinks' resume callbacks share with the worker; held by
// shared_ptr so a late callback never touches a destroyed provider.
struct WorkQueue {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Job> jobs;  // guarded by mu
  bool stopping = false; // guarded by mu
  bool wake = false;     // guarded by mu: a resume callback ran
  // Guarded by mu, written by the worker after each step (Stats).
  int running = 0;
  bool waiting = false;  // a prepared request waits for KV pages
  PagedKvCacheStats kv;
  int64_t preemptions = 0;
  int64_t generated_tokens = 0;
  int64_t processed_tokens = 0;
  int batch_sequences = 0;
  int batch_tokens = 0;
};

// The model on one backend, ready to serve: what Create builds per device.
// Members are destroyed runner first, model last, so a failed attempt hands
// every byte of device memory back before the next one.
struct Engine {
  std::shared_ptr<const LlamaModel> model;
  std::unique_ptr<PagedKvCache> cache;
  std::unique_ptr<LlamaRunner> runner;
  int context_length = 0;  // per sequence
};

// Loads `gguf` on `backend` (null: the CPU backend with options.threads),
// sizes the KV cache and creates the runner.
Result<Engine> LoadEngine(const LocalProviderOptions& options, std::shared_ptr<const GgufFile> gguf,
                          const Tokenizer& tokenizer, std::shared_ptr<Backend> backend) {
  Engine engine;
  ModelOptions model_options;
  model_options.backend = std::move(backend);
  model_options.threads = options.threads;
  auto model = LlamaModel::Load(std::move(gguf), model_options);
  if (!model) return model.error();
  engine.model = *model;
  if (tokenizer.vocab_size() != engine.model->hparams().vocab_size) {
    return InvalidArgument("tokenizer has " + std::to_string(tokenizer.vocab_size()) +
                           " tokens but the model's vocabulary is " +
                           std::to_string(engine.model->hparams().vocab_size));
  }
  // One sequence may use the whole context; the default budget lets every
  // slot do so, up to kDefaultKvBudget. The CPU takes memory as pages are
  // used; the CUDA backend takes the whole pool now (cuda_backend.hpp).
  const int trained = engine.model->hparams().context_length;
  int context_length = options.context_length > 0 ? options.context_length : trained;
  const auto per_token = static_cast<int64_t>(engine.model->KvBytesPerToken(options.kv_cache_type));
  int64_t budget = options.kv_cache_bytes;
  if (budget == 0) {
    budget = std::min<int64_t>(kDefaultKvBudget, per_token * context_length * options.max_sequences);
  }
  const KvPoolShape shape = engine.model->KvShape(options.kv_cache_type, budget);
  const int64_t budget_tokens = static_cast<int64_t>(shape.max_pages) * kKvPageTokens;
  if (budget_tokens < context_length) context_length = static_cast<int>(budget_tokens);
  if (context_length < 2) return InvalidArgument("the KV cache budget holds fewer than 2 tokens", "kv_cache_bytes");
  engine.context_length = context_length;
  auto cache = PagedKvCache::Create(engine.model->backend(), shape, options.prefix_cache);
  if (!cache) return cache.error();
  engine.cache = std::move(*cache);
  auto runner = LlamaRunner::Create(engine.model, options.max_batch_tokens, options.max_sequences);
  if (!runner) return runner.error();
  engine.runner = std::move(*runner);
  return engine;
}

// The model on the GPU that options.device/gpu_device name. An Error with
// code kUnavailable and the reason as its message means "the GPU cannot be
// used" (no device, or the model does not fit): Create turns it into its own
// error (kCuda) or falls back to the CPU (kAuto). Any other error is the
// model's own (a corrupt file) and fails Create either way.
Result<Engine> LoadEngineOnGpu(const LocalProviderOptions& options, std::shared_ptr<const GgufFile> gguf,
                               const Tokenizer& tokenizer) {
  const CudaDeviceStatus status = ProbeCudaDevice(options.gpu_device);
  if (!status.usable) return Error{ErrorCode::kUnavailable, status.reason};
  auto unusable = [](const Error& e) -> std::optional<Error> {
    if (e.code == ErrorCode::kResourceExhausted) {
      return Error{ErrorCode::kUnavailable, "too little GPU memory: " + e.message};
    }
    if (e.code == ErrorCode::kUnavailable) return e;
    return std::nullopt;
  };
  auto backend = CreateCudaBackend({.device = options.gpu_device, .memory_budget_bytes = options.gpu_memory_bytes});
  if (!backend) {
    if (auto e = unusable(backend.error())) return *e;
    return backend.error();
  }
  // A device backend may also report a full budget as std::bad_alloc from
  // the calls that return bare unique_ptrs (PrepareVector, AllocActivations).
  Result<Engine> engine = [&]() -> Result<Engine> {
    try {
      return LoadEngine(options, std::move(gguf), tokenizer, std::move(*backend));
    } catch (const std::bad_alloc&) {
      return Error{ErrorCode::kResourceExhausted, "an allocation on " + status.Describe() + " failed"};
    }
  }();
  if (!engine) {
    if (auto e = unusable(engine.error())) return *e;
  }
  return engine;
}

}  // namespace

struct LocalProvider::Impl {
  std::string name;
  LocalProviderOptions options;
  std::shared_ptr<const GgufFile> gguf;
  std::optional<Tokenizer> tokenizer;
  // The model's tokenizer.chat_template, parsed; or why it could not be.
  std::optional<ChatTemplate> chat_template;
  std::string template_source;
  std::optional<Error> template_error;
  ParameterSet params;
  std::shared_ptr<const LlamaModel> model;
  int context_length = 0;  // per sequence
  std::string device_name;  // the backend's Name()
  // Worker-thread state.
  std::unique_ptr<LlamaRunner> runner;
  std::unique_ptr<PagedKvCache> cache;
  std::vector<std::unique_ptr<Sequence>> running;
  uint64_t next_order = 0;
  std::vector<BatchItem> items;
  std::vector<Sequence*> item_seqs;

  std::shared_ptr<WorkQueue> queue = std::make_shared<WorkQueue>();
  std::jthread worker;  // last member: stopped and joined before the rest goes

  std::unique_ptr<Sequence> waiting;  // prepared, first in line for KV pages
  int64_t preemptions = 0;
  // Totals and the last step's batch, for Stats (copied to the queue by DropRetired).
  int64_t generated_tokens = 0;
  int64_t processed_tokens = 0;
  int batch_sequences = 0;
  int batch_tokens = 0;

  void Run(std::stop_token stop);
  // Moves queued jobs into `running` while slots and KV pages allow.
  void Admit(const std::stop_token& shutdown);
  // Validates and tokenizes a job; false when it failed (its sink was told).
  bool Prepare(Sequence& seq);
  // One batched pass over every runnable sequence; false when none could run.
  bool Step(const std::stop_token& shutdown);
  // Reserves KV for `seq`'s next `tokens` positions, preempting younger
  // sequences when the budget is full; false when `seq` itself had to go.
  bool ReserveOrPreempt(Sequence& seq, int tokens);
  void Preempt(Sequence& seq);
  // Flow control: whether the sequence's consumer takes another token now.
  bool Unblocked(Sequence& seq);
  // Forgets finished sequences.
  void DropRetired();
  // Samples from `logits`, streams the token and finishes the sequence when
  // it ended.
  void Generate(Sequence& seq, std::span<const float> logits);
  // Streams generated text: through the output parser for templated chats
  // (reasoning blocks and tool calls become their own events), else as text.
  void Emit(Sequence& seq, const std::string& text);
  void Finish(Sequence& seq, FinishReason finish, std::string stop_sequence, bool flush);
  void Fail(Sequence& seq, Error error);
  void Retire(Sequence& seq);
  std::optional<Error> Interrupted(Sequence& seq, const std::stop_token& shutdown);
  Result<Prompt> BuildPrompt(const ChatRequest& req) const;
};

Result<Prompt> LocalProvider::Impl::BuildPrompt(const ChatRequest& req) const {
  Prompt prompt;
  if (req.kind == RequestKind::kCompletion) {
    prompt.text = req.prompt;
    prompt.param = "prompt";
    return prompt;
  }
  prompt.param = "messages";
  if (template_error) return *template_error;
  if (!chat_template) {
    prompt.text = PlainChatPrompt(req);
    return prompt;
  }
  ChatTemplateOptions options;
  options.add_generation_prompt = true;
  // OpenRouter's `reasoning` switches Qwen3's thinking: enabled unless the
  // caller turned it off (effort "none" or enabled false).
  if (chat_template->caps().supports_enable_thinking && req.reasoning) {
    const bool off = (req.reasoning->enabled && !*req.reasoning->enabled) || req.reasoning->effort == "none";
    options.enable_thinking = !off;
  }
  auto text = chat_template->Render(req.messages, req.tools, options);
  if (!text) {
    return Error{ErrorCode::kInvalidArgument,
                 "the chat template of local model '" + name + "' cannot render this conversation: " +
                     text.error().message,
                 "messages", {}};
  }
  prompt.text = std::move(*text);
  // Hugging Face's apply_chat_template: the template writes BOS itself.
  prompt.encode = EncodeOptions{.add_special = false, .parse_special = true};
  prompt.output = OutputOptionsFor(template_source, prompt.text, req.tools);
  return prompt;
}

void LocalProvider::Impl::Run(std::stop_token stop) {
  WorkQueue& q = *queue;
  while (!stop.stop_requested()) {
    Admit(stop);
    if (Step(stop)) continue;
    // Nothing could run: wait for a request, a consumer catching up, or (by
    // polling) a cancellation or deadline of a blocked sequence.
    std::unique_lock lock(q.mu);
    // (A request waiting for KV pages is retried after each step, not on
    // arrivals.)
    const bool slot_free = !waiting && running.size() < static_cast<size_t>(options.max_sequences);
    q.cv.wait_for(lock, std::chrono::milliseconds(running.empty() ? 1000 : 50),
                  [&] { return stop.stop_requested() || q.wake || (slot_free && !q.jobs.empty()); });
    q.wake = false;
  }
  for (auto& seq : running) {
    Fail(*seq, MakeError(ErrorCode::kUnavailable, "local provider is shutting down"));
  }
  running.clear();
  if (waiting) Fail(*waiting, MakeError(ErrorCode::kUnavailable, "local provider is shutting down"));
  std::deque<Job> left;
  {
    std::lock_guard lock(q.mu);
    q.stopping = true;
    left.swap(q.jobs);
  }
  for (Job& job : left) job.sink->OnError(MakeError(ErrorCode::kUnavailable, "local provider is shutting down"));
}

std::optional<Error> LocalProvider::Impl::Interrupted(Sequence& seq, const std::stop_token& shutdown) {
  if (seq.job.cancel.stop_requested()) return MakeError(ErrorCode::kCancelled, "request cancelled");
  if (shutdown.stop_requested()) return MakeError(ErrorCode::kUnavailable, "local provider is shutting down");
  return std::nullopt;
}

bool LocalProvider::Impl::Prepare(Sequence& seq) {
  Job& job = seq.job;
  if (job.cancel.stop_requested()) {
    Fail(seq, MakeError(ErrorCode::kCancelled, "request cancelled"));
    return false;
  }
  if (job.deadline != std::chrono::steady_clock::time_point{} && std::chrono::steady_clock::now() >= job.deadline) {
    Fail(seq, MakeError(ErrorCode::kDeadlineExceeded, "deadline exceeded before generation started"));
    return false;
  }
  if (job.max_tokens && *job.max_tokens < 1) {
    Fail(seq, MakeError(ErrorCode::kInvalidArgument, "max_tokens must be at least 1", "max_tokens"));
    return false;
  }
  seq.history = tokenizer->Encode(job.prompt, job.encode);
  seq.prompt_tokens = static_cast<int64_t>(seq.history.size());
  if (seq.history.empty()) {
    Fail(seq, MakeError(ErrorCode::kInvalidArgument, "prompt is empty", job.prompt_param));
    return false;
  }
  if (seq.prompt_tokens >= context_length) {
    Error e = MakeError(ErrorCode::kInvalidArgument,
                        "prompt is " + std::to_string(seq.prompt_tokens) + " tokens but the model's context holds " +
                            std::to_string(context_length) + " tokens including the completion; shorten the prompt",
                        job.prompt_param);
    e.code_string = "context_length_exceeded";
    Fail(seq, std::move(e));
    return false;
  }
  seq.limit = context_length - seq.prompt_tokens;
  if (job.max_tokens) seq.limit = std::min(seq.limit, *job.max_tokens);
  seq.sampler.emplace(job.sampling, seq.history);
  seq.detokenizer.emplace(*tokenizer, seq.history.back());
  seq.stop_matcher.emplace(std::move(job.stop));
  // A templated chat's text goes through the output parser (reasoning blocks
  // and tool calls become their own events); plain text otherwise.
  if (job.output) seq.parser.emplace(*job.output);
  // The prompt's size is known now: report it before the first token, so a
  // consumer that announces usage up front (Anthropic's message_start) has
  // the real count.
  Usage prompt_usage;
  prompt_usage.prompt_tokens = seq.prompt_tokens;
  job.sink->OnEvent(UsageDelta{prompt_usage});
  return true;
}

void LocalProvider::Impl::Admit(const std::stop_token& shutdown) {
  WorkQueue& q = *queue;
  while (running.size() < static_cast<size_t>(options.max_sequences)) {
    if (!waiting) {
      auto seq = std::make_unique<Sequence>();
      {
        std::lock_guard lock(q.mu);
        // Requests cancelled while queued go now, not when their turn comes.
        std::erase_if(q.jobs, [](Job& job) {
          if (!job.cancel.stop_requested()) return false;
          job.sink->OnError(MakeError(ErrorCode::kCancelled, "request cancelled"));
          return true;
        });
        if (q.jobs.empty()) return;
        seq->job = std::move(q.jobs.front());
        q.jobs.pop_front();
      }
      if (!Prepare(*seq)) continue;
      waiting = std::move(seq);
    }
    Sequence& seq = *waiting;
    if (auto e = Interrupted(seq, shutdown)) {
      Fail(seq, *e);
      waiting.reset();
      continue;
    }
    if (seq.job.deadline != std::chrono::steady_clock::time_point{} &&
        std::chrono::steady_clock::now() >= seq.job.deadline) {
      Fail(seq, MakeError(ErrorCode::kDeadlineExceeded, "deadline exceeded before generation started"));
      waiting.reset();
      continue;
    }
    // The prompt's leading pages may be cached; the rest, and room for the
    // first generated token, must fit now, or the request waits (first in
    // line, holding no pages) until running sequences give pages back.
    seq.fed = static_cast<size_t>(cache->AttachPrefix(seq.kv, seq.history));
    if (!cache->Reserve(seq.kv, static_cast<int>(seq.history.size()) + 1)) {
      cache->Release(seq.kv);
      seq.fed = 0;
      if (!running.empty()) return;
      Fail(seq, MakeError(ErrorCode::kResourceExhausted, "the local engine's KV cache cannot hold this prompt"));
      waiting.reset();
      continue;
    }
    seq.cached_tokens = static_cast<int64_t>(seq.fed);
    seq.order = next_order++;
    running.push_back(std::move(waiting));
  }
}

void LocalProvider::Impl::Preempt(Sequence& seq) {
  // Recompute, as vLLM does: the pages go back (full ones stay in the prefix
  // cache, so the recompute usually finds them) and the whole history is
  // prefilled again when pages are free; generation state is kept.
  if (!seq.preempted) ++preemptions;  // a preempted sequence failing to come back is not another one
  cache->Release(seq.kv);
  seq.fed = 0;
  seq.preempted = true;
  if (seq.in_batch) {
    const auto it = std::find(item_seqs.begin(), item_seqs.end(), &seq);
    items.erase(items.begin() + (it - item_seqs.begin()));
    item_seqs.erase(it);
    seq.in_batch = false;
  }
}

bool LocalProvider::Impl::ReserveOrPreempt(Sequence& seq, int tokens) {
  while (true) {
    if (cache->Reserve(seq.kv, static_cast<int>(seq.fed) + tokens)) return true;
    // Preempt the youngest sequence that holds pages: another, or this one.
    Sequence* victim = nullptr;
    for (auto& other : running) {
      if (other.get() == &seq || other->kv.pages().empty()) continue;
      if (victim == nullptr || other->order > victim->order) victim = other.get();
    }
    if (victim == nullptr || victim->order < seq.order) {
      Preempt(seq);
      return false;
    }
    Preempt(*victim);
  }
}

bool LocalProvider::Impl::Unblocked(Sequence& seq) {
  if (seq.blocked) {
    if (!seq.resumed->exchange(false)) return false;
    seq.blocked = false;
  }
  std::weak_ptr<WorkQueue> weak = queue;
  seq.blocked = !seq.job.sink->Ready([weak, resumed = seq.resumed] {
    resumed->store(true);
    if (auto q = weak.lock()) {
      std::lock_guard lock(q->mu);
      q->wake = true;
      q->cv.notify_all();
    }
  });
  return !seq.blocked;
}

bool LocalProvider::Impl::Step(const std::stop_token& shutdown) {
  const auto now = std::chrono::steady_clock::now();
  // Cancellation and deadlines first.
  for (auto& ptr : running) {
    Sequence& seq = *ptr;
    if (seq.job.cancel.stop_requested() && seq.emitted) {
      // Cancelled after tokens went out: finish with the exact usage, so the
      // caller bills what was generated rather than an estimate.
      Finish(seq, FinishReason::kLength, {}, true);
      continue;
    }
    if (auto e = Interrupted(seq, shutdown)) {
      Fail(seq, *e);
      continue;
    }
    if (seq.job.deadline != std::chrono::steady_clock::time_point{} && now >= seq.job.deadline) {
      if (seq.emitted) {
        Finish(seq, FinishReason::kLength, {}, true);  // keep what the client already has
      } else {
        Fail(seq, MakeError(ErrorCode::kDeadlineExceeded, seq.generated == 0 ? "deadline exceeded during prefill"
                                                                              : "deadline exceeded before the first token"));
      }
    }
  }
  DropRetired();

  // The batch: first one token of every decoding sequence whose consumer
  // keeps up (in admission order), then prompt chunks, within
  // max_batch_tokens. A sequence whose consumer is behind is paused alone.
  items.clear();
  item_seqs.clear();
  int budget = runner->max_batch_tokens();
  for (int pass = 0; pass < 2; ++pass) {
    for (auto& ptr : running) {
      Sequence& seq = *ptr;
      if (budget < 1) break;
      if (seq.in_batch) continue;
      // A preempted sequence comes back in the prompt pass, from the prefix
      // cache, whatever is left to compute.
      const bool returning = seq.preempted;
      if (returning && pass == 0) continue;
      if (returning && seq.emitted && !Unblocked(seq)) continue;
      if (returning) seq.fed = static_cast<size_t>(cache->AttachPrefix(seq.kv, seq.history));
      const size_t pending = seq.history.size() - seq.fed;
      if (pending == 0 || (!returning && (pending == 1) != (pass == 0))) continue;
      if (!returning && seq.emitted && !Unblocked(seq)) continue;
      const size_t count = std::min(static_cast<size_t>(budget), pending);
      if (!ReserveOrPreempt(seq, static_cast<int>(count))) continue;  // gave its pages back
      seq.preempted = false;
      items.push_back(BatchItem{&seq.kv, std::span<const TokenId>(seq.history).subspan(seq.fed, count),
                                seq.fed + count == seq.history.size()});
      item_seqs.push_back(&seq);
      seq.in_batch = true;
      budget -= static_cast<int>(count);
    }
  }
  for (Sequence* seq : item_seqs) seq->in_batch = false;
  batch_sequences = static_cast<int>(items.size());
  batch_tokens = 0;
  for (const BatchItem& item : items) batch_tokens += static_cast<int>(item.tokens.size());
  if (items.empty()) {
    std::lock_guard lock(queue->mu);
    queue->batch_sequences = 0;
    queue->batch_tokens = 0;
    return false;
  }
  processed_tokens += batch_tokens;

  auto logits = runner->Decode(*cache, items);
  if (!logits) {
    for (Sequence* seq : item_seqs) Fail(*seq, MakeError(ErrorCode::kInternal, "inference failed: " + logits.error().message));
    DropRetired();
    return true;
  }
  const auto vocab = static_cast<size_t>(model->hparams().vocab_size);
  size_t row = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    Sequence& seq = *item_seqs[i];
    seq.fed += items[i].tokens.size();
    if (!items[i].logits) continue;
    const std::span<const float> row_logits = logits->subspan(row * vocab, vocab);
    ++row;
    ++generated_tokens;
    try {
      Generate(seq, row_logits);
    } catch (const std::exception& e) {
      Fail(seq, MakeError(ErrorCode::kInternal, std::string("local inference failed: ") + e.what()));
    }
  }
  DropRetired();
  return true;
}

void LocalProvider::Impl::DropRetired() {
  std::erase_if(running, [](const std::unique_ptr<Sequence>& seq) { return seq->job.sink == nullptr; });
  std::lock_guard lock(queue->mu);
  queue->running = static_cast<int>(running.size());
  queue->waiting = waiting != nullptr;
  queue->kv = cache->stats();
  queue->preemptions = preemptions;
  queue->generated_tokens = generated_tokens;
  queue->processed_tokens = processed_tokens;
  queue->batch_sequences = batch_sequences;
  queue->batch_tokens = batch_tokens;
}

void LocalProvider::Impl::Generate(Sequence& seq, std::span<const float> logits) {
  const TokenId token = seq.sampler->Sample(logits);
  seq.sampler->Accept(token);
  if (tokenizer->IsEndOfGeneration(token)) {
    Finish(seq, FinishReason::kStop, {}, true);
    return;
  }
  ++seq.generated;
  seq.history.push_back(token);
  StopMatcher::Output out = seq.stop_matcher->Push(seq.detokenizer->Push(token));
  const bool was_reasoning = seq.parser && seq.parser->in_reasoning();
  Emit(seq, out.text);
  // Tokens of a <think> block, its tags included, are reasoning tokens
  // (counted in completion_tokens too, as OpenAI reports them).
  if (was_reasoning || (seq.parser && seq.parser->in_reasoning())) ++seq.reasoning_tokens;
  if (out.stopped) {
    Finish(seq, FinishReason::kStop, std::move(out.matched), false);
    return;
  }
  if (seq.generated >= seq.limit) {
    Finish(seq, FinishReason::kLength, {}, true);
    return;
  }
}

void LocalProvider::Impl::Emit(Sequence& seq, const std::string& text) {
  if (text.empty()) return;
  seq.emitted = true;
  if (!seq.parser) {
    seq.job.sink->OnEvent(TextDelta{0, text});
    return;
  }
  seq.events.clear();
  seq.parser->Push(text, seq.events);
  for (StreamEvent& e : seq.events) seq.job.sink->OnEvent(std::move(e));
}

void LocalProvider::Impl::Finish(Sequence& seq, FinishReason finish, std::string stop_sequence, bool flush) {
  StreamSink& sink = *seq.job.sink;
  if (flush) {
    StopMatcher::Output out = seq.stop_matcher->Push(seq.detokenizer->Flush());
    Emit(seq, out.text);
    if (out.stopped) {
      finish = FinishReason::kStop;
      stop_sequence = std::move(out.matched);
    }
    Emit(seq, seq.stop_matcher->Flush());
  }
  FinishDelta finish_delta{0, finish, std::string(FinishReasonName(finish)), std::move(stop_sequence)};
  if (seq.parser) {
    seq.events.clear();
    seq.parser->Finish(std::move(finish_delta), seq.events);
    for (StreamEvent& e : seq.events) sink.OnEvent(std::move(e));
  } else {
    sink.OnEvent(std::move(finish_delta));
  }
  Usage usage;
  usage.prompt_tokens = seq.prompt_tokens;
  usage.completion_tokens = seq.generated;
  usage.cached_tokens = seq.cached_tokens;
  usage.reasoning_tokens = seq.reasoning_tokens;
  sink.OnEvent(UsageDelta{usage});
  sink.OnComplete();
  Retire(seq);
}

void LocalProvider::Impl::Fail(Sequence& seq, Error error) {
  if (!seq.job.sink) return;
  seq.job.sink->OnError(std::move(error));
  Retire(seq);
}

void LocalProvider::Impl::Retire(Sequence& seq) {
  cache->Release(seq.kv);
  seq.job.sink.reset();  // marks it done; Step drops it from `running`
}

Result<std::unique_ptr<LocalProvider>> LocalProvider::Create(const LocalProviderOptions& options) {
  if (options.threads < 0) return InvalidArgument("local provider threads must be >= 0", "threads");
  if (options.context_length < 0) return InvalidArgument("local provider context_length must be >= 0", "context_length");
  if (options.max_sequences < 1) return InvalidArgument("local provider max_sequences must be >= 1", "max_sequences");
  if (options.max_queue < 0) return InvalidArgument("local provider max_queue must be >= 0", "max_queue");
  if (options.max_batch_tokens < 1) {
    return InvalidArgument("local provider max_batch_tokens must be >= 1", "max_batch_tokens");
  }
  if (options.kv_cache_bytes < 0) return InvalidArgument("local provider kv_cache_bytes must be >= 0", "kv_cache_bytes");
  if (options.gpu_device < 0) return InvalidArgument("local provider gpu_device must be >= 0", "gpu_device");
  if (options.gpu_memory_bytes < 0) {
    return InvalidArgument("local provider gpu_memory_bytes must be >= 0", "gpu_memory_bytes");
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->name = options.display_name;
  auto gguf = GgufFile::Open(options.model_path);
  if (!gguf) return gguf.error();
  impl->gguf = std::shared_ptr<const GgufFile>(std::move(*gguf));
  auto tokenizer = Tokenizer::FromGguf(*impl->gguf);
  if (!tokenizer) return tokenizer.error();
  impl->tokenizer.emplace(std::move(*tokenizer));
  impl->params = BaseParameters();
  if (auto source = impl->gguf->GetString("tokenizer.chat_template")) {
    impl->template_source = std::string(*source);
    auto text_of = [&](TokenId id) { return id >= 0 ? impl->tokenizer->Text(id) : std::string(); };
    auto parsed = ChatTemplate::Parse(impl->template_source, text_of(impl->tokenizer->bos_id()),
                                      text_of(impl->tokenizer->eos_id()));
    if (parsed) {
      impl->chat_template.emplace(std::move(*parsed));
      if (impl->chat_template->caps().supports_tools) impl->params.Add(Param::kTools);
      if (impl->chat_template->caps().supports_enable_thinking) impl->params.Add(Param::kReasoning);
    } else {
      // The model still serves completions; chats get a 400 naming it.
      impl->template_error = Error{ErrorCode::kInvalidArgument,
                                   "the chat template of local model '" + options.display_name +
                                       "' is beyond what the engine renders (" + parsed.error().message +
                                       "); use /v1/completions with your own prompt",
                                   "messages", "unsupported_chat_template"};
    }
  }
  std::optional<Engine> engine;
  if (options.device != LocalDevice::kCpu) {
    auto gpu = LoadEngineOnGpu(options, impl->gguf, *impl->tokenizer);
    if (gpu) {
      engine = std::move(*gpu);
    } else if (gpu.error().code != ErrorCode::kUnavailable) {
      return gpu.error();
    } else if (options.device == LocalDevice::kCuda) {
      return MakeError(ErrorCode::kUnavailable,
                       "device: cuda was requested, but the GPU cannot be used: " + gpu.error().message, "device");
    } else {
      // kAuto: one line, so an operator sees why a GPU machine runs on the CPU.
      std::cerr << "tollgate: local model " << options.model_path << " runs on the CPU (device: auto): "
                << gpu.error().message << "\n";
    }
  }
  if (!engine) {
    auto cpu = LoadEngine(options, impl->gguf, *impl->tokenizer, nullptr);
    if (!cpu) return cpu.error();
    engine = std::move(*cpu);
  }
  impl->model = std::move(engine->model);
  impl->cache = std::move(engine->cache);
  impl->runner = std::move(engine->runner);
  impl->context_length = engine->context_length;
  impl->device_name = impl->model->backend().Name();
  Impl* raw = impl.get();
  impl->worker = std::jthread([raw](std::stop_token stop) { raw->Run(std::move(stop)); });
  return std::unique_ptr<LocalProvider>(new LocalProvider(std::move(impl)));
}

LocalProvider::LocalProvider(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

LocalProvider::~LocalProvider() {
  impl_->worker.request_stop();
  {
    std::lock_guard lock(impl_->queue->mu);
    impl_->queue->cv.notify_all();
  }
  impl_->worker.join();
}

std::string_view LocalProvider::Name() const { return impl_->name; }

int LocalProvider::ContextLength() const { return impl_->context_length; }

int LocalProvider::MaxSequences() const { return impl_->options.max_sequences; }

LocalEngineStats LocalProvider::Stats() const {
  LocalEngineStats stats;
  {
    std::lock_guard lock(impl_->queue->mu);
    stats.running = impl_->queue->running;
    stats.queued = static_cast<int>(impl_->queue->jobs.size()) + (impl_->queue->waiting ? 1 : 0);
    stats.kv = impl_->queue->kv;
    stats.preemptions = impl_->queue->preemptions;
    stats.generated_tokens = impl_->queue->generated_tokens;
    stats.processed_tokens = impl_->queue->processed_tokens;
    stats.batch_sequences = impl_->queue->batch_sequences;
    stats.batch_tokens = impl_->queue->batch_tokens;
  }
  stats.max_sequences = impl_->options.max_sequences;
  stats.max_queue = impl_->options.max_queue;
  stats.device = impl_->device_name;
  return stats;
}

std::string LocalProvider::DeviceName() const { return impl_->device_name; }

const ParameterSet& LocalProvider::SupportedParameters() const { return impl_->params; }

std::optional<int64_t> LocalProvider::CountPromptTokens(const ChatRequest& request) const {
  auto prompt = impl_->BuildPrompt(request);
  if (!prompt) return std::nullopt;
  return static_cast<int64_t>(impl_->tokenizer->Encode(prompt->text, prompt->encode).size());
}

void LocalProvider::Start(const ProviderRequest& request, std::shared_ptr<StreamSink> sink, std::stop_token cancel) {
  const ChatRequest& req = *request.request;
  auto prompt = impl_->BuildPrompt(req);
  if (!prompt) {
    sink->OnError(prompt.error());
    return;
  }
  Job job;
  job.prompt = std::move(prompt->text);
  job.prompt_param = std::move(prompt->param);
  job.encode = prompt->encode;
  job.output = std::move(prompt->output);
  job.max_tokens = req.max_tokens;
  job.sampling.temperature = req.temperature.value_or(1.0);
  job.sampling.top_p = req.top_p.value_or(1.0);
  job.sampling.top_k = req.top_k.value_or(0);
  job.sampling.min_p = req.min_p.value_or(0.0);
  job.sampling.repetition_penalty = req.repetition_penalty.value_or(1.0);
  job.sampling.presence_penalty = req.presence_penalty.value_or(0.0);
  job.sampling.frequency_penalty = req.frequency_penalty.value_or(0.0);
  const int vocab = impl_->model->hparams().vocab_size;
  for (const auto& [token, bias] : req.logit_bias) {
    if (token < 0 || token >= vocab) {
      sink->OnError(MakeError(ErrorCode::kInvalidArgument,
                              "logit_bias names token id " + std::to_string(token) + ", outside the vocabulary of '" +
                                  impl_->name + "' (" + std::to_string(vocab) + " tokens)",
                              "logit_bias"));
      return;
    }
    job.sampling.logit_bias.emplace_back(static_cast<TokenId>(token), static_cast<float>(bias));
  }
  job.sampling.seed = req.seed;
  job.stop = req.stop;
  job.deadline = request.deadline;
  job.sink = std::move(sink);
  job.cancel = std::move(cancel);
  WorkQueue& q = *impl_->queue;
  {
    std::lock_guard lock(q.mu);
    if (!q.stopping && static_cast<int>(q.jobs.size()) < impl_->options.max_queue) {
      q.jobs.push_back(std::move(job));
      q.cv.notify_all();
      return;
    }
    if (!q.stopping) {
      Error full = MakeError(ErrorCode::kResourceExhausted,
                             "local model '" + impl_->name + "' has " + std::to_string(q.jobs.size()) +
                                 " requests waiting, its queue's limit; retry shortly");
      full.retry_after = "1";
      full.code_string = "at_capacity";  // backpressure, not a rate limit: the router tries elsewhere
      job.sink->OnError(full);
      return;
    }
  }
  job.sink->OnError(MakeError(ErrorCode::kUnavailable, "local provider is shutting down"));
}

}  // namespace tollgate::local_backend
