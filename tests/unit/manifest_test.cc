#include "trellis/kernel/plugin/manifest.h"

#include <gtest/gtest.h>

#include <string>

#include "support/test_support.h"

namespace trellis::kernel::plugin {
namespace {

// A minimal valid native manifest.
std::string minimal() {
  return R"({"schema": 1, "id": "acme/hello", "version": "1.2.0",
             "abi": {"major": 1, "minor": 0},
             "entry": {"linux-x86_64": "libacme_hello.so"}})";
}

// The minimal manifest with one top-level field set to `json` (added or replaced).
std::string withField(const std::string& name, const std::string& json) {
  std::string fields[][2] = {{"schema", "1"},
                             {"id", "\"acme/hello\""},
                             {"version", "\"1.2.0\""},
                             {"abi", R"({"major": 1, "minor": 0})"},
                             {"entry", R"({"linux-x86_64": "libacme_hello.so"})"}};
  std::string out = "{";
  bool replaced = false;
  for (auto& [key, value] : fields) {
    if (key == name) {
      replaced = true;
      if (json.empty()) continue;  // empty: drop the field
      value = json;
    }
    if (out.size() > 1) out += ", ";
    out += "\"" + key + "\": " + value;
  }
  if (!replaced) out += ", \"" + name + "\": " + json;
  return out + "}";
}

std::string errorOf(const std::string& json) {
  auto m = Manifest::parse(json);
  if (m.isOk()) return "<accepted>";
  EXPECT_EQ(m.status().code(), StatusCode::kInvalid);
  return m.status().message();
}

TEST(ManifestTest, ParsesMinimalNativeManifest) {
  auto m = Manifest::parse(minimal());
  ASSERT_TRUE(m.isOk()) << m.status().message();
  EXPECT_EQ(m->id, "acme/hello");
  EXPECT_EQ(m->version.toString(), "1.2.0");
  EXPECT_EQ(m->runtime, "native");
  EXPECT_EQ(m->abi_major, 1);
  EXPECT_EQ(m->abi_minor, 0);
  EXPECT_FALSE(m->host.has_value());
  EXPECT_EQ(m->entry.at("linux-x86_64"), "libacme_hello.so");
  EXPECT_TRUE(m->dependencies.empty());
  EXPECT_TRUE(m->capabilities.empty());
  EXPECT_TRUE(m->files.empty());
}

TEST(ManifestTest, ParsesEveryField) {
  const std::string hash(64, 'a');
  auto m = Manifest::parse(R"({
    "schema": 1, "id": "acme/hello", "version": "1.2.0-rc.1+b7",
    "description": "Greets people", "license": "Apache-2.0", "runtime": "native",
    "abi": {"major": 1, "minor": 0}, "host": ">=0.1.0 <2",
    "entry": {"linux-x86_64": "lib/libacme_hello.so", "linux-aarch64": "arm/libacme_hello.so"},
    "dependencies": {"acme/db": "^1.0.0", "acme/cache": "~2.1"},
    "capabilities": ["kv", "events.publish", "egress"],
    "blocking_routes": ["GET /hello/{name}", "* /slow"],
    "files": {"lib/libacme_hello.so": ")" +
                           hash + R"("}
  })");
  ASSERT_TRUE(m.isOk()) << m.status().message();
  EXPECT_EQ(m->description, "Greets people");
  EXPECT_EQ(m->license, "Apache-2.0");
  EXPECT_EQ(m->version.toString(), "1.2.0-rc.1+b7");
  ASSERT_TRUE(m->host.has_value());
  EXPECT_EQ(m->host->text(), ">=0.1.0 <2");
  EXPECT_EQ(m->entry.size(), 2u);
  ASSERT_EQ(m->dependencies.size(), 2u);
  EXPECT_EQ(m->dependencies[0].id, "acme/cache");  // sorted by id
  EXPECT_EQ(m->dependencies[1].id, "acme/db");
  EXPECT_EQ(m->dependencies[1].range.text(), "^1.0.0");
  EXPECT_TRUE(m->hasCapability("kv"));
  EXPECT_TRUE(m->hasCapability("egress"));
  EXPECT_FALSE(m->hasCapability("metrics"));
  EXPECT_TRUE(m->isBlocking("GET", "/hello/{name}"));
  EXPECT_FALSE(m->isBlocking("POST", "/hello/{name}"));
  EXPECT_TRUE(m->isBlocking("DELETE", "/slow"));
  EXPECT_FALSE(m->isBlocking("GET", "/hello"));
  EXPECT_EQ(m->files.at("lib/libacme_hello.so"), hash);
}

TEST(ManifestTest, LuaRuntimeNeedsNoAbi) {
  auto m = Manifest::parse(
      R"({"schema": 1, "id": "acme/lua-hi", "version": "0.1.0", "runtime": "lua",
          "entry": {"lua": "main.lua"}})");
  ASSERT_TRUE(m.isOk()) << m.status().message();
  EXPECT_EQ(m->runtime, "lua");
  auto entry = m->entryForThisPlatform();
  ASSERT_TRUE(entry.isOk());
  EXPECT_EQ(*entry, "main.lua");
}

TEST(ManifestTest, LuaRuntimeRefusesAbiAndPlatformEntries) {
  EXPECT_EQ(errorOf(R"({"schema": 1, "id": "acme/l", "version": "0.1.0", "runtime": "lua",
                        "abi": {"major": 1, "minor": 0}, "entry": {"lua": "main.lua"}})"),
            "abi: only native plugins have an ABI (runtime is \"lua\")");
  EXPECT_EQ(errorOf(R"({"schema": 1, "id": "acme/l", "version": "0.1.0", "runtime": "lua",
                        "entry": {"linux-x86_64": "main.lua"}})"),
            "entry.\"linux-x86_64\": a lua plugin's entry has the single key \"lua\"");
}

TEST(ManifestTest, EntryForThisPlatform) {
  auto m = Manifest::parse(withField(
      "entry", "{\"" + currentPlatform() + "\": \"libmine.so\", \"plan9-mips\": \"libx.so\"}"));
  ASSERT_TRUE(m.isOk()) << m.status().message();
  EXPECT_EQ(*m->entryForThisPlatform(), "libmine.so");

  auto other = Manifest::parse(withField("entry", R"({"plan9-mips": "libx.so"})"));
  ASSERT_TRUE(other.isOk());
  auto entry = other->entryForThisPlatform();
  ASSERT_FALSE(entry.isOk());
  EXPECT_EQ(entry.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(entry.status().message(), "acme/hello has no entry for " + currentPlatform() +
                                          " (the manifest offers: plan9-mips)");
}

TEST(ManifestTest, CurrentPlatformNamesOsAndArch) {
#if defined(__linux__) && defined(__x86_64__)
  EXPECT_EQ(currentPlatform(), "linux-x86_64");
#elif defined(__linux__) && defined(__aarch64__)
  EXPECT_EQ(currentPlatform(), "linux-aarch64");
#endif
  EXPECT_NE(currentPlatform().find('-'), std::string::npos);
}

TEST(ManifestTest, ValidatesPluginIds) {
  for (const char* ok : {"acme/hello", "a/b", "0/9", "acme-corp/hello-world-2",
                         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/x"}) {
    EXPECT_TRUE(isValidPluginId(ok)) << ok;
  }
  for (const char* bad : {"", "acme", "/hello", "acme/", "Acme/hello", "acme/hello/x",
                          "-acme/hello", "acme/-hello", "acme/hel lo", "acme/hel_lo", "acme/h.i",
                          "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/x"}) {
    EXPECT_FALSE(isValidPluginId(bad)) << bad;
  }
}

TEST(ManifestTest, RefusesMalformedJson) {
  EXPECT_EQ(errorOf(R"({"schema": 1,)").rfind("not valid JSON: ", 0), 0u);
  EXPECT_EQ(errorOf(R"({"schema": 1} trailing)").rfind("not valid JSON: ", 0), 0u);
  EXPECT_EQ(errorOf(R"({'schema': 1})").rfind("not valid JSON: ", 0), 0u);
  EXPECT_EQ(errorOf(R"({"schema": 1,})").rfind("not valid JSON: ", 0), 0u);
  EXPECT_EQ(errorOf(R"({"id": "acme/x" // comment
                      })")
                .rfind("not valid JSON: ", 0),
            0u);
  EXPECT_EQ(errorOf(std::string(100, '[') + std::string(100, ']')),
            "manifest must be a JSON object ({...}), not an array");
  EXPECT_EQ(errorOf("{" + std::string(100, '[')).rfind("not valid JSON: ", 0), 0u);
}

TEST(ManifestTest, RefusesJsonThatIsNotAnObject) {
  EXPECT_EQ(errorOf("[1, 2]"), "manifest must be a JSON object ({...}), not an array");
  EXPECT_EQ(errorOf("42"), "manifest must be a JSON object ({...})");
  EXPECT_EQ(errorOf("\"acme/x\""), "manifest must be a JSON object ({...})");
  EXPECT_EQ(errorOf("null"), "manifest must be a JSON object ({...})");
  EXPECT_EQ(errorOf(""), "manifest is empty");
  EXPECT_EQ(errorOf(" \n\t"), "manifest is empty");
}

TEST(ManifestTest, RefusesHugeInput) {
  std::string huge = R"({"schema": 1, "description": ")" + std::string(1024 * 1024, 'x') + "\"}";
  EXPECT_EQ(errorOf(huge),
            "manifest is " + std::to_string(huge.size()) + " bytes; the limit is 1048576 (1 MiB)");
}

TEST(ManifestTest, RefusesUnknownAndDuplicateFields) {
  EXPECT_EQ(errorOf(withField("nmae", "\"x\"")),
            "unknown field \"nmae\" (known: schema, id, version, description, license, runtime, "
            "abi, host, entry, dependencies, capabilities, blocking_routes, files, provides, "
            "requires, egress, scope, tenant_config)");
  EXPECT_EQ(errorOf(R"({"schema": 1, "schema": 1})"), "duplicate key \"schema\"");
  EXPECT_EQ(errorOf(withField("files", R"({"a.so": "x", "a.so": "y"})")),
            "files: duplicate key \"a.so\"");
  EXPECT_EQ(errorOf(withField("abi", R"({"major": 1, "minor": 0, "patch": 0})")),
            "abi: unknown field \"patch\" (known: major, minor)");
}

TEST(ManifestTest, SchemaMustBeOne) {
  EXPECT_EQ(errorOf(withField("schema", "")),
            "schema: required but missing (this host reads schema 1)");
  EXPECT_EQ(errorOf(withField("schema", "2")),
            "schema: unsupported schema 2 (this host reads schema 1)");
  EXPECT_EQ(errorOf(withField("schema", "\"1\"")),
            "schema: expected a non-negative integer, got a string");
  EXPECT_EQ(errorOf(withField("schema", "1.0")),
            "schema: expected a non-negative integer, got a number");
}

TEST(ManifestTest, IdAndVersionAreRequiredAndChecked) {
  EXPECT_EQ(errorOf(withField("id", "")), "id: required but missing");
  EXPECT_EQ(errorOf(withField("id", "7")), "id: expected a string, got an integer");
  EXPECT_EQ(errorOf(withField("id", "\"Acme/Hello\"")),
            "id: \"Acme/Hello\" is not a valid plugin id (expected namespace/name, each part "
            "[a-z0-9][a-z0-9-]{0,62})");
  EXPECT_EQ(errorOf(withField("version", "")), "version: required but missing");
  EXPECT_EQ(errorOf(withField("version", "[1, 2, 0]")), "version: expected a string, got an array");
  EXPECT_EQ(errorOf(withField("version", "\"1.2\"")),
            "version: \"1.2\" is not a valid semantic version: expected MAJOR.MINOR.PATCH");
  EXPECT_EQ(errorOf(withField("description", "true")),
            "description: expected a string, got a boolean");
  EXPECT_EQ(errorOf(withField("license", "null")), "license: expected a string, got null");
}

TEST(ManifestTest, RuntimeAndAbi) {
  EXPECT_EQ(errorOf(withField("runtime", "\"jvm\"")),
            "runtime: unknown runtime \"jvm\" (known: native, lua)");
  EXPECT_EQ(errorOf(withField("abi", "")),
            "abi: required for native plugins, e.g. {\"major\": 1, \"minor\": 0}");
  EXPECT_EQ(errorOf(withField("abi", "1")), "abi: expected an object, got an integer");
  EXPECT_EQ(errorOf(withField("abi", R"({"major": -1, "minor": 0})")),
            "abi.major: expected a non-negative integer, got -1");
  EXPECT_EQ(errorOf(withField("abi", R"({"major": "1", "minor": 0})")),
            "abi.major: expected a non-negative integer, got a string");
  EXPECT_EQ(errorOf(withField("abi", R"({"major": 1, "minor": 1.5})")),
            "abi.minor: expected a non-negative integer, got a number");
  EXPECT_EQ(errorOf(withField("abi", R"({"major": 1})")), "abi.minor: required but missing");
  EXPECT_EQ(errorOf(withField("abi", R"({"major": 70000, "minor": 0})")),
            "abi.major: 70000 is out of range (0..65535)");
  EXPECT_EQ(errorOf(withField("abi", R"({"major": 18446744073709551615, "minor": 0})")),
            "abi.major: 18446744073709551615 is out of range (0..65535)");
  auto m = Manifest::parse(withField("abi", R"({"major": 1, "minor": 3})"));
  ASSERT_TRUE(m.isOk());
  EXPECT_EQ(m->abi_minor, 3);
}

TEST(ManifestTest, HostRange) {
  EXPECT_EQ(errorOf(withField("host", "\">=0.1 <<2\""))
                .rfind("host: \">=0.1 <<2\" is not a valid version range", 0),
            0u);
  EXPECT_EQ(errorOf(withField("host", "2")), "host: expected a string, got an integer");
}

TEST(ManifestTest, EntryValuesAreSafeRelativePaths) {
  EXPECT_EQ(errorOf(withField("entry", "")),
            "entry: required but missing, e.g. {\"linux-x86_64\": \"libx.so\"}");
  EXPECT_EQ(errorOf(withField("entry", "{}")), "entry: names no file");
  EXPECT_EQ(errorOf(withField("entry", "\"libx.so\"")), "entry: expected an object, got a string");
  EXPECT_EQ(errorOf(withField("entry", R"({"linux": "libx.so"})")),
            "entry.\"linux\": not a platform name like \"linux-x86_64\"");
  EXPECT_EQ(errorOf(withField("entry", R"({"linux-x86_64": 3})")),
            "entry.\"linux-x86_64\": expected a string, got an integer");
  // Paths as JSON text, and the reason the message must end with.
  const std::pair<const char*, const char*> unsafe[] = {
      {"../libx.so", "it contains \"..\""},
      {"lib/../../libx.so", "it contains \"..\""},
      {"/usr/lib/libx.so", "it is absolute"},
      {"C:/libx.so", "it is absolute"},
      {"lib\\\\libx.so", "it contains a backslash"},
      {"", "it is empty"},
      {"./libx.so", "it is not normalized (empty or \".\" segment)"},
      {"lib//libx.so", "it is not normalized (empty or \".\" segment)"},
      {"lib/", "it is not normalized (empty or \".\" segment)"},
      {"lib\\nx.so", "it contains a control character"},
  };
  for (const auto& [path, why] : unsafe) {
    std::string json = withField("entry", std::string(R"({"linux-x86_64": ")") + path + "\"}");
    std::string message = errorOf(json);
    EXPECT_EQ(message.rfind("entry.\"linux-x86_64\": ", 0), 0u) << message;
    EXPECT_NE(message.find("is not a safe relative path: "), std::string::npos) << message;
    EXPECT_TRUE(message.ends_with(std::string(": ") + why)) << message;
  }
  EXPECT_EQ(errorOf(withField("entry", R"({"linux-x86_64": "../libx.so"})")),
            "entry.\"linux-x86_64\": \"../libx.so\" is not a safe relative path: it contains "
            "\"..\"");
  EXPECT_EQ(errorOf(withField("entry", R"({"linux-x86_64": "/abs/libx.so"})")),
            "entry.\"linux-x86_64\": \"/abs/libx.so\" is not a safe relative path: it is absolute");
  EXPECT_EQ(errorOf(withField("entry", R"({"linux-x86_64": "lib\\libx.so"})")),
            "entry.\"linux-x86_64\": \"lib\\\\libx.so\" is not a safe relative path: it contains "
            "a backslash");
}

TEST(ManifestTest, Dependencies) {
  EXPECT_EQ(errorOf(withField("dependencies", R"({"acme/db": "^1..2"})")),
            "dependencies.\"acme/db\": \"^1..2\" is not a valid version range: \"1..2\" is not a "
            "valid version: minor is empty");
  EXPECT_EQ(errorOf(withField("dependencies", R"({"acme/db": 1})")),
            "dependencies.\"acme/db\": expected a string, got an integer");
  EXPECT_EQ(errorOf(withField("dependencies", R"({"DB": "^1.0.0"})")),
            "dependencies.\"DB\": not a valid plugin id (expected namespace/name)");
  EXPECT_EQ(errorOf(withField("dependencies", R"({"acme/hello": "^1.0.0"})")),
            "dependencies.\"acme/hello\": a plugin cannot depend on itself");
  EXPECT_EQ(errorOf(withField("dependencies", R"(["acme/db"])")),
            "dependencies: expected an object, got an array");
  EXPECT_EQ(errorOf(withField("dependencies", R"({"acme/db": ""})")),
            "dependencies.\"acme/db\": \"\" is not a valid version range: it is empty (use \"*\" "
            "for any version)");
}

TEST(ManifestTest, ProvidesAndRequiresServices) {
  auto m = Manifest::parse(withField("provides", R"([{"name": "secrets", "version": "1.2.0"}])"));
  ASSERT_TRUE(m) << m.status().message();
  ASSERT_EQ(m->provides.size(), 1u);
  EXPECT_EQ(m->provides[0].version.toString(), "1.2.0");
  auto r = Manifest::parse(
      withField("requires", R"([{"name": "kms", "range": "^1", "optional": true}])"));
  ASSERT_TRUE(r) << r.status().message();
  EXPECT_TRUE(r->required_services[0].optional);
  EXPECT_TRUE(r->required_services[0].range.contains(*Version::parse("1.9.0")));

  EXPECT_EQ(errorOf(withField("provides", R"([{"name": "Secrets", "version": "1.0.0"}])")),
            "provides[0].name: \"Secrets\" is not a valid service name (1-64 of a-z 0-9 . -, "
            "starting with a letter)");
  EXPECT_EQ(errorOf(withField("provides", R"([{"name": "secrets"}])")),
            "provides[0]: missing \"version\"");
  EXPECT_EQ(errorOf(withField("provides", R"([{"name": "a", "version": "1.0.0", "x": 1}])")),
            "provides[0]: unknown field \"x\" (known: name, version)");
  EXPECT_EQ(errorOf(withField("provides", R"([{"name": "a", "version": "1.0.0"},
                                              {"name": "a", "version": "2.0.0"}])")),
            "provides[1]: service \"a\" twice");
  EXPECT_TRUE(errorOf(withField("provides", R"([{"name": "a", "version": "one"}])"))
                  .starts_with("provides[0].version: "));
  EXPECT_TRUE(errorOf(withField("requires", R"([{"name": "kms", "range": "^^1"}])"))
                  .starts_with("requires[0].range: "));
  EXPECT_EQ(errorOf(withField("requires", R"([{"name": "kms", "range": "^1", "optional": 1}])")),
            "requires[0].optional: expected true or false");
  EXPECT_EQ(errorOf(withField("requires", R"({"name": "kms"})")),
            "requires: expected an array, got an object");
}

TEST(ManifestTest, Capabilities) {
  EXPECT_EQ(errorOf(withField("capabilities", R"(["kv", "metrics", "kvv"])")),
            "capabilities[2]: unknown capability \"kvv\" (known: kv, events.publish, "
            "events.subscribe, metrics, egress, tenant.read, tenant.keys, jobs, blobs, "
            "usage.emit, script, seal, service:<name>)");
  EXPECT_TRUE(Manifest::parse(withField("capabilities", R"(["jobs", "service:secrets"])")));
  EXPECT_EQ(errorOf(withField("capabilities", R"(["service:Bad Name"])")),
            "capabilities[0]: unknown capability \"service:Bad Name\" (known: kv, "
            "events.publish, events.subscribe, metrics, egress, tenant.read, tenant.keys, jobs, "
            "blobs, usage.emit, script, seal, service:<name>)");
  EXPECT_EQ(errorOf(withField("capabilities", R"(["kv", 1])")),
            "capabilities[1]: expected a string, got an integer");
  EXPECT_EQ(errorOf(withField("capabilities", R"(["kv", "kv"])")),
            "capabilities[1]: duplicate capability \"kv\"");
  EXPECT_EQ(errorOf(withField("capabilities", R"("kv")")),
            "capabilities: expected an array, got a string");
}

TEST(ManifestTest, BlockingRoutes) {
  for (const char* bad : {"GET/x", "get /x", "GET x", "GET  /x", "GET /x y", "/x", "GET ", ""}) {
    std::string json = withField("blocking_routes", std::string("[\"") + bad + "\"]");
    EXPECT_EQ(errorOf(json), std::string("blocking_routes[0]: \"") + bad +
                                 "\" must be \"METHOD /pattern\", e.g. \"GET /hello/{name}\"");
  }
  EXPECT_EQ(errorOf(withField("blocking_routes", R"(["GET /a", "GET /a"])")),
            "blocking_routes[1]: duplicate route \"GET /a\"");
  EXPECT_EQ(errorOf(withField("blocking_routes", R"([{"GET": "/a"}])")),
            "blocking_routes[0]: expected a string, got an object");
}

TEST(ManifestTest, Files) {
  const std::string hash(64, 'f');
  EXPECT_TRUE(Manifest::parse(withField("files", R"({"a/b.so": ")" + hash + "\"}")).isOk());
  EXPECT_EQ(errorOf(withField("files", R"({"a.so": ")" + std::string(64, 'F') + "\"}")),
            "files.\"a.so\": expected 64 lowercase hex characters (SHA-256), got \"" +
                std::string(64, 'F') + "\"");
  EXPECT_EQ(errorOf(withField("files", R"({"a.so": "abc"})")),
            "files.\"a.so\": expected 64 lowercase hex characters (SHA-256), got \"abc\"");
  EXPECT_EQ(errorOf(withField("files", R"({"../a.so": ")" + hash + "\"}")),
            "files.\"../a.so\": not a safe relative path: it contains \"..\"");
  EXPECT_EQ(errorOf(withField("files", R"({"/etc/passwd": ")" + hash + "\"}")),
            "files.\"/etc/passwd\": not a safe relative path: it is absolute");
  EXPECT_EQ(errorOf(withField("files", R"({"a\\b": ")" + hash + "\"}")),
            "files.\"a\\\\b\": not a safe relative path: it contains a backslash");
  EXPECT_EQ(errorOf(withField("files", R"({"a.so": 5})")),
            "files.\"a.so\": expected a string, got an integer");
}

TEST(ManifestTest, LoadNamesTheFile) {
  test::TempDir dir;
  auto missing = Manifest::load(dir / "nope.json");
  ASSERT_FALSE(missing.isOk());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(), (dir / "nope.json").string() + ": no such file");

  auto directory = Manifest::load(dir.path());
  ASSERT_FALSE(directory.isOk());
  EXPECT_EQ(directory.status().message(), dir.path().string() + ": not a regular file");

  test::writeFile(dir / "bad.json", withField("schema", "3"));
  auto bad = Manifest::load(dir / "bad.json");
  ASSERT_FALSE(bad.isOk());
  EXPECT_EQ(
      bad.status().message(),
      (dir / "bad.json").string() + ": schema: unsupported schema 3 (this host reads schema 1)");

  test::writeFile(dir / "huge.json", std::string(1024 * 1024 + 1, ' '));
  auto huge = Manifest::load(dir / "huge.json");
  ASSERT_FALSE(huge.isOk());
  EXPECT_EQ(
      huge.status().message(),
      (dir / "huge.json").string() + ": manifest is 1048577 bytes; the limit is 1048576 (1 MiB)");

  test::writeFile(dir / "ok.json", minimal());
  auto ok = Manifest::load(dir / "ok.json");
  ASSERT_TRUE(ok.isOk()) << ok.status().message();
  EXPECT_EQ(ok->id, "acme/hello");
}

TEST(ManifestTest, EveryFixtureManifestButBadManifestParses) {
  const std::filesystem::path root = TRELLIS_FIXTURE_DIR;
  for (const char* name :
       {"abi-major", "abi-minor-too-new", "no-entry", "init-fails", "mismatch", "not-a-library",
        "truncated", "good", "dep-on-missing", "cycle-a", "cycle-b"}) {
    auto m = Manifest::load(root / name / "trellis-plugin.json");
    ASSERT_TRUE(m.isOk()) << m.status().message();
    EXPECT_EQ(m->id, std::string("fixture/") + name);
  }
  auto bad = Manifest::load(root / "bad-manifest" / "trellis-plugin.json");
  ASSERT_FALSE(bad.isOk());
  EXPECT_NE(bad.status().message().find("bad-manifest/trellis-plugin.json: not valid JSON: "),
            std::string::npos)
      << bad.status().message();
}

TEST(ManifestTest, ReadsTenantConfigSchema) {
  auto m = Manifest::parse(withField(
      "tenant_config", R"({"type": "object", "properties": {"greeting": {"type": "string"}}})"));
  ASSERT_TRUE(m.isOk()) << m.status().message();
  ASSERT_TRUE(m->tenant_config.has_value());
  EXPECT_TRUE(m->tenant_config->validate(R"({"greeting": "Hi"})").isOk());
  EXPECT_EQ(m->tenant_config->validate(R"({"other": 1})").message(), "/other: unknown key");
  EXPECT_FALSE(Manifest::parse(minimal())->tenant_config.has_value());
}

TEST(ManifestTest, RefusesBadTenantConfigSchemaNamingTheSchemaPath) {
  EXPECT_EQ(errorOf(withField("tenant_config",
                              R"({"type": "object", "properties": {"n": {"type": "int"}}})")),
            "tenant_config: /properties/n/type: must be one of \"object\", \"string\", "
            "\"integer\", \"number\", \"boolean\", \"array\"");
  EXPECT_EQ(errorOf(withField("tenant_config", R"({"type": "string"})")),
            "tenant_config: /type: must be \"object\" (overrides are objects)");
  EXPECT_EQ(errorOf(withField("tenant_config", "[]")),
            "tenant_config: expected an object, got an array");
}

}  // namespace
}  // namespace trellis::kernel::plugin
