#include "database/sql_template.h"

#include <ctime>

#include "crypto/secure_buffer.h"

namespace trellis::secrets::database {
namespace {

std::string doubled(std::string_view v, char quote) {
  std::string out;
  for (char c : v) {
    out.push_back(c);
    if (c == quote) out.push_back(c);
  }
  return out;
}

// `n` characters of `alphabet`, by rejection sampling so each is equally likely.
std::string randomString(std::string_view alphabet, size_t n) {
  std::string out;
  const size_t limit = 256 - 256 % alphabet.size();
  while (out.size() < n) {
    SecureBuffer bytes = randomBytes(64);
    for (size_t i = 0; i < bytes.size() && out.size() < n; ++i) {
      if (bytes.data()[i] < limit) out.push_back(alphabet[bytes.data()[i] % alphabet.size()]);
    }
  }
  return out;
}

std::string slug(std::string_view s, size_t max) {
  std::string out;
  for (char c : s) {
    if (out.size() == max) break;
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    out.push_back(ok ? c : '_');
  }
  return out;
}

}  // namespace

Result<std::string> fillTemplate(std::string_view sql, const TemplateValues& values) {
  for (std::string_view v : {values.name, values.password, values.expiration}) {
    if (v.find('\0') != std::string_view::npos) {
      return Status::invalid("a template value may not hold NUL");
    }
  }
  std::string out;
  size_t at = 0;
  while (true) {
    const size_t open = sql.find("{{", at);
    if (open == std::string_view::npos) {
      out.append(sql.substr(at));
      return out;
    }
    const size_t close = sql.find("}}", open + 2);
    if (close == std::string_view::npos) {
      return Status::invalid("a statement has an unclosed {{ placeholder");
    }
    const std::string_view key = sql.substr(open + 2, close - open - 2);
    std::string_view value;
    bool identifier = false;
    if (key == "name" || key == "username") {
      value = values.name;
      identifier = true;
    } else if (key == "password") {
      value = values.password;
    } else if (key == "expiration") {
      value = values.expiration;
    } else {
      return Status::invalid("a statement names the placeholder {{" +
                             std::string(key.substr(0, 40)) +
                             "}}; known are {{name}}, {{username}}, {{password}} and "
                             "{{expiration}}");
    }
    out.append(sql.substr(at, open - at));
    const char before = open > 0 ? sql[open - 1] : '\0';
    const char after = close + 2 < sql.size() ? sql[close + 2] : '\0';
    if (before == '"' && after == '"') {
      out += doubled(value, '"');
    } else if (before == '\'' && after == '\'') {
      out += doubled(value, '\'');
    } else if (identifier) {
      out += "\"" + doubled(value, '"') + "\"";
    } else {
      out += "'" + doubled(value, '\'') + "'";
    }
    at = close + 2;
  }
}

std::string generateUsername(std::string_view tenant, std::string_view role) {
  // "v-" 2 + tenant 12 + "-" + role 20 + "-" + random 20 = 56 <= 63.
  return "v-" + slug(tenant, 12) + "-" + slug(role, 20) + "-" +
         randomString("abcdefghijklmnopqrstuvwxyz0123456789", 20);
}

std::string generatePassword() {
  return "A1a-" +
         randomString("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", 32);
}

std::string pgTimestamp(uint64_t unix_ms) {
  const std::time_t t = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S+00", &tm);
  return buf;
}

}  // namespace trellis::secrets::database
