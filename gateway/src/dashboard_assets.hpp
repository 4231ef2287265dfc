// The dashboard's files compiled into the binary. The definition is generated at
// build time by gateway/cmake/EmbedDashboard.cmake from dashboard/ and the chart
// library's bundle (installed by `npm ci` from dashboard/package-lock.json).
#pragma once

#include <cstddef>
#include <span>

namespace tollgate::gateway::internal {

struct DashboardFile {
  const char* url;            // "/dashboard/<name>" or "/dashboard/vendor/<name>"
  const unsigned char* data;  // the file's bytes, static storage
  std::size_t size;           // > 0
  const char* etag;           // strong ETag, quoted: "\"<20 hex digits of SHA-256>\""
};

// Sorted page files first, then the vendor bundle; never empty. Static storage.
std::span<const DashboardFile> DashboardFiles();

}  // namespace tollgate::gateway::internal
