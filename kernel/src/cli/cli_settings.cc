#include "cli/cli_settings.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "cli/admin_client.h"
#include "trellis/kernel/config/config.h"

namespace trellis::cli {
namespace {

namespace fs = std::filesystem;

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

std::string firstOf(std::initializer_list<std::string> values) {
  for (const auto& v : values) {
    if (!v.empty()) return v;
  }
  return "";
}

// The source tree this binary was built in (build/<preset>/kernel/trellis -> its
// config/trellis.yaml), so `trellis status` works after scripts/run.sh from any folder.
std::optional<fs::path> sourceTreeConfig() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return std::nullopt;
  fs::path dir = exe.parent_path();
  for (int up = 0; up < 5 && !dir.empty() && dir != dir.root_path(); ++up) {
    fs::path candidate = dir / "config" / "trellis.yaml";
    if (fs::is_regular_file(candidate, ec) && fs::is_regular_file(dir / "CMakePresets.json", ec)) {
      return candidate;
    }
    dir = dir.parent_path();
  }
  return std::nullopt;
}

const std::map<std::string, std::string Profile::*>& profileFields() {
  static const std::map<std::string, std::string Profile::*> fields = {
      {"admin", &Profile::admin},
      {"token", &Profile::token},
      {"registry", &Profile::registry},
      {"registry_key", &Profile::registry_key},
      {"registry_token", &Profile::registry_token},
      {"ca", &Profile::ca},
      {"cert", &Profile::cert},
      {"key", &Profile::key},
  };
  return fields;
}

}  // namespace

fs::path profileFilePath() {
  if (std::string f = env("TRELLIS_PROFILE_FILE"); !f.empty()) return f;
  if (std::string x = env("XDG_CONFIG_HOME"); !x.empty()) {
    return fs::path(x) / "trellis" / "profiles.yaml";
  }
  return fs::path(env("HOME")) / ".config" / "trellis" / "profiles.yaml";
}

Result<std::map<std::string, Profile>> loadProfiles(const fs::path& file) {
  std::map<std::string, Profile> out;
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT) return out;
    return Status::unavailable("profile file " + file.string() + ": " + std::strerror(errno));
  }
  struct stat st {};
  const bool stat_ok = ::fstat(fd, &st) == 0;
  std::string text;
  if (stat_ok && S_ISREG(st.st_mode)) {
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  if (!stat_ok || !S_ISREG(st.st_mode)) {
    return Status::invalid("profile file " + file.string() + " is not a regular file");
  }
  // It holds tokens: like ssh with a private key, refuse a file others could read or change.
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Status::permissionDenied("profile file " + file.string() + " has mode " + mode +
                                    "; it holds tokens, so it must be readable by you alone: "
                                    "chmod 600 " +
                                    file.string());
  }
  if (st.st_uid != ::geteuid()) {
    return Status::permissionDenied("profile file " + file.string() +
                                    " belongs to another user; refusing to use its tokens");
  }
  try {
    YAML::Node root = YAML::Load(text);
    if (!root || root.IsNull()) return out;
    if (!root.IsMap()) return Status::invalid(file.string() + ": expected a mapping");
    for (const auto& top : root) {
      const std::string key = top.first.as<std::string>();
      if (key != "profiles") {
        return Status::invalid(file.string() + ": unknown key \"" + key +
                               "\" (expected: profiles)");
      }
      if (!top.second.IsMap()) {
        return Status::invalid(file.string() + ": profiles: expected a mapping of names");
      }
      for (const auto& p : top.second) {
        const std::string name = p.first.as<std::string>();
        if (!p.second.IsMap()) {
          return Status::invalid(file.string() + ": profiles." + name + ": expected a mapping");
        }
        Profile profile;
        for (const auto& f : p.second) {
          const std::string field = f.first.as<std::string>();
          const std::string path = "profiles." + name + "." + field;
          auto it = profileFields().find(field);
          if (it == profileFields().end()) {
            return Status::invalid(file.string() + ": " + path +
                                   ": unknown key (expected admin, token, registry, "
                                   "registry_key, registry_token, ca, cert, key)");
          }
          if (!f.second.IsScalar()) {
            return Status::invalid(file.string() + ": " + path + ": expected a string");
          }
          profile.*(it->second) = f.second.as<std::string>();
        }
        out[name] = profile;
      }
    }
  } catch (const YAML::Exception& e) {
    return Status::invalid(file.string() + ": " + e.what());
  }
  return out;
}

Status saveProfiles(const fs::path& file, const std::map<std::string, Profile>& profiles) {
  YAML::Emitter y;
  y << YAML::Comment("trellis CLI profiles (written by `trellis login`; keep mode 0600)");
  y << YAML::BeginMap << YAML::Key << "profiles" << YAML::Value << YAML::BeginMap;
  for (const auto& [name, p] : profiles) {
    y << YAML::Key << name << YAML::Value << YAML::BeginMap;
    for (const auto& [field, member] : profileFields()) {
      if (!(p.*member).empty()) {
        y << YAML::Key << field << YAML::Value << YAML::DoubleQuoted << p.*member;
      }
    }
    y << YAML::EndMap;
  }
  y << YAML::EndMap << YAML::EndMap;
  const std::string text = std::string(y.c_str()) + "\n";

  std::error_code ec;
  if (file.has_parent_path() && !fs::exists(file.parent_path(), ec)) {
    fs::create_directories(file.parent_path(), ec);
    if (ec) return Status::unavailable(file.parent_path().string() + ": " + ec.message());
    ::chmod(file.parent_path().c_str(), 0700);
  }
  const fs::path tmp = file.string() + ".tmp-" + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return Status::unavailable(tmp.string() + ": " + std::strerror(errno));
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
            ::fsync(fd) == 0;
  ok = ::close(fd) == 0 && ok;
  if (!ok || ::rename(tmp.c_str(), file.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(tmp.c_str());
    return Status::unavailable("cannot write " + file.string() + ": " + why);
  }
  return Status::ok();
}

std::string readSecretFile(const std::string& flag, const fs::path& file) {
  std::ifstream in(file);
  std::string secret;
  if (!in) AdminClient::die(flag + " " + file.string() + ": cannot read it");
  if (!std::getline(in, secret) || secret.empty()) {
    AdminClient::die(flag + " " + file.string() + ": the file is empty");
  }
  return secret;
}

std::string CliSettings::profileName() const {
  return firstOf({profile_flag, env("TRELLIS_PROFILE"), "default"});
}

const std::optional<Profile>& CliSettings::profile() const {
  if (profile_loaded_) return profile_;
  profile_loaded_ = true;
  const fs::path file = profileFilePath();
  auto all = loadProfiles(file);
  if (!all) {
    AdminClient::die(all.status().message(), all.status().code() == StatusCode::kPermissionDenied
                                                 ? kExitAuth
                                                 : kExitFailed);
  }
  auto it = all->find(profileName());
  if (it != all->end()) {
    profile_ = it->second;
  } else if (!allow_missing_profile && (!profile_flag.empty() || !env("TRELLIS_PROFILE").empty())) {
    AdminClient::die("no profile \"" + profileName() + "\" in " + file.string() +
                     " (make one: trellis login --profile " + profileName() + ")");
  }
  return profile_;
}

const std::optional<CliSettings::ServerHints>& CliSettings::serverHints() const {
  if (hints_loaded_) return hints_;
  hints_loaded_ = true;
  std::optional<fs::path> file;
  if (!config_flag.empty()) {
    file = config_flag;
  } else if (std::string e = env("TRELLIS_CONFIG"); !e.empty()) {
    file = e;
  } else if (std::error_code ec; fs::is_regular_file("config/trellis.yaml", ec)) {
    file = "config/trellis.yaml";
  } else {
    file = sourceTreeConfig();
  }
  if (!file) return hints_;
  try {
    auto cfg = kernel::config::Config::load(*file);
    std::string host = cfg.admin.listen.host;
    if (host == "0.0.0.0") host = "127.0.0.1";
    if (host == "::") host = "::1";
    if (host.find(':') != std::string::npos) host = "[" + host + "]";
    // A TLS admin plane is dialled as https:// and verified like any other.
    const char* scheme = cfg.admin.tls.enabled() ? "https://" : "http://";
    hints_ = ServerHints{scheme + host + ":" + std::to_string(cfg.admin.listen.port),
                         cfg.admin.token_file};
  } catch (const std::exception& e) {
    // Only explicit choices are errors; a default that does not parse is skipped.
    if (!config_flag.empty() || !env("TRELLIS_CONFIG").empty()) AdminClient::die(e.what());
  }
  return hints_;
}

std::string CliSettings::adminUrl() const {
  if (std::string v = firstOf({admin_flag, env("TRELLIS_ADMIN_URL")}); !v.empty()) return v;
  if (profile() && !profile()->admin.empty()) return profile()->admin;
  if (serverHints()) return serverHints()->admin_url;
  return "http://127.0.0.1:8081";
}

std::string CliSettings::adminTokenSource() const {
  if (!token_file_flag.empty()) return "--token-file " + token_file_flag;
  if (!env("TRELLIS_ADMIN_TOKEN").empty()) return "TRELLIS_ADMIN_TOKEN";
  if (profile() && !profile()->token.empty()) {
    return "profile \"" + profileName() + "\" in " + profileFilePath().string();
  }
  if (serverHints())
    return "the server config's admin.token_file " + serverHints()->token_file.string();
  return "var/admin.token";
}

std::optional<std::string> CliSettings::findAdminToken() const {
  if (!token_file_flag.empty()) return readSecretFile("--token-file", token_file_flag);
  if (std::string t = env("TRELLIS_ADMIN_TOKEN"); !t.empty()) return t;
  if (profile() && !profile()->token.empty()) return profile()->token;
  std::ifstream in(defaultTokenFile());
  std::string t;
  if (!std::getline(in, t) || t.empty()) return std::nullopt;
  return t;
}

std::filesystem::path CliSettings::defaultTokenFile() const {
  return serverHints() ? serverHints()->token_file : fs::path("var/admin.token");
}

std::string CliSettings::adminToken() const {
  if (auto t = findAdminToken()) return *t;
  AdminClient::die(
      "no admin token: pass --token-file, set TRELLIS_ADMIN_TOKEN, run `trellis login`, or "
      "point --config at the server's trellis.yaml (tried " +
          defaultTokenFile().string() + ")",
      kExitUsage);
}

std::string CliSettings::registryUrl() const {
  if (std::string v = firstOf({registry_flag, env("TRELLIS_REGISTRY")}); !v.empty()) return v;
  return profile() ? profile()->registry : "";
}

TrustedCa CliSettings::trustedCa() const {
  TrustedCa ca;
  if (!ca_flag.empty()) {
    ca = {ca_flag, "--ca"};
  } else if (std::string e = env("TRELLIS_CA"); !e.empty()) {
    ca = {e, "TRELLIS_CA"};
  } else if (profile() && !profile()->ca.empty()) {
    ca = {profile()->ca, "profile \"" + profileName() + "\""};
  } else {
    return {"", "the system store"};
  }
  if (std::ifstream in(ca.file); !in) {
    AdminClient::die(
        ca.source + " " + ca.file + ": cannot read the CA bundle: " + std::strerror(errno),
        kExitUsage);
  }
  return ca;
}

ClientCertificate CliSettings::clientCertificate() const {
  if (!certificate_) certificate_ = findClientCertificate();
  return *certificate_;
}

ClientCertificate CliSettings::findClientCertificate() const {
  ClientCertificate c;
  if (!cert_flag.empty() || !key_flag.empty()) {
    c = {cert_flag, key_flag, "--cert/--key"};
  } else if (!env("TRELLIS_CERT").empty() || !env("TRELLIS_KEY").empty()) {
    c = {env("TRELLIS_CERT"), env("TRELLIS_KEY"), "TRELLIS_CERT/TRELLIS_KEY"};
  } else if (profile() && (!profile()->cert.empty() || !profile()->key.empty())) {
    c = {profile()->cert, profile()->key, "profile \"" + profileName() + "\" cert:/key:"};
  } else {
    return {};
  }
  if (c.cert.empty() || c.key.empty()) {
    AdminClient::die(c.source + ": a client certificate needs both the certificate and its key",
                     kExitUsage);
  }
  for (const std::string* file : {&c.cert, &c.key}) {
    if (std::ifstream in(*file); !in) {
      AdminClient::die(c.source + " " + *file + ": cannot read it: " + std::strerror(errno),
                       kExitUsage);
    }
  }
  struct stat st {};
  if (::stat(c.key.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    AdminClient::die(c.source + " " + c.key + ": the private key is readable by others (mode " +
                         mode + "); chmod 600 it",
                     kExitUsage);
  }
  return c;
}

std::string CliSettings::registryKey() const {
  if (!registry_key_file_flag.empty()) {
    return readSecretFile("--registry-key-file", registry_key_file_flag);
  }
  if (std::string v = env("TRELLIS_REGISTRY_KEY"); !v.empty()) return v;
  return profile() ? profile()->registry_key : "";
}

std::string CliSettings::registryToken() const {
  if (!registry_token_file_flag.empty()) {
    return readSecretFile("--registry-token-file", registry_token_file_flag);
  }
  if (std::string v = env("TRELLIS_REGISTRY_TOKEN"); !v.empty()) return v;
  return profile() ? profile()->registry_token : "";
}

}  // namespace trellis::cli
