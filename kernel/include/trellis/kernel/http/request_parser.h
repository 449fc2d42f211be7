// The HTTP/1.1 request parser exactly as the listener runs it: Boost.Beast's parser plus the
// framing rules of RFC 9112 that Beast leaves to its user. Fuzzers drive this class, so what
// they test is what serves.
//
//   RequestParser parser({.max_header_bytes = 16384, .max_body_bytes = 1 << 20});
//   boost::system::error_code ec;
//   size_t used = parser.put(boost::asio::buffer(bytes), ec);  // again with the rest, until
//                                                               // parser.is_done() or ec
//   if (parser.is_header_done()) { /* decide before reading the body, see Server */ }
//   Request req = parser.release();
//
// Besides Beast's own checks, a request is refused (and the connection must then close) for:
// - a Transfer-Encoding whose final coding is not `chunked` (RFC 9112 §6.3), a coding other
//   than `chunked` (501: none is implemented), or any Transfer-Encoding in HTTP/1.0 (§6.1);
//   Transfer-Encoding with Content-Length is refused by Beast;
// - HTTP/1.1 without a Host field, two Host fields, or an invalid one (§3.2);
// - two Authorization fields: a credential is never picked among several;
// - more than one Content-Length value, even an equal one ("3, 3" or two lines), and
//   obsolete line folding (RFC 9112 §5.2): each is read differently by some proxy;
// - a request-target that is neither origin-form ("/p?q") nor an http(s) absolute-form
//   ("http://host/p"), which becomes origin-form, its authority replacing Host (§3.2.2);
// - a body over max_body_bytes (413). It is checked when the body starts, not with the
//   header, so the listener can authenticate a request before it refuses it for size.
// Fields of a chunked trailer are dropped: they never reach the request's header.
#pragma once

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/basic_parser.hpp>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "trellis/kernel/http/message.h"

namespace trellis::kernel::http {

struct RequestLimits {
  size_t max_header_bytes = 16 * 1024;  // request line and fields; larger: 431
  size_t max_body_bytes = 1024 * 1024;  // larger: Beast's body_limit error (413)
};

// The refusals this parser adds to Beast's errors (category "trellis.http.framing").
enum class FramingError {
  kTransferCodingNotChunked = 1,  // 400
  kTransferCodingUnsupported,     // 501
  kTransferEncodingInHttp10,      // 400
  kMissingHost,                   // 400
  kDuplicateHost,                 // 400
  kInvalidHost,                   // 400
  kDuplicateAuthorization,        // 400
  kInvalidTarget,                 // 400
  kDuplicateContentLength,        // 400
  kObsoleteLineFolding,           // 400
};

boost::system::error_code makeErrorCode(FramingError e);
// The HTTP status for a framing error (400 or 501); 0 if `ec` is not one.
unsigned framingStatus(const boost::system::error_code& ec);

class RequestParser final : public boost::beast::http::basic_parser<true> {
 public:
  explicit RequestParser(const RequestLimits& limits);

  // Beast's put, refusing obsolete line folding first (Beast would unfold it).
  size_t put(boost::asio::const_buffer buffer, boost::system::error_code& ec);

  Request& get() { return req_; }
  const Request& get() const { return req_; }
  Request release() { return std::move(req_); }

 private:
  void on_request_impl(boost::beast::http::verb method, std::string_view method_str,
                       std::string_view target, int version,
                       boost::system::error_code& ec) override;
  void on_response_impl(int, std::string_view, int, boost::system::error_code&) override {}
  void on_field_impl(boost::beast::http::field name, std::string_view name_string,
                     std::string_view value, boost::system::error_code& ec) override;
  void on_header_impl(boost::system::error_code& ec) override;
  void on_body_init_impl(const boost::optional<std::uint64_t>& content_length,
                         boost::system::error_code& ec) override;
  size_t on_body_impl(std::string_view body, boost::system::error_code& ec) override;
  void on_chunk_header_impl(std::uint64_t size, std::string_view extensions,
                            boost::system::error_code& ec) override;
  size_t on_chunk_body_impl(std::uint64_t remain, std::string_view body,
                            boost::system::error_code& ec) override;
  void on_finish_impl(boost::system::error_code&) override {}
  // Counts the fields that must appear at most once and checks Host's value.
  std::optional<FramingError> checkField(boost::beast::http::field name, std::string_view value);

  Request req_;
  size_t max_header_;
  uint64_t max_body_;
  size_t header_consumed_ = 0;  // by Beast before the header was complete
  uint64_t chunk_left_ = 0;     // of the chunk being read; 0 between chunks
  uint64_t body_seen_ = 0;      // declared so far: Content-Length, or the sum of chunk sizes
  std::string authority_;       // from an absolute-form target; replaces Host
  bool absolute_form_ = false;
  unsigned hosts_ = 0;
  unsigned authorizations_ = 0;
  unsigned content_lengths_ = 0;
};

}  // namespace trellis::kernel::http
