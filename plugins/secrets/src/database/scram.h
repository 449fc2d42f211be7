// Client side of the password exchanges PostgreSQL offers: SCRAM-SHA-256 (RFC 5802 and
// RFC 7677, without channel binding: the server's default since PostgreSQL 14) and the
// legacy md5 answer. OpenSSL does the hashing; the password is wiped from this object when
// it goes. The password is used as given (no SASLprep), which is exact for ASCII.
//
//   ScramClient scram("pencil", "");                  // PostgreSQL ignores the SCRAM user
//   send(scram.clientFirst());                        // "n,,n=,r=<nonce>"
//   auto final = scram.clientFinal(server_first);     // INVALID on a malformed message
//   Status ok = scram.verifyServerFinal(server_final);  // the server knew the password too
#pragma once

#include <string>
#include <string_view>

#include "crypto/secure_buffer.h"
#include "trellis/status.hpp"

namespace trellis::secrets::pg {

// The iteration counts accepted from a server: at least RFC 7677's 4096, at most enough to
// bound the CPU a hostile server can make the plugin spend.
inline constexpr uint32_t kMinScramIterations = 4096;
inline constexpr uint32_t kMaxScramIterations = 1'000'000;

class ScramClient {
 public:
  // `nonce` empty: 24 random bytes, base64. Tests pass RFC 7677's.
  ScramClient(std::string_view password, std::string_view user, std::string nonce = {});
  ~ScramClient();
  ScramClient(const ScramClient&) = delete;
  ScramClient& operator=(const ScramClient&) = delete;

  std::string clientFirst() const;
  // The client-final message for the server-first one; INVALID naming what is malformed
  // (a nonce that does not extend ours, a bad salt, an iteration count out of bounds).
  Result<std::string> clientFinal(std::string_view server_first);
  // PERMISSION_DENIED when the server's signature is wrong: it does not know the password.
  Status verifyServerFinal(std::string_view server_final) const;

 private:
  std::string password_;
  std::string user_;
  std::string nonce_;
  std::string client_first_bare_;
  std::string expected_server_signature_;
};

// "md5" + hex(md5(hex(md5(password + user)) + salt)): PostgreSQL's md5 answer.
std::string md5PasswordAnswer(std::string_view password, std::string_view user,
                              std::string_view salt);

}  // namespace trellis::secrets::pg
