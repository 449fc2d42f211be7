#include "database/pg_wire.h"

#include <cstring>

namespace trellis::secrets::pg {
namespace {

void putInt32(std::string& out, uint32_t v) {
  out.push_back(static_cast<char>(v >> 24));
  out.push_back(static_cast<char>(v >> 16));
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v));
}

uint32_t getInt32(std::string_view s, size_t at) {
  auto b = [&](size_t i) { return static_cast<uint32_t>(static_cast<unsigned char>(s[at + i])); };
  return b(0) << 24 | b(1) << 16 | b(2) << 8 | b(3);
}

// A typed message: type, length (counting itself), body.
std::string typed(char type, std::string_view body) {
  std::string out;
  out.reserve(5 + body.size());
  out.push_back(type);
  putInt32(out, static_cast<uint32_t>(body.size() + 4));
  out.append(body);
  return out;
}

bool hasNul(std::string_view s) {
  return s.find('\0') != std::string_view::npos;
}

// Reads a NUL-terminated string at `at`, advancing it; nullopt when no NUL is left.
std::optional<std::string_view> cstring(std::string_view body, size_t& at) {
  const size_t end = body.find('\0', at);
  if (end == std::string_view::npos) return std::nullopt;
  std::string_view s = body.substr(at, end - at);
  at = end + 1;
  return s;
}

constexpr std::string_view kBackendTypes = "RSKZTDCIENAv123nstGHWdcV";

}  // namespace

Result<std::string> startupMessage(std::string_view user, std::string_view database) {
  if (hasNul(user) || hasNul(database) || user.empty()) {
    return Status::invalid("the database user and name must be non-empty and hold no NUL");
  }
  std::string body;
  putInt32(body, 196608);  // protocol 3.0
  for (auto [k, v] : {std::pair<std::string_view, std::string_view>{"user", user},
                      {"database", database},
                      {"client_encoding", "UTF8"},
                      {"application_name", "trellis-secrets"}}) {
    body.append(k);
    body.push_back('\0');
    body.append(v);
    body.push_back('\0');
  }
  body.push_back('\0');
  std::string out;
  putInt32(out, static_cast<uint32_t>(body.size() + 4));
  out.append(body);
  return out;
}

Result<std::string> passwordMessage(std::string_view password) {
  if (hasNul(password)) return Status::invalid("a database password may not hold NUL");
  std::string body(password);
  body.push_back('\0');
  return typed('p', body);
}

std::string saslInitialResponse(std::string_view mechanism, std::string_view data) {
  std::string body(mechanism);
  body.push_back('\0');
  putInt32(body, static_cast<uint32_t>(data.size()));
  body.append(data);
  return typed('p', body);
}

std::string saslResponse(std::string_view data) {
  return typed('p', data);
}

Result<std::string> queryMessage(std::string_view sql) {
  if (hasNul(sql)) return Status::invalid("an SQL statement may not hold NUL");
  std::string body(sql);
  body.push_back('\0');
  return typed('Q', body);
}

std::string terminateMessage() {
  return typed('X', "");
}

Result<std::optional<Frame>> FrameReader::next() {
  if (buffered() < 5) return std::optional<Frame>();
  const char type = buf_[pos_];
  if (kBackendTypes.find(type) == std::string_view::npos || type == '\0') {
    return Status::invalid("the database sent an unknown message type (byte " +
                           std::to_string(static_cast<unsigned char>(type)) +
                           "); is it a PostgreSQL server?");
  }
  const uint32_t len = getInt32(buf_, pos_ + 1);
  if (len < 4) {
    return Status::invalid("the database sent a message whose length " + std::to_string(len) +
                           " is shorter than its own header");
  }
  if (len > kMaxFrameBytes) {
    return Status::invalid("the database sent a message of " + std::to_string(len) +
                           " bytes; at most " + std::to_string(kMaxFrameBytes) + " are accepted");
  }
  if (buffered() < 1 + static_cast<size_t>(len)) return std::optional<Frame>();
  Frame f{type, buf_.substr(pos_ + 5, len - 4)};
  pos_ += 1 + len;
  if (pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  } else if (pos_ > 64 * 1024) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  return std::optional<Frame>(std::move(f));
}

std::string ServerError::toString() const {
  std::string out = severity.empty() ? "ERROR" : severity;
  if (!sqlstate.empty()) out += " " + sqlstate;
  out += ": " + (message.empty() ? std::string("(no message)") : message);
  return out;
}

Result<ServerError> parseError(std::string_view body) {
  ServerError e;
  size_t at = 0;
  while (true) {
    if (at >= body.size()) return Status::invalid("the database sent an unterminated error");
    const char field = body[at++];
    if (field == '\0') break;
    auto value = cstring(body, at);
    if (!value) return Status::invalid("the database sent an error with an unterminated field");
    switch (field) {
      case 'V': e.severity = std::string(*value); break;
      case 'S':
        if (e.severity.empty()) e.severity = std::string(*value);
        break;
      case 'C': e.sqlstate = std::string(*value); break;
      case 'M': e.message = std::string(*value); break;
      default: break;  // detail, hint, position, file, line …: not shown
    }
  }
  if (e.sqlstate.size() != 5) e.sqlstate.clear();
  return e;
}

Result<AuthRequest> parseAuth(std::string_view body) {
  if (body.size() < 4)
    return Status::invalid("the database sent a truncated authentication request");
  AuthRequest a;
  a.code = static_cast<int32_t>(getInt32(body, 0));
  std::string_view rest = body.substr(4);
  switch (a.code) {
    case 0:
    case 3: break;
    case 5:
      if (rest.size() != 4)
        return Status::invalid("the database sent an md5 request without a 4-byte salt");
      a.data = std::string(rest);
      break;
    case 10: {
      size_t at = 0;
      while (true) {
        auto m = cstring(rest, at);
        if (!m) return Status::invalid("the database sent an unterminated SASL mechanism list");
        if (m->empty()) break;
        a.mechanisms.emplace_back(*m);
      }
      break;
    }
    case 11:
    case 12: a.data = std::string(rest); break;
    default: break;  // the client refuses it, naming the code
  }
  return a;
}

Result<std::string> parseCommandComplete(std::string_view body) {
  size_t at = 0;
  auto tag = cstring(body, at);
  if (!tag) return Status::invalid("the database sent an unterminated command tag");
  return std::string(*tag);
}

Result<std::vector<std::optional<std::string>>> parseDataRow(std::string_view body) {
  if (body.size() < 2) return Status::invalid("the database sent a truncated row");
  const size_t columns =
      static_cast<unsigned char>(body[0]) << 8 | static_cast<unsigned char>(body[1]);
  std::vector<std::optional<std::string>> row;
  size_t at = 2;
  for (size_t i = 0; i < columns; ++i) {
    if (body.size() - at < 4) return Status::invalid("the database sent a truncated row");
    const int32_t len = static_cast<int32_t>(getInt32(body, at));
    at += 4;
    if (len == -1) {
      row.emplace_back(std::nullopt);
      continue;
    }
    if (len < 0 || static_cast<size_t>(len) > body.size() - at) {
      return Status::invalid("the database sent a row whose column length overruns it");
    }
    row.emplace_back(std::string(body.substr(at, static_cast<size_t>(len))));
    at += static_cast<size_t>(len);
  }
  if (at != body.size()) return Status::invalid("the database sent a row with trailing bytes");
  return row;
}

}  // namespace trellis::secrets::pg
