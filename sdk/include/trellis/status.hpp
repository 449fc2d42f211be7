// Status and Result<T>: how Trellis C++ code (kernel and C++ plugins alike) reports expected
// failures without exceptions. The codes are the C ABI's trellis_status values, so a
// Status crosses the plugin boundary unchanged.
//
//   trellis::Result<int> parsePort(std::string_view s) {
//     if (s.empty()) return trellis::Status::invalid("port is empty");
//     return 8080;
//   }
//   auto port = parsePort(text);
//   if (!port) log(port.status().message());
#pragma once

#include <cassert>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "trellis/plugin.h"

namespace trellis {

enum class StatusCode : int32_t {
  kOk = TRELLIS_OK,
  kInvalid = TRELLIS_INVALID,
  kNotFound = TRELLIS_NOT_FOUND,
  kPermissionDenied = TRELLIS_PERMISSION_DENIED,
  kQuotaExceeded = TRELLIS_QUOTA_EXCEEDED,
  kUnavailable = TRELLIS_UNAVAILABLE,
  kTimeout = TRELLIS_TIMEOUT,
  kConflict = TRELLIS_CONFLICT,
  kUnimplemented = TRELLIS_UNIMPLEMENTED,
  kInternal = TRELLIS_INTERNAL,
};

// Name of a status code as operators see it in logs and problem details.
inline std::string_view statusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "OK";
    case StatusCode::kInvalid: return "INVALID";
    case StatusCode::kNotFound: return "NOT_FOUND";
    case StatusCode::kPermissionDenied: return "PERMISSION_DENIED";
    case StatusCode::kQuotaExceeded: return "QUOTA_EXCEEDED";
    case StatusCode::kUnavailable: return "UNAVAILABLE";
    case StatusCode::kTimeout: return "TIMEOUT";
    case StatusCode::kConflict: return "CONFLICT";
    case StatusCode::kUnimplemented: return "UNIMPLEMENTED";
    case StatusCode::kInternal: return "INTERNAL";
  }
  return "UNKNOWN";  // a newer peer's code: treat like INTERNAL
}

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return {}; }
  static Status invalid(std::string m) { return {StatusCode::kInvalid, std::move(m)}; }
  static Status notFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
  static Status permissionDenied(std::string m) {
    return {StatusCode::kPermissionDenied, std::move(m)};
  }
  static Status quotaExceeded(std::string m) { return {StatusCode::kQuotaExceeded, std::move(m)}; }
  static Status unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
  static Status timeout(std::string m) { return {StatusCode::kTimeout, std::move(m)}; }
  static Status conflict(std::string m) { return {StatusCode::kConflict, std::move(m)}; }
  static Status unimplemented(std::string m) { return {StatusCode::kUnimplemented, std::move(m)}; }
  static Status internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }

  bool isOk() const { return code_ == StatusCode::kOk; }
  explicit operator bool() const { return isOk(); }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  trellis_status toC() const { return static_cast<trellis_status>(code_); }

  // "NOT_FOUND: no such key" — for logs and error messages.
  std::string toString() const {
    if (isOk()) return "OK";
    std::string s(statusCodeName(code_));
    if (!message_.empty()) s += ": " + message_;
    return s;
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// Value or failure. A Result built from an OK Status is a programming error.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    assert(!std::get<Status>(v_).isOk() && "Result needs a value or a failure");
  }

  bool isOk() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return isOk(); }

  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  // The failure; an OK status when a value is held.
  const Status& status() const {
    static const Status ok;
    return isOk() ? ok : std::get<Status>(v_);
  }

 private:
  std::variant<T, Status> v_;
};

}  // namespace trellis
