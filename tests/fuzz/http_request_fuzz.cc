// The HTTP/1.1 request parser exactly as the listener runs it (trellis/kernel/http/
// request_parser.h: Beast plus Trellis's RFC 9112 framing rules), fed the way a connection feeds it
// (kernel/src/http/server.cc, parseAndRead): bytes accumulate in a buffer of max_header_bytes + 8
// KiB, the parser takes what it can, pipelined requests follow on the same buffer, and the
// connection ends at the first error or at a request that does not keep the connection alive.
//
// Input: byte 0 picks the limits (bit 0: the defaults, or small ones the fuzzer can reach)
// and a segment size (bits 1-6: 1..64 bytes); the rest is what the client sends.
// Properties:
//   - framing does not depend on how TCP segments the bytes: parsing the stream in 8 KiB
//     reads and in tiny segments yields the same requests (method, target, version, fields,
//     body) before the connection ends -- a disagreement is the kind of ambiguity request
//     smuggling is made of;
//   - a body never exceeds the body limit, and a Content-Length body has exactly that length;
//   - no request is framed by both chunked coding and Content-Length.
#include <algorithm>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.h"
#include "trellis/kernel/http/request_parser.h"
#include "trellis/kernel/http/server.h"

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using trellis::kernel::http::framingStatus;
using trellis::kernel::http::RequestLimits;
using trellis::kernel::http::RequestParser;
using trellis::kernel::http::ServerOptions;

namespace {

constexpr size_t kReadChunk = 8 * 1024;  // as server.cc reads

// What the server would answer for a parse error (server.cc, rejectRequest).
std::string statusOf(const boost::system::error_code& ec) {
  if (unsigned framing = framingStatus(ec)) return std::to_string(framing);
  if (ec == bhttp::error::header_limit) return "431";
  if (ec == bhttp::error::body_limit) return "413";
  return "400";  // or 505 for a well-formed unsupported version; the framing ends alike
}

std::string describe(const RequestParser& parser, const ServerOptions& opts) {
  const auto& req = parser.get();
  std::string out = std::string(req.method_string()) + " " + std::string(req.target()) + " HTTP/" +
                    std::to_string(req.version()) + "\n";
  for (const auto& field : req) {
    out += std::string(field.name_string()) + ": " + std::string(field.value()) + "\n";
  }
  out += "body " + std::to_string(req.body().size()) + ": " + req.body();
  out += req.keep_alive() ? "\nkeep-alive" : "\nclose";

  FUZZ_CHECK(req.body().size() <= opts.max_body_bytes, "body over the limit:\n" + out);
  auto length = parser.content_length();
  FUZZ_CHECK(!(parser.chunked() && length), "framed by chunked and Content-Length:\n" + out);
  if (length) FUZZ_CHECK(req.body().size() == *length, "body length differs:\n" + out);
  return out;
}

// The requests a connection would hand to the handler, then how it ends.
std::vector<std::string> parseConnection(std::string_view stream, const ServerOptions& opts,
                                         size_t segment) {
  std::vector<std::string> out;
  beast::flat_buffer buffer(std::max<size_t>(opts.max_header_bytes, 1) + kReadChunk);
  size_t sent = 0;
  for (;;) {
    RequestParser parser(RequestLimits{opts.max_header_bytes, opts.max_body_bytes});
    while (!parser.is_done()) {
      boost::system::error_code ec;
      while (buffer.size() > 0 && !parser.is_done()) {
        size_t used = parser.put(buffer.data(), ec);
        buffer.consume(used);
        if (ec == bhttp::error::need_more) {
          ec = {};
          break;
        }
        if (ec) {
          out.push_back(statusOf(ec));
          return out;
        }
        if (used == 0) break;
      }
      if (parser.is_done()) break;
      size_t room = buffer.max_size() - buffer.size();
      if (room == 0) {  // server.cc: 431 for a header line, 400 for a chunk line
        out.push_back(parser.is_header_done() ? "400" : "431");
        return out;
      }
      if (sent == stream.size()) {
        if (buffer.size() > 0 || parser.got_some()) out.push_back("incomplete");
        return out;
      }
      size_t n = std::min({room, segment, stream.size() - sent});
      std::memcpy(buffer.prepare(n).data(), stream.data() + sent, n);
      buffer.commit(n);
      sent += n;
    }
    out.push_back(describe(parser, opts));
    if (!parser.get().keep_alive()) return out;  // the server answers, then closes
  }
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += "[" + s + "]\n";
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  ServerOptions opts;
  if (data[0] & 1) {
    opts.max_header_bytes = 512;
    opts.max_body_bytes = 64;
  }
  size_t segment = 1 + ((data[0] >> 1) & 63);
  std::string_view stream(reinterpret_cast<const char*>(data) + 1, size - 1);

  auto whole = parseConnection(stream, opts, kReadChunk);
  auto pieces = parseConnection(stream, opts, segment);
  // How the connection ends may differ without changing the framing: Beast checks header
  // lines once the header is complete but its size as bytes arrive, so a bad, oversized or
  // unfinished header ends in 400, 431 or a wait for more (the server's timeout) depending on
  // the reads. No request is handed over in any of these; the requests before must match.
  auto ended = [](const std::string& s) {
    return s == "400" || s == "413" || s == "431" || s == "501" || s == "incomplete";
  };
  if (!whole.empty() && !pieces.empty() && ended(whole.back()) && ended(pieces.back())) {
    whole.back() = pieces.back() = "ended";
  }
  FUZZ_CHECK(whole == pieces, "segmenting changes the framing (" + std::to_string(segment) +
                                  "-byte segments)\nin 8 KiB reads:\n" + join(whole) +
                                  "in segments:\n" + join(pieces));
  return 0;
}
