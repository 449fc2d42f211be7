#include "http/response_head.h"

namespace trellis::kernel::http {

void appendResponseHead(const Response& res, std::string& out, std::string_view last_fields) {
  out.append(res.version() == 10 ? "HTTP/1.0 " : "HTTP/1.1 ");
  const unsigned status = res.result_int() % 1000;  // Beast writes three digits
  char code[3];
  code[0] = static_cast<char>('0' + status / 100);
  code[1] = static_cast<char>('0' + status / 10 % 10);
  code[2] = static_cast<char>('0' + status % 10);
  out.append(code, 3).push_back(' ');
  out.append(res.reason()).append("\r\n");
  for (const auto& field : res) {
    out.append(field.name_string()).append(": ").append(field.value()).append("\r\n");
  }
  out.append(last_fields).append("\r\n");
}

}  // namespace trellis::kernel::http
