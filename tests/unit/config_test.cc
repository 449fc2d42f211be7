#include "trellis/kernel/config/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <regex>
#include <set>

#include "runtime/plugin_instance.h"
#include "support/test_support.h"
#include "trellis/tenants/identity.h"

namespace trellis::kernel::config {
namespace {

using test::TempDir;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

const fs::path kBase = "/etc/trellis";

Config parse(const std::string& yaml) {
  return Config::parse(yaml, kBase);
}

// The ConfigError message for `yaml`, or "" if it parsed.
std::string errorOf(const std::string& yaml) {
  try {
    parse(yaml);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(ConfigTest, EmptyConfigMeansDefaults) {
  for (const char* text : {"", "\n", "# only a comment\n", "~\n"}) {
    Config c = parse(text);
    EXPECT_EQ(c.server.listen.host, "127.0.0.1");
    EXPECT_EQ(c.server.listen.port, 8080);
    EXPECT_EQ(c.server.threads, 0u);
    EXPECT_EQ(c.server.max_header_bytes, 16384u);
    EXPECT_EQ(c.server.max_body_bytes, 1048576u);
    EXPECT_EQ(c.server.read_timeout.count(), 10000);
    EXPECT_EQ(c.server.idle_timeout.count(), 60000);
    EXPECT_EQ(c.server.drain_timeout.count(), 10000);
    EXPECT_EQ(c.server.blocking_threads, 8u);
    EXPECT_EQ(c.server.blocking_queue, 1024u);
    EXPECT_EQ(c.server.max_connections, 10000u);
    EXPECT_TRUE(c.server.seal_key_file.empty());
    EXPECT_EQ(c.admin.listen.host, "127.0.0.1");
    EXPECT_EQ(c.admin.listen.port, 8081);
    EXPECT_EQ(c.data_dir, fs::path("/etc/var/data"));
    EXPECT_EQ(c.admin.token_file, fs::path("/etc/var/admin.token"));
    EXPECT_EQ(c.log_level, "info");
    EXPECT_EQ(c.access_log, "stdout");
    EXPECT_TRUE(c.plugin_dirs.empty());
    EXPECT_TRUE(c.plugins.empty());
    EXPECT_TRUE(c.tenants.empty());
    EXPECT_TRUE(c.file.empty());
  }
}

TEST(ConfigTest, EmptySectionsMeanDefaults) {
  Config c = parse("server:\nadmin:\nstorage:\nlog:\nplugins:\n  dirs:\n  enabled:\ntenants:\n");
  EXPECT_EQ(c.server.listen.port, 8080);
  EXPECT_TRUE(c.plugins.empty());
  EXPECT_TRUE(c.tenants.empty());
}

TEST(ConfigTest, ReadsEverySetting) {
  Config c = parse(R"(
server:
  listen: 0.0.0.0:9000
  threads: 4
  max_header_bytes: 8192
  max_body_bytes: 2048
  read_timeout_ms: 1500
  idle_timeout_ms: 2500
  drain_timeout_ms: 0
  blocking_threads: 3
  blocking_queue: 77
  max_connections: 500
admin:
  listen: "[::1]:9001"
  token_file: /run/trellis/token
storage:
  data_dir: /var/lib/trellis
log:
  level: debug
  access_log: off
plugins:
  dirs: [/usr/lib/trellis/plugins, plugins]
  enabled:
    - id: trellis/hello
      config: {greeting: Hi}
    - id: acme-co/echo-c
tenants:
  - id: acme
    keys:
      - key: acme-key
      - sha256: BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD
  - id: globex
)");
  EXPECT_EQ(c.server.listen.host, "0.0.0.0");
  EXPECT_EQ(c.server.listen.port, 9000);
  EXPECT_EQ(c.server.threads, 4u);
  EXPECT_EQ(c.server.max_header_bytes, 8192u);
  EXPECT_EQ(c.server.max_body_bytes, 2048u);
  EXPECT_EQ(c.server.read_timeout.count(), 1500);
  EXPECT_EQ(c.server.idle_timeout.count(), 2500);
  EXPECT_EQ(c.server.drain_timeout.count(), 0);
  EXPECT_EQ(c.server.blocking_threads, 3u);
  EXPECT_EQ(c.server.blocking_queue, 77u);
  EXPECT_EQ(c.server.max_connections, 500u);
  EXPECT_EQ(c.admin.listen.host, "::1");
  EXPECT_EQ(c.admin.listen.port, 9001);
  EXPECT_EQ(c.admin.token_file, fs::path("/run/trellis/token"));
  EXPECT_EQ(c.data_dir, fs::path("/var/lib/trellis"));
  EXPECT_EQ(c.log_level, "debug");
  EXPECT_EQ(c.access_log, "off");
  EXPECT_EQ(c.plugin_dirs,
            (std::vector<fs::path>{"/usr/lib/trellis/plugins", "/etc/trellis/plugins"}));
  ASSERT_EQ(c.plugins.size(), 2u);
  EXPECT_EQ(c.plugins[0].id, "trellis/hello");
  EXPECT_EQ(c.plugins[0].config_json, R"({"greeting":"Hi"})");
  EXPECT_EQ(c.plugins[1].id, "acme-co/echo-c");
  EXPECT_EQ(c.plugins[1].config_json, "{}");
  ASSERT_EQ(c.tenants.size(), 2u);
  EXPECT_EQ(c.tenants[0].id, "acme");
  ASSERT_EQ(c.tenants[0].keys.size(), 2u);
  EXPECT_EQ(c.tenants[0].keys[0].sha256_hex, tenants::sha256Hex("acme-key"));
  EXPECT_EQ(c.tenants[0].keys[1].sha256_hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(c.tenants[1].id, "globex");
  EXPECT_TRUE(c.tenants[1].keys.empty());
}

TEST(ConfigTest, RelativePathsResolveAgainstTheConfigDirectory) {
  Config c = parse(
      "storage: {data_dir: ./state/data/}\n"
      "log: {access_log: ../log/access.log}\n"
      "plugins: {dirs: [../build/plugins]}\n");
  EXPECT_EQ(c.data_dir, fs::path("/etc/trellis/state/data/"));
  // The token defaults to a sibling of the data directory.
  EXPECT_EQ(c.admin.token_file, fs::path("/etc/trellis/state/admin.token"));
  EXPECT_EQ(c.access_log, "/etc/log/access.log");
  EXPECT_EQ(c.plugin_dirs, (std::vector<fs::path>{"/etc/build/plugins"}));

  Config t = parse("admin: {token_file: secrets/token}\nstorage: {data_dir: /srv/data}\n");
  EXPECT_EQ(t.admin.token_file, fs::path("/etc/trellis/secrets/token"));
  EXPECT_EQ(t.data_dir, fs::path("/srv/data"));
}

TEST(ConfigTest, LoadResolvesAgainstTheFileAndRecordsIt) {
  TempDir dir;
  fs::create_directories(dir / "conf");
  test::writeFile(dir / "conf" / "trellis.yaml", "storage:\n  data_dir: data\n");
  Config c = Config::load(dir / "conf" / "trellis.yaml");
  EXPECT_EQ(c.file, dir / "conf" / "trellis.yaml");
  EXPECT_EQ(c.data_dir, dir / "conf" / "data");
  EXPECT_EQ(c.admin.token_file, dir / "conf" / "admin.token");
}

TEST(ConfigTest, LoadErrorsNameTheFile) {
  TempDir dir;
  fs::path missing = dir / "nope.yaml";
  try {
    Config::load(missing);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr(missing.string()));
    EXPECT_THAT(e.what(), HasSubstr("No such file"));
  }
  test::writeFile(dir / "bad.yaml", "server:\n  threads: many\n");
  try {
    Config::load(dir / "bad.yaml");
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr((dir / "bad.yaml").string()));
    EXPECT_THAT(e.what(), HasSubstr("server.threads: expected a non-negative integer"));
  }
  EXPECT_THROW(Config::load(dir.path()), ConfigError);
}

TEST(ConfigTest, EmptyFileLoadsDefaults) {
  TempDir dir;
  test::writeFile(dir / "trellis.yaml", "");
  Config c = Config::load(dir / "trellis.yaml");
  EXPECT_EQ(c.server.listen.port, 8080);
  EXPECT_EQ(c.data_dir, (dir.path().parent_path() / "var" / "data"));
}

TEST(ConfigTest, SyntaxErrorsGiveLineAndColumn) {
  std::string e = errorOf("server:\n  listen: [oops\n");
  EXPECT_THAT(e, HasSubstr("invalid YAML at line"));
  EXPECT_THAT(e, ::testing::MatchesRegex(".*line [0-9]+, column [0-9]+.*"));
  EXPECT_THAT(errorOf("a: b: c\n"), HasSubstr("line 1, column"));
}

TEST(ConfigTest, TopLevelMustBeAMap) {
  EXPECT_THAT(errorOf("- server\n- admin\n"), HasSubstr("expected a map of sections"));
  EXPECT_THAT(errorOf("- server\n- admin\n"), HasSubstr("got a list"));
  EXPECT_THAT(errorOf("just text\n"), HasSubstr("got \"just text\""));
  EXPECT_THAT(errorOf("a: 1\n---\nb: 2\n"), HasSubstr("one YAML document"));
}

// Found by tests/fuzz/config_fuzz.cc: on these, yaml-cpp's parser yields empty documents
// forever without consuming a byte, and YAML::LoadAll never returned (trellisd hung at start,
// its memory growing).
TEST(ConfigTest, MalformedYamlThatStallsTheParserIsRefused) {
  EXPECT_EQ(errorOf(",`"), "invalid YAML at line 1, column 1: unexpected ','");
  EXPECT_THAT(errorOf(std::string(",3 \x80`\x10\xbe\xe4", 8)), HasSubstr("invalid YAML at line 1"));
  EXPECT_THAT(errorOf("server: {}\n---\n,`\n"), HasSubstr("invalid YAML at line 3, column 1"));
  EXPECT_THAT(errorOf("a: 1\n---\nb: 2\n---\n"), HasSubstr("expected one YAML document, found 3"));
}

TEST(ConfigTest, SealKeyFileIsAPathResolvedAgainstTheConfigsDirectory) {
  EXPECT_EQ(parse("server:\n  seal_key_file: keys/seal.key\n").server.seal_key_file,
            fs::path("/etc/trellis/keys/seal.key"));
  EXPECT_EQ(parse("server: {seal_key_file: /srv/seal.key}\n").server.seal_key_file,
            fs::path("/srv/seal.key"));
  // Only the path here: trellisd reads and checks the file itself when it starts.
  EXPECT_THAT(errorOf("server:\n  seal_key_file: \"\"\n"),
              HasSubstr("server.seal_key_file: expected a path"));
}

struct BadInput {
  const char* yaml;
  const char* message;
};

TEST(ConfigTest, EveryBadInputNamesItsPath) {
  const BadInput cases[] = {
      {"bogus: 1\n", "bogus: unknown key"},
      {"\"\\0ctl\\nkey\": 1\n", "\\x00ctl\\x0akey: unknown key"},  // escaped, one line
      {"server:\n  listn: 1\n", "server.listn: unknown key (expected one of: listen,"},
      {"server: [1]\n", "server: expected a map, got a list"},
      {"server:\n  threads: 1\n  threads: 2\n", "server.threads: duplicate key"},
      {"server:\n  listen: 8080\n", "server.listen: expected host:port"},
      {"server:\n  listen: 8080\n", "got \"8080\""},
      {"server:\n  listen: localhost:80\n", "server.listen: expected host:port"},
      {"server:\n  listen: \"::1:80\"\n", "server.listen: expected host:port"},
      {"server:\n  listen: 1.2.3:80\n", "server.listen: expected host:port"},
      {"server:\n  listen: 127.0.0.1:65536\n", "server.listen: expected a port from 0 to 65535"},
      {"server:\n  listen: \"127.0.0.1:\"\n", "server.listen: expected a port"},
      {"server:\n  listen: 127.0.0.1:-1\n", "server.listen: expected a port"},
      {"server:\n  listen: \"[::1]\"\n", "server.listen: expected host:port"},
      {"server:\n  listen: [127.0.0.1, 80]\n", "server.listen: expected host:port, got a list"},
      {"admin:\n  listen: \"[nope]:1\"\n", "admin.listen: expected host:port"},
      {"admin:\n  listen: 10.0.0.5:8081\n",
       "admin.listen: 10.0.0.5 is not a loopback address and admin.tls is not set"},
      {"admin:\n  listen: \"[::]:8081\"\n", "set admin.allow_plaintext: true"},
      {"admin:\n  listen: 0.0.0.0:8081\n  allow_plaintext: yes\n",
       "admin.allow_plaintext: expected true or false"},
      {"server:\n  tls:\n", "server.tls: expected a map with certificates, got null"},
      {"server:\n  tls: {client_auth: off}\n", "server.tls.certificates: required"},
      {"admin:\n  tls:\n    certificates: [{cert: a.pem}]\n",
       "admin.tls.certificates[0]: expected {cert: <file>, key: <file>}"},
      {"server:\n  max_body_bytes: big\n",
       "server.max_body_bytes: expected a positive integer, got \"big\""},
      {"server:\n  max_header_bytes: 0\n", "server.max_header_bytes: expected an integer from 1"},
      {"server:\n  threads: -1\n", "server.threads: expected a non-negative integer"},
      {"server:\n  threads: \"2\"\n", "server.threads: expected a non-negative integer (unquoted)"},
      {"server:\n  read_timeout_ms: 1.5\n", "server.read_timeout_ms: expected a positive integer"},
      {"server:\n  idle_timeout_ms: 0\n", "server.idle_timeout_ms: expected an integer from 1"},
      {"server:\n  max_connections: 0\n", "server.max_connections: expected an integer from 1"},
      {"server:\n  blocking_threads: 99999999999999999999999\n",
       "server.blocking_threads: expected a positive integer"},
      {"server:\n  blocking_queue: ~\n",
       "server.blocking_queue: expected a positive integer, got null"},
      {"admin:\n  token_file: \"\"\n", "admin.token_file: expected a path"},
      {"admin:\n  token_file: [a]\n", "admin.token_file: expected a string, got a list"},
      {"storage:\n  data_dir: {a: 1}\n", "storage.data_dir: expected a string, got a map"},
      {"storage:\n  dir: x\n", "storage.dir: unknown key"},
      {"log:\n  level: verbose\n", "log.level: expected one of trace, debug, info, warn, error"},
      {"log:\n  level: INFO\n", "log.level: expected one of"},
      {"log:\n  format: json\n", "log.format: unknown key"},
      {"plugins:\n  dirs: /x\n", "plugins.dirs: expected a list, got \"/x\""},
      {"plugins:\n  dirs: [/a, [b]]\n", "plugins.dirs[1]: expected a string"},
      {"plugins:\n  enabled:\n    - trellis/hello\n", "plugins.enabled[0]: expected a map"},
      {"plugins:\n  enabled:\n    - config: {}\n", "plugins.enabled[0].id: required"},
      {"plugins:\n  enabled:\n    - id: Trellis/Hello\n",
       "plugins.enabled[0].id: expected namespace/name"},
      {"plugins:\n  enabled:\n    - id: trellis\n",
       "plugins.enabled[0].id: expected namespace/name"},
      {"plugins:\n  enabled:\n    - id: a/b/c\n", "plugins.enabled[0].id: expected namespace/name"},
      {"plugins:\n  enabled:\n    - id: a/b\n    - id: a/b\n",
       "plugins.enabled[1].id: duplicate plugin id \"a/b\""},
      {"plugins:\n  enabled:\n    - id: a/b\n      enabled: true\n",
       "plugins.enabled[0].enabled: unknown key"},
      {"plugins:\n  enabled:\n    - id: a/b\n      config: {x: 1, x: 2}\n",
       "plugins.enabled[0].config.x: duplicate key"},
      {"plugins:\n  enabled:\n    - id: a/b\n      config: {? [1]: 2}\n",
       "plugins.enabled[0].config: map keys must be strings"},
      {"tenants: {acme: 1}\n", "tenants: expected a list, got a map"},
      {"tenants:\n  - acme\n", "tenants[0]: expected a map with id and keys"},
      {"tenants:\n  - keys: []\n", "tenants[0].id: required"},
      {"tenants:\n  - id: Acme\n", "tenants[0].id: expected [a-z0-9][a-z0-9-]{0,62}, got \"Acme\""},
      {"tenants:\n  - id: ../x\n", "tenants[0].id: expected [a-z0-9][a-z0-9-]{0,62}"},
      {"tenants:\n  - id: acme\n    name: ACME\n", "tenants[0].name: unknown key"},
      {"tenants:\n  - id: acme\n  - id: acme\n", "tenants[1].id: duplicate tenant id \"acme\""},
      {"tenants:\n  - id: acme\n    keys: [{key: a}]\n  - id: b\n    keys: [{sha256: abc}]\n",
       "tenants[1].keys[0].sha256: expected 64 hex characters"},
      {"tenants:\n  - id: acme\n    keys: [{sha256: "
       "zz7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad}]\n",
       "tenants[0].keys[0].sha256: expected 64 hex characters"},
      {"tenants:\n  - id: acme\n    keys: [{key: a, sha256: b}]\n",
       "tenants[0].keys[0]: expected exactly one of sha256 or key"},
      {"tenants:\n  - id: acme\n    keys: [{}]\n",
       "tenants[0].keys[0]: expected exactly one of sha256 or key"},
      {"tenants:\n  - id: acme\n    keys: [{token: a}]\n", "tenants[0].keys[0].token: unknown key"},
      {"tenants:\n  - id: acme\n    keys: [{key: \"\"}]\n",
       "tenants[0].keys[0].key: expected a non-empty key"},
      {"tenants:\n  - id: acme\n    keys: [secret]\n", "tenants[0].keys[0]: expected {sha256:"},
      {"tenants:\n  - id: acme\n    keys: {key: a}\n", "tenants[0].keys: expected a list"},
      {"tenants:\n  - id: acme\n    keys: [{key: k}]\n  - id: b\n    keys: [{key: x}, {key: k}]\n",
       "tenants[1].keys[1]: key already used by tenant \"acme\""},
  };
  for (const auto& c : cases) {
    EXPECT_THAT(errorOf(c.yaml), HasSubstr(c.message)) << "input:\n" << c.yaml;
  }
}

TEST(ConfigTest, AdminPlaintextOffLoopbackNeedsConsent) {
  Config c = parse("admin:\n  listen: 0.0.0.0:8081\n  allow_plaintext: true\n");
  EXPECT_TRUE(c.admin.allow_plaintext);
  EXPECT_FALSE(c.admin.tls.enabled());
  EXPECT_FALSE(parse("admin:\n  listen: 127.0.0.2:8081\n").admin.allow_plaintext);
}

TEST(ConfigTest, ListenAcceptsIPv4AndBracketedIPv6) {
  // Off loopback, plain HTTP on the admin plane needs consent (AdminPlaintextOffLoopback…).
  Config c = parse(
      "server: {listen: \"[::]:0\"}\nadmin: {listen: 10.1.2.3:65535, allow_plaintext: true}\n");
  EXPECT_EQ(c.server.listen.host, "::");
  EXPECT_EQ(c.server.listen.port, 0);
  EXPECT_EQ(c.admin.listen.host, "10.1.2.3");
  EXPECT_EQ(c.admin.listen.port, 65535);
  Config v6 = parse("server: {listen: \"[fe80::1:2]:443\"}\n");
  EXPECT_EQ(v6.server.listen.host, "fe80::1:2");
  EXPECT_EQ(v6.server.listen.port, 443);
}

std::string pluginJson(const std::string& config_yaml) {
  Config c = parse("plugins:\n  enabled:\n    - id: a/b\n      config: " + config_yaml + "\n");
  return c.plugins.at(0).config_json;
}

TEST(ConfigTest, PluginConfigBecomesJson) {
  EXPECT_EQ(pluginJson("{}"), "{}");
  EXPECT_EQ(pluginJson("~"), "{}");
  EXPECT_EQ(pluginJson("[]"), "[]");
  EXPECT_EQ(pluginJson("{b: 1, a: [1, 2.5, -3, 1e3, true, false, null, ~, x]}"),
            R"({"b":1,"a":[1,2.5,-3,1e3,true,false,null,null,"x"]})");
  // Quoted or tagged scalars stay strings; YAML-only spellings are not JSON numbers.
  EXPECT_EQ(pluginJson(R"({q: "5", t: !!str 7, s: '1.5', n: "null", b: "true"})"),
            R"({"q":"5","t":"7","s":"1.5","n":"null","b":"true"})");
  EXPECT_EQ(pluginJson("[yes, no, on, off, .5, 0x1f, .inf, .nan, 007, 1_000, +5, True, FALSE]"),
            R"(["yes","no","on","off",".5","0x1f",".inf",".nan","007","1_000",5,true,false])");
  // Escaping: quotes, backslashes, control characters; UTF-8 passes through.
  EXPECT_EQ(pluginJson(R"({"k\"ey": "a\"b\\c\nd\te\u0001f", u: "héllo €"})"),
            "{\"k\\\"ey\":\"a\\\"b\\\\c\\nd\\te\\u0001f\",\"u\":\"héllo €\"}");
  EXPECT_EQ(pluginJson("{nested: {deeper: {list: [{a: 1}, [2, [3]]]}}}"),
            R"({"nested":{"deeper":{"list":[{"a":1},[2,[3]]]}}})");
  EXPECT_EQ(pluginJson("\"just a string\""), R"("just a string")");
  EXPECT_EQ(pluginJson("12"), "12");
  EXPECT_EQ(pluginJson("{1: one, true: yes}"), R"({"1":"one","true":"yes"})");
  // Block style and multi-line strings.
  Config c = parse(
      "plugins:\n"
      "  enabled:\n"
      "    - id: a/b\n"
      "      config:\n"
      "        greeting: |\n"
      "          line one\n"
      "          line two\n"
      "        limits:\n"
      "          - 1\n"
      "          - 2\n");
  EXPECT_EQ(c.plugins[0].config_json, R"({"greeting":"line one\nline two\n","limits":[1,2]})");
}

// Found by tests/fuzz/config_fuzz.cc: the loader accepts a scalar `config:`, but the
// plugin's config reader refused it (Poco's parser takes no bare scalar at the top), so every
// config_get the plugin made failed as INTERNAL.
TEST(ConfigTest, AScalarPluginConfigReachesThePlugin) {
  const std::pair<std::string, std::string> cases[] = {{"\"just a string\"", "just a string"},
                                                       {"12", "12"},
                                                       {"true", "true"},
                                                       {"x:plugin *anchor", "x:plugin *anchor"}};
  for (const auto& [yaml, text] : cases) {
    runtime::PluginInstance plugin(plugin::Manifest{}, "/tmp", pluginJson(yaml), {});
    auto whole = plugin.config("");
    ASSERT_TRUE(whole) << yaml << ": " << whole.status().message();
    EXPECT_EQ(*whole, text);
    EXPECT_EQ(plugin.config("greeting").status().code(), StatusCode::kNotFound) << yaml;
  }
}

TEST(ConfigTest, LuaBudgetsAreSetPerPluginAndCheckedByName) {
  Config c = parse(
      "plugins:\n"
      "  enabled:\n"
      "    - id: a/lua\n"
      "      lua: {instructions: 5000, memory_bytes: 1048576, wall_ms: 20, blocking_wall_ms: 300}\n"
      "    - id: a/defaults\n");
  const LuaBudget& set = c.plugins.at(0).lua;
  EXPECT_EQ(set.instructions, 5000u);
  EXPECT_EQ(set.memory_bytes, 1048576u);
  EXPECT_EQ(set.wall, std::chrono::milliseconds(20));
  EXPECT_EQ(set.blocking_wall, std::chrono::milliseconds(300));
  const LuaBudget& defaults = c.plugins.at(1).lua;
  EXPECT_EQ(defaults.instructions, 10'000'000u);
  EXPECT_EQ(defaults.memory_bytes, 32u * 1024 * 1024);
  EXPECT_EQ(defaults.wall, std::chrono::milliseconds(100));
  EXPECT_EQ(defaults.blocking_wall, std::chrono::milliseconds(1000));

  const std::string entry = "plugins:\n  enabled:\n    - id: a/lua\n      lua: ";
  EXPECT_THAT(errorOf(entry + "{instructions: 10}\n"),
              HasSubstr("plugins.enabled[0].lua.instructions: expected an integer from 1000"));
  EXPECT_THAT(errorOf(entry + "{memory_bytes: 1024}\n"),
              HasSubstr("plugins.enabled[0].lua.memory_bytes: expected an integer from 262144"));
  EXPECT_THAT(errorOf(entry + "{wall_ms: 0}\n"),
              HasSubstr("plugins.enabled[0].lua.wall_ms: expected an integer from 1"));
  EXPECT_THAT(errorOf(entry + "{memory: 1}\n"),
              HasSubstr("plugins.enabled[0].lua.memory: unknown key (expected one of: "
                        "instructions, memory_bytes, wall_ms, blocking_wall_ms)"));
  EXPECT_THAT(errorOf(entry + "[1]\n"), HasSubstr("plugins.enabled[0].lua: expected a map"));
}

TEST(ConfigTest, ASystemPluginsEgressListIsReadAndCheckedRuleByRule) {
  Config c = parse(
      "plugins:\n"
      "  enabled:\n"
      "    - id: trellis/audit\n"
      "      system: true\n"
      "      egress: [\"tls://127.0.0.1:16514\", \"https://*.example.com\"]\n"
      "    - id: trellis/other\n"
      "      system: true\n");
  ASSERT_TRUE(c.plugins.at(0).egress);
  EXPECT_EQ(*c.plugins.at(0).egress,
            (std::vector<std::string>{"tls://127.0.0.1:16514", "https://*.example.com"}));
  EXPECT_FALSE(c.plugins.at(1).egress);  // absent: the manifest's rules alone

  const std::string entry = "plugins:\n  enabled:\n    - id: a/b\n      system: true\n";
  EXPECT_THAT(errorOf(entry + "      egress: [\"tls://logs.test\"]\n"),
              HasSubstr("plugins.enabled[0].egress[0]: egress rule \"tls://logs.test\": tcp:// "
                        "and tls:// rules need a port"));
  EXPECT_THAT(errorOf(entry + "      egress: [\"https://x\", \"udp://x:1\"]\n"),
              HasSubstr("plugins.enabled[0].egress[1]: egress rule \"udp://x:1\": scheme must be"));
  EXPECT_THAT(errorOf(entry + "      egress: tcp://x:1\n"),
              HasSubstr("plugins.enabled[0].egress: expected a list"));
  // On a plugin without system scope the list would grant nothing: refused, saying why.
  EXPECT_THAT(errorOf("plugins:\n  enabled:\n    - id: a/b\n      egress: [\"tcp://x:1\"]\n"),
              HasSubstr("plugins.enabled[0].egress: needs system: true on this plugin"));
}

TEST(ConfigTest, AnchorsAndAliasesExpand) {
  EXPECT_EQ(pluginJson("{a: &x {n: 1}, b: *x}"), R"({"a":{"n":1},"b":{"n":1}})");
}

TEST(ConfigTest, TheIntegrationTestConfigParses) {
  std::string yaml = test::defaultTestConfig();
  for (const char* placeholder : {"@DIR@", "@DATA@", "@PLUGINS@", "@FIXTURES@"}) {
    yaml = std::regex_replace(yaml, std::regex(placeholder), "/tmp/x");
  }
  Config c = parse(yaml);
  EXPECT_EQ(c.server.listen.port, 0);
  EXPECT_EQ(c.log_level, "debug");
  ASSERT_EQ(c.plugins.size(), 2u);
  EXPECT_EQ(c.plugins[0].config_json, R"({"greeting":"Hello"})");
  ASSERT_EQ(c.tenants.size(), 2u);
  EXPECT_EQ(c.tenants[1].keys.at(0).sha256_hex, tenants::sha256Hex("globex-key"));
}

TEST(ConfigTest, TheShippedDefaultConfigLoads) {
  fs::path file = fs::path(TRELLIS_SOURCE_DIR) / "config" / "trellis.yaml";
  Config c = Config::load(file);
  fs::path root = fs::absolute(TRELLIS_SOURCE_DIR).lexically_normal();
  EXPECT_EQ(c.data_dir, root / "var" / "data");
  EXPECT_EQ(c.admin.token_file, root / "var" / "admin.token");
  EXPECT_FALSE(c.tenants.empty());
}

TEST(ConfigTest, JwtIssuersAreReadWithDefaults) {
  Config c = parse(
      "egress: {ca_file: ca.pem}\n"
      "auth:\n"
      "  jwt:\n"
      "    issuers:\n"
      "      - issuer: https://idp.example.com/\n"
      "        audience: trellis\n"
      "        jwks_uri: https://idp.example.com/jwks.json\n"
      "      - issuer: https://other.example.com/\n"
      "        audience: api\n"
      "        jwks_file: keys/jwks.json\n"
      "        tenant_claim: org\n"
      "        principal_claim: email\n"
      "        clock_skew_seconds: 0\n"
      "        jwks_refresh_seconds: 60\n"
      "        jwks_min_refetch_seconds: 5\n");
  ASSERT_EQ(c.auth.jwt_issuers.size(), 2u);
  const auto& a = c.auth.jwt_issuers[0];
  EXPECT_EQ(a.issuer, "https://idp.example.com/");
  EXPECT_EQ(a.audience, "trellis");
  EXPECT_EQ(a.jwks_uri, "https://idp.example.com/jwks.json");
  EXPECT_EQ(a.ca_file, fs::path("/etc/trellis/ca.pem"));  // egress.ca_file by default
  EXPECT_EQ(a.tenant_claim, "tenant");
  EXPECT_EQ(a.principal_claim, "sub");
  EXPECT_EQ(a.clock_skew, std::chrono::seconds(60));
  EXPECT_EQ(a.jwks_refresh, std::chrono::seconds(300));
  const auto& b = c.auth.jwt_issuers[1];
  EXPECT_EQ(b.jwks_file, fs::path("/etc/trellis/keys/jwks.json"));
  EXPECT_EQ(b.tenant_claim, "org");
  EXPECT_EQ(b.principal_claim, "email");
  EXPECT_EQ(b.clock_skew, std::chrono::seconds(0));
  EXPECT_EQ(b.jwks_refresh, std::chrono::seconds(60));
  EXPECT_EQ(b.jwks_min_refetch, std::chrono::seconds(5));
  EXPECT_TRUE(parse("auth:\n").auth.jwt_issuers.empty());
}

TEST(ConfigTest, BadJwtIssuersNameTheirPath) {
  const std::string head = "auth:\n  jwt:\n    issuers:\n      - ";
  const std::string ok = "issuer: i\n        audience: a\n";
  EXPECT_THAT(errorOf("auth:\n  oidc: {}\n"), HasSubstr("auth.oidc: unknown key"));
  EXPECT_THAT(errorOf("auth:\n  jwt:\n    issuers: {}\n"),
              HasSubstr("auth.jwt.issuers: expected a list"));
  EXPECT_THAT(errorOf(head + "audience: a\n        jwks_file: k\n"),
              HasSubstr("auth.jwt.issuers[0].issuer: required"));
  EXPECT_THAT(errorOf(head + "issuer: i\n        jwks_file: k\n"),
              HasSubstr("auth.jwt.issuers[0].audience: required"));
  EXPECT_THAT(errorOf(head + ok), HasSubstr("set exactly one of jwks_uri and jwks_file"));
  EXPECT_THAT(errorOf(head + ok + "        jwks_file: k\n        jwks_uri: https://x/\n"),
              HasSubstr("set exactly one of jwks_uri and jwks_file"));
  EXPECT_THAT(errorOf(head + ok + "        jwks_uri: http://idp/jwks\n"),
              HasSubstr("jwks_uri: must be an https:// URL"));
  EXPECT_THAT(
      errorOf(head + ok + "        jwks_file: k\n        clock_skew_seconds: 301\n"),
      HasSubstr("auth.jwt.issuers[0].clock_skew_seconds: expected an integer from 0 to 300"));
  EXPECT_THAT(errorOf(head + ok + "        jwks_file: k\n        ca_file: ca.pem\n"),
              HasSubstr("ca_file: only applies with jwks_uri"));
  EXPECT_THAT(errorOf(head + ok + "        jwks_file: k\n        tenant_claim: \"\"\n"),
              HasSubstr("tenant_claim: must not be empty"));
  EXPECT_THAT(errorOf(head + ok + "        jwks_file: k\n      - " + ok + "        jwks_file: k\n"),
              HasSubstr("auth.jwt.issuers[1].issuer: issuer \"i\" is listed twice"));
}

// ---- state files (trellis config diff|apply) ------------------------------------------

std::string stateErrorOf(const std::string& yaml) {
  try {
    StateFile::parse(yaml);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(StateFileTest, ReadsPlansTenantsOverridesAndPolicies) {
  StateFile s = StateFile::parse(R"(
plans:
  - {name: pro, quotas: {requests_per_second: 50}}
tenants:
  - id: acme
    plan: pro
    plugins: [trellis/hello]
    keys: [{key: "k1"}]
    plugin_config: {trellis/hello: {greeting: "Hi", count: 5, quoted: "5"}}
policies:
  global: {name: base.lua, source: "function on_request() end"}
  tenants: {acme: {name: acme.lua, source: "x = 1"}}
)");
  ASSERT_TRUE(s.plans);
  EXPECT_EQ(s.plans->at(0).name, "pro");
  ASSERT_EQ(s.tenants.size(), 1u);
  // Plugins need not be in plugins.enabled here: the server checks what it runs.
  EXPECT_EQ(s.tenants[0].plugins.count("trellis/hello"), 1u);
  EXPECT_EQ(s.tenants[0].keys.at(0).sha256_hex, tenants::sha256Hex("k1"));
  EXPECT_EQ(s.tenants[0].plugin_config.at("trellis/hello"),
            R"({"greeting":"Hi","count":5,"quoted":"5"})");
  ASSERT_TRUE(s.policies);
  EXPECT_EQ(s.policies->at("").name, "base.lua");
  EXPECT_EQ(s.policies->at("acme").source, "x = 1");

  // Absent sections are left alone, not emptied; an empty policies block removes them all.
  StateFile bare = StateFile::parse("tenants: []\n");
  EXPECT_FALSE(bare.plans);
  EXPECT_FALSE(bare.policies);
  EXPECT_TRUE(StateFile::parse("policies: {}\n").policies->empty());
  // Without plans in the file, a tenant may name a plan the registry has.
  EXPECT_EQ(StateFile::parse("tenants: [{id: a, plan: gold}]\n").tenants[0].plan, "gold");
}

TEST(StateFileTest, RefusesGarbageNamingTheKey) {
  const std::pair<std::string, std::string> cases[] = {
      {"server: {}\n", "server: unknown key (expected one of: plans, tenants, policies)"},
      {"tenants: [{id: a, colour: red}]\n", "tenants[0].colour: unknown key"},
      {"tenants: [{id: a, plugin_config: {x/y: {a: 1}}}]\n",
       "tenants[0].plugin_config.x/y: plugin \"x/y\" is not in this tenant's plugins"},
      {"tenants: [{id: a, plugins: [x/y], plugin_config: {x/y: [1]}}]\n",
       "tenants[0].plugin_config.x/y: expected a map of overrides"},
      {"tenants: [{id: a, plugins: [nope]}]\n", "tenants[0].plugins[0]: expected namespace/name"},
      {"plans: [{name: pro}]\ntenants: [{id: a, plan: gold}]\n",
       "tenants[0].plan: unknown plan \"gold\""},
      {"policies: {global: {name: a.lua}}\n", "policies.global.source: required"},
      {"policies: {global: {file: a.lua}}\n", "policies.global.file: unknown key"},
      {"policies: {tenants: {\"Bad Id\": {name: a, source: b}}}\n",
       "policies.tenants.Bad Id: expected a tenant id"},
      {"tenants: [{id: a}, {id: a}]\n", "tenants[1].id: duplicate tenant id \"a\""},
      {"a: 1\n---\nb: 2\n", "expected one YAML document, found 2"},
      {"tenants: [", "invalid YAML at line"},
  };
  for (const auto& [yaml, message] : cases) {
    EXPECT_THAT(stateErrorOf(yaml), HasSubstr(message)) << yaml;
  }
  // trellis.yaml itself takes no plugin_config: it is the admin API's (and state files').
  EXPECT_THAT(errorOf("plugins: {enabled: [{id: x/y}]}\ntenants: [{id: a, plugins: [x/y], "
                      "plugin_config: {x/y: {}}}]\n"),
              HasSubstr("tenants[0].plugin_config: unknown key"));
}

TEST(StateFileTest, PolicyFilesAreReadRelativeToTheFile) {
  TempDir dir;
  test::writeFile(dir.path() / "policies" / "acme.lua", "-- acme\nx = \"1\"\n");
  std::string sent = StateFile::inlinePolicyFiles(R"(
tenants: [{id: acme, labels: {n: "5"}, quotas: {burst: 5}}]
policies:
  tenants: {acme: {file: policies/acme.lua}}
)",
                                                  dir.path());
  StateFile s = StateFile::parse(sent);
  EXPECT_EQ(s.policies->at("acme").name, "acme.lua");
  EXPECT_EQ(s.policies->at("acme").source, "-- acme\nx = \"1\"\n");
  // Quoted stays a string, plain stays a number, through the rewrite.
  EXPECT_EQ(s.tenants[0].labels.at("n"), "5");
  EXPECT_EQ(s.tenants[0].quotas.burst, 5u);

  test::writeFile(dir.path() / "huge.lua", std::string(1024 * 1024 + 1, '-'));
  const std::pair<std::string, std::string> refused[] = {
      {"missing.lua", "policies.global.file: cannot read "},
      {"policies", "not a regular file"},
      {"/dev/zero", "not a regular file"},
      {"huge.lua", "huge.lua is larger than 1 MiB"},
  };
  for (const auto& [file, why] : refused) {
    try {
      StateFile::inlinePolicyFiles("policies: {global: {file: \"" + file + "\"}}\n", dir.path());
      ADD_FAILURE() << "expected ConfigError for " << file;
    } catch (const ConfigError& e) {
      EXPECT_THAT(e.what(), HasSubstr(why)) << file;
    }
  }
}

// The shipped example is a state file the server scripts/run.sh starts would accept: its
// policy file is there, its plugins are the ones trellis.yaml enables, and its plans are
// trellis.yaml's (which every start applies again), so a restart keeps what it applied.
TEST(StateFileTest, TheShippedExampleMatchesTheShippedConfig) {
  const fs::path dir = fs::path(TRELLIS_SOURCE_DIR) / "config";
  StateFile state = StateFile::parse(
      StateFile::inlinePolicyFiles(test::readFile(dir / "state.example.yaml"), dir));
  Config server = Config::load(dir / "trellis.yaml");
  std::set<std::string> enabled;
  for (const auto& p : server.plugins) enabled.insert(p.id);
  for (const auto& t : state.tenants) {
    for (const auto& p : t.plugins) EXPECT_TRUE(enabled.count(p)) << t.id << " enables " << p;
  }
  ASSERT_TRUE(state.plans);
  ASSERT_EQ(state.plans->size(), server.plans.size());
  for (size_t i = 0; i < server.plans.size(); ++i) {
    EXPECT_EQ(state.plans->at(i).name, server.plans[i].name);
    EXPECT_EQ(state.plans->at(i).quotas, server.plans[i].quotas);
  }
  EXPECT_EQ(state.policies->at("acme").name, "example.lua");
}

}  // namespace
TEST(ConfigTest, StorageUrlSelectsPostgres) {
  Config sqlite = parse("");
  EXPECT_FALSE(sqlite.postgres.url);
  Config c = parse(
      "storage:\n"
      "  url: postgresql://trellis_app:s%40cret@db.internal:6432/trellis?sslmode=require\n"
      "  owner_url: postgres://trellis_owner:other@db.internal/trellis\n"
      "  pool_size: 3\n");
  ASSERT_TRUE(c.postgres.url);
  EXPECT_EQ(c.postgres.url->user, "trellis_app");
  EXPECT_EQ(c.postgres.url->password, "s@cret");
  EXPECT_EQ(c.postgres.url->host, "db.internal");
  EXPECT_EQ(c.postgres.url->port, 6432);
  EXPECT_EQ(c.postgres.url->database, "trellis");
  EXPECT_EQ(c.postgres.url->params.at("sslmode"), "require");
  EXPECT_EQ(c.postgres.url->redacted(),
            "postgresql://trellis_app:***@db.internal:6432/trellis?sslmode=require");
  ASSERT_TRUE(c.postgres.owner_url);
  EXPECT_EQ(c.postgres.owner_url->user, "trellis_owner");
  EXPECT_EQ(c.postgres.owner_url->port, 5432);
  EXPECT_EQ(c.postgres.pool_size, 3u);
  EXPECT_EQ(parse("storage: {url: \"postgresql://a@[::1]:5433/d\"}").postgres.url->endpoint(),
            "[::1]:5433");
}

TEST(ConfigTest, MalformedStorageUrlsNameTheKeyAndNeverThePassword) {
  const std::string secret = "hunter2-Secret";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"mysql://u:" + secret + "@h/d", "scheme must be postgresql://"},
      {"postgresql://h/d", "the user name is missing"},
      {"postgresql://:" + secret + "@h/d", "the user name is empty"},
      {"postgresql://u:" + secret + "@/d", "the host is missing"},
      {"postgresql://u:" + secret + "@h:0/d", "port \"0\" is not a number from 1 to 65535"},
      {"postgresql://u:" + secret + "@h:99999/d", "is not a number from 1 to 65535"},
      {"postgresql://u:" + secret + "@h:5432", "the database name is missing"},
      {"postgresql://u:" + secret + "@h:5432/", "the database name is missing"},
      {"postgresql://u:" + secret + "%zz@h/d", "the password has a bad %-escape"},
      {"postgresql://u:" + secret + "@h/d?options=-csearch_path%3Dpublic",
       "the parameter \"options\" is not supported"},
      {"postgresql://u:" + secret + "@h/d?connect_timeout=0", "connect_timeout must be"},
      {"postgresql://u:" + secret + "@h/d?sslmode=require&sslmode=disable", "given twice"},
      {"postgresql://u:" + secret + "@bad host/d", "is not a host name or address"},
      {"postgresql://u:" + secret + "@[::1/d", "no closing ']'"},
  };
  for (const auto& [url, fragment] : cases) {
    std::string err = errorOf("storage:\n  url: \"" + url + "\"\n");
    EXPECT_THAT(err, HasSubstr("storage.url: expected postgresql://user:password@host:port/"))
        << url;
    EXPECT_THAT(err, HasSubstr(fragment)) << url;
    EXPECT_EQ(err.find(secret), std::string::npos) << err;
  }
  EXPECT_THAT(errorOf("storage:\n  url: [a]\n"), HasSubstr("storage.url: expected postgresql://"));
  EXPECT_THAT(errorOf("storage:\n  owner_url: \"postgresql://o:" + secret + "@h/d\"\n"),
              HasSubstr("storage.owner_url: needs storage.url"));
  std::string same = errorOf("storage:\n  url: postgresql://app:" + secret +
                             "@h/d\n  owner_url: postgresql://app:x@h/d\n");
  EXPECT_THAT(same, HasSubstr("storage.owner_url: uses the same role \"app\" as storage.url"));
  EXPECT_EQ(same.find(secret), std::string::npos);
  EXPECT_THAT(errorOf("storage:\n  pool_size: 4\n"),
              HasSubstr("storage.pool_size: only applies with storage.url"));
  EXPECT_THAT(errorOf("storage:\n  url: postgresql://a@h/d\n  pool_size: 0\n"),
              HasSubstr("storage.pool_size: expected an integer from 1 to 1024"));
}

}  // namespace trellis::kernel::config
