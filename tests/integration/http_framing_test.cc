// Differential framing test: Debian's nginx as a reverse proxy in front of a real trellisd,
// and the same bytes sent to a second trellisd directly. The corpus of ambiguous requests
// (http_framing_corpus.txt) is data; each case is followed by a well-formed canary request,
// so a parser that ends a request early or late answers a different sequence.
//
// What must hold for every case:
// 1. Where both accept the i-th request, they saw the same request (method, target, tenant,
//    body): they agree on where it ended.
// 2. Neither answers a request the other still waits to complete (a disagreement about the
//    length), and trellisd never frames past a request nginx refused as malformed.
// 3. Through the proxy, each answer from trellisd belongs to a request nginx forwarded (the
//    X-Proxy-Id nginx sent upstream is the one it returns), and every request trellisd's
//    access log shows is one nginx logged as forwarded.
// 4. trellisd answers as the corpus says (its expected status sequence).
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <chrono>
#include <cstring>
#include <fstream>
#include <future>
#include <iostream>
#include <limits>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/nginx_server.h"
#include "support/test_support.h"

namespace trellis::test {
namespace {

namespace bhttp = boost::beast::http;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr const char* kAuth = "Authorization: Bearer acme-key\r\n";
constexpr const char* kCanary =
    "GET /echo/canary HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer acme-key\r\n\r\n";

struct Case {
  std::string name;
  std::string expected;  // trellisd's statuses, direct, canary included: "200 200", "400"
  std::string bytes;
  // Why nginx may refuse what trellisd serves here (RFC-valid input nginx is stricter on);
  // empty: trellisd must not frame past a request nginx refused.
  std::string nginx_stricter;
};

// "\r\n\t\\\xHH" escapes; @AUTH@ is a valid tenant key's Authorization line.
std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s.compare(i, 6, "@AUTH@") == 0) {
      out += kAuth;
      i += 5;
    } else if (s[i] != '\\' || i + 1 == s.size()) {
      out += s[i];
    } else {
      char c = s[++i];
      if (c == 'r')
        out += '\r';
      else if (c == 'n')
        out += '\n';
      else if (c == 't')
        out += '\t';
      else if (c == 'x' && i + 2 < s.size()) {
        out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
        i += 2;
      } else {
        out += c;
      }
    }
  }
  return out;
}

// One case a line: "name <TAB> expected statuses <TAB> bytes [<TAB> why nginx is stricter]";
// '#' starts a comment line.
std::vector<Case> loadCorpus() {
  std::ifstream in(std::string(TRELLIS_SOURCE_DIR) + "/tests/integration/http_framing_corpus.txt");
  std::vector<Case> cases;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    size_t a = line.find('\t'), b = line.find('\t', a + 1);
    if (a == std::string::npos || b == std::string::npos) {
      ADD_FAILURE() << "corpus line without two tabs: " << line;
      continue;
    }
    size_t c = line.find('\t', b + 1);
    cases.push_back({line.substr(0, a), line.substr(a + 1, b - a - 1),
                     unescape(line.substr(b + 1, c == std::string::npos ? c : c - b - 1)),
                     c == std::string::npos ? "" : line.substr(c + 1)});
  }
  return cases;
}

// What a client saw for one request.
struct Reply {
  int status = 0;
  std::string identity;      // "200 POST /echo/a?q tenant=acme body=abc" or "404"
  std::string proxy_id;      // the X-Proxy-Id header nginx added to its answer
  std::string echoed_proxy;  // the X-Proxy-Id the request arrived with at trellisd (echo)
  bool echoed = false;
};

struct Outcome {
  std::vector<Reply> replies;
  bool closed = false;  // by the server; otherwise it still waited for bytes when we gave up
  std::string raw;
};

bool isFramingRefusal(int status) {
  return status == 400 || status == 408 || status == 411 || status == 413 || status == 414 ||
         status == 431 || status == 501 || status == 505;
}

Reply describe(const bhttp::response<bhttp::string_body>& res) {
  Reply r;
  r.status = static_cast<int>(res.result_int());
  r.identity = std::to_string(r.status);
  r.proxy_id = std::string(res["X-Proxy-Id"]);
  if (res[bhttp::field::content_type] != "application/json") return r;
  try {
    auto o = Poco::JSON::Parser().parse(res.body()).extract<Poco::JSON::Object::Ptr>();
    if (!o->has("method")) return r;
    r.echoed = true;
    r.identity += " " + o->getValue<std::string>("method") + " " +
                  o->getValue<std::string>("path") + "?" + o->getValue<std::string>("query") +
                  " tenant=" + o->getValue<std::string>("tenant") +
                  " body=" + o->getValue<std::string>("body");
    auto headers = o->getArray("headers");
    for (size_t i = 0; headers && i < headers->size(); ++i) {
      auto pair = headers->getArray(static_cast<unsigned>(i));
      if (pair->getElement<std::string>(0) == "X-Proxy-Id") {
        r.echoed_proxy = pair->getElement<std::string>(1);
      }
    }
  } catch (const std::exception&) {
  }
  return r;
}

// Sends `bytes` and the canary, then reads answers until the canary's, a close, or a second
// of silence.
Outcome exchange(uint16_t port, const std::string& bytes) {
  Outcome out;
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    out.closed = true;
    return out;
  }
  std::string all = bytes + kCanary;
  ssize_t sent = ::send(fd, all.data(), all.size(), MSG_NOSIGNAL);
  (void)sent;  // a server may close before reading everything

  boost::beast::flat_buffer buf;
  std::optional<bhttp::response_parser<bhttp::string_body>> parser;
  parser.emplace();
  parser->body_limit(std::numeric_limits<std::uint64_t>::max());
  auto idle_since = Clock::now();
  auto started = Clock::now();
  bool canary = false;
  while (!canary && Clock::now() - idle_since < 1s && Clock::now() - started < 8s) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    char chunk[8192];
    ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) {
      out.closed = true;
      boost::system::error_code ec;
      if (parser->got_some() && !parser->is_done()) parser->put_eof(ec);
      if (parser->is_done()) out.replies.push_back(describe(parser->get()));
      break;
    }
    idle_since = Clock::now();
    out.raw.append(chunk, static_cast<size_t>(n));
    auto b = buf.prepare(static_cast<size_t>(n));
    std::memcpy(b.data(), chunk, static_cast<size_t>(n));
    buf.commit(static_cast<size_t>(n));
    while (buf.size() > 0) {
      boost::system::error_code ec;
      size_t used = parser->put(buf.data(), ec);
      buf.consume(used);
      if (ec == bhttp::error::need_more) break;
      if (ec) {
        out.replies.push_back(Reply{-1, "unparsable answer: " + ec.message()});
        buf.consume(buf.size());
        break;
      }
      if (!parser->is_done()) continue;
      if (parser->get().result_int() >= 200) {  // 100 Continue is not an answer
        Reply r = describe(parser->get());
        canary = canary || r.identity.find(" /echo/canary?") != std::string::npos;
        out.replies.push_back(std::move(r));
      }
      parser.emplace();
      parser->body_limit(std::numeric_limits<std::uint64_t>::max());
    }
  }
  ::close(fd);
  return out;
}

std::string summary(const Outcome& o) {
  std::string s;
  for (const auto& r : o.replies) s += (s.empty() ? "" : " | ") + r.identity;
  return "[" + s + "] " + (o.closed ? "closed" : "still open");
}

std::string statuses(const Outcome& o) {
  std::string s;
  for (const auto& r : o.replies) s += (s.empty() ? "" : " ") + std::to_string(r.status);
  return s;
}

// Invariants 1 and 2; an empty string when the two agree.
std::string disagreement(const Outcome& direct, const Outcome& proxied, bool nginx_stricter) {
  const auto& d = direct.replies;
  const auto& p = proxied.replies;
  for (size_t i = 0; i < std::max(d.size(), p.size()); ++i) {
    const Reply* a = i < d.size() ? &d[i] : nullptr;
    const Reply* b = i < p.size() ? &p[i] : nullptr;
    auto accepted = [](const Reply* r) { return r && !isFramingRefusal(r->status); };
    if (accepted(a) && accepted(b)) {
      if (a->identity != b->identity) {
        return "request " + std::to_string(i) + " differs: trellisd saw '" + a->identity +
               "', nginx forwarded '" + b->identity + "'";
      }
      continue;
    }
    // One side refused request i or stopped answering: nothing after it is comparable, but
    // the other side must not have framed past it...
    if (a && !accepted(a) && i + 1 < d.size()) {
      return "trellisd answered after refusing request " + std::to_string(i);
    }
    if (!nginx_stricter && accepted(a) && i + 1 < d.size() && accepted(&d[i + 1]) &&
        (!b || !accepted(b))) {
      return "trellisd framed past request " + std::to_string(i) + ", which nginx " +
             (b ? "refused (" + std::to_string(b->status) + ")" : "never completed");
    }
    // ... and a side still waiting for request i's bytes disagrees with one that answered.
    if (accepted(a) && !b && !proxied.closed) {
      return "trellisd answered request " + std::to_string(i) + ", nginx still waits for it";
    }
    if (accepted(b) && !a && !direct.closed) {
      return "nginx answered request " + std::to_string(i) + ", trellisd still waits for it";
    }
    break;
  }
  return "";
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) {
    if (!l.empty()) out.push_back(l);
  }
  return out;
}

// Waits until `file` stops growing (the access logs are written asynchronously).
std::string settledLog(const std::filesystem::path& file) {
  std::string last = "-";
  for (int i = 0; i < 50; ++i) {
    std::string now = std::filesystem::exists(file) ? readFile(file) : "";
    if (now == last) return now;
    last = now;
    std::this_thread::sleep_for(200ms);
  }
  return last;
}

TEST(HttpFramingTest, TrellisdAndNginxAgreeWhereEveryRequestEnds) {
  std::vector<Case> corpus = loadCorpus();
  ASSERT_GE(corpus.size(), 40u) << "the corpus went missing";

  TrellisdProcess direct(defaultTestConfig());
  ASSERT_TRUE(direct.start()) << direct.log();
  TrellisdProcess upstream(defaultTestConfig());
  ASSERT_TRUE(upstream.start()) << upstream.log();
  NginxServer nginx(upstream.port());
  ASSERT_TRUE(nginx.start()) << nginx.error();
  std::cout << "peer: " << nginx.version() << " in front of trellisd\n";

  // All cases at once: each waits up to a second of silence when a side wants more bytes.
  std::vector<std::future<std::pair<Outcome, Outcome>>> runs;
  for (const Case& c : corpus) {
    runs.push_back(std::async(std::launch::async, [&c, &direct, &nginx] {
      auto d = std::async(std::launch::async, [&] { return exchange(direct.port(), c.bytes); });
      Outcome p = exchange(nginx.port(), c.bytes);
      return std::make_pair(d.get(), std::move(p));
    }));
  }
  for (size_t i = 0; i < corpus.size(); ++i) {
    const Case& c = corpus[i];
    auto [d, p] = runs[i].get();
    SCOPED_TRACE(c.name + "\n  trellisd: " + summary(d) + "\n  nginx:    " + summary(p));
    std::cout << c.name << "\n  trellisd: " << summary(d) << "\n  nginx:    " << summary(p) << "\n";
    EXPECT_EQ(disagreement(d, p, !c.nginx_stricter.empty()), "");
    EXPECT_EQ(statuses(d), c.expected);
    for (const Reply& r : p.replies) {
      if (r.echoed) {
        EXPECT_EQ(r.echoed_proxy, r.proxy_id) << "answer to a request nginx did not send";
      }
    }
  }

  // Invariant 3 from the logs: every request trellisd served behind nginx, nginx forwarded.
  std::set<std::string> forwarded;  // trellisd's X-Request-Id of each answer nginx received
  for (const std::string& l : lines(settledLog(nginx.accessLog()))) {
    std::istringstream f(l);
    std::string proxy_id, status, upstream_status, request_id;
    f >> proxy_id >> status >> upstream_status >> request_id;
    if (request_id != "-" && !request_id.empty()) forwarded.insert(request_id);
  }
  size_t served = 0;
  for (const std::string& l : lines(settledLog(upstream.dir() / "access.log"))) {
    auto at = l.find("\"id\":\"");
    ASSERT_NE(at, std::string::npos) << l;
    std::string id = l.substr(at + 6, l.find('"', at + 6) - at - 6);
    EXPECT_TRUE(forwarded.count(id)) << "trellisd served a request nginx did not forward: " << l;
    ++served;
  }
  EXPECT_GE(served, corpus.size() / 2) << "too few requests reached trellisd to mean anything";
}

}  // namespace
}  // namespace trellis::test
