// What the tests of tests/fixtures/stream share: loopback TCP and TLS echo servers (the TLS
// one with the test CA's certificate for "localhost") and a POST to the trellisd under test.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "support/loopback_server.h"
#include "support/test_support.h"

namespace trellis::test {

class StreamEchoPeersTest : public ::testing::Test {
 protected:
  // Starts both echo servers; call it first in SetUp().
  void startPeers() {
    ASSERT_TRUE(pki_.ok()) << "openssl could not make the test certificates";
    tcp_ = std::make_unique<LoopbackServer>(LoopbackServer::kRawBytes, echo());
    tls_ = std::make_unique<LoopbackServer>(LoopbackServer::kRawBytes, echo(), &pki_, "localhost");
  }

  HttpReply call(const std::string& target, const std::string& key, const std::string& body) {
    return request(server_->port(), "POST", target, {{"Authorization", "Bearer " + key}}, body);
  }
  std::string tcpUrl() const { return "tcp://127.0.0.1:" + std::to_string(tcp_->port()); }
  std::string tlsUrl() const { return "tls://localhost:" + std::to_string(tls_->port()); }

  TestPki& pki_ = sharedPki();
  std::unique_ptr<LoopbackServer> tcp_;
  std::unique_ptr<LoopbackServer> tls_;
  std::unique_ptr<TrellisdProcess> server_;

 private:
  static LoopbackServer::Handler echo() {
    return [](const auto& read, const auto& write, const auto&) {
      for (std::string bytes = read(); !bytes.empty(); bytes = read()) {
        if (!write(bytes)) return;
      }
    };
  }
  static TestPki& sharedPki() {
    static TestPki pki;  // one CA for the whole binary: openssl is slow to make one
    return pki;
  }
};

}  // namespace trellis::test
