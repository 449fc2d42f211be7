#include "trellis/kernel/plugin/native_library.h"

#include <elf.h>
#include <link.h>

#include <boost/dll/shared_library.hpp>
#include <cstddef>
#include <cstring>
#include <exception>
#include <fstream>
#include <optional>
#include <string>
#include <system_error>

#include "plugin/internal/quote.h"

namespace trellis::kernel::plugin {

namespace fs = std::filesystem;
using internal::escapeText;
using internal::quoteText;

// The descriptor as ABI 1.0 defined it. Later minors append fields, so a host built with a
// larger trellis_plugin must still accept a descriptor of exactly this size.
inline constexpr size_t kDescriptorV1Size =
    offsetof(trellis_plugin, on_destroy) + sizeof(trellis_plugin::on_destroy);

// Descriptor strings come from foreign memory; never scan further than this for the NUL.
inline constexpr size_t kMaxDescriptorString = 256;

struct NativeLibrary::Handle {
  boost::dll::shared_library library;
};

NativeLibrary::~NativeLibrary() = default;

namespace {

// Boost.DLL folds dlerror() into its exception text as "(dlerror system message: X)";
// X is what an operator needs ("file too short", "wrong ELF class: ELFCLASS32", …).
std::string loadFailureReason(const std::string& what, const std::string& file) {
  const std::string marker = "(dlerror system message: ";
  size_t start = what.find(marker);
  if (start == std::string::npos) return what;
  start += marker.size();
  size_t end = what.rfind(')');
  std::string reason =
      what.substr(start, end == std::string::npos || end < start ? std::string::npos : end - start);
  // dlerror repeats the path ("/x/liby.so: file too short"); the caller already names it.
  if (reason.rfind(file + ": ", 0) == 0) reason.erase(0, file.size() + 2);
  return reason;
}

bool hasElfMagic(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  char magic[SELFMAG] = {};
  in.read(magic, sizeof magic);
  return in.gcount() == SELFMAG && std::memcmp(magic, ELFMAG, SELFMAG) == 0;
}

#if defined(__x86_64__)
constexpr uint16_t kHostMachine = EM_X86_64;
#elif defined(__aarch64__)
constexpr uint16_t kHostMachine = EM_AARCH64;
#elif defined(__i386__)
constexpr uint16_t kHostMachine = EM_386;
#elif defined(__arm__)
constexpr uint16_t kHostMachine = EM_ARM;
#elif defined(__riscv)
constexpr uint16_t kHostMachine = EM_RISCV;
#elif defined(__powerpc64__)
constexpr uint16_t kHostMachine = EM_PPC64;
#elif defined(__s390x__)
constexpr uint16_t kHostMachine = EM_S390;
#else
constexpr uint16_t kHostMachine = EM_NONE;  // unknown: leave the check to dlopen()
#endif
constexpr unsigned char kHostClass = sizeof(void*) == 8 ? ELFCLASS64 : ELFCLASS32;
constexpr unsigned char kHostData =
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? ELFDATA2LSB : ELFDATA2MSB;

std::string machineName(uint16_t machine) {
  switch (machine) {
    case EM_X86_64: return "x86_64";
    case EM_AARCH64: return "aarch64";
    case EM_386: return "x86";
    case EM_ARM: return "arm";
    case EM_RISCV: return "riscv";
    case EM_PPC64: return "ppc64";
    case EM_S390: return "s390x";
  }
  return "ELF machine " + std::to_string(machine);
}

// dlopen() maps segments straight from the file and then touches them, so a library cut
// short kills the whole process with SIGBUS instead of failing. The headers are checked
// against the file size first; the same pass gives clear words for a wrong architecture.
std::optional<std::string> elfProblem(const fs::path& file) {
  std::error_code ec;
  const uintmax_t size = fs::file_size(file, ec);
  if (ec) return "cannot read: " + ec.message();
  const std::string has = " but the file has " + std::to_string(size) + " bytes";
  std::ifstream in(file, std::ios::binary);
  ElfW(Ehdr) eh{};
  in.read(reinterpret_cast<char*>(&eh), sizeof eh);
  if (!in || in.gcount() != static_cast<std::streamsize>(sizeof eh)) {
    return "truncated: the ELF header needs " + std::to_string(sizeof eh) + " bytes" + has;
  }
  if (eh.e_ident[EI_CLASS] != kHostClass) {
    return std::string("built for a ") + (eh.e_ident[EI_CLASS] == ELFCLASS32 ? "32" : "64") +
           "-bit host; this host is " + (kHostClass == ELFCLASS32 ? "32" : "64") + "-bit";
  }
  if (eh.e_ident[EI_DATA] != kHostData) return "built for the other byte order";
  if (eh.e_type != ET_DYN) {
    return "ELF type " + std::to_string(eh.e_type) + " is not a shared object";
  }
  if (kHostMachine != EM_NONE && eh.e_machine != kHostMachine) {
    return "built for " + machineName(eh.e_machine) + "; this host is " + machineName(kHostMachine);
  }
  if (eh.e_phentsize != sizeof(ElfW(Phdr)) || eh.e_phnum == 0) {
    return "malformed ELF program header table";
  }
  const uint64_t table_end = eh.e_phoff + uint64_t{eh.e_phnum} * eh.e_phentsize;
  if (eh.e_phoff > size || table_end > size) {
    return "truncated: the program headers end at byte " + std::to_string(table_end) + has;
  }
  in.seekg(static_cast<std::streamoff>(eh.e_phoff));
  for (uint16_t i = 0; i < eh.e_phnum; ++i) {
    ElfW(Phdr) ph{};
    if (!in.read(reinterpret_cast<char*>(&ph), sizeof ph)) return "cannot read program headers";
    if (ph.p_type != PT_LOAD && ph.p_type != PT_DYNAMIC) continue;
    if (ph.p_offset > size || ph.p_filesz > size - ph.p_offset) {
      return "truncated: a loadable segment ends at byte " +
             std::to_string(ph.p_offset + ph.p_filesz) + has;
    }
  }
  return std::nullopt;
}

// A NUL-terminated string from the descriptor, or nullopt if it is NULL or unterminated.
std::optional<std::string> descriptorString(const char* s) {
  if (s == nullptr) return std::nullopt;
  size_t len = strnlen(s, kMaxDescriptorString + 1);
  if (len > kMaxDescriptorString) return std::nullopt;
  return std::string(s, len);
}

std::string abiText(uint16_t major, uint16_t minor) {
  return std::to_string(major) + "." + std::to_string(minor);
}

}  // namespace

Status checkAbi(uint16_t plugin_major, uint16_t plugin_minor) {
  if (plugin_major != TRELLIS_ABI_MAJOR) {
    return Status::invalid("plugin ABI " + abiText(plugin_major, plugin_minor) +
                           " is not supported: host speaks ABI " +
                           abiText(TRELLIS_ABI_MAJOR, TRELLIS_ABI_MINOR) + " (major must match)");
  }
  if (plugin_minor > TRELLIS_ABI_MINOR) {
    return Status::invalid("plugin needs ABI " + abiText(plugin_major, plugin_minor) +
                           " but host provides " + abiText(TRELLIS_ABI_MAJOR, TRELLIS_ABI_MINOR));
  }
  return Status::ok();
}

Status NativeLibrary::inspect(const fs::path& file, const Manifest& manifest) {
  std::error_code ec;
  const fs::path path = fs::absolute(file, ec);
  const std::string name = (ec ? file : path).string();
  auto refuse = [&](const std::string& why) { return Status::invalid(name + ": " + why); };
  if (manifest.runtime != "native") {
    return refuse("the manifest's runtime is " + quoteText(manifest.runtime) + ", not \"native\"");
  }
  if (Status abi = checkAbi(manifest.abi_major, manifest.abi_minor); !abi) {
    return refuse(abi.message());
  }
  fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) return Status::notFound(name + ": no such file");
  if (!fs::is_regular_file(st)) return refuse("not a regular file");
  if (!hasElfMagic(path)) {
    return Status::invalid("not a shared library: " + name + " (no ELF header)");
  }
  if (auto problem = elfProblem(path)) {
    return refuse("not a loadable shared library: " + *problem);
  }
  return Status::ok();
}

Result<std::unique_ptr<NativeLibrary>> NativeLibrary::open(const fs::path& file,
                                                           const Manifest& manifest) {
  // Everything that can be decided without running the library's code is checked first:
  // dlopen() already executes its static constructors.
  if (Status s = inspect(file, manifest); !s) return s;
  // dlopen() of a bare name searches the system; an absolute path loads exactly this file.
  std::error_code ec;
  const fs::path path = fs::absolute(file, ec);
  const std::string name = (ec ? file : path).string();
  auto refuse = [&](const std::string& why) { return Status::invalid(name + ": " + why); };

  auto lib = std::unique_ptr<NativeLibrary>(new NativeLibrary);
  lib->file_ = path;
  lib->handle_ = std::make_unique<Handle>();
  boost::dll::shared_library& dll = lib->handle_->library;
  const trellis_plugin* descriptor = nullptr;
  try {
    dll.load(path, boost::dll::load_mode::rtld_local | boost::dll::load_mode::rtld_now);
  } catch (const std::exception& e) {
    return refuse("not a loadable shared library: " + loadFailureReason(e.what(), name));
  }
  try {
    if (!dll.has(TRELLIS_PLUGIN_ENTRY_SYMBOL)) {
      return Status::notFound(name + ": does not export " TRELLIS_PLUGIN_ENTRY_SYMBOL
                                     " (is it a Trellis plugin?)");
    }
    auto& entry = dll.get<const trellis_plugin*()>(TRELLIS_PLUGIN_ENTRY_SYMBOL);
    descriptor = entry();
  } catch (const std::exception& e) {
    return refuse(std::string("cannot resolve " TRELLIS_PLUGIN_ENTRY_SYMBOL ": ") + e.what());
  }

  if (descriptor == nullptr) return refuse(TRELLIS_PLUGIN_ENTRY_SYMBOL " returned NULL");
  // struct_size is the first field of every version, so it is safe to read before the
  // rest; nothing past it is touched until the size says the field exists.
  if (descriptor->struct_size < kDescriptorV1Size) {
    return refuse("descriptor struct_size " + std::to_string(descriptor->struct_size) +
                  " is smaller than the ABI 1.0 descriptor (" + std::to_string(kDescriptorV1Size) +
                  " bytes)");
  }
  if (Status abi = checkAbi(descriptor->abi_major, descriptor->abi_minor); !abi) {
    return refuse(abi.message());
  }
  if (descriptor->abi_major != manifest.abi_major || descriptor->abi_minor != manifest.abi_minor) {
    return refuse("descriptor says ABI " + abiText(descriptor->abi_major, descriptor->abi_minor) +
                  " but manifest says ABI " + abiText(manifest.abi_major, manifest.abi_minor));
  }

  auto id = descriptorString(descriptor->id);
  auto version_text = descriptorString(descriptor->version);
  if (!id || !version_text) {
    return refuse(std::string("descriptor ") + (id ? "version" : "id") +
                  " is NULL or longer than " + std::to_string(kMaxDescriptorString) + " bytes");
  }
  auto version = Version::parse(*version_text);
  // Textual equality (build metadata included): the binary must be exactly what the
  // manifest describes, not merely of equal precedence.
  if (*id != manifest.id || !version || version->toString() != manifest.version.toString()) {
    return refuse("descriptor says " + escapeText(*id + "@" + *version_text) +
                  " but manifest says " + manifest.id + "@" + manifest.version.toString());
  }
  if (descriptor->on_init == nullptr) return refuse("descriptor has no on_init (it is required)");

  lib->descriptor_ = descriptor;
  return lib;
}

}  // namespace trellis::kernel::plugin
