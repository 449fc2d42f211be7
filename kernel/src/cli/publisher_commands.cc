#include "cli/publisher_commands.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Stringifier.h>

#include <charconv>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

#include "cli/admin_client.h"
#include "cli/registry_client.h"
#include "trellis/kernel/plugin/manifest.h"
#include "trellis/marketplace/ed25519.h"
#include "trellis/marketplace/encoding.h"
#include "trellis/marketplace/index.h"
#include "trellis/marketplace/package.h"

namespace trellis::cli {
namespace {

namespace fs = std::filesystem;
namespace mk = trellis::marketplace;
using Poco::JSON::Object;

int exitCodeOf(const Status& s) {
  switch (s.code()) {
    case StatusCode::kUnavailable: return kExitUnreachable;
    case StatusCode::kPermissionDenied: return kExitAuth;
    default: return kExitFailed;
  }
}

[[noreturn]] void fail(const Status& s, const std::string& prefix = "") {
  AdminClient::die(prefix + s.message(), exitCodeOf(s));
}

std::string text(const Object::Ptr& o) {
  std::ostringstream out;
  Poco::JSON::Stringifier::condense(o, out);
  return out.str();
}

std::string str(const Object::Ptr& o, const std::string& key) {
  return o->has(key) ? o->get(key).toString() : std::string();
}

std::string timeText(int64_t unix_seconds) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", &tm);
  return buf;
}

// "30d", "12h", "45m", "3600s" or plain seconds.
Result<int64_t> parseDuration(const std::string& s) {
  if (s.empty()) return Status::invalid("--expires: empty duration");
  int64_t n = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  const std::string unit(end, s.data() + s.size());
  int64_t scale = 0;
  if (unit.empty() || unit == "s") scale = 1;
  if (unit == "m") scale = 60;
  if (unit == "h") scale = 3600;
  if (unit == "d") scale = 86400;
  if (ec != std::errc() || n <= 0 || scale == 0 || n > (int64_t{1} << 40)) {
    return Status::invalid("--expires " + s + ": expected a positive duration such as 30d, 12h, " +
                           "45m or 3600 (seconds)");
  }
  return n * scale;
}

// Path segments and query values go into registry URLs: only the characters their grammar
// allows (namespace/name parts, semver, hex ids, tags), so nothing can reshape the request.
std::string checked(const std::string& what, const std::string& value, const char* allowed) {
  const bool ok = !value.empty() && value.size() <= 128 &&
                  value.find_first_not_of(allowed) == std::string::npos && value.front() != '.' &&
                  value.front() != '-';
  if (!ok) AdminClient::die(what + " \"" + value + "\" is not valid", kExitUsage);
  return value;
}
constexpr const char* kIdChars = "abcdefghijklmnopqrstuvwxyz0123456789-";
constexpr const char* kVersionChars =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.+-";
constexpr const char* kHexChars = "0123456789abcdef";

// "acme/hello@1.2.0" -> {"acme/hello", "1.2.0"}.
std::pair<std::string, std::string> splitIdVersion(const std::string& arg) {
  auto at = arg.find('@');
  auto slash = arg.find('/');
  if (at == std::string::npos || slash == std::string::npos || slash > at || at + 1 == arg.size()) {
    AdminClient::die("expected namespace/name@version, got \"" + arg + "\"", kExitUsage);
  }
  checked("namespace", arg.substr(0, slash), kIdChars);
  checked("name", arg.substr(slash + 1, at - slash - 1), kIdChars);
  return {arg.substr(0, at), checked("version", arg.substr(at + 1), kVersionChars)};
}

// A --pubkey / --new-pubkey value: a .pub file or the base64 text itself.
mk::PublicKey readPublicKey(const std::string& flag, const std::string& arg) {
  std::error_code ec;
  std::string value = arg;
  if (fs::is_regular_file(arg, ec)) {
    std::ifstream in(arg);
    std::getline(in, value);
  }
  auto key = mk::PublicKey::fromBase64(value);
  if (!key) AdminClient::die(flag + " " + arg + ": " + key.status().message(), kExitUsage);
  return *key;
}

mk::PrivateKey readPrivateKey(const std::string& flag, const std::string& file) {
  auto key = mk::PrivateKey::loadPem(file);
  if (!key) fail(key.status(), flag + " " + file + ": ");
  return std::move(*key);
}

void printKeys(const std::string& body) {
  auto o = parseObject(body);
  auto keys = o->getArray("keys");
  std::printf("namespace %s\n", str(o, "namespace").c_str());
  std::printf("  %-16s %-20s %-16s %s\n", "KEY ID", "ADDED", "SIGNED BY", "STATE");
  for (size_t i = 0; i < keys->size(); ++i) {
    auto k = keys->getObject(static_cast<unsigned>(i));
    std::string state = "active";
    if (auto r = k->getObject("revoked")) {
      state = "revoked at " + timeText(r->getValue<int64_t>("at")) + ": " + str(r, "reason");
    }
    std::printf("  %-16s %-20s %-16s %s\n", str(k, "keyid").c_str(),
                timeText(k->getValue<int64_t>("added")).c_str(),
                k->has("signed_by") ? str(k, "signed_by").c_str() : "(first key)", state.c_str());
  }
}

void printTokens(const std::string& body) {
  auto list = parseObject(body)->getArray("tokens");
  std::printf("%-16s %-16s %-20s %-8s %s\n", "TOKEN ID", "NAMESPACE", "EXPIRES", "STATE",
              "DESCRIPTION");
  for (size_t i = 0; i < list->size(); ++i) {
    auto t = list->getObject(static_cast<unsigned>(i));
    std::printf("%-16s %-16s %-20s %-8s %s\n", str(t, "id").c_str(), str(t, "namespace").c_str(),
                timeText(t->getValue<int64_t>("expires")).c_str(),
                t->optValue<bool>("expired", false) ? "expired" : "live",
                str(t, "description").c_str());
  }
}

}  // namespace

PublisherCommands::PublisherCommands(CLI::App& app, CLI::App& plugin, CliSettings& settings,
                                     const Output& output)
    : settings_(settings), output_(output) {
  auto withRegistry = [&](CLI::App* c) {
    c->add_option("--registry", settings_.registry_flag,
                  "The registry's trellisd URL (env TRELLIS_REGISTRY, or the profile)");
    c->add_option("--registry-key-file", settings_.registry_key_file_flag,
                  "File holding the registry tenant's key (env TRELLIS_REGISTRY_KEY)");
    c->add_option("--registry-token-file", settings_.registry_token_file_flag,
                  "File holding a registry token: the operator's admin token or a publish token "
                  "(env TRELLIS_REGISTRY_TOKEN)");
    return c;
  };

  publish_ = withRegistry(app.add_subcommand(
      "publish", "Package (if given a folder), sign and upload a plugin to the registry"));
  publish_->add_option("path", path_, "Plugin build folder or signed package (.zip)")->required();
  publish_->add_option("--key", key_file_, "Publisher private key (needed for a folder)");
  publish_->add_option("--tags", tags_, "Comma-separated tags, e.g. greeting,demo");
  publish_->add_flag("--dry-run", dry_run_,
                     "Run every registry check and store nothing: would it be accepted?");

  auto* publisher = app.add_subcommand("publisher", "Publisher keys and publish tokens");
  publisher->require_subcommand(1);
  auto* key = publisher->add_subcommand("key", "A namespace's publisher keys");
  key->require_subcommand(1);
  key_register_ = withRegistry(
      key->add_subcommand("register", "Register a namespace's first key (registry admin token)"));
  key_register_->add_option("namespace", ns_, "Namespace, e.g. acme")->required();
  key_register_->add_option("--pubkey", pubkey_, "The key: a .pub file or base64")->required();
  key_rotate_ = withRegistry(key->add_subcommand(
      "rotate", "Add a new key, vouched for by the current one (which stays valid until revoked)"));
  key_rotate_->add_option("namespace", ns_, "Namespace")->required();
  key_rotate_->add_option("--key", key_file_, "The current (old) private key, which signs")
      ->required();
  key_rotate_->add_option("--new-key", new_key_file_, "The new private key (trellis keygen)");
  key_rotate_->add_option("--new-pubkey", pubkey_, "Or the new public key (.pub or base64)");
  key_revoke_ = withRegistry(key->add_subcommand("revoke", "Revoke a publisher key"));
  key_revoke_->add_option("namespace", ns_, "Namespace")->required();
  key_revoke_->add_option("keyid", keyid_, "Key id (16 hex)")->required();
  key_revoke_->add_option("--reason", reason_, "Why (recorded in the signed index)")->required();
  key_revoke_->add_option("--at", at_,
                          "Unix seconds: packages published from then on are refused (default "
                          "now; set it back for a suspected compromise)");
  key_list_ = withRegistry(key->add_subcommand("list", "List a namespace's keys"));
  key_list_->add_option("namespace", ns_, "Namespace")->required();

  auto* token = publisher->add_subcommand("token", "Publish tokens (registry admin token)");
  token->require_subcommand(1);
  token_create_ = withRegistry(
      token->add_subcommand("create", "Create a publish token for one namespace (shown once)"));
  token_create_->add_option("namespace", ns_, "Namespace the token may publish to")->required();
  token_create_->add_option("--expires", expires_, "Lifetime: 30d, 12h, 45m or seconds")
      ->capture_default_str();
  token_create_->add_option("--description", description_, "What it is for, e.g. \"acme CI\"");
  token_list_ =
      withRegistry(token->add_subcommand("list", "List publish tokens (not the secrets)"));
  token_revoke_ = withRegistry(token->add_subcommand("revoke", "Revoke a publish token"));
  token_revoke_->add_option("id", token_id_, "Token id (from token list)")->required();

  yank_ = withRegistry(plugin.add_subcommand(
      "yank", "Hide a published version from new installs (pinned installs keep working)"));
  yank_->add_option("version", path_, "namespace/name@version")->required();
  yank_->add_option("--reason", reason_, "Why, e.g. CVE-2026-1234")->required();
  unyank_ = withRegistry(plugin.add_subcommand("unyank", "Undo a yank"));
  unyank_->add_option("version", path_, "namespace/name@version")->required();
  unyank_->add_option("--reason", reason_, "Why")->required();
}

bool PublisherCommands::run() {
  if (publish_->parsed()) {
    publish();
  } else if (key_register_->parsed()) {
    keyRegister();
  } else if (key_rotate_->parsed()) {
    keyRotate();
  } else if (key_revoke_->parsed()) {
    keyRevoke();
  } else if (key_list_->parsed()) {
    keyList();
  } else if (token_create_->parsed()) {
    tokenCreate();
  } else if (token_list_->parsed()) {
    tokenList();
  } else if (token_revoke_->parsed()) {
    tokenRevoke();
  } else if (yank_->parsed()) {
    setYanked(true);
  } else if (unyank_->parsed()) {
    setYanked(false);
  } else {
    return false;
  }
  return true;
}

namespace {

RegistryClient openRegistry(const CliSettings& settings, bool needs_token) {
  auto reg = RegistryClient::open(settings.registryUrl(), settings.registryKey(),
                                  needs_token ? settings.registryToken() : "");
  if (!reg) AdminClient::die(reg.status().message(), kExitUsage);
  if (needs_token && !reg->hasToken()) {
    AdminClient::die(
        "this needs a registry token (the operator's admin token or a publish token): pass "
        "--registry-token-file FILE, set TRELLIS_REGISTRY_TOKEN, or add registry_token to "
        "your profile",
        kExitUsage);
  }
  return std::move(*reg);
}

// Sends and returns the 2xx JSON answer; exits with the registry's reason otherwise.
Object::Ptr exchange(const RegistryClient& reg, const std::string& method, const std::string& path,
                     const std::string& body, const std::string& what = "") {
  auto answer = reg.send(method, path, body);
  if (!answer) fail(answer.status(), what.empty() ? "" : what + ": ");
  if (answer->status == 204) return new Object;
  auto json = answer->json();
  if (!json) fail(json.status(), what.empty() ? "" : what + ": ");
  return *json;
}

}  // namespace

void PublisherCommands::publish() {
  std::error_code ec;
  std::string archive;
  mk::BuiltPackage built;
  if (fs::is_directory(path_, ec)) {
    if (key_file_.empty()) {
      AdminClient::die(
          "publishing a folder signs it: pass --key KEY.pem (make one: trellis "
          "keygen), or publish a package made by trellis package",
          kExitUsage);
    }
    // The kernel's own parser first: a manifest the host would refuse is never signed.
    auto manifest = kernel::plugin::Manifest::load(fs::path(path_) / "trellis-plugin.json");
    if (!manifest) fail(manifest.status());
    auto key = readPrivateKey("--key", key_file_);
    auto bytes = mk::buildPackageBytes(path_, key, &built);
    if (!bytes) fail(bytes.status());
    archive = std::move(*bytes);
    if (!output_.structured())
      std::printf("packaged %s %s (%llu bytes, signed by key %s)\n", built.id.c_str(),
                  built.version.c_str(), static_cast<unsigned long long>(built.bytes),
                  built.keyid.c_str());
  } else if (fs::is_regular_file(path_, ec)) {
    if (!key_file_.empty()) {
      AdminClient::die(path_ + " is already a signed package; --key is for folders", kExitUsage);
    }
    auto pkg = mk::PackageArchive::open(path_);
    if (!pkg) fail(pkg.status(), path_ + ": ");
    built.id = pkg->info().id;
    built.version = pkg->info().version;
    built.keyid = pkg->info().signature.keyid;
    std::ifstream in(path_, std::ios::binary);
    archive.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  } else {
    AdminClient::die(path_ + ": no such folder or package file", kExitUsage);
  }

  RegistryClient reg = openRegistry(settings_, true);
  std::string query;
  if (!tags_.empty())
    query += "tags=" + checked("--tags", tags_, ",abcdefghijklmnopqrstuvwxyz0123456789-");
  if (dry_run_) query += std::string(query.empty() ? "" : "&") + "dry_run=true";
  const std::string what = built.id + " " + built.version;
  auto answer = reg.send("POST", "/packages" + (query.empty() ? "" : "?" + query), archive);
  if (!answer) fail(answer.status(), "cannot publish " + what + ": ");
  auto v = answer->json();
  if (!v) {
    fail(v.status(),
         dry_run_ ? "dry run: " + what + " would be refused: " : what + " was not published: ");
  }
  if (dry_run_ && !(*v)->optValue<bool>("dry_run", false)) {
    // An older registry ignores dry_run and stores the package: say so rather than pretend.
    AdminClient::die("the registry does not support --dry-run and PUBLISHED " + what);
  }
  const std::string url = reg.urlOf("/packages/" + built.id + "/versions/" + built.version);
  if (output_.structured()) {
    (*v)->set("url", url);
    printStructured(text(*v));
    return;
  }
  if (dry_run_) {
    std::printf("dry run: the registry accepts %s (every check passed; nothing was stored)\n",
                what.c_str());
  } else {
    std::printf("published %s\n", what.c_str());
  }
  std::printf("  sha256 %s (%s bytes)\n", str(*v, "sha256").c_str(), str(*v, "length").c_str());
  std::printf("  signed by key %s\n", str(*v, "keyid").c_str());
  if ((*v)->has("index_version")) {
    std::printf("  index version %s\n", str(*v, "index_version").c_str());
  }
  if (!dry_run_) std::printf("  url %s\n", url.c_str());
}

void PublisherCommands::keyRegister() {
  checked("namespace", ns_, kIdChars);
  const auto key = readPublicKey("--pubkey", pubkey_);
  RegistryClient reg = openRegistry(settings_, true);
  Object body;
  body.set("public", key.base64());
  std::ostringstream b;
  body.stringify(b);
  auto k = exchange(reg, "POST", "/namespaces/" + ns_ + "/keys", b.str(),
                    "cannot register the key of " + ns_);
  if (output_.structured()) return printStructured(text(k));
  std::printf("registered key %s as the first key of namespace %s\n", str(k, "keyid").c_str(),
              ns_.c_str());
}

void PublisherCommands::keyRotate() {
  checked("namespace", ns_, kIdChars);
  const auto old_key = readPrivateKey("--key", key_file_);
  std::optional<mk::PublicKey> new_key;
  if (!new_key_file_.empty() && !pubkey_.empty()) {
    AdminClient::die("pass --new-key or --new-pubkey, not both", kExitUsage);
  }
  if (!new_key_file_.empty()) {
    new_key = readPrivateKey("--new-key", new_key_file_).publicKey();
  } else if (!pubkey_.empty()) {
    new_key = readPublicKey("--new-pubkey", pubkey_);
  } else {
    AdminClient::die("rotate needs the new key: --new-key NEW.pem or --new-pubkey NEW.pub",
                     kExitUsage);
  }
  // The old key vouches for the new one; the registry cannot add keys without it.
  auto rotated = mk::rotatePublisherKey(ns_, old_key, *new_key, std::time(nullptr));
  if (!rotated) fail(rotated.status());
  Object body;
  body.set("public", new_key->base64());
  body.set("signed_by", old_key.keyId());
  body.set("rotation_sig", mk::base64Encode(rotated->rotation_sig));
  std::ostringstream b;
  body.stringify(b);
  RegistryClient reg = openRegistry(settings_, true);
  auto k = exchange(reg, "POST", "/namespaces/" + ns_ + "/keys", b.str(),
                    "cannot add the new key to " + ns_);
  if (output_.structured()) return printStructured(text(k));
  std::printf("namespace %s: added key %s, signed by %s\n", ns_.c_str(), str(k, "keyid").c_str(),
              old_key.keyId().c_str());
  std::printf(
      "  the old key stays valid until you revoke it: trellis publisher key revoke %s %s "
      "--reason rotated\n",
      ns_.c_str(), old_key.keyId().c_str());
}

void PublisherCommands::keyRevoke() {
  checked("namespace", ns_, kIdChars);
  checked("key id", keyid_, kHexChars);
  Object body;
  body.set("reason", reason_);
  if (at_ >= 0) body.set("at", at_);
  std::ostringstream b;
  body.stringify(b);
  RegistryClient reg = openRegistry(settings_, true);
  auto k = exchange(reg, "POST", "/namespaces/" + ns_ + "/keys/" + keyid_ + "/revoke", b.str(),
                    "cannot revoke key " + keyid_);
  if (output_.structured()) return printStructured(text(k));
  auto r = k->getObject("revoked");
  std::printf("namespace %s: revoked key %s at %s; packages it signed from then on are refused\n",
              ns_.c_str(), keyid_.c_str(),
              r ? timeText(r->getValue<int64_t>("at")).c_str() : "now");
}

void PublisherCommands::keyList() {
  checked("namespace", ns_, kIdChars);
  RegistryClient reg = openRegistry(settings_, false);
  auto keys = exchange(reg, "GET", "/namespaces/" + ns_, "");
  output_.print(keys, printKeys);
}

void PublisherCommands::tokenCreate() {
  checked("namespace", ns_, kIdChars);
  auto ttl = parseDuration(expires_);
  if (!ttl) AdminClient::die(ttl.status().message(), kExitUsage);
  Object body;
  body.set("namespace", ns_);
  body.set("ttl_seconds", *ttl);
  if (!description_.empty()) body.set("description", description_);
  std::ostringstream b;
  body.stringify(b);
  RegistryClient reg = openRegistry(settings_, true);
  auto t = exchange(reg, "POST", "/tokens", b.str(), "cannot create a publish token");
  if (output_.structured()) return printStructured(text(t));
  std::printf("publish token %s for namespace %s, expires %s (shown once; store it now):\n  %s\n",
              str(t, "id").c_str(), ns_.c_str(), timeText(t->getValue<int64_t>("expires")).c_str(),
              str(t, "token").c_str());
}

void PublisherCommands::tokenList() {
  RegistryClient reg = openRegistry(settings_, true);
  output_.print(exchange(reg, "GET", "/tokens", ""), printTokens);
}

void PublisherCommands::tokenRevoke() {
  checked("token id", token_id_, kHexChars);
  RegistryClient reg = openRegistry(settings_, true);
  exchange(reg, "DELETE", "/tokens/" + token_id_, "", "cannot revoke token " + token_id_);
  if (!output_.structured()) std::printf("publish token %s revoked\n", token_id_.c_str());
}

void PublisherCommands::setYanked(bool yanked) {
  auto [id, version] = splitIdVersion(path_);
  Object body;
  body.set("reason", reason_);
  std::ostringstream b;
  body.stringify(b);
  RegistryClient reg = openRegistry(settings_, true);
  auto v = exchange(reg, "POST",
                    "/packages/" + id + "/versions/" + version + (yanked ? "/yank" : "/unyank"),
                    b.str(), std::string(yanked ? "cannot yank " : "cannot unyank ") + path_);
  if (output_.structured()) return printStructured(text(v));
  std::printf("%s %s@%s: %s\n", yanked ? "yanked" : "unyanked", id.c_str(), version.c_str(),
              yanked ? "new installs and upgrades skip it; exact pins still install it"
                     : "it can be chosen again");
}

}  // namespace trellis::cli
