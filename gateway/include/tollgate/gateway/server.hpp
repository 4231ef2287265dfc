// `tollgate serve`: builds the providers, catalog, key cache and usage
// recorder from a Config, runs the HTTP server (HTTPS with server.tls) on
// io_threads threads. SIGHUP (or POST /admin/v1/reload) reloads the config
// file: catalog, prices, providers, limits, TLS certificate, admin token; a
// bad file is refused, logged and counted (tollgate_config_reloads_total),
// the running config kept; calls in flight finish on what they started
// with. SIGTERM/SIGINT: /readyz answers 503 at once, the listeners close,
// calls in flight finish (up to server.drain_timeout_ms), the ones left are
// cancelled (an error event ends their streams) and waited for
// (docs/request-lifecycle.md, "Shutdown"), usage rows are flushed, and it
// returns 0.
//
// Its implementation, gateway/src/server.cpp, is the gateway's only
// translation unit that includes Beast (providers/src/http_client.cpp is the
// other one in the project); keep it that way so that builds stay fast.
#pragma once

#include "tollgate/gateway/config.hpp"

#include <optional>
#include <string>

namespace tollgate::gateway {

struct ServeOptions {
  std::string database_url;  // libpq URI (already resolved from env/config)
  std::string port_file;     // when set, the bound port is written here after listen
  // The config file, read again on SIGHUP and POST /admin/v1/reload (empty:
  // reload is refused). Settings that need a restart (server.listen,
  // io_threads, database, usage.*, billing.admin_listen, leases, rate-limit
  // sync, log.access, stats.retention_days) keep their running values, so
  // command-line overrides of them survive a reload.
  std::string config_path;
  // server.listen came from `serve --listen`: a reload keeps it without
  // saying the file's differs.
  bool listen_overridden = false;
};

// What Serve (and a reload) would refuse in `config` beyond its parsing:
// the listener's TLS files, each enabled remote provider's settings (its
// api_key, ca_file, proxy from outbound: or the environment), a local
// model file that cannot be read, no usable model. Loads no model, opens
// no connection. Returns the error ("PATH: what"), or nullopt.
std::optional<std::string> CheckServeConfig(const Config& config);

// Runs until a stop signal. Returns the process exit code: 0 after a clean
// stop, 1 when startup failed (the reason is printed to stderr first), 3
// after a stop that left usage rows unwritten (the database unreachable for
// 30 s at the end: rows in usage.spool_dir are replayed by the next start on
// it; any others are lost, and logged).
int Serve(const Config& config, const ServeOptions& options);

}  // namespace tollgate::gateway
