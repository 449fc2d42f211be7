// The request parser as the listener configures it: Beast's parser under the server's header
// and body limits. One function, so the fuzz harness (tests/fuzz/http_request_fuzz.cc)
// parses exactly what a connection parses.
//
//   std::optional<RequestParser> parser;
//   parser.emplace();
//   configureRequestParser(*parser, options);
#pragma once

#include <algorithm>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cstdint>
#include <limits>

#include "trellis/kernel/http/server.h"

namespace trellis::kernel::http {

using RequestParser = boost::beast::http::request_parser<boost::beast::http::string_body>;

// A fresh parser, before its first put(): larger headers fail with header_limit (431),
// larger bodies with body_limit (413).
inline void configureRequestParser(RequestParser& parser, const ServerOptions& opts) {
  parser.header_limit(static_cast<uint32_t>(
      std::min<size_t>(opts.max_header_bytes, std::numeric_limits<uint32_t>::max())));
  parser.body_limit(static_cast<uint64_t>(opts.max_body_bytes));
}

}  // namespace trellis::kernel::http
