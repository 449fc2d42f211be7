#include "cli/marketplace_commands.h"

#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include "cli/admin_client.h"
#include "trellis/kernel/plugin/manifest.h"
#include "trellis/marketplace/ed25519.h"
#include "trellis/marketplace/package.h"

namespace trellis::cli {
namespace {

namespace fs = std::filesystem;
using marketplace::PrivateKey;
using marketplace::PublicKey;

[[noreturn]] void fail(const Status& s) {
  AdminClient::die(s.message());
}

// A --pubkey value: a .pub file written by `trellis keygen`, or the base64 text itself.
PublicKey readPublicKey(const std::string& arg) {
  std::error_code ec;
  std::string text = arg;
  if (fs::is_regular_file(arg, ec)) {
    std::ifstream in(arg);
    std::getline(in, text);
  }
  auto key = PublicKey::fromBase64(text);
  if (!key) AdminClient::die("--pubkey " + arg + ": " + key.status().message());
  return *key;
}

}  // namespace

MarketplaceCommands::MarketplaceCommands(CLI::App& app) {
  keygen_ = app.add_subcommand("keygen", "Create an Ed25519 publisher key pair");
  keygen_->add_option("--out", out_dir_, "Folder for NAME.pem (private) and NAME.pub")->required();
  keygen_->add_option("--name", name_, "File name stem")->capture_default_str();

  package_ = app.add_subcommand("package", "Package and sign a plugin build folder");
  package_->add_option("dir", plugin_dir_, "Plugin folder holding trellis-plugin.json");
  package_->add_option("--key", key_file_, "Publisher private key (PEM, from trellis keygen)");
  package_->add_option("--out", out_file_, "Package file to write, e.g. acme-hello-1.2.0.zip");
  package_->add_flag("--force", force_, "Replace an existing --out file");

  inspect_ = package_->add_subcommand("inspect", "Show a package's contents (not verified)");
  inspect_->add_option("package", archive_, "Package file")->required();
  verify_ = package_->add_subcommand(
      "verify", "Check a package's signature and every file's SHA-256 against the manifest");
  verify_->add_option("package", archive_, "Package file")->required();
  verify_
      ->add_option("--pubkey", pubkeys_, "Trusted public key: a .pub file or base64 (repeatable)")
      ->required();
}

bool MarketplaceCommands::run() {
  if (keygen_->parsed()) {
    keygen();
  } else if (inspect_->parsed()) {
    inspect();
  } else if (verify_->parsed()) {
    verify();
  } else if (package_->parsed()) {
    package();
  } else {
    return false;
  }
  return true;
}

void MarketplaceCommands::keygen() {
  if (name_.empty() || name_.find('/') != std::string::npos || name_.front() == '.') {
    AdminClient::die("--name must be a plain file name stem, got \"" + name_ + "\"");
  }
  std::error_code ec;
  if (!fs::exists(out_dir_, ec)) {
    fs::create_directories(out_dir_, ec);
    if (ec) AdminClient::die(out_dir_ + ": cannot create: " + ec.message());
    ::chmod(out_dir_.c_str(), 0700);  // the folder holds private keys
  }
  const fs::path pem = fs::path(out_dir_) / (name_ + ".pem");
  const fs::path pub = fs::path(out_dir_) / (name_ + ".pub");
  if (fs::exists(pub, ec)) {
    AdminClient::die(pub.string() + " already exists; refusing to overwrite a key");
  }
  auto key = PrivateKey::generate();
  if (!key) fail(key.status());
  if (Status s = key->writePem(pem); !s) fail(s);
  // "x": exclusive create, like the private key.
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(pub.c_str(), "wx"), &std::fclose);
  if (!f || std::fprintf(f.get(), "%s\n", key->publicKey().base64().c_str()) < 0 ||
      std::fclose(f.release()) != 0) {
    AdminClient::die(pub.string() + ": cannot write the public key");
  }
  std::printf("key id:      %s\n", key->keyId().c_str());
  std::printf("public key:  %s\n", key->publicKey().base64().c_str());
  std::printf("private key: %s (mode 0600; keep it secret and backed up)\n", pem.c_str());
  std::printf("public file: %s (register it with the registry)\n", pub.c_str());
}

void MarketplaceCommands::package() {
  if (plugin_dir_.empty()) {
    AdminClient::die(
        "package needs a plugin folder: trellis package DIR --key KEY.pem --out "
        "FILE.zip (or: package inspect|verify FILE.zip)");
  }
  if (key_file_.empty()) AdminClient::die("package needs --key KEY.pem (make one: trellis keygen)");
  if (out_file_.empty()) AdminClient::die("package needs --out FILE.zip");
  // Full validation first, with the kernel's own parser: a package the kernel would
  // refuse must not be signed and published.
  auto manifest = kernel::plugin::Manifest::load(fs::path(plugin_dir_) / "trellis-plugin.json");
  if (!manifest) fail(manifest.status());
  auto key = PrivateKey::loadPem(key_file_);
  if (!key) fail(key.status());
  auto built = marketplace::buildPackage(plugin_dir_, *key, out_file_, force_);
  if (!built) {
    if (built.status().code() == StatusCode::kConflict) {
      AdminClient::die(built.status().message() + " (pass --force to replace it)");
    }
    fail(built.status());
  }
  std::printf("packaged %s %s -> %s\n", built->id.c_str(), built->version.c_str(),
              out_file_.c_str());
  std::printf("  signed by key %s\n", built->keyid.c_str());
  std::printf("  sha256 %s (%llu bytes)\n", built->sha256.c_str(),
              static_cast<unsigned long long>(built->bytes));
  for (const auto& f : built->files) std::printf("  file %s\n", f.c_str());
}

void MarketplaceCommands::inspect() {
  auto info = marketplace::inspectPackage(archive_);
  if (!info) fail(info.status());
  std::printf("package %s %s (signature NOT verified; use: trellis package verify)\n",
              info->id.c_str(), info->version.c_str());
  std::printf("  signed by key %s\n", info->signature.keyid.c_str());
  std::printf("  sha256 %s (%llu bytes)\n", info->archive_sha256.c_str(),
              static_cast<unsigned long long>(info->archive_bytes));
  for (const auto& e : info->entries) {
    std::printf("  %10llu  %s\n", static_cast<unsigned long long>(e.uncompressed_size),
                e.name.c_str());
  }
  std::printf("manifest:\n%s\n", info->canonical_manifest.c_str());
}

void MarketplaceCommands::verify() {
  std::vector<PublicKey> trusted;
  for (const auto& k : pubkeys_) trusted.push_back(readPublicKey(k));
  auto pkg = marketplace::PackageArchive::open(archive_);
  if (!pkg) fail(pkg.status());
  if (Status s = pkg->verify(trusted); !s) fail(s);
  // The kernel's parser has the last word on the manifest itself.
  auto manifest = kernel::plugin::Manifest::parse(pkg->info().manifest_json);
  if (!manifest) AdminClient::die("trellis-plugin.json: " + manifest.status().message());
  std::printf("verified %s %s: signed by key %s, %zu files match the manifest\n",
              pkg->info().id.c_str(), pkg->info().version.c_str(),
              pkg->info().signature.keyid.c_str(), pkg->info().files.size());
}

}  // namespace trellis::cli
