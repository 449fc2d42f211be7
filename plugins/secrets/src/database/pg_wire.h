// PostgreSQL frontend/backend protocol v3: the messages the plugin sends, and a frame reader
// for what the server answers. Every length the server sends is untrusted: a frame longer
// than kMaxFrameBytes, shorter than its own header, or a body that does not parse is
// refused with a message naming the problem (never with the bytes themselves).
//
//   FrameReader in;
//   in.feed(bytes_from_stream);
//   while (true) {
//     auto frame = in.next();           // Result<std::optional<Frame>>
//     if (!frame) return frame.status();
//     if (!*frame) break;               // need more bytes
//     if ((*frame)->type == 'E') report(parseError((*frame)->body));
//   }
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "trellis/status.hpp"

namespace trellis::secrets::pg {

// Far above anything the client asks for (no big result sets): a bound on what a broken
// or hostile server can make the plugin buffer.
inline constexpr size_t kMaxFrameBytes = 1 << 20;

// ---- frontend messages ----
// StartupMessage for protocol 3.0 with user and database. INVALID on a NUL in either.
Result<std::string> startupMessage(std::string_view user, std::string_view database);
// PasswordMessage ('p'): cleartext or md5 answer. INVALID on a NUL.
Result<std::string> passwordMessage(std::string_view password);
// SASLInitialResponse ('p') naming the mechanism, with the client-first message.
std::string saslInitialResponse(std::string_view mechanism, std::string_view data);
// SASLResponse ('p') with the client-final message.
std::string saslResponse(std::string_view data);
// Query ('Q'), the simple query protocol. INVALID on a NUL in the SQL.
Result<std::string> queryMessage(std::string_view sql);
// Terminate ('X').
std::string terminateMessage();

// ---- backend messages ----
struct Frame {
  char type = 0;
  std::string body;  // without type and length
};

class FrameReader {
 public:
  void feed(std::string_view bytes) { buf_.append(bytes); }
  // The next whole frame, nullopt when more bytes are needed, INVALID on a bad length or
  // an unknown type byte.
  Result<std::optional<Frame>> next();
  size_t buffered() const { return buf_.size() - pos_; }

 private:
  std::string buf_;
  size_t pos_ = 0;
};

// ErrorResponse / NoticeResponse fields.
struct ServerError {
  std::string severity;  // ERROR, FATAL, …
  std::string sqlstate;  // "28P01"
  std::string message;
  // "FATAL 28P01: password authentication failed for user \"x\""
  std::string toString() const;
};
Result<ServerError> parseError(std::string_view body);

// Authentication request ('R'): the code (0 ok, 3 cleartext, 5 md5, 10 SASL, 11 SASL
// continue, 12 SASL final, others refused) and what follows it.
struct AuthRequest {
  int32_t code = -1;
  std::string data;                     // md5: the 4-byte salt; SASL continue/final: payload
  std::vector<std::string> mechanisms;  // code 10
};
Result<AuthRequest> parseAuth(std::string_view body);

// CommandComplete ('C'): the command tag, "SELECT 1", "CREATE ROLE".
Result<std::string> parseCommandComplete(std::string_view body);
// DataRow ('D'): the column values (nullopt for NULL), bounded by the frame.
Result<std::vector<std::optional<std::string>>> parseDataRow(std::string_view body);

}  // namespace trellis::secrets::pg
