#include "database/scram.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <charconv>

#include "crypto/encoding.h"

namespace trellis::secrets::pg {
namespace {

std::string sha256(std::string_view in) {
  unsigned char out[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(in.data()), in.size(), out);
  return std::string(reinterpret_cast<char*>(out), sizeof out);
}

std::string xorBytes(std::string a, std::string_view b) {
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) a[i] = static_cast<char>(a[i] ^ b[i]);
  return a;
}

// The attribute `name` ("r", "s", "i", "v", "e") of a SCRAM message, or nullopt.
std::optional<std::string_view> attribute(std::string_view msg, char name) {
  size_t at = 0;
  while (at <= msg.size()) {
    size_t end = msg.find(',', at);
    if (end == std::string_view::npos) end = msg.size();
    std::string_view part = msg.substr(at, end - at);
    if (part.size() >= 2 && part[0] == name && part[1] == '=') return part.substr(2);
    at = end + 1;
  }
  return std::nullopt;
}

}  // namespace

ScramClient::ScramClient(std::string_view password, std::string_view user, std::string nonce)
    : password_(password), user_(user), nonce_(std::move(nonce)) {
  if (nonce_.empty()) nonce_ = toBase64(randomBytes(24).view());
  client_first_bare_ = "n=" + user_ + ",r=" + nonce_;
}

ScramClient::~ScramClient() {
  cleanse(password_);
  cleanse(expected_server_signature_);
}

std::string ScramClient::clientFirst() const {
  return "n,," + client_first_bare_;
}

Result<std::string> ScramClient::clientFinal(std::string_view server_first) {
  if (server_first.size() > 4096)
    return Status::invalid("the database's SCRAM message is too long");
  if (auto e = attribute(server_first, 'e')) {
    return Status::invalid("the database refused SCRAM: " + std::string(e->substr(0, 100)));
  }
  auto r = attribute(server_first, 'r');
  auto s = attribute(server_first, 's');
  auto i = attribute(server_first, 'i');
  if (!r || !s || !i)
    return Status::invalid("the database's SCRAM server-first message is malformed");
  if (r->size() <= nonce_.size() || r->substr(0, nonce_.size()) != nonce_) {
    return Status::invalid("the database's SCRAM nonce does not extend the client's");
  }
  auto salt = fromBase64(*s);
  if (!salt || salt->empty()) return Status::invalid("the database's SCRAM salt is not base64");
  uint32_t iterations = 0;
  auto [end, ec] = std::from_chars(i->data(), i->data() + i->size(), iterations);
  if (ec != std::errc() || end != i->data() + i->size() || iterations < kMinScramIterations ||
      iterations > kMaxScramIterations) {
    return Status::invalid("the database's SCRAM iteration count must be from " +
                           std::to_string(kMinScramIterations) + " to " +
                           std::to_string(kMaxScramIterations));
  }
  SecureBuffer salted(32);
  if (PKCS5_PBKDF2_HMAC(password_.data(), static_cast<int>(password_.size()),
                        reinterpret_cast<const unsigned char*>(salt->data()),
                        static_cast<int>(salt->size()), static_cast<int>(iterations), EVP_sha256(),
                        32, salted.data()) != 1) {
    return Status::internal("PBKDF2 failed");
  }
  std::string client_key = hmacSha256(salted.view(), "Client Key");
  std::string server_key = hmacSha256(salted.view(), "Server Key");
  const std::string stored_key = sha256(client_key);
  const std::string without_proof = "c=biws,r=" + std::string(*r);
  const std::string auth_message =
      client_first_bare_ + "," + std::string(server_first) + "," + without_proof;
  const std::string client_signature = hmacSha256(stored_key, auth_message);
  std::string proof = xorBytes(client_key, client_signature);
  expected_server_signature_ = hmacSha256(server_key, auth_message);
  std::string out = without_proof + ",p=" + toBase64(proof);
  cleanse(client_key);
  cleanse(server_key);
  cleanse(proof);
  return out;
}

Status ScramClient::verifyServerFinal(std::string_view server_final) const {
  if (auto e = attribute(server_final, 'e')) {
    return Status::permissionDenied("the database refused SCRAM: " +
                                    std::string(e->substr(0, 100)));
  }
  auto v = attribute(server_final, 'v');
  auto sig = v ? fromBase64(*v) : std::nullopt;
  if (!sig) return Status::invalid("the database's SCRAM server-final message is malformed");
  if (expected_server_signature_.empty() || !equalConstantTime(*sig, expected_server_signature_)) {
    return Status::permissionDenied(
        "the database's SCRAM signature is wrong: it does not know the password");
  }
  return Status::ok();
}

std::string md5PasswordAnswer(std::string_view password, std::string_view user,
                              std::string_view salt) {
  auto md5hex = [](std::string_view in) {
    unsigned char out[16];
    unsigned int n = 0;
    EVP_Digest(in.data(), in.size(), out, &n, EVP_md5(), nullptr);
    return toHex(std::string_view(reinterpret_cast<char*>(out), n));
  };
  std::string inner = std::string(password) + std::string(user);
  std::string first = md5hex(inner);
  cleanse(inner);
  std::string answer = "md5" + md5hex(first + std::string(salt));
  cleanse(first);
  return answer;
}

}  // namespace trellis::secrets::pg
