// The web dashboard served at GET /dashboard: static files from dashboard/ and the
// chart library (Chart.js, pinned by dashboard/package-lock.json), compiled into
// the binary at build time (gateway/cmake/Dashboard.cmake), so serving reads no
// file and browsers fetch nothing from elsewhere. The page itself calls the stats
// APIs (/api/v1/stats/...) with the token the user pastes; nothing here reads data.
//
// Transport-free: the server maps a DashboardReply onto its HTTP response.
// Thread-safe: everything here reads immutable static data.
#pragma once

#include <string_view>
#include <utility>
#include <vector>

namespace tollgate::gateway {

// What to answer for one dashboard request.
//   200: body = the file, content_type by its extension, headers = ETag,
//        Cache-Control: no-cache (revalidate; the URLs are not fingerprinted),
//        Content-Security-Policy (scripts, styles, images and fetches only from this
//        origin; no inline script), X-Content-Type-Options, Referrer-Policy, X-Frame-Options.
//   304: the request's If-None-Match names the file's ETag (or is "*"); empty body,
//        same headers.
//   404: no such file; a short text/plain body.
// `body` and every string_view point into static storage: valid for the process's life.
struct DashboardReply {
  int status = 404;
  std::string_view body;
  std::string_view content_type;
  std::vector<std::pair<std::string_view, std::string_view>> headers;  // name, value
};

// True for "/dashboard" and every path below "/dashboard/".
bool IsDashboardPath(std::string_view path);

// `path`: the request's percent-decoded path without query, e.g. "/dashboard",
// "/dashboard/" (both serve index.html), "/dashboard/app.js",
// "/dashboard/vendor/chart.umd.min.js". `if_none_match`: that header's value, or empty.
DashboardReply ServeDashboard(std::string_view path, std::string_view if_none_match);

// The Content-Security-Policy sent with every dashboard file.
inline constexpr std::string_view kDashboardCsp =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'";

}  // namespace tollgate::gateway
