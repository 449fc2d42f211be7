// A response's head (status line and fields) as HTTP/1.1 wire text: the bytes Beast's
// serializer writes, without its buffer-sequence machinery. The data plane sends every
// answer as this head and the body, two buffers in one write; the serializer's iteration
// over its concatenated buffer views cost about 6% of trellisd's CPU per keep-alive request.
//
//   appendResponseHead(res, head);   // "HTTP/1.1 200 OK\r\nServer: trellis\r\n…\r\n\r\n"
#pragma once

#include <string>
#include <string_view>

#include "trellis/kernel/http/message.h"

namespace trellis::kernel::http {

// Appends the head of `res` (as prepared: version, fields, Content-Length) to `out`, with
// `last_fields` (complete "Name: value\r\n" lines the server adds to every answer) after
// the response's own fields.
void appendResponseHead(const Response& res, std::string& out, std::string_view last_fields = {});

}  // namespace trellis::kernel::http
