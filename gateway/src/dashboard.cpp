#include "dashboard.hpp"

#include "dashboard_assets.hpp"
#include "tollgate/core/text.hpp"

#include <string_view>

namespace tollgate::gateway {
namespace {

std::string_view ContentTypeOf(std::string_view url) {
  const auto ends = [&](std::string_view ext) { return url.ends_with(ext); };
  if (ends(".html")) return "text/html; charset=utf-8";
  if (ends(".js")) return "text/javascript; charset=utf-8";  // RFC 9239
  if (ends(".css")) return "text/css; charset=utf-8";
  if (ends(".svg")) return "image/svg+xml";
  return "application/octet-stream";
}

// If-None-Match (RFC 9110 section 13.1.2): "*" or a comma-separated list of entity
// tags, compared weakly (a W/ prefix matches the same opaque tag).
bool EtagMatches(std::string_view header, std::string_view etag) {
  while (!header.empty()) {
    const size_t comma = header.find(',');
    std::string_view item = TrimOws(header.substr(0, comma));
    if (item.starts_with("W/")) item.remove_prefix(2);
    if (item == "*" || item == etag) return true;
    if (comma == std::string_view::npos) break;
    header.remove_prefix(comma + 1);
  }
  return false;
}

}  // namespace

bool IsDashboardPath(std::string_view path) {
  return path == "/dashboard" || path.starts_with("/dashboard/");
}

DashboardReply ServeDashboard(std::string_view path, std::string_view if_none_match) {
  if (path == "/dashboard" || path == "/dashboard/") path = "/dashboard/index.html";
  for (const internal::DashboardFile& f : internal::DashboardFiles()) {
    if (path != f.url) continue;
    DashboardReply reply;
    reply.content_type = ContentTypeOf(f.url);
    reply.headers = {{"ETag", f.etag},
                     {"Cache-Control", "no-cache"},
                     {"Content-Security-Policy", kDashboardCsp},
                     {"X-Content-Type-Options", "nosniff"},
                     {"X-Frame-Options", "DENY"},
                     {"Referrer-Policy", "no-referrer"}};
    if (!if_none_match.empty() && EtagMatches(if_none_match, f.etag)) {
      reply.status = 304;
    } else {
      reply.status = 200;
      reply.body = std::string_view(reinterpret_cast<const char*>(f.data), f.size);
    }
    return reply;
  }
  DashboardReply reply;
  reply.status = 404;
  reply.body = "no such dashboard file\n";
  reply.content_type = "text/plain; charset=utf-8";
  reply.headers = {{"X-Content-Type-Options", "nosniff"}};
  return reply;
}

}  // namespace tollgate::gateway
