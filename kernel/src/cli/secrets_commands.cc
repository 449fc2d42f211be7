#include "cli/secrets_commands.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <openssl/crypto.h>
#include <termios.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <iostream>
#include <string>

namespace trellis::cli {
namespace {

constexpr const char* kRoutes = "/v1/x/trellis/secrets/";

// One line from the terminal without echo, or from stdin when it is not a terminal.
std::string readShare() {
  const bool tty = ::isatty(STDIN_FILENO);
  termios saved{};
  if (tty) {
    // Echo goes off before the prompt shows: what is typed after the prompt is never shown.
    ::tcgetattr(STDIN_FILENO, &saved);
    termios quiet = saved;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    std::fprintf(stderr, "Unseal share (not shown): ");
    std::fflush(stderr);
  }
  std::string share;
  std::getline(std::cin, share);
  if (tty) {
    ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
    std::fprintf(stderr, "\n");
  }
  while (!share.empty() && (share.back() == '\r' || share.back() == ' ')) share.pop_back();
  if (share.empty()) AdminClient::die("no share given: type or pipe one share", kExitUsage);
  // Shares are "tss1-…" in letters, digits and '-': anything else is a paste gone wrong, and
  // would not survive the trip inside a JSON string unescaped.
  for (char c : share) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-') {
      OPENSSL_cleanse(share.data(), share.size());
      AdminClient::die("that is not a share: shares are tss1-… in letters, digits and '-'",
                       kExitUsage);
    }
  }
  return share;
}

void printSeal(const Poco::JSON::Object::Ptr& o) {
  if (!o->optValue<bool>("initialized", true)) {
    std::printf("not initialized: run `trellis secrets init`\n");
  } else if (!o->getValue<bool>("sealed")) {
    std::printf("unsealed (root key %s)\n", o->getValue<std::string>("root_check").c_str());
  } else if (o->getValue<int>("progress") > 0) {
    std::printf("sealed: %d of %d shares given (root key %s)\n", o->getValue<int>("progress"),
                o->getValue<int>("threshold"), o->getValue<std::string>("root_check").c_str());
  } else {
    std::printf("sealed: give shares with `trellis secrets unseal`\n");
  }
}

}  // namespace

SecretsCommands::SecretsCommands(CLI::App& app, const AdminClient& admin, const bool& json)
    : admin_(admin), json_(json) {
  auto* secrets = app.add_subcommand("secrets", "Initialize, unseal and seal trellis/secrets");
  secrets->require_subcommand(1);
  init_ = secrets->add_subcommand("init", "Make the root key and print its shares, once");
  init_->add_option("--shares", shares_, "How many shares to make")->capture_default_str();
  init_->add_option("--threshold", threshold_, "How many shares unseal")->capture_default_str();
  unseal_ = secrets->add_subcommand("unseal", "Give one share (read without echo, or from stdin)");
  unseal_->add_flag("--reset", reset_, "Forget the shares given so far instead");
  seal_ = secrets->add_subcommand("seal", "Wipe the root key from this host's memory now");
  status_ = secrets->add_subcommand("status", "Show whether this host is sealed");
}

bool SecretsCommands::run() {
  std::string answer;
  if (init_->parsed()) {
    answer = admin_.call("POST", std::string(kRoutes) + "init",
                         "{\"shares\":" + std::to_string(shares_) +
                             ",\"threshold\":" + std::to_string(threshold_) + "}");
    if (!json_) {
      auto o = parseObject(answer);
      auto shares = o->getArray("shares");
      std::printf(
          "Root key %s: %zu shares, any %d of which unseal it. They are shown this once;\n"
          "hand each to a different person. The store stays sealed until then.\n\n",
          o->getValue<std::string>("root_check").c_str(), shares->size(), threshold_);
      for (size_t i = 0; i < shares->size(); ++i) {
        std::printf("%s\n", shares->getElement<std::string>(static_cast<unsigned>(i)).c_str());
      }
    }
  } else if (unseal_->parsed()) {
    std::string body = "{\"reset\":true}";
    if (!reset_) {
      std::string share = readShare();
      body = "{\"key\":\"" + share + "\"}";
      OPENSSL_cleanse(share.data(), share.size());
    }
    answer = admin_.call("POST", std::string(kRoutes) + "unseal", body);
    OPENSSL_cleanse(body.data(), body.size());
    if (!json_) printSeal(parseObject(answer));
  } else if (seal_->parsed() || status_->parsed()) {
    answer = seal_->parsed() ? admin_.call("POST", std::string(kRoutes) + "seal")
                             : admin_.call("GET", std::string(kRoutes) + "status");
    if (!json_) printSeal(parseObject(answer));
  } else {
    return false;
  }
  if (json_) std::cout << answer;
  return true;
}

}  // namespace trellis::cli
