#include "tollgate/local_backend/local_provider.hpp"

#include "tollgate/local_backend/chat_template.hpp"
#include "tollgate/local_backend/gguf.hpp"
#include "tollgate/local_backend/model.hpp"
#include "tollgate/local_backend/output_parser.hpp"
#include "tollgate/local_backend/sampler.hpp"
#include "tollgate/local_backend/tokenizer.hpp"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>

namespace tollgate::local_backend {
namespace {

// Prompt tokens per Decode call, so cancellation and the deadline are also
// honoured during a long prefill.
constexpr size_t kPrefillChunk = 128;

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

// Blocks the worker while `sink` says its consumer is behind, until it
// resumes us or the call is cancelled or the provider stops.
void WaitUntilReady(StreamSink& sink, const std::stop_token& cancel, const std::stop_token& shutdown) {
  struct Resume {
    std::mutex mu;
    std::condition_variable cv;
    bool ready = false;
  };
  auto resume = std::make_shared<Resume>();
  const bool ready = sink.Ready([resume] {
    std::lock_guard lock(resume->mu);
    resume->ready = true;
    resume->cv.notify_all();
  });
  if (ready) return;
  std::unique_lock lock(resume->mu);
  while (!resume->ready && !cancel.stop_requested() && !shutdown.stop_requested()) {
    resume->cv.wait_for(lock, std::chrono::milliseconds(50));
  }
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

}  // namespace

struct LocalProvider::Impl {
  std::string name;
  std::shared_ptr<const GgufFile> gguf;
  std::optional<Tokenizer> tokenizer;
  // The model's tokenizer.chat_template, parsed; or why it could not be.
  std::optional<ChatTemplate> chat_template;
  std::string template_source;
  std::optional<Error> template_error;
  ParameterSet params;
  std::shared_ptr<const LlamaModel> model;
  std::unique_ptr<LlamaContext> context;

  std::mutex mu;
  std::condition_variable_any cv;
  std::deque<Job> queue;  // guarded by mu
  bool stopping = false;  // guarded by mu
  std::jthread worker;    // last member: stopped and joined before the rest goes

  void Run(std::stop_token stop);
  void Serve(Job& job, const std::stop_token& shutdown);
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
  while (true) {
    Job job;
    {
      std::unique_lock lock(mu);
      cv.wait(lock, stop, [&] { return !queue.empty(); });
      if (stop.stop_requested()) break;
      job = std::move(queue.front());
      queue.pop_front();
    }
    Serve(job, stop);
  }
  std::deque<Job> left;
  {
    std::lock_guard lock(mu);
    stopping = true;
    left.swap(queue);
  }
  for (Job& job : left) job.sink->OnError(MakeError(ErrorCode::kUnavailable, "local provider is shutting down"));
}

void LocalProvider::Impl::Serve(Job& job, const std::stop_token& shutdown) {
  StreamSink& sink = *job.sink;
  bool terminal_sent = false;
  auto fail = [&](Error e) {
    terminal_sent = true;
    sink.OnError(e);
  };
  const bool has_deadline = job.deadline != std::chrono::steady_clock::time_point{};
  auto deadline_passed = [&] { return has_deadline && std::chrono::steady_clock::now() >= job.deadline; };
  auto interrupted = [&]() -> std::optional<Error> {
    if (job.cancel.stop_requested()) return MakeError(ErrorCode::kCancelled, "request cancelled");
    if (shutdown.stop_requested()) return MakeError(ErrorCode::kUnavailable, "local provider is shutting down");
    return std::nullopt;
  };

  try {
    if (auto e = interrupted()) return fail(*e);
    if (deadline_passed()) {
      return fail(MakeError(ErrorCode::kDeadlineExceeded, "deadline exceeded before generation started"));
    }
    if (job.max_tokens && *job.max_tokens < 1) {
      return fail(MakeError(ErrorCode::kInvalidArgument, "max_tokens must be at least 1", "max_tokens"));
    }
    const std::vector<TokenId> prompt = tokenizer->Encode(job.prompt, job.encode);
    const int64_t context_length = context->context_length();
    const auto prompt_tokens = static_cast<int64_t>(prompt.size());
    if (prompt.empty()) {
      return fail(MakeError(ErrorCode::kInvalidArgument, "prompt is empty", job.prompt_param));
    }
    if (prompt_tokens >= context_length) {
      return fail(MakeError(ErrorCode::kInvalidArgument,
                            "prompt is " + std::to_string(prompt_tokens) + " tokens but the model's context holds " +
                                std::to_string(context_length) +
                                " tokens including the completion; shorten the prompt",
                            job.prompt_param));
    }

    // The prompt's size is known now: report it before the first token, so a
    // consumer that announces usage up front (Anthropic's message_start) has
    // the real count.
    Usage prompt_usage;
    prompt_usage.prompt_tokens = prompt_tokens;
    sink.OnEvent(UsageDelta{prompt_usage});

    context->Reset();
    std::span<const float> logits;
    for (size_t done = 0; done < prompt.size(); done += kPrefillChunk) {
      if (auto e = interrupted()) return fail(*e);
      if (deadline_passed()) return fail(MakeError(ErrorCode::kDeadlineExceeded, "deadline exceeded during prefill"));
      const size_t n = std::min(kPrefillChunk, prompt.size() - done);
      auto r = context->Decode(std::span<const TokenId>(prompt.data() + done, n));
      if (!r) return fail(MakeError(ErrorCode::kInternal, "prefill failed: " + r.error().message));
      logits = *r;
    }

    int64_t limit = context_length - prompt_tokens;
    if (job.max_tokens) limit = std::min(limit, *job.max_tokens);
    Sampler sampler(job.sampling, prompt);
    IncrementalDetokenizer detokenizer(*tokenizer, prompt.back());
    StopMatcher stop_matcher(std::move(job.stop));
    // A templated chat's text goes through the output parser (reasoning
    // blocks and tool calls become their own events); plain text otherwise.
    std::optional<OutputParser> parser;
    if (job.output) parser.emplace(*job.output);
    std::vector<StreamEvent> events;
    bool emitted = false;
    auto emit = [&](const std::string& text) {
      if (text.empty()) return;
      emitted = true;
      if (!parser) {
        sink.OnEvent(TextDelta{0, text});
        return;
      }
      events.clear();
      parser->Push(text, events);
      for (StreamEvent& e : events) sink.OnEvent(std::move(e));
    };

    FinishReason finish = FinishReason::kLength;
    std::string stop_sequence;
    bool stopped_by_string = false;
    int64_t generated = 0;
    while (true) {
      // Cancelled after tokens went out: finish with the exact usage, so the
      // caller bills what was generated rather than an estimate.
      if (job.cancel.stop_requested() && emitted) break;
      if (auto e = interrupted()) return fail(*e);
      if (deadline_passed()) {
        if (!emitted) return fail(MakeError(ErrorCode::kDeadlineExceeded, "deadline exceeded before the first token"));
        finish = FinishReason::kLength;  // keep what the client already has
        break;
      }
      // Flow control: a consumer that is behind (a slow client) pauses
      // generation here instead of queueing tokens without bound.
      WaitUntilReady(sink, job.cancel, shutdown);
      if (job.cancel.stop_requested() && emitted) break;
      if (auto e = interrupted()) return fail(*e);
      const TokenId token = sampler.Sample(logits);
      sampler.Accept(token);
      if (tokenizer->IsEndOfGeneration(token)) {
        finish = FinishReason::kStop;
        break;
      }
      ++generated;
      StopMatcher::Output out = stop_matcher.Push(detokenizer.Push(token));
      emit(out.text);
      if (out.stopped) {
        finish = FinishReason::kStop;
        stop_sequence = out.matched;
        stopped_by_string = true;
        break;
      }
      if (generated >= limit) {
        finish = FinishReason::kLength;
        break;
      }
      const TokenId next[1] = {token};
      auto r = context->Decode(next);
      if (!r) return fail(MakeError(ErrorCode::kInternal, "decode failed: " + r.error().message));
      logits = *r;
    }
    if (!stopped_by_string) {
      StopMatcher::Output out = stop_matcher.Push(detokenizer.Flush());
      emit(out.text);
      if (out.stopped) {
        finish = FinishReason::kStop;
        stop_sequence = out.matched;
      }
      emit(stop_matcher.Flush());
    }
    FinishDelta finish_delta{0, finish, std::string(FinishReasonName(finish)), std::move(stop_sequence)};
    if (parser) {
      events.clear();
      parser->Finish(std::move(finish_delta), events);
      for (StreamEvent& e : events) sink.OnEvent(std::move(e));
    } else {
      sink.OnEvent(std::move(finish_delta));
    }
    Usage usage;
    usage.prompt_tokens = prompt_tokens;
    usage.completion_tokens = generated;
    sink.OnEvent(UsageDelta{usage});
    terminal_sent = true;
    sink.OnComplete();
  } catch (const std::exception& e) {
    if (!terminal_sent) fail(MakeError(ErrorCode::kInternal, std::string("local inference failed: ") + e.what()));
  }
}

Result<std::unique_ptr<LocalProvider>> LocalProvider::Create(const LocalProviderOptions& options) {
  if (options.threads < 0) return InvalidArgument("local provider threads must be >= 0", "threads");
  if (options.context_length < 0) return InvalidArgument("local provider context_length must be >= 0", "context_length");
  auto impl = std::make_unique<Impl>();
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
  auto model = LlamaModel::Load(impl->gguf);
  if (!model) return model.error();
  impl->model = *model;
  if (impl->tokenizer->vocab_size() != impl->model->hparams().vocab_size) {
    return InvalidArgument("tokenizer has " + std::to_string(impl->tokenizer->vocab_size()) +
                           " tokens but the model's vocabulary is " +
                           std::to_string(impl->model->hparams().vocab_size));
  }
  auto context = LlamaContext::Create(impl->model, options.context_length);
  if (!context) return context.error();
  impl->context = std::move(*context);
  Impl* raw = impl.get();
  impl->worker = std::jthread([raw](std::stop_token stop) { raw->Run(std::move(stop)); });
  return std::unique_ptr<LocalProvider>(new LocalProvider(std::move(impl)));
}

LocalProvider::LocalProvider(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

LocalProvider::~LocalProvider() {
  impl_->worker.request_stop();  // wakes the condition variable wait
  impl_->worker.join();
}

std::string_view LocalProvider::Name() const { return impl_->name; }

int LocalProvider::ContextLength() const { return impl_->context->context_length(); }

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
  for (const auto& [token, bias] : req.logit_bias) {
    job.sampling.logit_bias.emplace_back(static_cast<TokenId>(token), static_cast<float>(bias));
  }
  job.sampling.seed = req.seed;
  job.stop = req.stop;
  job.deadline = request.deadline;
  job.sink = std::move(sink);
  job.cancel = std::move(cancel);
  {
    std::lock_guard lock(impl_->mu);
    if (!impl_->stopping) {
      impl_->queue.push_back(std::move(job));
      impl_->cv.notify_one();
      return;
    }
  }
  job.sink->OnError(MakeError(ErrorCode::kUnavailable, "local provider is shutting down"));
}

}  // namespace tollgate::local_backend
