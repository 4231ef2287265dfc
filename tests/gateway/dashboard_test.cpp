// gateway/src/dashboard.cpp: the embedded dashboard files, their headers, ETags,
// and that the page references only files the binary serves (no CDN, no inline script).
#include "dashboard.hpp"

#include <gtest/gtest.h>

#include <regex>
#include <string>

#include "dashboard_assets.hpp"

namespace tollgate::gateway {
namespace {

std::string_view Header(const DashboardReply& r, std::string_view name) {
  for (const auto& [n, v] : r.headers) {
    if (n == name) return v;
  }
  return {};
}

TEST(Dashboard, ServesIndexAtRootWithStrictCsp) {
  for (std::string_view path : {"/dashboard", "/dashboard/", "/dashboard/index.html"}) {
    const DashboardReply r = ServeDashboard(path, "");
    ASSERT_EQ(r.status, 200) << path;
    EXPECT_EQ(r.content_type, "text/html; charset=utf-8");
    EXPECT_NE(r.body.find("<!doctype html>"), std::string_view::npos);
    EXPECT_EQ(Header(r, "Content-Security-Policy"), kDashboardCsp);
    EXPECT_EQ(Header(r, "X-Content-Type-Options"), "nosniff");
    EXPECT_EQ(Header(r, "Cache-Control"), "no-cache");
    EXPECT_FALSE(Header(r, "ETag").empty());
  }
  EXPECT_NE(kDashboardCsp.find("script-src 'self';"), std::string_view::npos);
  EXPECT_EQ(kDashboardCsp.find("unsafe"), std::string_view::npos);
}

TEST(Dashboard, ServesTheChartLibraryFromTheBinary) {
  const DashboardReply r = ServeDashboard("/dashboard/vendor/chart.umd.min.js", "");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "text/javascript; charset=utf-8");
  EXPECT_NE(r.body.substr(0, 200).find("Chart.js v4."), std::string_view::npos);
  EXPECT_GT(r.body.size(), 100000u);
}

TEST(Dashboard, ContentTypesByExtension) {
  EXPECT_EQ(ServeDashboard("/dashboard/app.js", "").content_type, "text/javascript; charset=utf-8");
  EXPECT_EQ(ServeDashboard("/dashboard/style.css", "").content_type, "text/css; charset=utf-8");
  EXPECT_EQ(ServeDashboard("/dashboard/icon.svg", "").content_type, "image/svg+xml");
}

TEST(Dashboard, ConditionalRequestGets304) {
  const DashboardReply first = ServeDashboard("/dashboard", "");
  const std::string etag(Header(first, "ETag"));
  ASSERT_EQ(etag.front(), '"');
  for (const std::string& inm : {etag, "W/" + etag, "\"other\", " + etag, std::string("*")}) {
    const DashboardReply again = ServeDashboard("/dashboard", inm);
    EXPECT_EQ(again.status, 304) << inm;
    EXPECT_TRUE(again.body.empty());
    EXPECT_EQ(Header(again, "ETag"), etag);
  }
  EXPECT_EQ(ServeDashboard("/dashboard", "\"stale\"").status, 200);
}

TEST(Dashboard, UnknownFilesAre404) {
  for (std::string_view path : {"/dashboard/nope.js", "/dashboard/../gateway", "/dashboard/vendor",
                                "/dashboard/package.json", "/dashboard/package-lock.json"}) {
    const DashboardReply r = ServeDashboard(path, "");
    EXPECT_EQ(r.status, 404) << path;
    EXPECT_EQ(r.content_type, "text/plain; charset=utf-8");
  }
  EXPECT_TRUE(IsDashboardPath("/dashboard"));
  EXPECT_TRUE(IsDashboardPath("/dashboard/app.js"));
  EXPECT_FALSE(IsDashboardPath("/dashboards"));
  EXPECT_FALSE(IsDashboardPath("/api/v1/dashboard"));
}

// Every page file's references (src=, href=, import ... from) name a served file, no
// page file names another origin, and the HTML has no inline script or style.
TEST(Dashboard, PageReferencesOnlyServedFiles) {
  const std::regex html_ref(R"re((?:src|href)="([^"]*)")re");
  const std::regex js_import(R"re((?:import|from)\s*\(?\s*['"]([^'"]+)['"])re");
  int references = 0;
  for (const internal::DashboardFile& f : internal::DashboardFiles()) {
    const std::string url = f.url;
    if (url.starts_with("/dashboard/vendor/")) continue;
    std::string text(reinterpret_cast<const char*>(f.data), f.size);
    for (size_t at; (at = text.find("http://www.w3.org/2000/svg")) != std::string::npos;) text.erase(at, 26);
    EXPECT_EQ(text.find("http://"), std::string::npos) << url;
    EXPECT_EQ(text.find("https://"), std::string::npos) << url;
    EXPECT_EQ(text.find("//cdn"), std::string::npos) << url;
    const bool html = url.ends_with(".html");
    const bool js = url.ends_with(".js");
    if (html) {
      EXPECT_EQ(text.find("<script>"), std::string::npos) << url << ": inline script";
      EXPECT_EQ(text.find("<style"), std::string::npos) << url << ": inline style";
      EXPECT_EQ(text.find("style=\""), std::string::npos) << url << ": inline style attribute";
      EXPECT_FALSE(std::regex_search(text, std::regex(R"re(\son[a-z]+\s*=)re"))) << url << ": inline handler";
    }
    if (!html && !js) continue;
    const std::regex& re = html ? html_ref : js_import;
    for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator(); ++it) {
      std::string ref = (*it)[1];
      if (ref.starts_with("#") || ref.starts_with("/api/")) continue;
      if (ref.starts_with("./")) ref = "/dashboard/" + ref.substr(2);
      EXPECT_EQ(ServeDashboard(ref, "").status, 200) << url << " references " << ref;
      ++references;
    }
  }
  EXPECT_GT(references, 3);
}

}  // namespace
}  // namespace tollgate::gateway
