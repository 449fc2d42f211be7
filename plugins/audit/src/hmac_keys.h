// The HMAC keys of the audit logs (issue #15 item 2): per log, which key sensitive fields are
// HMAC'd with now, and every key an older record may name, by key id.
//
// Key ids:
//   "own"          the plugin's own key of the log: hmac/<log> if the log has one stored
//                  (logs from before 0.2), else derived from the plugin's own master key
//                  (HKDF-Expand, RFC 5869, info "trellis-audit hmac own v1|<log>"), which
//                  load() creates at activation, so no append ever writes a key.
//   "secrets:<n>"  generation n: a 32-byte data key secrets.v1 made under the tenant's transit
//                  key "audit-hmac". Only its wrapped form is stored (hmacw/<log>/<n>); the
//                  plain key lives in memory once decrypted, wiped when dropped.
// New records use the newest open secrets key, else the own key. The keys are provisioned off
// the append path (hmac_provisioner.h): the keyring only says which tenants still want one.
// Not thread-safe: the sink's mutex guards it.
//
//   HmacKeyring keys;
//   keys.setMaster(random32);
//   HmacKeyring::Current k = keys.current("acme");   // {"own", <bytes>} until provisioned
//   keys.addWrapped("acme", 1, "trellis:v1:…");
//   keys.open("acme", 1, std::move(plain));            // now {"secrets:1", <bytes>}
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "trellis/status.hpp"

namespace trellis::audit {

inline constexpr std::string_view kOwnKeyId = "own";

// Overwrites `s` with zeros (OPENSSL_cleanse, which the compiler may not drop), then clears it.
void wipe(std::string& s);

// Key bytes that are wiped when dropped; never copied.
class KeyBytes {
 public:
  explicit KeyBytes(std::string bytes) : bytes_(std::move(bytes)) {}
  ~KeyBytes() { wipe(bytes_); }
  KeyBytes(const KeyBytes&) = delete;
  KeyBytes& operator=(const KeyBytes&) = delete;
  std::string_view view() const { return bytes_; }

 private:
  std::string bytes_;
};

// One tenant that wants its secrets-backed key: decrypt `wrapped` (generation `generation`),
// or, when `wrapped` is empty, make generation `generation` first.
struct KeyTask {
  std::string tenant;
  uint32_t generation = 1;
  std::string wrapped;
};

class HmacKeyring {
 public:
  // The key records of `tenant`'s log are HMAC'd with now, and its id. Views live until the
  // keyring changes. A tenant seen for the first time (not the system log, "") wants a key.
  struct Current {
    std::string_view id;
    std::string_view key;
  };
  Current current(std::string_view tenant);
  // The key `id` of the log: NOT_FOUND for an id the log never had, UNAVAILABLE for a
  // secrets key stored wrapped but not open yet (secrets sealed or unreachable).
  Result<Current> byId(std::string_view tenant, std::string_view id);

  void setMaster(std::string raw) { master_ = std::make_unique<KeyBytes>(std::move(raw)); }
  void setOwn(std::string_view tenant, std::string raw);
  void addWrapped(std::string_view tenant, uint32_t generation, std::string wrapped);
  // The plain key of a stored generation; it becomes current if it is the newest open one.
  void open(std::string_view tenant, uint32_t generation, std::string plain);
  // Marks `tenant` as wanting its key (a tenant just created); nothing for "".
  void want(std::string_view tenant);

  // Tenants whose key work is due at `now_ms` (not waiting out a failure).
  std::vector<KeyTask> due(int64_t now_ms) const;
  // An attempt failed: retried after `retry_ms` doubled per failure in a row, at most an hour.
  void failed(std::string_view tenant, int64_t now_ms, int64_t retry_ms, std::string message);

  // {"log","current","keys":[{"id","state":"open"|"wrapped"}],"provisioning":{...}}
  std::string keysJson(std::string_view tenant);
  static std::string secretsId(uint32_t generation) {
    return "secrets:" + std::to_string(generation);
  }

 private:
  struct Secret {
    std::string wrapped;
    std::unique_ptr<KeyBytes> plain;  // null until decrypted
  };
  struct LogKeys {
    std::unique_ptr<KeyBytes> own;
    std::map<uint32_t, Secret> secrets;
    std::string current_id{kOwnKeyId};
    const KeyBytes* current = nullptr;  // null: own
    bool wanted = false;                // provisioning: a key is to be made or opened
    uint32_t failures = 0;
    int64_t retry_at_ms = 0;
    std::string last_error;
  };
  LogKeys& of(std::string_view tenant);
  const KeyBytes& own(std::string_view tenant, LogKeys& keys);
  static void pickCurrent(LogKeys& keys);

  std::unique_ptr<KeyBytes> master_;
  std::map<std::string, LogKeys, std::less<>> logs_;
};

}  // namespace trellis::audit
