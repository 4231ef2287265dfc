#include "app_attribution.hpp"

#include <gtest/gtest.h>

#include <string>

namespace tollgate::gateway {
namespace {

AppAttribution App(std::string app, std::string title) { return AppAttribution{std::move(app), std::move(title)}; }

TEST(AppAttribution, RefererOriginLowercasedWithTitle) {
  EXPECT_EQ(AppFromHeaders("https://Example.com/path?q=1#f", "My App"), App("https://example.com", "My App"));
  EXPECT_EQ(AppFromHeaders("HTTP://LocalHost:3000/", ""), App("http://localhost:3000", ""));
  EXPECT_EQ(AppFromHeaders("https://example.com", ""), App("https://example.com", ""));
  EXPECT_EQ(AppFromHeaders("https://example.com?x", ""), App("https://example.com", ""));
}

TEST(AppAttribution, DefaultPortsAndUserInfoAreNotPartOfTheOrigin) {
  EXPECT_EQ(AppFromHeaders("https://example.com:443/a", "").app, "https://example.com");
  EXPECT_EQ(AppFromHeaders("http://example.com:80/a", "").app, "http://example.com");
  EXPECT_EQ(AppFromHeaders("http://example.com:443/a", "").app, "http://example.com:443");
  EXPECT_EQ(AppFromHeaders("https://user:secret@example.com/a", "").app, "https://example.com");
  EXPECT_EQ(AppFromHeaders("http://[::1]:8080/x", "").app, "http://[::1]:8080");
}

TEST(AppAttribution, OnlyAnOriginIsEverKept) {
  // A referer that yields no valid origin contributes nothing: its raw text
  // (path, query: secrets) must never become the app id, which other keys see.
  for (const char* referer : {"my-cli-tool", "ftp://example.com/x", "https:///nohost", "https://exa mple.com/",
                              "https://example.com:99999999/", "https://example.com:123456/cb?api_key=SECRET123",
                              "https://example.com:0/", "https://example.com:65536/x?k=SECRET123",
                              "https://example.com:8o/?k=SECRET123", "javascript:alert(1)//?k=SECRET123",
                              "https://ex%61mple.com/?k=SECRET123", "https://ex\xc3\xa4mple.com/?k=SECRET123",
                              "https://user:SECRET123@exa*mple.com/", "https://user:SECRET123@/x",
                              "https://[zz::1]/?k=SECRET123", "https://[::1/?k=SECRET123"}) {
    EXPECT_EQ(AppFromHeaders(referer, ""), App("", "")) << referer;
    EXPECT_EQ(AppFromHeaders(referer, "Cline"), App("title:Cline", "Cline")) << referer;
  }
  // User info of a valid URL is stripped; ports are kept by value.
  EXPECT_EQ(AppFromHeaders("https://user:SECRET123@Example.com:8443/cb?api_key=SECRET123", "").app,
            "https://example.com:8443");
  EXPECT_EQ(AppFromHeaders("https://SECRET123@example.com", "").app, "https://example.com");
  EXPECT_EQ(AppFromHeaders("https://example.com:65535/", "").app, "https://example.com:65535");
  EXPECT_EQ(AppFromHeaders("https://example.com:0443/", "").app, "https://example.com");
  EXPECT_EQ(AppFromHeaders("https://example.com:/", "").app, "https://example.com");
  EXPECT_EQ(AppFromHeaders("http://example.com\\evil?k=1", "").app, "http://example.com");
  // A host longer than the stored id: none (a cut origin would be another one).
  EXPECT_EQ(AppFromHeaders("https://" + std::string(230, 'h') + ".com/", "").app, "");
  // The port is read from the whole referer, not from a cut at 200 bytes.
  EXPECT_EQ(AppFromHeaders("https://" + std::string(180, 'h') + ":8080/" + std::string(300, 'p'), "").app,
            "https://" + std::string(180, 'h') + ":8080");
}

TEST(AppAttribution, TitleAloneNamesTheApp) {
  EXPECT_EQ(AppFromHeaders("", "  Cline  "), App("title:Cline", "Cline"));
  EXPECT_EQ(AppFromHeaders("   ", "Cline"), App("title:Cline", "Cline"));
  EXPECT_EQ(AppFromHeaders("", ""), App("", ""));
  EXPECT_EQ(AppFromHeaders(" \t ", "\x01"), App("", ""));
}

TEST(AppAttribution, ControlCharactersAndBadUtf8AreDropped) {
  EXPECT_EQ(AppFromHeaders("", "My\x01 App\x7f\r\n").app_title, "My App");
  EXPECT_EQ(AppFromHeaders("", "a\xc2\x85z").app_title, "az");          // C1 NEL
  EXPECT_EQ(AppFromHeaders("", "caf\xc3\xa9").app_title, "caf\xc3\xa9");  // é kept
  // Not UTF-8 (a stray byte, a surrogate, an overlong form): U+FFFD, as core's ValidUtf8 makes it.
  const std::string replacement = "\xef\xbf\xbd";
  EXPECT_EQ(AppFromHeaders("", "a\xffz").app_title, "a" + replacement + "z");
  EXPECT_EQ(AppFromHeaders("", "a\xed\xa0\x80z").app_title.find("\xed"), std::string::npos);
  EXPECT_EQ(AppFromHeaders("", "a\xe0\x80\xafz").app_title.find("\xe0"), std::string::npos);
  EXPECT_EQ(AppFromHeaders("", "\xf0\x9f\x98\x80").app_title, "\xf0\x9f\x98\x80");
}

TEST(AppAttribution, CutTo200BytesOnACharacterBoundary) {
  std::string title(199, 'a');
  title += "\xc3\xa9";  // 2 bytes: would end at byte 201
  AppAttribution a = AppFromHeaders("", title);
  EXPECT_EQ(a.app_title, std::string(199, 'a'));
  EXPECT_EQ(a.app, "title:" + std::string(194, 'a'));
  EXPECT_LE(a.app.size(), kMaxAppBytes);
  std::string emoji;
  for (int i = 0; i < 60; ++i) emoji += "\xf0\x9f\x98\x80";  // 240 bytes
  EXPECT_EQ(CleanHeaderText(emoji).size(), 200u);
  EXPECT_EQ(CleanHeaderText(emoji, 7).size(), 4u);
  std::string referer = "https://example.com/" + std::string(500, 'p');
  EXPECT_EQ(AppFromHeaders(referer, "").app, "https://example.com");
  EXPECT_EQ(AppFromHeaders(std::string(300, 'r'), "").app, "");
}

}  // namespace
}  // namespace tollgate::gateway
