// Fuzz target: the gateway's HTTP/1.1 request reading, exactly as
// gateway/src/server.cpp `Connection::Run` and `Handle` configure it: one
// Boost.Beast `http::request_parser<http::string_body>` per request with a
// 16 KiB header limit and the default 4 MiB body limit (server.max_body_bytes),
// `read_header` then, unless the parser is done, `read` of the body, through
// one `flat_buffer` kept across the requests of a connection; then
// `boost::urls::parse_origin_form` of the target and the path, encoded path
// and query parameters that the handlers read.
//
// The input is the byte stream of one client connection (several pipelined
// requests allowed). The stream hands it out in reads of a size derived from
// the input's length (1 to 97 bytes), so that requests also arrive split at
// every kind of boundary. The server's async reads run the same parser steps
// (http::async_read_header / async_read over read_some); a synchronous stream
// keeps the target free of an io_context.
#include <boost/asio/buffer.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/url/parse.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace asio = boost::asio;

// The values server.cpp uses (kHeaderLimitBytes, kBodyReadReserveBytes,
// ServerConfig::max_body_bytes's default).
constexpr std::size_t kHeaderLimitBytes = 16 * 1024;
constexpr std::uint64_t kBodyLimitBytes = 4 * 1024 * 1024;
constexpr std::uint64_t kBodyReadReserveBytes = 64 * 1024;

// A SyncReadStream over the fuzz input: read_some returns at most `chunk`
// bytes, then end of stream (asio::error::eof, as a socket reports it).
class InputStream {
 public:
  InputStream(const std::uint8_t* data, std::size_t size, std::size_t chunk)
      : data_(data), size_(size), chunk_(chunk) {}

  template <class MutableBufferSequence>
  std::size_t read_some(const MutableBufferSequence& buffers, beast::error_code& ec) {
    ec = {};
    if (pos_ == size_) {
      ec = asio::error::eof;
      return 0;
    }
    const std::size_t n = std::min(chunk_, size_ - pos_);
    const std::size_t copied = asio::buffer_copy(buffers, asio::buffer(data_ + pos_, n));
    pos_ += copied;
    return copied;
  }

  template <class MutableBufferSequence>
  std::size_t read_some(const MutableBufferSequence& buffers) {
    beast::error_code ec;
    std::size_t n = read_some(buffers, ec);
    if (ec) throw beast::system_error(ec);
    return n;
  }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t chunk_;
  std::size_t pos_ = 0;
};

// What Handle() reads of the target before dispatching (path, encoded path,
// the admin and stats handlers' query parameters).
void Route(std::string_view target) {
  auto url = boost::urls::parse_origin_form(target);
  if (!url) return;
  std::string path = url->path();
  if (path.size() > 1 && path.back() == '/') path.pop_back();
  const std::string raw_path(url->encoded_path());
  std::size_t total = path.size() + raw_path.size();
  for (const auto& param : url->params()) total += std::string(param.key).size() + std::string(param.value).size();
  auto it = url->params().find("id");
  if (it != url->params().end()) total += (*it).value.size();
  asm volatile("" : : "r"(total));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  InputStream stream(data, size, 1 + size % 97);
  beast::flat_buffer buffer;
  for (int requests = 0; requests < 64; ++requests) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(kHeaderLimitBytes);
    parser.body_limit(kBodyLimitBytes);
    beast::error_code ec;
    http::read_header(stream, buffer, parser, ec);
    if (!ec && !parser.is_done()) {
      if (auto length = parser.content_length()) {
        buffer.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(*length, kBodyReadReserveBytes)));
      }
      http::read(stream, buffer, parser, ec);
    }
    if (ec == http::error::body_limit) {
      // The 413 answer is built from the head read so far.
      Route(parser.get().target());
      (void)parser.get().method();
      return 0;
    }
    if (ec) return 0;  // end of stream, header limit, malformed: the connection closes
    auto req = parser.release();
    Route(req.target());
    (void)req.keep_alive();
    (void)req[http::field::content_type];
    if (!req.keep_alive()) return 0;
  }
  return 0;
}
