#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>

#include <array>
#include <atomic>
#include <chrono>
#include <future>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>

#include "support/test_support.h"
#include "trellis/kernel/exec/blocking_pool.h"
#include "trellis/kernel/http/problem.h"
#include "trellis/kernel/http/request_id.h"
#include "trellis/kernel/http/router.h"
#include "trellis/kernel/http/server.h"
#include "trellis/kernel/util/json.h"

namespace trellis::kernel::http {
namespace {

using namespace std::chrono_literals;
using test::Connection;
using test::HttpReply;
using test::rawExchange;
using Clock = std::chrono::steady_clock;
namespace bhttp = boost::beast::http;

// Routes on the path; "/slow?ms=N" answers from a pool thread after N ms. Screening refuses
// requests with "X-Screen: refuse", before their body is read.
class TestHandler : public RequestHandler {
 public:
  std::optional<Response> screen(const Request& header, const Peer&) override {
    ++screens;
    screened_body_size = header.body().size();
    if (header["X-Screen"] != "refuse") return std::nullopt;
    Response res{bhttp::status::unauthorized, header.version()};
    res.body() = "refused";
    return res;
  }

  void handle(Request& req, const Peer& peer, Respond respond) override {
    ++calls;
    std::string_view target = req.target();
    std::string_view path = target.substr(0, target.find('?'));
    std::string_view query =
        target.find('?') == std::string_view::npos ? "" : target.substr(target.find('?') + 1);
    if (path == "/throw") throw std::runtime_error("secret internals");
    if (path == "/drop") return;  // never answers
    if (path == "/twice") {
      respond(text(req, "first"));
      respond(text(req, "second"));
      return;
    }
    if (path == "/slow") {
      int ms = std::stoi(queryParam(query, "ms").value_or("100"));
      std::string body(target);
      ASSERT_TRUE(pool.trySubmit([ms, body, respond, &req] {
        std::this_thread::sleep_for(std::chrono::milliseconds(ms));
        // The request is still valid here: the server does not touch it until respond().
        Response res = text(req, body);
        respond(std::move(res));
      }));
      return;
    }
    if (path == "/peer") return respond(text(req, peer.address));
    if (path == "/echo") return respond(text(req, req.body()));
    if (path == "/header") {  // "/header?name=N": the value of field N, or "(none)"
      auto it = req.find(queryParam(query, "name").value_or(""));
      return respond(text(req, it == req.end() ? "(none)" : std::string(it->value())));
    }
    if (path == "/own-server") {  // a handler naming itself: the listener's name wins
      Response res = text(req, "mine");
      res.set(bhttp::field::server, "not-trellis");
      res.insert(bhttp::field::server, "also-not");
      return respond(std::move(res));
    }
    if (path == "/close") {
      Response res = text(req, "bye");
      res.keep_alive(false);
      return respond(std::move(res));
    }
    respond(text(req, std::string(target)));
  }

  static Response text(const Request& req, std::string body) {
    Response res{bhttp::status::ok, 11};
    res.set(bhttp::field::content_type, "text/plain");
    res.body() = std::move(body);
    return res;
  }

  std::atomic<int> calls{0};
  std::atomic<int> screens{0};
  std::atomic<size_t> screened_body_size{0};
  exec::BlockingPool pool{4, 64};
};

std::string get(const std::string& target, const std::string& extra_headers = "") {
  return "GET " + target + " HTTP/1.1\r\nHost: t\r\n" + extra_headers + "\r\n";
}

// Reads raw bytes until `needle` shows up (for replies the test client cannot frame).
std::string readUntil(int fd, const std::string& needle, std::chrono::milliseconds timeout) {
  std::string got;
  auto deadline = Clock::now() + timeout;
  while (got.find(needle) == std::string::npos && Clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    char buf[4096];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

// A problem+json answer of the listener itself, with its request id in header and body.
void expectProblem(const HttpReply& r, int status) {
  EXPECT_EQ(r.status, status);
  EXPECT_EQ(r.header("content-type"), "application/problem+json");
  EXPECT_EQ(r.header("server"), "trellis");
  Poco::JSON::Parser parser;
  auto obj = parser.parse(r.body).extract<Poco::JSON::Object::Ptr>();
  ASSERT_TRUE(obj);
  EXPECT_EQ(obj->getValue<int>("status"), status);
  EXPECT_EQ(obj->getValue<std::string>("type"), "about:blank");
  EXPECT_FALSE(obj->getValue<std::string>("title").empty());
  EXPECT_TRUE(obj->has("detail"));
  EXPECT_EQ(r.header("x-request-id").size(), 32u);
  EXPECT_EQ(obj->optValue<std::string>("request_id", ""), r.header("x-request-id"));
}

// The detail of a problem+json body.
std::string detailOf(const HttpReply& r) {
  auto obj = Poco::JSON::Parser().parse(r.body).extract<Poco::JSON::Object::Ptr>();
  return obj ? obj->optValue<std::string>("detail", "") : "";
}

class HttpServerTest : public ::testing::Test {
 protected:
  void startServer(ServerOptions o = {}) {
    o.host = "127.0.0.1";
    o.port = 0;
    if (o.threads == 0) o.threads = 2;
    server_ = std::make_unique<Server>(o, handler_);
    Status s = server_->start();
    ASSERT_TRUE(s) << s.toString();
    port_ = server_->port();
    ASSERT_NE(port_, 0);
  }

  // Waits (generously) for a condition the server reaches asynchronously.
  template <typename F>
  static bool eventually(F f, std::chrono::milliseconds timeout = 10s) {
    auto deadline = Clock::now() + timeout;
    while (!f()) {
      if (Clock::now() > deadline) return false;
      std::this_thread::sleep_for(2ms);
    }
    return true;
  }

  std::shared_ptr<TestHandler> handler_ = std::make_shared<TestHandler>();
  std::unique_ptr<Server> server_;
  uint16_t port_ = 0;
};

TEST_F(HttpServerTest, AnswersARequest) {
  startServer();
  HttpReply r = test::request(port_, "GET", "/hello?x=1");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "/hello?x=1");
  EXPECT_EQ(r.header("server"), "trellis");
  EXPECT_EQ(r.header("content-length"), "10");
  EXPECT_EQ(r.header("connection"), "close");
  EXPECT_EQ(test::request(port_, "GET", "/peer").body, "127.0.0.1");
  EXPECT_EQ(test::request(port_, "POST", "/echo", {}, "payload").body, "payload");
}

TEST_F(HttpServerTest, EveryAnswerNamesTheServerOnceWhateverTheHandlerSet) {
  startServer();
  Connection c(port_);
  ASSERT_TRUE(c.send(get("/own-server", "Connection: close\r\n")));
  const std::string raw = readUntil(c.fd(), "mine", 10s);
  const std::string head = raw.substr(0, raw.find("\r\n\r\n") + 2);
  EXPECT_NE(head.find("\r\nServer: trellis\r\n"), std::string::npos) << raw;
  EXPECT_EQ(head.find("not-trellis"), std::string::npos) << raw;
  EXPECT_EQ(head.find("also-not"), std::string::npos) << raw;
}

TEST_F(HttpServerTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  startServer();
  Connection c(port_);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(c.send(get("/n/" + std::to_string(i))));
    HttpReply r = c.read();
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "/n/" + std::to_string(i));
    EXPECT_EQ(r.header("connection"), "");
  }
  // Connection: close on the last request ends the connection after the answer.
  ASSERT_TRUE(c.send(get("/last", "Connection: close\r\n")));
  HttpReply r = c.read();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("connection"), "close");
  EXPECT_TRUE(c.closedByPeer(5s));
}

TEST_F(HttpServerTest, Http10KeepsAliveOnlyWhenAsked) {
  startServer();
  Connection c(port_);
  ASSERT_TRUE(c.send("GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
  HttpReply r = c.read();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("connection"), "keep-alive");
  ASSERT_TRUE(c.send("GET /b HTTP/1.0\r\n\r\n"));
  r = c.read();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "/b");
  EXPECT_TRUE(c.closedByPeer(5s));
}

TEST_F(HttpServerTest, HandlerMayCloseTheConnection) {
  startServer();
  Connection c(port_);
  ASSERT_TRUE(c.send(get("/close")));
  HttpReply r = c.read();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("connection"), "close");
  EXPECT_TRUE(c.closedByPeer(5s));
}

TEST_F(HttpServerTest, PipelinedRequestsAreAnsweredInOrder) {
  startServer();
  Connection c(port_);
  // The first answer comes late from another thread; it must still come first.
  ASSERT_TRUE(c.send(get("/slow?ms=200") + get("/fast") +
                     "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"));
  HttpReply a = c.read(), b = c.read(), d = c.read();
  EXPECT_EQ(a.status, 200);
  EXPECT_EQ(a.body, "/slow?ms=200");
  EXPECT_EQ(b.body, "/fast");
  EXPECT_EQ(d.body, "abc");
}

TEST_F(HttpServerTest, RespondsFromAnotherThread) {
  startServer();
  HttpReply r = test::request(port_, "GET", "/slow?ms=100");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "/slow?ms=100");
  EXPECT_TRUE(eventually([&] { return server_->inFlight() == 0; }));
}

TEST_F(HttpServerTest, OversizedHeaderIs431) {
  startServer({.max_header_bytes = 1024});
  Connection c(port_);
  ASSERT_TRUE(c.send(get("/x", "X-Big: " + std::string(4000, 'a') + "\r\n")));
  HttpReply r = c.read();
  expectProblem(r, 431);
  EXPECT_EQ(r.header("connection"), "close");
  EXPECT_TRUE(c.closedByPeer(5s));
  // A header just under the limit is fine.
  EXPECT_EQ(rawExchange(port_, get("/x", "X-Ok: " + std::string(500, 'a') + "\r\n")).status, 200);
}

TEST_F(HttpServerTest, UnterminatedHugeHeaderIs431) {
  startServer({.max_header_bytes = 1024});
  Connection c(port_);
  // No end of header ever arrives; the server must not buffer without bound.
  ASSERT_TRUE(c.send("GET /x HTTP/1.1\r\nX-Big: " + std::string(100'000, 'a')));
  expectProblem(c.read(), 431);
}

TEST_F(HttpServerTest, OversizedBodyByContentLengthIs413) {
  startServer({.max_body_bytes = 1024});
  Connection c(port_);
  std::string body(4096, 'b');
  ASSERT_TRUE(c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4096\r\n\r\n" + body));
  HttpReply r = c.read();
  expectProblem(r, 413);
  EXPECT_TRUE(c.closedByPeer(5s));
  EXPECT_EQ(handler_->calls.load(), 0);
  // At the limit is fine.
  EXPECT_EQ(test::request(port_, "POST", "/echo", {}, std::string(1024, 'c')).body.size(), 1024u);
}

TEST_F(HttpServerTest, OversizedChunkedBodyIs413) {
  startServer({.max_body_bytes = 1024});
  std::string raw = "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 4; ++i) raw += "200\r\n" + std::string(512, 'x') + "\r\n";
  raw += "0\r\n\r\n";
  expectProblem(rawExchange(port_, raw), 413);
  EXPECT_EQ(handler_->calls.load(), 0);
  // A small chunked body is decoded.
  HttpReply ok = rawExchange(port_,
                             "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                             "Connection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
  EXPECT_EQ(ok.status, 200);
  EXPECT_EQ(ok.body, "abcde");
}

TEST_F(HttpServerTest, GarbageIs400AndTheServerKeepsServing) {
  startServer();
  HttpReply r = rawExchange(port_, "GARBAGE\r\n\r\n");
  expectProblem(r, 400);
  EXPECT_EQ(r.header("connection"), "close");
  for (std::string junk : {std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11),
                           std::string("GET / HTTP/1.1\r\nBad Header\r\n\r\n"),
                           std::string("GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
                           std::string("GET / HTTP/1.1\r\nContent-Length: 1\r\n"
                                       "Transfer-Encoding: chunked\r\n\r\n"),
                           std::string("\r\n\r\n\r\n"), std::string(3000, '\0')}) {
    HttpReply j = rawExchange(port_, junk, 5s);
    // Either a 400 or a plain close; never a hang or a crash.
    EXPECT_TRUE(j.status == 400 || j.status == 0) << j.status;
  }
  EXPECT_EQ(test::request(port_, "GET", "/still-up").status, 200);
}

TEST_F(HttpServerTest, UnsupportedVersionIs505) {
  startServer();
  expectProblem(rawExchange(port_, "GET / HTTP/2.0\r\nHost: t\r\n\r\n"), 505);
  HttpReply r = rawExchange(port_, "GET /\r\n\r\n", 5s);  // HTTP/0.9
  EXPECT_TRUE(r.status == 400 || r.status == 0);
}

TEST_F(HttpServerTest, SlowClientGets408AfterReadTimeout) {
  startServer({.read_timeout = 300ms, .idle_timeout = 30s});
  Connection c(port_);
  auto started = Clock::now();
  ASSERT_TRUE(c.send("GET /half HTTP/1.1\r\nHost: t\r\n"));
  HttpReply r = c.read(10s);
  expectProblem(r, 408);
  EXPECT_GE(Clock::now() - started, 250ms);
  EXPECT_TRUE(c.closedByPeer(5s));
  EXPECT_EQ(handler_->calls.load(), 0);
}

TEST_F(HttpServerTest, SlowBodyGets408) {
  startServer({.read_timeout = 300ms, .idle_timeout = 30s});
  Connection c(port_);
  ASSERT_TRUE(c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc"));
  expectProblem(c.read(10s), 408);
}

TEST_F(HttpServerTest, IdleConnectionIsClosedSilently) {
  startServer({.read_timeout = 30s, .idle_timeout = 300ms});
  Connection fresh(port_);
  EXPECT_TRUE(fresh.closedByPeer(10s));

  Connection used(port_);
  ASSERT_TRUE(used.send(get("/one")));
  EXPECT_EQ(used.read().status, 200);
  // The close must be silent: a 408 here would be a bug.
  std::string after = readUntil(used.fd(), "HTTP/", 10s);
  EXPECT_EQ(after, "");
  EXPECT_TRUE(used.closedByPeer(1s));
}

TEST_F(HttpServerTest, ThrowingHandlerGets500AndConnectionKeepsWorking) {
  startServer();
  Connection c(port_);
  ASSERT_TRUE(c.send(get("/throw")));
  HttpReply r = c.read();
  expectProblem(r, 500);
  EXPECT_EQ(r.body.find("secret internals"), std::string::npos) << "no internals leak";
  ASSERT_TRUE(c.send(get("/after")));
  HttpReply next = c.read();
  EXPECT_EQ(next.status, 200);
  EXPECT_EQ(next.body, "/after");
  EXPECT_EQ(server_->inFlight(), 0u);
}

TEST_F(HttpServerTest, SecondRespondIsIgnored) {
  startServer();
  Connection c(port_);
  ASSERT_TRUE(c.send(get("/twice")));
  EXPECT_EQ(c.read().body, "first");
  ASSERT_TRUE(c.send(get("/next")));
  EXPECT_EQ(c.read().body, "/next");
}

TEST_F(HttpServerTest, DroppedRespondClosesTheConnection) {
  startServer();
  HttpReply r = rawExchange(port_, get("/drop"), 10s);
  EXPECT_EQ(r.status, 0);
  EXPECT_TRUE(eventually([&] { return server_->inFlight() == 0; }));
  EXPECT_EQ(test::request(port_, "GET", "/ok").status, 200);
}

TEST_F(HttpServerTest, HeadGetsLengthButNoBody) {
  startServer();
  Connection c(port_);
  ASSERT_TRUE(c.send("HEAD /12345 HTTP/1.1\r\nHost: t\r\n\r\n" + get("/next")));
  std::string raw = readUntil(c.fd(), "\r\n\r\n/next", 10s);
  auto first_end = raw.find("\r\n\r\n");
  ASSERT_NE(first_end, std::string::npos);
  EXPECT_NE(raw.substr(0, first_end).find("Content-Length: 6"), std::string::npos) << raw;
  // The next response starts right after the HEAD response's header.
  EXPECT_EQ(raw.compare(first_end + 4, 8, "HTTP/1.1"), 0) << raw;
}

TEST_F(HttpServerTest, ExpectContinueGets100BeforeTheBody) {
  startServer();
  Connection c(port_);
  ASSERT_TRUE(
      c.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
             "Expect: 100-continue\r\n\r\n"));
  EXPECT_EQ(readUntil(c.fd(), "\r\n\r\n", 10s), "HTTP/1.1 100 Continue\r\n\r\n");
  ASSERT_TRUE(c.send("hello"));
  HttpReply r = c.read();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "hello");
}

TEST_F(HttpServerTest, MaxConnectionsClosesExtraConnections) {
  startServer({.max_connections = 2});
  auto a = std::make_unique<Connection>(port_);
  Connection b(port_);
  ASSERT_TRUE(a->send(get("/a")));
  ASSERT_TRUE(b.send(get("/b")));
  ASSERT_EQ(a->read().status, 200);
  ASSERT_EQ(b.read().status, 200);
  Connection extra(port_);
  EXPECT_TRUE(extra.closedByPeer(10s));
  // Freeing a slot lets the next one in.
  a.reset();
  EXPECT_TRUE(eventually([&] { return test::request(port_, "GET", "/again").status == 200; }));
}

TEST_F(HttpServerTest, StartFailsWhenTheAddressIsInUse) {
  startServer();
  ServerOptions o{.host = "127.0.0.1", .port = port_, .threads = 1};
  Server second(o, handler_);
  Status s = second.start();
  ASSERT_FALSE(s);
  EXPECT_NE(s.message().find("cannot listen on 127.0.0.1:" + std::to_string(port_)),
            std::string::npos)
      << s.message();
  // The first server is unaffected.
  EXPECT_EQ(test::request(port_, "GET", "/ok").status, 200);
}

TEST_F(HttpServerTest, StopDrainsInFlightRequestsAndRefusesNewOnes) {
  startServer();
  Connection idle(port_);
  ASSERT_TRUE(idle.send(get("/idle")));
  ASSERT_EQ(idle.read().status, 200);

  auto slow = std::async(std::launch::async, [&] {
    Connection c(port_);
    c.send(get("/slow?ms=500"));
    return c.read(20s);
  });
  ASSERT_TRUE(eventually([&] { return server_->inFlight() == 1; }));
  auto stopped = Clock::now();
  server_->stop(20s);
  EXPECT_LT(Clock::now() - stopped, 15s);

  HttpReply r = slow.get();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "/slow?ms=500");
  EXPECT_EQ(r.header("connection"), "close");
  EXPECT_TRUE(idle.closedByPeer(1s));
  EXPECT_EQ(server_->inFlight(), 0u);

  Connection late(port_);
  EXPECT_TRUE(late.fd() < 0 || !late.send(get("/late")) || late.read(2s).status == 0);
  server_->stop(1s);  // idempotent
}

TEST_F(HttpServerTest, StopWithoutDrainAbandonsSlowRequests) {
  startServer();
  Connection c(port_);
  ASSERT_TRUE(c.send(get("/slow?ms=300")));
  ASSERT_TRUE(eventually([&] { return server_->inFlight() == 1; }));
  server_.reset();  // the destructor stops at once; the late answer is dropped
  EXPECT_TRUE(c.closedByPeer(5s));
  std::this_thread::sleep_for(400ms);  // let the pool answer into the void
}

// The late answer's closure is the last thing holding the connection when the pool thread
// drops it; the handler (which owns that pool) must not be destroyed there, which would make
// the pool join its own thread.
TEST_F(HttpServerTest, HandlerReleasedWhileItsPoolStillAnswersIsDestroyedByItsOwner) {
  startServer();
  Connection c(port_);
  ASSERT_TRUE(c.send(get("/slow?ms=300")));
  ASSERT_TRUE(eventually([&] { return server_->inFlight() == 1; }));
  server_.reset();
  std::weak_ptr<TestHandler> handler = handler_;
  handler_.reset();  // waits for the pool, whose task answers into the void
  EXPECT_TRUE(handler.expired());
}

// RFC 9112 §6.3: with a Transfer-Encoding that does not end in chunked the body length is
// unknown. Framing it any other way (as no body, or by Content-Length) lets the body run as
// another request.
TEST_F(HttpServerTest, TransferEncodingNotEndingInChunkedIs400AndCloses) {
  startServer();
  const std::string smuggled = get("/smuggled");
  for (std::string te : {"identity", "xchunked", "chunked, identity", "gzip", "chunked;x=1", ""}) {
    for (bool with_length : {false, true}) {
      SCOPED_TRACE("Transfer-Encoding: " + te + (with_length ? " with Content-Length" : ""));
      Connection c(port_);
      ASSERT_TRUE(c.send(
          "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: " + te + "\r\n" +
          (with_length ? "Content-Length: " + std::to_string(smuggled.size()) + "\r\n" : "") +
          "\r\n" + smuggled));
      HttpReply r = c.read();
      expectProblem(r, 400);
      EXPECT_EQ(r.header("connection"), "close");
      EXPECT_TRUE(c.closedByPeer(5s));
    }
  }
  EXPECT_EQ(handler_->calls.load(), 0);
}

TEST_F(HttpServerTest, OtherTransferCodingsAndHttp10ChunkingAreRefused) {
  startServer();
  const std::string body = "3\r\nabc\r\n0\r\n\r\n";
  HttpReply gzip = rawExchange(
      port_, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" + body);
  expectProblem(gzip, 501);
  // Two field lines are one list.
  expectProblem(rawExchange(port_,
                            "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n"
                            "Transfer-Encoding: chunked\r\n\r\n" +
                                body),
                501);
  HttpReply old =
      rawExchange(port_, "POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n" + body);
  expectProblem(old, 400);
  EXPECT_EQ(detailOf(old), "Transfer-Encoding is not allowed in HTTP/1.0");
  // Transfer-Encoding with Content-Length, in either order.
  expectProblem(rawExchange(port_,
                            "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                            "Content-Length: 3\r\n\r\nabc"),
                400);
  expectProblem(rawExchange(port_,
                            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
                            "Transfer-Encoding: chunked\r\n\r\nabc"),
                400);
  EXPECT_EQ(handler_->calls.load(), 0);
  // Chunked alone, in any case, is served.
  EXPECT_EQ(
      rawExchange(port_,
                  "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: Chunked\r\n\r\n" + body)
          .body,
      "abc");
}

TEST_F(HttpServerTest, Http11NeedsExactlyOneValidHost) {
  startServer();
  HttpReply missing = rawExchange(port_, "GET /x HTTP/1.1\r\n\r\n");
  expectProblem(missing, 400);
  EXPECT_EQ(detailOf(missing), "an HTTP/1.1 request needs a Host field");
  expectProblem(rawExchange(port_, "GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
  expectProblem(rawExchange(port_, "GET /x HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n"), 400);
  expectProblem(rawExchange(port_, "GET /x HTTP/1.1\r\nHost: a/b\r\n\r\n"), 400);
  expectProblem(rawExchange(port_, "GET /x HTTP/1.1\r\nHost: u@a\r\n\r\n"), 400);
  EXPECT_EQ(handler_->calls.load(), 0);
  EXPECT_EQ(rawExchange(port_, "GET /x HTTP/1.0\r\n\r\n").status, 200);  // 1.0 may omit it
  EXPECT_EQ(rawExchange(port_, "GET /x HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n").status, 200);
  EXPECT_EQ(rawExchange(port_, "GET /x HTTP/1.1\r\nHost:\r\n\r\n").status, 200);  // §3.2
}

TEST_F(HttpServerTest, SpaceInTheTargetIs400Not505) {
  startServer();
  HttpReply r = rawExchange(port_, "GET /a b HTTP/1.1\r\nHost: t\r\n\r\n");
  expectProblem(r, 400);
  expectProblem(rawExchange(port_, "GET /a%20b HTTP/2.0\r\nHost: t\r\n\r\n"), 505);
  EXPECT_EQ(handler_->calls.load(), 0);
}

// RFC 9112 §3.2.2: an origin server must accept absolute-form, and its authority wins over
// the Host field.
TEST_F(HttpServerTest, AbsoluteFormTargetsAreServedAsOriginForm) {
  startServer();
  HttpReply r =
      rawExchange(port_, "GET http://example.com:8080/abs/p?x=1 HTTP/1.1\r\nHost: other\r\n\r\n");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "/abs/p?x=1");
  EXPECT_EQ(
      rawExchange(port_, "GET HTTPS://example.com/header?name=host HTTP/1.1\r\nHost: other\r\n\r\n")
          .body,
      "example.com");
  EXPECT_EQ(rawExchange(port_, "GET http://example.com HTTP/1.1\r\nHost: x\r\n\r\n").body, "/");
  EXPECT_EQ(rawExchange(port_, "GET http://example.com?q HTTP/1.1\r\nHost: x\r\n\r\n").body, "/?q");
  for (std::string bad : {"ftp://example.com/", "http://user@example.com/", "http:///p",
                          "example.com/p", "http:example.com/p"}) {
    SCOPED_TRACE(bad);
    expectProblem(rawExchange(port_, "GET " + bad + " HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
  }
  // Still HTTP/1.1: the Host field is required even when the target names the host.
  expectProblem(rawExchange(port_, "GET http://example.com/ HTTP/1.1\r\n\r\n"), 400);
}

TEST_F(HttpServerTest, ChunkedTrailerFieldsNeverJoinTheHeader) {
  startServer();
  auto with_trailer = [&](const std::string& name, const std::string& header) {
    return rawExchange(port_, "POST /header?name=" + name +
                                  " HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n" +
                                  header + "\r\n3\r\nabc\r\n0\r\nX-Trailer: injected\r\n" +
                                  "Authorization: Bearer stolen\r\n\r\n");
  };
  EXPECT_EQ(with_trailer("x-trailer", "").body, "(none)");
  EXPECT_EQ(with_trailer("authorization", "").body, "(none)");
  EXPECT_EQ(with_trailer("authorization", "Authorization: Bearer real\r\n").body, "Bearer real");
}

TEST_F(HttpServerTest, TwoAuthorizationFieldsAre400) {
  startServer();
  HttpReply r = rawExchange(port_,
                            "GET /x HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer a\r\n"
                            "Authorization: Bearer b\r\n\r\n");
  expectProblem(r, 400);
  EXPECT_EQ(detailOf(r), "more than one Authorization field");
  EXPECT_EQ(handler_->calls.load(), 0);
}

// Each is read one way by some proxies and another way by others.
TEST_F(HttpServerTest, ObsoleteLineFoldingAndRepeatedContentLengthAre400) {
  startServer();
  HttpReply fold = rawExchange(
      port_, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n");
  expectProblem(fold, 400);
  EXPECT_EQ(detailOf(fold),
            "obsolete line folding (a field line starting with whitespace) is not accepted");
  expectProblem(rawExchange(port_, "GET /x HTTP/1.1\r\nHost: t\r\nX-A: a\r\n\tb\r\n\r\n"), 400);
  expectProblem(rawExchange(port_, "GET /x HTTP/1.1\r\n Host: t\r\n\r\n"), 400);
  for (std::string lengths :
       {"Content-Length: 3\r\nContent-Length: 3\r\n", "Content-Length: 3, 3\r\n"}) {
    HttpReply r = rawExchange(port_, "POST /echo HTTP/1.1\r\nHost: t\r\n" + lengths + "\r\nabc");
    expectProblem(r, 400);
    EXPECT_EQ(detailOf(r), "more than one Content-Length value");
  }
  EXPECT_EQ(handler_->calls.load(), 0);
}

// The handler's screen answers on the header alone: the body is never awaited, never
// buffered, and no `100 Continue` invites it.
TEST_F(HttpServerTest, ScreenRefusesBeforeTheBodyIsRead) {
  startServer();
  Connection c(port_);
  ASSERT_TRUE(
      c.send("POST /echo HTTP/1.1\r\nHost: t\r\nX-Screen: refuse\r\n"
             "Expect: 100-continue\r\nContent-Length: 100000\r\n\r\n"));
  HttpReply r = c.read(5s);
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.body, "refused");
  EXPECT_EQ(r.header("connection"), "close");
  EXPECT_TRUE(c.closedByPeer(5s));
  EXPECT_EQ(handler_->calls.load(), 0);
}

TEST_F(HttpServerTest, ScreenSeesTheHeaderBeforeAnyBodyByte) {
  startServer();
  // Header and body in one write: the parser still stops after the header.
  EXPECT_EQ(
      rawExchange(port_, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello").body,
      "hello");
  EXPECT_EQ(handler_->screens.load(), 1);
  EXPECT_EQ(handler_->screened_body_size.load(), 0u);
  // A request without a body goes straight to the handler.
  EXPECT_EQ(test::request(port_, "GET", "/plain").status, 200);
  EXPECT_EQ(handler_->screens.load(), 1);
}

TEST_F(HttpServerTest, DeclaredBodyOverTheLimitGets413Not100Continue) {
  startServer({.max_body_bytes = 1024});
  Connection c(port_);
  ASSERT_TRUE(
      c.send("POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
             "Content-Length: 4096\r\n\r\n"));
  expectProblem(c.read(5s), 413);
  EXPECT_TRUE(c.closedByPeer(5s));
}

TEST(RequestIdTest, IdsAre128RandomBitsInHex) {
  constexpr int kIds = 2000;
  std::set<std::string> seen;
  std::array<int, 128> ones{};
  for (int i = 0; i < kIds; ++i) {
    std::string id = newRequestId();
    ASSERT_EQ(id.size(), 32u);
    ASSERT_EQ(id.find_first_not_of("0123456789abcdef"), std::string::npos) << id;
    seen.insert(id);
    for (size_t bit = 0; bit < 128; ++bit) {
      int nibble = id[bit / 4] <= '9' ? id[bit / 4] - '0' : id[bit / 4] - 'a' + 10;
      ones[bit] += (nibble >> (3 - bit % 4)) & 1;
    }
  }
  EXPECT_EQ(seen.size(), static_cast<size_t>(kIds));
  // A counter (or a counter run through a public bijection) would leave bits stuck or
  // skewed; random bits are set about half the time (outside 40-60% has odds below 1e-18).
  for (size_t bit = 0; bit < 128; ++bit) {
    EXPECT_GT(ones[bit], kIds * 4 / 10) << "bit " << bit;
    EXPECT_LT(ones[bit], kIds * 6 / 10) << "bit " << bit;
  }
}

TEST(ProblemTest, BuildsRfc9457Json) {
  Request req{bhttp::verb::get, "/things/1?token=secret", 11};
  Response res = problem(404, "Not Found", "no \"thing\"\n\x01 here \xff",
                         {{"quota", "rate"}, {"limit", "10", true}, {"type", "urn:x"}}, &req);
  EXPECT_EQ(res.result_int(), 404u);
  EXPECT_EQ(res[bhttp::field::content_type], "application/problem+json");
  EXPECT_EQ(res[bhttp::field::content_length], std::to_string(res.body().size()));
  EXPECT_TRUE(res.keep_alive());
  Poco::JSON::Parser parser;
  auto obj = parser.parse(res.body()).extract<Poco::JSON::Object::Ptr>();
  EXPECT_EQ(obj->getValue<std::string>("type"), "urn:x");
  EXPECT_EQ(obj->getValue<int>("status"), 404);
  EXPECT_EQ(obj->getValue<std::string>("title"), "Not Found");
  EXPECT_EQ(obj->getValue<std::string>("detail"), "no \"thing\"\n\x01 here \xEF\xBF\xBD");
  EXPECT_EQ(obj->getValue<std::string>("instance"), "/things/1");
  EXPECT_EQ(obj->getValue<std::string>("quota"), "rate");
  EXPECT_EQ(obj->getValue<int>("limit"), 10);

  Response bare = problem(503, "Service Unavailable", "busy");
  EXPECT_EQ(bare.body(), R"({"type":"about:blank","title":"Service Unavailable","status":503,)"
                         R"("detail":"busy"})");
}

TEST(ProblemTest, JsonStringEscaping) {
  std::string out;
  kernel::util::appendJsonString(out, "a\"b\\c\td\x7f\xc3\xa9\xed\xa0\x80");
  EXPECT_EQ(out, "\"a\\\"b\\\\c\\td\\u007f\xc3\xa9\\ufffd\\ufffd\\ufffd\"");
  out.clear();
  kernel::util::appendJsonString(out, "");
  kernel::util::appendJsonString(out, "/hello/{name}");
  kernel::util::appendJsonString(out, std::string_view("ends\0", 5));
  EXPECT_EQ(out, "\"\"\"/hello/{name}\"\"ends\\u0000\"");
}

}  // namespace
}  // namespace trellis::kernel::http
