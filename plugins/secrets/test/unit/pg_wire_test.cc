// The PostgreSQL client's parts without a server: the v3 frame codec on whole, split,
// truncated and garbage bytes; SCRAM-SHA-256 against RFC 7677's test vector; md5; the
// client's handshake and query loop over scripted server bytes (what a broken or hostile
// server could send); and the SQL template's quoting.
#include "database/pg_wire.h"

#include <gtest/gtest.h>

#include <deque>
#include <string>

#include "database/pg_client.h"
#include "database/scram.h"
#include "database/sql_template.h"

namespace trellis::secrets::pg {
namespace {

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}
std::string frame(char type, const std::string& body) {
  return std::string(1, type) + be32(static_cast<uint32_t>(body.size() + 4)) + body;
}
std::string auth(uint32_t code, const std::string& data = "") {
  return frame('R', be32(code) + data);
}
std::string errorFrame(const std::string& sev, const std::string& code, const std::string& msg) {
  return frame('E', "S" + sev + std::string(1, '\0') + "V" + sev + std::string(1, '\0') + "C" +
                        code + std::string(1, '\0') + "M" + msg + std::string(1, '\0') +
                        std::string(1, '\0'));
}
std::string ready() {
  return frame('Z', "I");
}
std::string complete(const std::string& tag) {
  return frame('C', tag + std::string(1, '\0'));
}

TEST(PgWireTest, StartupMessageIsProtocol3WithUserAndDatabase) {
  auto m = startupMessage("vault", "appdb");
  ASSERT_TRUE(m) << m.status().message();
  EXPECT_EQ(m->substr(0, 4), be32(static_cast<uint32_t>(m->size())));
  EXPECT_EQ(m->substr(4, 4), be32(196608));
  EXPECT_NE(m->find(std::string("user\0vault\0", 11)), std::string::npos);
  EXPECT_NE(m->find(std::string("database\0appdb\0", 15)), std::string::npos);
  EXPECT_EQ(m->back(), '\0');
  EXPECT_FALSE(startupMessage(std::string("a\0b", 3), "db"));
  EXPECT_FALSE(queryMessage(std::string("SELECT 1\0; DROP", 15)));
}

TEST(PgWireTest, ReadsFramesSplitAtAnyByte) {
  const std::string bytes = auth(0) + frame('S', std::string("a\0b\0", 4)) + ready();
  for (size_t cut = 0; cut <= bytes.size(); ++cut) {
    FrameReader r;
    std::vector<char> types;
    r.feed(bytes.substr(0, cut));
    for (auto f = r.next(); f && *f; f = r.next()) types.push_back((*f)->type);
    r.feed(bytes.substr(cut));
    for (auto f = r.next(); f && *f; f = r.next()) types.push_back((*f)->type);
    EXPECT_EQ(types, (std::vector<char>{'R', 'S', 'Z'})) << "cut at " << cut;
    EXPECT_EQ(r.buffered(), 0u);
  }
}

TEST(PgWireTest, RefusesBadLengthsAndUnknownTypes) {
  FrameReader shortLen;
  shortLen.feed("Z" + be32(3) + "I");
  auto a = shortLen.next();
  ASSERT_FALSE(a);
  EXPECT_NE(a.status().message().find("shorter than its own header"), std::string::npos);

  FrameReader huge;
  huge.feed("D" + be32(0x7fffffff));
  auto b = huge.next();
  ASSERT_FALSE(b);
  EXPECT_NE(b.status().message().find("at most 1048576"), std::string::npos);

  FrameReader http;
  http.feed("HTTP/1.1 400 Bad Request\r\n");
  EXPECT_FALSE(http.next());

  FrameReader garbage;
  garbage.feed(std::string("\x01\x00\x00\x00\x05x", 6));
  auto c = garbage.next();
  ASSERT_FALSE(c);
  EXPECT_NE(c.status().message().find("unknown message type"), std::string::npos);

  FrameReader truncated;
  truncated.feed(frame('Z', "I").substr(0, 5));
  auto d = truncated.next();
  ASSERT_TRUE(d);
  EXPECT_FALSE(*d) << "a truncated frame waits for more bytes";
}

TEST(PgWireTest, ParsesErrorsAuthRowsAndTags) {
  FrameReader r;
  r.feed(errorFrame("FATAL", "28P01", "password authentication failed for user \"vault\""));
  auto f = r.next();
  ASSERT_TRUE(f && *f);
  auto e = parseError((*f)->body);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->toString(), "FATAL 28P01: password authentication failed for user \"vault\"");
  EXPECT_FALSE(parseError("Mno terminator"));
  EXPECT_FALSE(parseError(std::string("Mmsg\0", 5)));

  auto md5 = parseAuth(be32(5) + "salt");
  ASSERT_TRUE(md5);
  EXPECT_EQ(md5->data, "salt");
  EXPECT_FALSE(parseAuth(be32(5) + "sa"));
  EXPECT_FALSE(parseAuth("\0\0"));
  auto sasl = parseAuth(be32(10) + std::string("SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0", 34));
  ASSERT_TRUE(sasl);
  EXPECT_EQ(sasl->mechanisms, (std::vector<std::string>{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"}));
  EXPECT_FALSE(parseAuth(be32(10) + "SCRAM"));

  auto row = parseDataRow(std::string("\0\2", 2) + be32(1) + "1" + be32(0xffffffff));
  ASSERT_TRUE(row);
  ASSERT_EQ(row->size(), 2u);
  EXPECT_EQ((*row)[0], "1");
  EXPECT_FALSE((*row)[1]);
  EXPECT_FALSE(parseDataRow(std::string("\0\1", 2) + be32(100) + "x"));
  EXPECT_FALSE(parseDataRow(std::string("\0\1", 2) + be32(1) + "xy"));
  EXPECT_FALSE(parseDataRow(std::string("\0\1", 2) + be32(0x80000000)));
  auto tag = parseCommandComplete(std::string("SELECT 1\0", 9));
  ASSERT_TRUE(tag);
  EXPECT_EQ(*tag, "SELECT 1");
}

// RFC 7677 section 3.
TEST(ScramTest, MatchesRfc7677TestVector) {
  ScramClient c("pencil", "user", "rOprNGfwEbeRWgbNEkqO");
  EXPECT_EQ(c.clientFirst(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
  auto final = c.clientFinal(
      "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
  ASSERT_TRUE(final) << final.status().message();
  EXPECT_EQ(*final,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
            "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
  EXPECT_TRUE(c.verifyServerFinal("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="));
  auto wrong = c.verifyServerFinal("v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
  EXPECT_EQ(wrong.code(), StatusCode::kPermissionDenied);
}

TEST(ScramTest, RefusesMalformedServerMessages) {
  const std::string ok_tail = ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
  auto refuse = [](const std::string& server_first) {
    ScramClient c("pencil", "", "abc");
    return c.clientFinal(server_first).status().message();
  };
  EXPECT_NE(refuse("r=xyz123" + ok_tail).find("nonce"), std::string::npos);
  EXPECT_NE(refuse("r=abc" + ok_tail).find("nonce"), std::string::npos) << "must extend it";
  EXPECT_NE(refuse("r=abcd,s=!!!,i=4096").find("salt"), std::string::npos);
  EXPECT_NE(refuse("r=abcd,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=99999999999").find("iteration"),
            std::string::npos);
  EXPECT_NE(refuse("r=abcd,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1").find("iteration"), std::string::npos);
  EXPECT_NE(refuse("garbage").find("malformed"), std::string::npos);
  EXPECT_NE(refuse("e=other-error").find("refused"), std::string::npos);
  ScramClient unused("pencil", "", "abc");
  EXPECT_FALSE(unused.verifyServerFinal("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="))
      << "no server signature is right before the client-final message";
}

TEST(ScramTest, Md5AnswerIsPostgresFormat) {
  // md5(md5("secret" + "alice") + salt), as libpq computes it.
  const std::string a = md5PasswordAnswer("secret", "alice", "\x01\x02\x03\x04");
  EXPECT_EQ(a.size(), 35u);
  EXPECT_EQ(a.substr(0, 3), "md5");
  EXPECT_NE(a, md5PasswordAnswer("secret", "alice", "\x01\x02\x03\x05"));
}

// The server's side of a session, scripted: each client write releases the next reply.
class ScriptedServer : public Transport {
 public:
  explicit ScriptedServer(std::deque<std::string> replies) : replies_(std::move(replies)) {}
  Status write(std::string_view bytes) override {
    written_.append(bytes);
    if (!replies_.empty()) {
      pending_ += replies_.front();
      replies_.pop_front();
    }
    return Status::ok();
  }
  Result<size_t> read(char* buf, size_t cap) override {
    if (pending_.empty()) return size_t{0};
    const size_t n = std::min(cap, pending_.size());
    pending_.copy(buf, n);
    pending_.erase(0, n);
    return n;
  }
  const std::string& written() const { return written_; }

 private:
  std::deque<std::string> replies_;
  std::string pending_;
  std::string written_;
};

TEST(PgClientTest, CleartextLoginThenQueryWithRowsAndAnError) {
  ScriptedServer server(
      {auth(3),
       auth(0) + frame('S', std::string("a\0b\0", 4)) + frame('K', be32(1) + be32(2)) + ready(),
       frame('T', std::string("\0\0", 2)) + frame('D', std::string("\0\1", 2) + be32(1) + "1") +
           complete("SELECT 1") + ready(),
       errorFrame("ERROR", "42601", "syntax error at or near \"x\"") + ready(), ""});
  PgClient pg(server);
  ASSERT_TRUE(pg.login("u", "db", "pw-123"));
  EXPECT_NE(server.written().find(std::string("pw-123\0", 7)), std::string::npos);
  auto r = pg.exec("SELECT 1");
  ASSERT_TRUE(r) << r.status().message();
  EXPECT_EQ(r->tags, std::vector<std::string>{"SELECT 1"});
  ASSERT_EQ(r->rows.size(), 1u);
  auto bad = pg.exec("x");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.status().message(), "ERROR 42601: syntax error at or near \"x\"");
  EXPECT_TRUE(pg.exec("SELECT 2").status().code() == StatusCode::kUnavailable)
      << "the scripted server closed: the client says so";
}

TEST(PgClientTest, RefusesUnsupportedAuthAndReportsAuthFailures) {
  ScriptedServer gss({auth(7)});
  PgClient a(gss);
  Status s = a.login("u", "db", "pw");
  EXPECT_EQ(s.code(), StatusCode::kUnimplemented);
  EXPECT_NE(s.message().find("authentication method 7"), std::string::npos) << s.message();

  ScriptedServer plus({auth(10, std::string("SCRAM-SHA-256-PLUS\0\0", 20))});
  PgClient b(plus);
  Status p = b.login("u", "db", "pw");
  EXPECT_NE(p.message().find("only SCRAM-SHA-256"), std::string::npos) << p.message();

  ScriptedServer denied({auth(5, "salt"), errorFrame("FATAL", "28P01",
                                                     "password authentication failed for user "
                                                     "\"u\"")});
  PgClient c(denied);
  Status d = c.login("u", "db", "hunter2-pw");
  EXPECT_EQ(d.code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(d.message().find("hunter2-pw"), std::string::npos);
  EXPECT_NE(d.message().find("28P01"), std::string::npos);

  ScriptedServer echo({auth(3), errorFrame("FATAL", "28000", "no entry for hunter2-pw")});
  PgClient h(echo);
  Status echoed = h.login("u", "db", "hunter2-pw");
  EXPECT_EQ(echoed.message(), "FATAL 28000: no entry for [redacted]")
      << "a server that echoes the password does not get it into a message";

  ScriptedServer skip({auth(10, std::string("SCRAM-SHA-256\0\0", 15)), auth(0) + ready()});
  PgClient e(skip);
  EXPECT_EQ(e.login("u", "db", "pw").code(), StatusCode::kPermissionDenied)
      << "a server that skips SCRAM's proof is refused";

  ScriptedServer garbage({std::string("\xff\xff\xff\xff\xff\xff", 6)});
  PgClient g(garbage);
  EXPECT_EQ(g.login("u", "db", "pw").code(), StatusCode::kInvalid);
}

}  // namespace
}  // namespace trellis::secrets::pg

namespace trellis::secrets::database {
namespace {

TEST(SqlTemplateTest, QuotesByContextAndNeverLetsAValueOut) {
  TemplateValues v{"v-a\"b", "p'w", "2026-01-01 00:00:00+00"};
  auto a = fillTemplate(
      "CREATE ROLE \"{{name}}\" LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';", v);
  ASSERT_TRUE(a);
  EXPECT_EQ(*a,
            "CREATE ROLE \"v-a\"\"b\" LOGIN PASSWORD 'p''w' VALID UNTIL "
            "'2026-01-01 00:00:00+00';");
  auto bare = fillTemplate("CREATE ROLE {{name}} PASSWORD {{password}}", v);
  ASSERT_TRUE(bare);
  EXPECT_EQ(*bare, "CREATE ROLE \"v-a\"\"b\" PASSWORD 'p''w'");
  EXPECT_EQ(*fillTemplate("GRANT x TO {{username}}", v), "GRANT x TO \"v-a\"\"b\"");
  EXPECT_FALSE(fillTemplate("{{nope}}", v));
  EXPECT_FALSE(fillTemplate("{{name", v));
  EXPECT_FALSE(fillTemplate("{{name}}", {std::string_view("a\0b", 3), "", ""}));
}

TEST(SqlTemplateTest, GeneratedNamesAndPasswordsAreBoundedAndPlain) {
  const std::string u = generateUsername("Acme Corp!", std::string(200, 'r'));
  EXPECT_LE(u.size(), 63u);
  EXPECT_EQ(u.rfind("v-acme_corp_-", 0), 0u) << u;
  for (char c : u)
    EXPECT_TRUE((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_');
  EXPECT_NE(generateUsername("a", "b"), generateUsername("a", "b"));
  const std::string p = generatePassword();
  EXPECT_EQ(p.size(), 36u);
  for (char c : p) EXPECT_TRUE(isalnum(static_cast<unsigned char>(c)) || c == '-');
  EXPECT_EQ(pgTimestamp(0), "1970-01-01 00:00:00+00");
  EXPECT_EQ(pgTimestamp(1'700'000'000'123), "2023-11-14 22:13:20+00");
}

}  // namespace
}  // namespace trellis::secrets::database
