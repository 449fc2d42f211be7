// Where the CLI finds the admin API, its token and the registry. Each setting is taken from
// the first of these that has it (docs/operations.md, "The trellis CLI"):
//
//   1. a flag            --admin, --token-file, --registry, --registry-key-file, --ca, --cert, …
//   2. the environment   TRELLIS_ADMIN_URL, TRELLIS_ADMIN_TOKEN, TRELLIS_REGISTRY, TRELLIS_CA, …
//   3. the profile file  written by `trellis login` (mode 0600; refused if others can read it)
//   4. the server config --config / TRELLIS_CONFIG / ./config/trellis.yaml / the source tree's
//                        config/trellis.yaml next to this binary: admin.listen, admin.token_file
//   5. built-in defaults http://127.0.0.1:8081; for https://, the system's trusted CAs
//
// Secrets (tokens, keys) are read from files or the environment, never from argv.
//
//   CliSettings s;                           // flags are bound to its *_flag members
//   s.adminUrl();                            // "http://127.0.0.1:8081"
//   s.adminToken();                          // exits with a message naming what it tried
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "cli/http_session.h"
#include "trellis/status.hpp"

namespace trellis::cli {

// One named entry of the profile file.
struct Profile {
  std::string admin;           // admin API URL
  std::string token;           // admin token
  std::string registry;        // registry trellisd URL
  std::string registry_key;    // the registry tenant's API key
  std::string registry_token;  // registry admin or publish token
  std::string ca;              // PEM bundle of the CAs trusted for https:// ("": the system's)
  std::string cert;            // client certificate for the admin API (mTLS), with `key`
  std::string key;             // its private key: a file only the user may read
};

// The profile file: ${TRELLIS_PROFILE_FILE}, else
// ${XDG_CONFIG_HOME:-~/.config}/trellis/profiles.yaml.
std::filesystem::path profileFilePath();

// Reads every profile. An absent file is an empty map. INVALID names the field (unknown
// keys, wrong types); PERMISSION_DENIED for a file group or others may read or write, or
// that another user owns.
Result<std::map<std::string, Profile>> loadProfiles(const std::filesystem::path& file);
// Writes the file atomically with mode 0600 (temp file, fsync, rename).
Status saveProfiles(const std::filesystem::path& file,
                    const std::map<std::string, Profile>& profiles);

struct CliSettings {
  // `trellis login` creates the profile it names: a missing one is not an error then.
  bool allow_missing_profile = false;
  // Bound to flags; empty means not given.
  std::string admin_flag;
  std::string token_file_flag;
  std::string config_flag;
  std::string profile_flag;
  std::string registry_flag;
  std::string registry_key_file_flag;
  std::string registry_token_file_flag;
  std::string ca_flag;
  std::string cert_flag;
  std::string key_flag;

  std::string adminUrl() const;
  // The admin token; exits naming every place it looked when there is none.
  std::string adminToken() const;
  // As adminToken(), but nullopt when there is none.
  std::optional<std::string> findAdminToken() const;
  // The token file of the server config (or var/admin.token), used when nothing else names one.
  std::filesystem::path defaultTokenFile() const;
  // Where the admin token came from, for messages ("--token-file var/admin.token").
  std::string adminTokenSource() const;
  std::string registryUrl() const;    // "" if none
  std::string registryKey() const;    // "" if none
  std::string registryToken() const;  // "" if none
  std::string profileName() const;    // --profile, TRELLIS_PROFILE, or "default"
  // The CAs that verify https:// servers: --ca, TRELLIS_CA, the profile's ca:, else the
  // system store (file ""). Exits 2 naming the source if the file cannot be read.
  TrustedCa trustedCa() const;
  // The client certificate for the admin API: --cert/--key, TRELLIS_CERT/TRELLIS_KEY, the
  // profile's cert:/key:, else none. Exits 2 naming the source when only one of the pair
  // is given, a file cannot be read, or group or others may read the key.
  ClientCertificate clientCertificate() const;

  // The selected profile (nullopt if there is none); exits 1 on a bad profile file.
  const std::optional<Profile>& profile() const;

 private:
  struct ServerHints {
    std::string admin_url;
    std::filesystem::path token_file;
  };
  const std::optional<ServerHints>& serverHints() const;
  ClientCertificate findClientCertificate() const;

  mutable bool profile_loaded_ = false;
  mutable std::optional<Profile> profile_;
  mutable std::optional<ClientCertificate> certificate_;  // checked once per run
  mutable bool hints_loaded_ = false;
  mutable std::optional<ServerHints> hints_;
};

// The first line of a secret file; exits 1 naming `flag` and the file when it is empty or
// unreadable.
std::string readSecretFile(const std::string& flag, const std::filesystem::path& file);

}  // namespace trellis::cli
