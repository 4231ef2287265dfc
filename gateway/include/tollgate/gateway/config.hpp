// The gateway's configuration: one YAML file (config/tollgate.yaml documents
// every key), with ${VAR} and ${VAR:-default} environment interpolation.
//
// Every bad value is reported with its path in the file ("models[2].endpoint.
// pricing.prompt: ...") and the process refuses to start. Unknown keys are
// errors too, so a typo never silently falls back to a default.
#pragma once

#include "tollgate/core/error.hpp"
#include "tollgate/core/money.hpp"
#include "tollgate/core/parameters.hpp"
#include "tollgate/routing/catalog.hpp"
#include "tollgate/routing/router.hpp"

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::gateway {

struct ServerConfig {
  std::string host = "127.0.0.1";
  uint16_t port = 8080;
  int io_threads = 0;                        // 0 = one per core
  int64_t max_body_bytes = 4 * 1024 * 1024;  // larger bodies get 413
  int64_t request_timeout_ms = 600'000;      // whole call
  // On SIGTERM/SIGINT: how long calls in flight may run on before they are
  // cancelled (503 / an error event), then at most 8 s more for them to end.
  int64_t drain_timeout_ms = 30'000;

  // Limits on what a client may send (README "Limits"). Each refusal has the
  // caller's error shape: 400 (JSON nesting, counts), 408 (slow headers or
  // body), 413 (body), 414 (URL), 431 (headers), 429/503 (connections).
  int64_t max_header_bytes = 16 * 1024;  // request line + headers
  int max_headers = 100;                 // header fields
  int64_t max_url_bytes = 8 * 1024;      // request target
  int max_json_depth = 64;               // nesting of arrays/objects in a JSON body (at most 64: the decoders')
  int max_messages = 20'000;             // messages (or Responses input items) per call
  int max_tools = 1'024;                 // tool definitions per call
  int max_content_parts = 50'000;        // content parts over all messages of a call
  int max_connections = 16'384;          // open client connections in all; more get 503 and are closed
  int max_connections_per_client = 4'096;  // per client IP address; more get 429 and are closed
  int64_t header_timeout_ms = 10'000;    // from a request's first byte to its last header byte
  int64_t body_timeout_ms = 60'000;      // to read a whole request body
  int64_t idle_timeout_ms = 75'000;      // a keep-alive connection waiting for its next request
  int64_t write_timeout_ms = 60'000;     // one write to a client that does not read

  // TLS on the listener when both are set (PEM files; the key unencrypted);
  // read again on every reload.
  std::string tls_cert_file;
  std::string tls_key_file;
};

struct UsageConfig {
  int flush_interval_ms = 200;
  int batch_size = 256;
  // Local spool of usage rows (billing/include/tollgate/billing/usage_recorder.hpp):
  // every finished call's row is fsynced here before its client gets the
  // last byte, and replayed into the database. One directory per gateway
  // process (it holds the process's replica id). Empty = no spool: rows wait
  // in memory only (a crash loses what was not written yet).
  std::string spool_dir;
  // true: a call's last bytes (the whole body, or the stream's end) wait
  // until its row is fsynced to the spool, so a client that saw a complete
  // answer was billed even if the process dies right after. false: the
  // answer goes out at once and the row is fsynced right behind it (with
  // the next group commit); a crash in between loses those rows. The wait is
  // one fdatasync(2) per group of calls ending together: at one call at a
  // time, most of the latency Tollgate adds to a short non-streamed call
  // (README "Gateway overhead"). No effect without a spool.
  bool answer_after_spool = true;
};

// Accounts, credits, limits (billing/README.md).
struct BillingConfig {
  // Bearer token of the admin API (/admin/v1/...); empty = the admin API is
  // off (404). A secret: never logged.
  std::string admin_token;
  // Serve the admin API on its own listener (HOST:PORT) instead of the main
  // one; empty = on the main listener.
  std::string admin_host;
  uint16_t admin_port = 0;
  // Credit leases: how long a lease lives without renewal, and how long an
  // unused one is kept before its free part is returned.
  int64_t lease_ttl_ms = 60'000;
  int64_t lease_idle_return_ms = 2'000;
  // How often each replica shares its rate-limit counts.
  int64_t rate_limit_sync_ms = 250;
};

struct ProviderConfig {
  std::string id;            // key under `providers:`
  std::string type;          // "local" | "openai_compatible" | "openai_responses" | "anthropic" | "gemini"
  std::string display_name;  // shown as `provider` in responses; defaults to the preset's, else id
  bool enabled = true;
  std::string disabled_reason;  // why not enabled ("OPENAI_API_KEY is not set")
  // Remote providers (providers/remote_provider.hpp).
  std::string preset;    // openai_compatible only: a preset name (providers/presets.hpp), or ""
  std::string base_url;  // defaults: the preset's; Anthropic's and Gemini's public APIs
  std::string api_key;   // secret: never logged
  std::string ca_file;
  int connect_timeout_ms = 10'000;
  int first_byte_timeout_ms = 60'000;
  int max_idle_connections = 64;
  int64_t default_max_tokens = 4096;  // anthropic: max_tokens when the caller gives none
  std::map<std::string, std::string> extra_headers;
  // local: the engine's scheduler (local_backend/local_provider.hpp
  // LocalProviderOptions has the meanings and defaults).
  int context_length = 0;  // 0 = the model file's
  int threads = 0;         // 0 = every core
  int max_sequences = 8;
  int max_queue = 64;
  int max_batch_tokens = 256;
  int64_t kv_cache_mib = 0;        // 0 = max_sequences full contexts, at most 2 GiB
  std::string kv_cache_type = "f16";  // f16, q8 or f32
  bool prefix_cache = true;
  // Where the model runs: "cpu", "cuda" (the GPU or a startup error) or
  // "auto" (the GPU when usable and the model fits, else the CPU).
  std::string device = "auto";
  int gpu_device = 0;         // CUDA device index
  int64_t gpu_memory_mib = 0;  // GPU memory budget; 0 = free memory less 1 GiB

  // A reload keeps a provider (its connection pool, its loaded model) whose
  // settings are all unchanged.
  bool operator==(const ProviderConfig&) const = default;
};

// One endpoint of a model (routing/catalog.hpp Endpoint has the meanings).
struct EndpointConfig {
  std::string id;        // `id`, else "<provider>/<model>" (a local model's file stem); unique
  std::string provider;  // a key of `providers:`
  std::string model;     // upstream model name; for local providers a GGUF path (resolved)
  Pricing pricing;       // from USD per million tokens (or per token: pricing.unit) in the file
  std::vector<routing::PriceTier> tiers;  // pricing.tiers, ascending
  int64_t context_length = 0;
  int64_t max_output_tokens = 0;
  std::string quantization;  // lower-cased
  // `supported_parameters`: narrows what the provider declares; nullopt = all of it.
  std::optional<ParameterSet> supported_parameters;
  routing::DataPolicy data_policy;
  int max_concurrency = 0;  // 0 = unlimited; local endpoints default to 1
  double weight = 1.0;
  std::string config_path;  // where it stands in the file, "models[0].endpoint", for messages
};

struct ModelConfig {
  std::string id;
  std::string name;
  int64_t context_length = 0;
  std::vector<EndpointConfig> endpoints;  // `endpoint:` (one) or `endpoints:` (list)
  routing::RoutingPolicy routing;         // `routing:` of the model
};

// `log:` (gateway/src/access_log.hpp).
// Outbound HTTP to remote providers (top-level `outbound:`); unset proxy
// settings leave the environment in charge (HTTPS_PROXY, HTTP_PROXY,
// NO_PROXY; providers/remote_provider.hpp RemoteProviderOptions).
struct OutboundConfig {
  std::optional<std::string> proxy;     // "http://[user:password@]host[:port]"; "" = never a proxy
  std::optional<std::string> no_proxy;  // curl's NO_PROXY syntax; "" = no exceptions
  int dns_ttl_ms = 30'000;              // resolved addresses reused this long; 0 = resolve every connection
  bool operator==(const OutboundConfig&) const = default;
};

struct LogConfig {
  bool access = true;  // one JSON access-log line per model call on stderr
};

// `stats:` (usage statistics, issue 10).
struct StatsConfig {
  // Raw usage rows (usage_events: the calls list, GET /api/v1/generation)
  // are kept this many days, then dropped a whole UTC day at a time by the
  // server's hourly maintenance (billing/usage_maintenance.hpp); the rollups
  // behind statistics, rankings and /api/v1/key are kept forever. 0 = keep
  // raw rows forever. 0..36500.
  int retention_days = 90;
};

// `responses:` (the OpenAI Responses API, issue 11).
struct ResponsesConfig {
  // A response created with `store: true` (OpenAI's default) is kept this
  // many days for GET /v1/responses/{id} and previous_response_id, then
  // expires (never read again; deleted by the hourly maintenance). OpenAI
  // keeps them 30 days. 1..36500.
  int ttl_days = 30;
};

struct Config {
  ServerConfig server;
  LogConfig log;
  StatsConfig stats;
  ResponsesConfig responses;
  std::string database_url;  // may be empty here; TOLLGATE_DATABASE_URL overrides
  UsageConfig usage;
  BillingConfig billing;
  OutboundConfig outbound;
  std::vector<ProviderConfig> providers;
  std::vector<ModelConfig> models;
  routing::RouterOptions routing;  // top-level `routing:` (health, queue, shares constants)
};

// Returns the value of an environment variable, or nullopt when unset.
using EnvLookup = std::function<std::optional<std::string>(std::string_view name)>;
EnvLookup ProcessEnv();

// Parses YAML text. `base_dir` resolves relative local model paths.
// Errors: kInvalidArgument with "PATH: what is wrong" as the message.
Result<Config> ParseConfig(std::string_view yaml_text, const std::string& base_dir,
                           const EnvLookup& env);

// Reads and parses the file at `path`; relative paths in it resolve against
// the file's directory.
Result<Config> LoadConfig(const std::string& path, const EnvLookup& env);

// Replaces ${VAR} and ${VAR:-default}. Sets `*missing` to the first unset
// variable without default (and leaves it empty in the result). Exposed for tests.
std::string Interpolate(std::string_view text, const EnvLookup& env, std::string* missing);

}  // namespace tollgate::gateway
