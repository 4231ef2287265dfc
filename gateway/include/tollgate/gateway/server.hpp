// `tollgate serve`: builds the providers, catalog, key cache and usage
// recorder from a Config, runs the HTTP server on io_threads threads, and on
// SIGTERM/SIGINT stops accepting, lets in-flight calls finish (up to
// server.drain_timeout_ms), cancels the ones left and waits for them to end
// (docs/request-lifecycle.md, "Shutdown"), flushes usage rows and returns.
//
// Its implementation, gateway/src/server.cpp, is the gateway's only
// translation unit that includes Beast (providers/src/http_client.cpp is the
// other one in the project); keep it that way so that builds stay fast.
#pragma once

#include "tollgate/gateway/config.hpp"

#include <string>

namespace tollgate::gateway {

struct ServeOptions {
  std::string database_url;  // libpq URI (already resolved from env/config)
  std::string port_file;     // when set, the bound port is written here after listen
};

// Runs until a stop signal. Returns the process exit code: 0 after a clean
// stop, 1 when startup failed (the reason is printed to stderr first).
int Serve(const Config& config, const ServeOptions& options);

}  // namespace tollgate::gateway
