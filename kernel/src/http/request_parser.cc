#include "trellis/kernel/http/request_parser.h"

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/error.hpp>
#include <limits>
#include <vector>

namespace trellis::kernel::http {
namespace {

namespace bhttp = boost::beast::http;
using ErrorCode = boost::system::error_code;

class FramingCategory : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "trellis.http.framing"; }
  std::string message(int e) const override {
    switch (static_cast<FramingError>(e)) {
      case FramingError::kTransferCodingNotChunked:
        return "the final transfer coding of Transfer-Encoding must be chunked";
      case FramingError::kTransferCodingUnsupported:
        return "no transfer coding other than chunked is supported";
      case FramingError::kTransferEncodingInHttp10:
        return "Transfer-Encoding is not allowed in HTTP/1.0";
      case FramingError::kMissingHost: return "an HTTP/1.1 request needs a Host field";
      case FramingError::kDuplicateHost: return "more than one Host field";
      case FramingError::kInvalidHost: return "invalid Host field";
      case FramingError::kDuplicateAuthorization: return "more than one Authorization field";
      case FramingError::kInvalidTarget:
        return "the request-target must be a path (\"/p?q\") or an http(s) URI";
      case FramingError::kDuplicateContentLength: return "more than one Content-Length value";
      case FramingError::kObsoleteLineFolding:
        return "obsolete line folding (a field line starting with whitespace) is not accepted";
    }
    return "malformed request";
  }
};

const FramingCategory& framingCategory() {
  static const FramingCategory category;
  return category;
}

// RFC 3986 host [":" port]: reg-name, IPv4 or IP-literal characters. Empty is allowed
// (RFC 9112 §3.2: a target without authority).
bool isValidHost(std::string_view host) {
  for (char c : host) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              std::string_view("-._~%!$&'()*+,;=:[]").find(c) != std::string_view::npos;
    if (!ok) return false;
  }
  return true;
}

// The elements of a comma-separated field value (RFC 9110 §5.6.1), without surrounding
// whitespace; empty elements are skipped, as recipients must.
void appendListElements(std::string_view value, std::vector<std::string_view>& out) {
  while (true) {
    size_t comma = value.find(',');
    std::string_view e = value.substr(0, comma);
    while (!e.empty() && (e.front() == ' ' || e.front() == '\t')) e.remove_prefix(1);
    while (!e.empty() && (e.back() == ' ' || e.back() == '\t')) e.remove_suffix(1);
    if (!e.empty()) out.push_back(e);
    if (comma == std::string_view::npos) return;
    value.remove_prefix(comma + 1);
  }
}

}  // namespace

ErrorCode makeErrorCode(FramingError e) {
  return {static_cast<int>(e), framingCategory()};
}

unsigned framingStatus(const ErrorCode& ec) {
  if (ec.category() != framingCategory()) return 0;
  return ec.value() == static_cast<int>(FramingError::kTransferCodingUnsupported) ? 501 : 400;
}

RequestParser::RequestParser(const RequestLimits& limits)
    : max_header_(limits.max_header_bytes), max_body_(limits.max_body_bytes) {
  header_limit(static_cast<std::uint32_t>(
      std::min<size_t>(limits.max_header_bytes, std::numeric_limits<std::uint32_t>::max())));
  // Checked here when the body starts (see on_body_init_impl). Not boost::none: Beast 1.74
  // compares a Content-Length with it as an optional, and everything exceeds "none".
  body_limit(std::numeric_limits<std::uint64_t>::max());
}

size_t RequestParser::put(boost::asio::const_buffer buffer, ErrorCode& ec) {
  if (is_header_done()) {
    // Beast 1.74 asserts (in builds with assertions) that a last chunk is re-read from at
    // least 5 bytes, which "0\r\n" and a partial trailer are not. Nothing shorter than 5
    // bytes can end a chunked body, so waiting for them changes no framing.
    if (chunked() && !is_done() && chunk_left_ == 0 && buffer.size() < 5) {
      ec = boost::beast::http::error::need_more;
      return 0;
    }
    return basic_parser::put(buffer, ec);
  }
  // Beast consumes the request line, and may consume complete field lines, before the
  // header is complete, so the buffer holds the rest of the header from a line's start:
  // the request line's, or a field line's after `header_consumed_` bytes.
  std::string_view bytes(static_cast<const char*>(buffer.data()), buffer.size());
  size_t end = std::string_view::npos;  // of the header within `bytes`, once it has arrived
  if (header_consumed_ > 0 && bytes.starts_with("\r\n")) {
    end = 2;  // an empty field section
  } else if (size_t eom = bytes.find("\r\n\r\n"); eom != std::string_view::npos) {
    end = eom + 4;
  }
  std::string_view header = bytes.substr(0, end);
  bool fold = header.find("\n ") != std::string_view::npos ||
              header.find("\n\t") != std::string_view::npos ||
              (header_consumed_ > 0 && (header.starts_with(' ') || header.starts_with('\t')));
  if (fold) {
    ec = makeErrorCode(FramingError::kObsoleteLineFolding);
    return 0;
  }
  // The limit is the whole header's, however it arrives: Beast alone lets a header that
  // arrives at once grow to twice the limit (request line and fields are each capped).
  size_t header_bytes = header_consumed_ + header.size();
  if (end == std::string_view::npos ? header_bytes >= max_header_ : header_bytes > max_header_) {
    ec = boost::beast::http::error::header_limit;
    return 0;
  }
  size_t used = basic_parser::put(buffer, ec);
  if (!is_header_done()) header_consumed_ += used;
  return used;
}

void RequestParser::on_request_impl(bhttp::verb method, std::string_view method_str,
                                    std::string_view target, int version, ErrorCode& ec) {
  if (method == bhttp::verb::unknown) {
    req_.method_string(method_str);
  } else {
    req_.method(method);
  }
  req_.version(static_cast<unsigned>(version));
  if (target.starts_with('/') || target == "*") {
    req_.target(target);
    return;
  }
  // absolute-form: scheme "://" authority [path-abempty] ["?" query]
  size_t scheme_end = target.find("://");
  std::string_view scheme = target.substr(0, scheme_end);
  if (scheme_end == std::string_view::npos ||
      !(boost::beast::iequals(scheme, "http") || boost::beast::iequals(scheme, "https"))) {
    ec = makeErrorCode(FramingError::kInvalidTarget);
    return;
  }
  std::string_view rest = target.substr(scheme_end + 3);
  size_t authority_end = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, authority_end);
  // userinfo ("user@host") is deprecated and a favourite of confusion attacks.
  if (authority.empty() || authority.find('@') != std::string_view::npos ||
      !isValidHost(authority)) {
    ec = makeErrorCode(FramingError::kInvalidTarget);
    return;
  }
  std::string_view path_and_query =
      authority_end == std::string_view::npos ? std::string_view() : rest.substr(authority_end);
  std::string origin_form(path_and_query.starts_with('/') ? "" : "/");
  origin_form += path_and_query;
  req_.target(origin_form);
  authority_ = authority;
  absolute_form_ = true;
}

void RequestParser::on_field_impl(bhttp::field name, std::string_view name_string,
                                  std::string_view value, ErrorCode& ec) {
  // A trailer cannot add to what was decided on the header (credentials, routing).
  if (is_header_done()) return;
  if (auto error = checkField(name, value)) {
    ec = makeErrorCode(*error);
    return;
  }
  req_.insert(name, name_string, value);
}

std::optional<FramingError> RequestParser::checkField(bhttp::field name, std::string_view value) {
  switch (name) {
    case bhttp::field::host:
      if (++hosts_ > 1) return FramingError::kDuplicateHost;
      if (!isValidHost(value)) return FramingError::kInvalidHost;
      break;
    case bhttp::field::authorization:
      if (++authorizations_ > 1) return FramingError::kDuplicateAuthorization;
      break;
    case bhttp::field::content_length:
      if (++content_lengths_ > 1 || value.find(',') != std::string_view::npos) {
        return FramingError::kDuplicateContentLength;
      }
      break;
    default: break;
  }
  return std::nullopt;
}

void RequestParser::on_header_impl(ErrorCode& ec) {
  if (req_.version() >= 11 && hosts_ == 0) {
    ec = makeErrorCode(FramingError::kMissingHost);
    return;
  }
  if (absolute_form_) req_.set(bhttp::field::host, authority_);

  // Beast frames a request by Transfer-Encoding only when its last coding is chunked, and
  // otherwise as if the field were absent: the body would then be read as the next request.
  // Every field line counts, as one list; only exactly one "chunked" is served.
  std::vector<std::string_view> codings;
  bool present = false;
  auto [it, end] = req_.equal_range(bhttp::field::transfer_encoding);
  for (; it != end; ++it) {
    present = true;
    appendListElements(it->value(), codings);
  }
  if (!present) return;
  if (req_.version() < 11) {
    ec = makeErrorCode(FramingError::kTransferEncodingInHttp10);
  } else if (codings.empty() || !boost::beast::iequals(codings.back(), "chunked")) {
    ec = makeErrorCode(FramingError::kTransferCodingNotChunked);
  } else if (codings.size() > 1) {
    ec = makeErrorCode(FramingError::kTransferCodingUnsupported);
  }
}

void RequestParser::on_body_init_impl(const boost::optional<std::uint64_t>& content_length,
                                      ErrorCode& ec) {
  if (!content_length) return;  // chunked: counted chunk by chunk
  if (*content_length > max_body_) {
    ec = bhttp::error::body_limit;
    return;
  }
  body_seen_ = *content_length;
  req_.body().reserve(static_cast<size_t>(*content_length));
}

size_t RequestParser::on_body_impl(std::string_view body, ErrorCode&) {
  req_.body().append(body);
  return body.size();
}

void RequestParser::on_chunk_header_impl(std::uint64_t size, std::string_view, ErrorCode& ec) {
  if (size > max_body_ - body_seen_) {
    ec = bhttp::error::body_limit;
    return;
  }
  body_seen_ += size;
  chunk_left_ = size;
}

size_t RequestParser::on_chunk_body_impl(std::uint64_t remain, std::string_view body, ErrorCode&) {
  chunk_left_ = remain - body.size();
  req_.body().append(body);
  return body.size();
}

}  // namespace trellis::kernel::http
