#include "trellis/kernel/plugin/native_library.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "support/test_support.h"

namespace trellis::kernel::plugin {
namespace {

namespace fs = std::filesystem;

const fs::path kFixtures = TRELLIS_FIXTURE_DIR;

Manifest manifestOf(const std::string& fixture) {
  auto m = Manifest::load(kFixtures / fixture / "trellis-plugin.json");
  EXPECT_TRUE(m.isOk()) << m.status().message();
  return m.isOk() ? *m : Manifest{};
}

fs::path libraryOf(const std::string& fixture, const Manifest& m) {
  auto entry = m.entryForThisPlatform();
  EXPECT_TRUE(entry.isOk()) << entry.status().message();
  return kFixtures / fixture / (entry.isOk() ? *entry : "");
}

// Opens a fixture's library with its own manifest, as the loader would.
Result<std::unique_ptr<NativeLibrary>> openFixture(const std::string& fixture) {
  Manifest m = manifestOf(fixture);
  return NativeLibrary::open(libraryOf(fixture, m), m);
}

std::string refusal(const std::string& fixture) {
  auto lib = openFixture(fixture);
  if (lib.isOk()) return "<loaded>";
  return lib.status().message();
}

std::string fileOf(const std::string& fixture) {
  return libraryOf(fixture, manifestOf(fixture)).string();
}

// A host table with just what the fixtures call, recording what they did.
struct FakeHost {
  static inline std::string error;
  static inline std::string method, pattern, body;
  static inline int status = 0;
  static inline trellis_handler_fn handler = nullptr;

  trellis_host_api api{};
  FakeHost() {
    error = method = pattern = body = "";
    status = 0;
    handler = nullptr;
    api.struct_size = sizeof(trellis_host_api);
    api.abi_major = TRELLIS_ABI_MAJOR;
    api.abi_minor = TRELLIS_ABI_MINOR;
    api.set_error = [](const trellis_ctx*, trellis_str msg) { error.assign(msg.ptr, msg.len); };
    api.route_add = [](const trellis_ctx*, trellis_str m, trellis_str p, trellis_handler_fn h,
                       void*) -> trellis_status {
      method.assign(m.ptr, m.len);
      pattern.assign(p.ptr, p.len);
      handler = h;
      return TRELLIS_OK;
    };
    api.res_set_status = [](const trellis_ctx*, trellis_response*, int32_t s) -> trellis_status {
      status = s;
      return TRELLIS_OK;
    };
    api.res_set_body = [](const trellis_ctx*, trellis_response*, trellis_str b) -> trellis_status {
      body.assign(b.ptr, b.len);
      return TRELLIS_OK;
    };
  }
  // Opaque handles: the fixtures only pass them back to the table above.
  const trellis_ctx* ctx() const { return reinterpret_cast<const trellis_ctx*>(this); }
};

TEST(NativeLibraryTest, CheckAbiTable) {
  struct Case {
    uint16_t major, minor;
    const char* error;  // nullptr: accepted
  } cases[] = {
      {TRELLIS_ABI_MAJOR, TRELLIS_ABI_MINOR, nullptr},
      {1, 0, nullptr},  // 1.0 and 1.1 plugins keep loading on a 1.2 host
      {1, 1, nullptr},
      {1, 2, nullptr},
      {2, 0, "plugin ABI 2.0 is not supported: host speaks ABI 1.2 (major must match)"},
      {0, 9, "plugin ABI 0.9 is not supported: host speaks ABI 1.2 (major must match)"},
      {1, 3, "plugin needs ABI 1.3 but host provides 1.2"},
      {1, 99, "plugin needs ABI 1.99 but host provides 1.2"},
      {65535, 65535,
       "plugin ABI 65535.65535 is not supported: host speaks ABI 1.2 (major must "
       "match)"},
  };
  static_assert(TRELLIS_ABI_MAJOR == 1 && TRELLIS_ABI_MINOR == 2, "update the table");
  for (const auto& c : cases) {
    Status s = checkAbi(c.major, c.minor);
    if (c.error == nullptr) {
      EXPECT_TRUE(s.isOk()) << c.major << "." << c.minor << ": " << s.message();
    } else {
      EXPECT_EQ(s.code(), StatusCode::kInvalid);
      EXPECT_EQ(s.message(), c.error);
    }
  }
}

TEST(NativeLibraryTest, GoodFixtureLoadsWithMatchingDescriptor) {
  auto lib = openFixture("good");
  ASSERT_TRUE(lib.isOk()) << lib.status().message();
  const trellis_plugin& d = (*lib)->descriptor();
  EXPECT_EQ(std::string(d.id), "fixture/good");
  EXPECT_EQ(std::string(d.version), "1.0.0");
  EXPECT_EQ(d.abi_major, TRELLIS_ABI_MAJOR);
  EXPECT_EQ(d.abi_minor, TRELLIS_ABI_MINOR);
  EXPECT_EQ(d.struct_size, sizeof(trellis_plugin));
  EXPECT_NE(d.on_init, nullptr);
  EXPECT_EQ((*lib)->file(), fs::path(fileOf("good")));
  EXPECT_TRUE((*lib)->file().is_absolute());
}

TEST(NativeLibraryTest, GoodFixtureRegistersItsRouteAndAnswersGood) {
  auto lib = openFixture("good");
  ASSERT_TRUE(lib.isOk()) << lib.status().message();
  FakeHost host;
  void* state = &host;
  ASSERT_EQ((*lib)->descriptor().on_init(&host.api, host.ctx(), &state), TRELLIS_OK);
  EXPECT_EQ(state, nullptr);
  EXPECT_EQ(FakeHost::method, "GET");
  EXPECT_EQ(FakeHost::pattern, "/fixture/good");
  ASSERT_NE(FakeHost::handler, nullptr);
  EXPECT_EQ(FakeHost::handler(nullptr, host.ctx(), nullptr, nullptr), TRELLIS_OK);
  EXPECT_EQ(FakeHost::status, 200);
  EXPECT_EQ(FakeHost::body, "good");
}

TEST(NativeLibraryTest, DependencyFixturesCarryTheirOwnIds) {
  for (const char* name : {"dep-on-missing", "cycle-a", "cycle-b"}) {
    auto lib = openFixture(name);
    ASSERT_TRUE(lib.isOk()) << lib.status().message();
    EXPECT_EQ(std::string((*lib)->descriptor().id), std::string("fixture/") + name);
  }
}

TEST(NativeLibraryTest, RefusesAbiMajor) {
  // Refused from the manifest alone, before any of the library's code runs.
  EXPECT_EQ(refusal("abi-major"),
            fileOf("abi-major") +
                ": plugin ABI 2.0 is not supported: host speaks ABI 1.2 (major must match)");
  // A manifest that lies about the ABI does not help: the descriptor is checked too.
  Manifest lying = manifestOf("abi-major");
  lying.abi_major = 1;
  auto lib = NativeLibrary::open(libraryOf("abi-major", lying), lying);
  ASSERT_FALSE(lib.isOk());
  EXPECT_EQ(lib.status().message(),
            fileOf("abi-major") +
                ": plugin ABI 2.0 is not supported: host speaks ABI 1.2 (major must match)");
}

TEST(NativeLibraryTest, RefusesAbiMinorTooNew) {
  EXPECT_EQ(refusal("abi-minor-too-new"),
            fileOf("abi-minor-too-new") + ": plugin needs ABI 1.99 but host provides 1.2");
  Manifest lying = manifestOf("abi-minor-too-new");
  lying.abi_minor = 0;
  auto lib = NativeLibrary::open(libraryOf("abi-minor-too-new", lying), lying);
  ASSERT_FALSE(lib.isOk());
  EXPECT_EQ(lib.status().message(),
            fileOf("abi-minor-too-new") + ": plugin needs ABI 1.99 but host provides 1.2");
}

TEST(NativeLibraryTest, RefusesLibraryWithoutEntrySymbol) {
  auto lib = openFixture("no-entry");
  ASSERT_FALSE(lib.isOk());
  EXPECT_EQ(lib.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(
      lib.status().message(),
      fileOf("no-entry") + ": does not export trellis_plugin_entry (is it a Trellis plugin?)");
}

TEST(NativeLibraryTest, InitFailsFixtureLoadsButItsInitReportsTheError) {
  auto lib = openFixture("init-fails");
  ASSERT_TRUE(lib.isOk()) << lib.status().message();
  FakeHost host;
  void* state = nullptr;
  EXPECT_EQ((*lib)->descriptor().on_init(&host.api, host.ctx(), &state), TRELLIS_INVALID);
  EXPECT_EQ(FakeHost::error, "database URL missing");
}

TEST(NativeLibraryTest, RefusesDescriptorThatDoesNotMatchManifest) {
  EXPECT_EQ(
      refusal("mismatch"),
      fileOf("mismatch") +
          ": descriptor says fixture/mismatch@1.0.1 but manifest says fixture/mismatch@1.0.0");
  Manifest other = manifestOf("good");
  other.id = "fixture/other";
  auto lib = NativeLibrary::open(libraryOf("good", other), other);
  ASSERT_FALSE(lib.isOk());
  EXPECT_EQ(lib.status().message(), fileOf("good") +
                                        ": descriptor says fixture/good@1.0.0 but manifest says "
                                        "fixture/other@1.0.0");
  Manifest with_build = manifestOf("good");
  with_build.version = *Version::parse("1.0.0+b2");
  auto lib2 = NativeLibrary::open(libraryOf("good", with_build), with_build);
  ASSERT_FALSE(lib2.isOk());
  EXPECT_EQ(lib2.status().message(), fileOf("good") +
                                         ": descriptor says fixture/good@1.0.0 but manifest says "
                                         "fixture/good@1.0.0+b2");
}

TEST(NativeLibraryTest, RefusesTextFileBeforeDlopen) {
  auto lib = openFixture("not-a-library");
  ASSERT_FALSE(lib.isOk());
  EXPECT_EQ(lib.status().code(), StatusCode::kInvalid);
  EXPECT_EQ(lib.status().message(),
            "not a shared library: " + fileOf("not-a-library") + " (no ELF header)");
}

TEST(NativeLibraryTest, RefusesTruncatedLibraryBeforeDlopen) {
  // dlopen() itself would die of SIGBUS on this file; the loader must catch it first.
  ASSERT_EQ(fs::file_size(fileOf("truncated")), 4096u);
  auto lib = openFixture("truncated");
  ASSERT_FALSE(lib.isOk());
  EXPECT_EQ(lib.status().code(), StatusCode::kInvalid);
  const std::string message = lib.status().message();
  EXPECT_EQ(message.rfind(fileOf("truncated") +
                              ": not a loadable shared library: truncated: a loadable segment "
                              "ends at byte ",
                          0),
            0u)
      << message;
  EXPECT_TRUE(message.ends_with(" but the file has 4096 bytes")) << message;
}

// A copy of the good library with some bytes of its ELF header replaced.
fs::path patchedCopy(const test::TempDir& dir, size_t offset, const std::string& bytes) {
  std::string image = test::readFile(fileOf("good"));
  image.replace(offset, bytes.size(), bytes);
  fs::path out = dir / "libpatched.so";
  test::writeFile(out, image);
  return out;
}

TEST(NativeLibraryTest, RefusesLibraryForAnotherArchitecture) {
  test::TempDir dir;
  // e_machine lives at offset 18; 183 is EM_AARCH64, 62 is EM_X86_64 (little-endian).
#if defined(__x86_64__)
  const std::string other("\xb7\x00", 2), other_name = "aarch64", host_name = "x86_64";
#else
  const std::string other("\x3e\x00", 2), other_name = "x86_64", host_name = "aarch64";
#endif
  fs::path lib = patchedCopy(dir, 18, other);
  auto opened = NativeLibrary::open(lib, manifestOf("good"));
  ASSERT_FALSE(opened.isOk());
  EXPECT_EQ(opened.status().message(), lib.string() +
                                           ": not a loadable shared library: built for " +
                                           other_name + "; this host is " + host_name);
}

TEST(NativeLibraryTest, RefusesLibraryOfTheWrongElfClass) {
  test::TempDir dir;
  fs::path lib = patchedCopy(dir, 4, std::string("\x01", 1));  // EI_CLASS = ELFCLASS32
  auto opened = NativeLibrary::open(lib, manifestOf("good"));
  ASSERT_FALSE(opened.isOk());
  EXPECT_EQ(opened.status().message(),
            lib.string() +
                ": not a loadable shared library: built for a 32-bit host; this host is 64-bit");
}

TEST(NativeLibraryTest, ReportsTheDynamicLoadersReason) {
  // A position-independent executable passes the ELF checks (it is ET_DYN) but dlopen()
  // refuses it; the message must carry dlerror()'s words, not Boost's generic text.
  const fs::path exe = "/usr/bin/true";
  if (!fs::exists(exe)) GTEST_SKIP() << exe << " is missing";
  auto opened = NativeLibrary::open(exe, manifestOf("good"));
  ASSERT_FALSE(opened.isOk());
  const std::string prefix = exe.string() + ": not a loadable shared library: ";
  const std::string message = opened.status().message();
  ASSERT_EQ(message.rfind(prefix, 0), 0u) << message;
  std::string reason = message.substr(prefix.size());
  EXPECT_FALSE(reason.empty());
  EXPECT_EQ(reason.find("boost::"), std::string::npos) << reason;
  EXPECT_EQ(reason.find(exe.string()), std::string::npos) << reason;
}

TEST(NativeLibraryTest, BadManifestFixtureIsRefusedByTheManifestParser) {
  auto m = Manifest::load(kFixtures / "bad-manifest" / "trellis-plugin.json");
  ASSERT_FALSE(m.isOk());
  EXPECT_EQ(
      m.status().message().rfind(
          (kFixtures / "bad-manifest" / "trellis-plugin.json").string() + ": not valid JSON: ", 0),
      0u)
      << m.status().message();
}

TEST(NativeLibraryTest, RefusesMissingFileAndDirectory) {
  Manifest m = manifestOf("good");
  auto missing = NativeLibrary::open(kFixtures / "good" / "libnothing.so", m);
  ASSERT_FALSE(missing.isOk());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(),
            (kFixtures / "good" / "libnothing.so").string() + ": no such file");

  auto dir = NativeLibrary::open(kFixtures / "good", m);
  ASSERT_FALSE(dir.isOk());
  EXPECT_EQ(dir.status().message(), (kFixtures / "good").string() + ": not a regular file");
}

TEST(NativeLibraryTest, BareNameIsNotSearchedInSystemPaths) {
  // dlopen("libc.so.6") would find the system C library; the loader only opens the file
  // at the path it was given, relative to the working directory.
  test::TempDir dir;
  std::error_code ec;
  fs::path before = fs::current_path();
  fs::current_path(dir.path());
  auto lib = NativeLibrary::open("libc.so.6", manifestOf("good"));
  fs::current_path(before, ec);
  ASSERT_FALSE(lib.isOk());
  EXPECT_EQ(lib.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(lib.status().message(), (dir / "libc.so.6").string() + ": no such file");
}

TEST(NativeLibraryTest, RefusesLuaManifest) {
  Manifest m = manifestOf("good");
  m.runtime = "lua";
  auto lib = NativeLibrary::open(libraryOf("good", manifestOf("good")), m);
  ASSERT_FALSE(lib.isOk());
  EXPECT_EQ(lib.status().message(),
            fileOf("good") + ": the manifest's runtime is \"lua\", not \"native\"");
}

TEST(NativeLibraryTest, SameLibraryCanBeOpenedTwiceAndClosedIndependently) {
  auto first = openFixture("good");
  auto second = openFixture("good");
  ASSERT_TRUE(first.isOk());
  ASSERT_TRUE(second.isOk());
  EXPECT_EQ(&(*first)->descriptor(), &(*second)->descriptor());  // one mapping, refcounted
  first->reset();
  EXPECT_EQ(std::string((*second)->descriptor().id), "fixture/good");
}

}  // namespace
}  // namespace trellis::kernel::plugin
