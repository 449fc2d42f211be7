// The seal on a real trellisd: the operator's admin routes (init, unseal share by share,
// seal, status), their roles, and what a wrong share gets.
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pty.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "support/test_support.h"

namespace trellis::test {
namespace {

using Poco::JSON::Object;

Object::Ptr json(const std::string& body) {
  return Poco::JSON::Parser().parse(body).extract<Object::Ptr>();
}

class SecretsSealRoutesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<TrellisdProcess>(
        defaultTestConfig("    - id: trellis/secrets\n      system: true\n"));
    ASSERT_TRUE(server_->start()) << server_->log();
  }
  HttpReply admin(const std::string& method, const std::string& route, const std::string& body = "",
                  const std::string& token = "") {
    return request(server_->adminPort(), method, "/v1/x/trellis/secrets/" + route,
                   {{"Authorization", "Bearer " + (token.empty() ? server_->adminToken() : token)},
                    {"Content-Type", "application/json"}},
                   body);
  }
  std::vector<std::string> init(int shares, int threshold) {
    auto res = admin("POST", "init",
                     "{\"shares\":" + std::to_string(shares) +
                         ",\"threshold\":" + std::to_string(threshold) + "}");
    EXPECT_EQ(res.status, 200) << res.body;
    std::vector<std::string> out;
    auto list = json(res.body)->getArray("shares");
    for (size_t i = 0; i < list->size(); ++i) out.push_back(list->getElement<std::string>(i));
    return out;
  }
  HttpReply unseal(const std::string& share) {
    return admin("POST", "unseal", "{\"key\":\"" + share + "\"}");
  }
  std::unique_ptr<TrellisdProcess> server_;
};

TEST_F(SecretsSealRoutesTest, InitShowsSharesOnceAndUnsealReportsProgress) {
  auto status = admin("GET", "status");
  ASSERT_EQ(status.status, 200) << status.body;
  EXPECT_TRUE(json(status.body)->getValue<bool>("sealed"));

  auto shares = init(5, 3);
  ASSERT_EQ(shares.size(), 5u);
  auto again = admin("POST", "init", R"({"shares":5,"threshold":3})");
  EXPECT_EQ(again.status, 409) << again.body;
  EXPECT_EQ(again.body.find("tss1-"), std::string::npos);

  auto first = unseal(shares[0]);
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_EQ(json(first.body)->getValue<int>("progress"), 1);
  EXPECT_EQ(json(first.body)->getValue<int>("threshold"), 3);
  EXPECT_TRUE(json(first.body)->getValue<bool>("sealed"));

  auto dup = unseal(shares[0]);
  EXPECT_EQ(dup.status, 400);
  EXPECT_NE(dup.body.find("already given"), std::string::npos) << dup.body;
  EXPECT_EQ(dup.header("content-type"), "application/problem+json");

  ASSERT_EQ(unseal(shares[3]).status, 200);
  auto done = unseal(shares[4]);
  ASSERT_EQ(done.status, 200) << done.body;
  EXPECT_FALSE(json(done.body)->getValue<bool>("sealed"));

  auto sealed = admin("POST", "seal");
  ASSERT_EQ(sealed.status, 200) << sealed.body;
  EXPECT_TRUE(json(sealed.body)->getValue<bool>("sealed"));
  // No share reached the log (the audit stream redacts "key"; the plugin logs none).
  for (const auto& s : shares) EXPECT_EQ(server_->log().find(s.substr(15, 64)), std::string::npos);
}

TEST_F(SecretsSealRoutesTest, TheStoreStaysInitializedAcrossARestart) {
  auto shares = init(3, 2);
  ASSERT_EQ(shares.size(), 3u);
  ASSERT_EQ(server_->stop(), 0);
  ASSERT_TRUE(server_->start()) << server_->log();

  // A restarted host knows the store has a root key: a second init would have made the
  // stored secrets unreadable, so it is refused, naming the key.
  auto status = admin("GET", "status");
  ASSERT_EQ(status.status, 200) << status.body;
  EXPECT_TRUE(json(status.body)->getValue<bool>("initialized"));
  EXPECT_TRUE(json(status.body)->getValue<bool>("sealed"));
  auto again = admin("POST", "init", R"({"shares":3,"threshold":2})");
  EXPECT_EQ(again.status, 409) << again.body;
  EXPECT_NE(again.body.find("already initialized (root key "), std::string::npos) << again.body;
  EXPECT_EQ(again.body.find("tss1-"), std::string::npos);

  ASSERT_EQ(unseal(shares[2]).status, 200);
  auto done = unseal(shares[0]);
  ASSERT_EQ(done.status, 200) << done.body;
  EXPECT_FALSE(json(done.body)->getValue<bool>("sealed"));
}

TEST_F(SecretsSealRoutesTest, TheCliInitializesAndUnsealsReadingSharesFromStdin) {
  int status = -1;
  std::string out = runCli(*server_, "secrets init --shares 3 --threshold 2", &status);
  ASSERT_EQ(status, 0) << out;
  EXPECT_NE(out.find("shown this once"), std::string::npos) << out;
  std::vector<std::string> shares;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    if (line.starts_with("tss1-")) shares.push_back(line);
  }
  ASSERT_EQ(shares.size(), 3u) << out;

  // A share goes in on stdin (a terminal gets no echo), never on the command line.
  auto unsealWith = [&](const std::string& input) {
    return runCommand("printf '%s\\n' '" + input + "' | " + TRELLIS_CLI_PATH +
                          " --admin http://127.0.0.1:" + std::to_string(server_->adminPort()) +
                          " --token-file " + (server_->dir() / "admin.token").string() +
                          " secrets unseal 2>&1",
                      &status);
  };
  out = unsealWith(shares[1]);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("sealed: 1 of 2 shares given"), std::string::npos) << out;
  out = unsealWith("tss1-\"}, \"reset\": true");
  EXPECT_EQ(status, 2) << out;
  EXPECT_NE(out.find("that is not a share"), std::string::npos) << out;
  out = unsealWith(shares[1]);
  EXPECT_EQ(status, 1) << out;
  EXPECT_NE(out.find("already given"), std::string::npos) << out;
  out = unsealWith(shares[2]);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("unsealed (root key"), std::string::npos) << out;

  EXPECT_NE(runCli(*server_, "secrets status", &status).find("unsealed"), std::string::npos);
  out = runCli(*server_, "secrets seal", &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("sealed: give shares"), std::string::npos) << out;
  out = runCli(*server_, "secrets init", &status);
  EXPECT_EQ(status, 1) << out;
  EXPECT_NE(out.find("already initialized"), std::string::npos) << out;
}

// Runs `trellis secrets unseal` on a pseudo-terminal, types `share` once the prompt shows,
// and returns everything the terminal displayed; *status is the exit status.
std::string unsealOnATerminal(const TrellisdProcess& server, const std::string& share,
                              int* status) {
  const std::string admin = "http://127.0.0.1:" + std::to_string(server.adminPort());
  const std::string token = (server.dir() / "admin.token").string();
  int master = -1;
  const pid_t pid = ::forkpty(&master, nullptr, nullptr, nullptr);
  if (pid == 0) {
    ::execl(TRELLIS_CLI_PATH, "trellis", "--admin", admin.c_str(), "--token-file", token.c_str(),
            "secrets", "unseal", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  std::string shown;
  bool typed = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{master, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    char buf[512];
    const ssize_t n = ::read(master, buf, sizeof buf);
    if (n <= 0) break;  // EIO: the CLI exited and closed the terminal
    shown.append(buf, static_cast<size_t>(n));
    if (!typed && shown.find("(not shown): ") != std::string::npos) {
      const std::string line = share + "\n";
      EXPECT_EQ(::write(master, line.data(), line.size()), static_cast<ssize_t>(line.size()));
      typed = true;
    }
  }
  ::close(master);
  int raw = 0;
  ::waitpid(pid, &raw, 0);
  *status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  return shown;
}

TEST_F(SecretsSealRoutesTest, TheCliReadsAShareFromATerminalWithoutEchoingIt) {
  int status = -1;
  std::string out = runCli(*server_, "secrets init --shares 3 --threshold 2", &status);
  ASSERT_EQ(status, 0) << out;
  std::vector<std::string> shares;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    if (line.starts_with("tss1-")) shares.push_back(line);
  }
  ASSERT_EQ(shares.size(), 3u) << out;

  const std::string shown = unsealOnATerminal(*server_, shares[0], &status);
  EXPECT_EQ(status, 0) << shown;
  EXPECT_NE(shown.find("Unseal share (not shown): "), std::string::npos) << shown;
  EXPECT_NE(shown.find("sealed: 1 of 2 shares given"), std::string::npos) << shown;
  // Not one piece of the share reached the screen (its random part is 64 hex digits).
  EXPECT_EQ(shown.find(shares[0].substr(shares[0].size() - 20)), std::string::npos) << shown;
  EXPECT_EQ(shown.find("tss1-"), std::string::npos) << shown;
}

TEST_F(SecretsSealRoutesTest, BadInputIsRefusedWithAClearProblem) {
  auto missing = admin("POST", "init", "{}");
  EXPECT_EQ(missing.status, 400);
  EXPECT_NE(missing.body.find("needs \\\"shares\\\" and \\\"threshold\\\""), std::string::npos)
      << missing.body;
  auto low = admin("POST", "init", R"({"shares":2,"threshold":3})");
  EXPECT_EQ(low.status, 400);
  EXPECT_NE(low.body.find("must be at least the threshold"), std::string::npos) << low.body;
  auto text = admin("POST", "init", R"({"shares":"five","threshold":3})");
  EXPECT_EQ(text.status, 400);
  EXPECT_NE(text.body.find("whole number"), std::string::npos) << text.body;
  auto notjson = admin("POST", "unseal", "{not json");
  EXPECT_EQ(notjson.status, 400);
  EXPECT_NE(notjson.body.find("not valid JSON"), std::string::npos) << notjson.body;
  auto garbage = unseal("hunter2");
  EXPECT_EQ(garbage.status, 400);
  EXPECT_NE(garbage.body.find("not an unseal share"), std::string::npos) << garbage.body;
}

TEST_F(SecretsSealRoutesTest, AnAuditorCannotUnseal) {
  auto made = request(server_->adminPort(), "POST", "/v1/admin-tokens",
                      {{"Authorization", "Bearer " + server_->adminToken()}},
                      R"({"name":"ann","role":"auditor"})");
  ASSERT_EQ(made.status, 201) << made.body;
  std::string token = json(made.body)->getValue<std::string>("token");
  EXPECT_EQ(admin("GET", "status", "", token).status, 403);
  EXPECT_EQ(admin("POST", "seal", "", token).status, 403);
}

}  // namespace
}  // namespace trellis::test
