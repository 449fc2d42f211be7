#include "trellis/kernel/lua/policy_store.h"

#include <chrono>
#include <fstream>
#include <sstream>

#include "trellis/kernel/util/file.h"
#include "trellis/tenants/identity.h"

namespace trellis::kernel::lua {
namespace fs = std::filesystem;

namespace {

int64_t nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Result<std::string> readText(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return Status::unavailable("cannot read " + file.string());
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string describeScope(std::string_view tenant) {
  return tenant.empty() ? "the global policy" : "the policy of tenant " + std::string(tenant);
}

}  // namespace

// The `state` file: "next N", "active N" (0: none), "history a b c", "applied <ms>".
struct PolicyStore::State {
  uint64_t next = 1;
  uint64_t active = 0;
  std::vector<uint64_t> history;
  int64_t applied_at_ms = 0;

  static Result<State> read(const fs::path& dir) {
    State st;
    std::error_code ec;
    if (!fs::exists(dir / "state", ec)) return st;
    auto text = readText(dir / "state");
    if (!text) return text.status();
    std::istringstream in(*text);
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream words(line);
      std::string key;
      words >> key;
      if (key == "next") {
        words >> st.next;
      } else if (key == "active") {
        words >> st.active;
      } else if (key == "applied") {
        words >> st.applied_at_ms;
      } else if (key == "history") {
        uint64_t v;
        while (words >> v) st.history.push_back(v);
      }
    }
    if (st.next == 0 || st.active >= st.next) {
      return Status::internal("policy state in " + dir.string() + " is corrupt");
    }
    return st;
  }

  Status write(const fs::path& dir) const {
    std::string text = "next " + std::to_string(next) + "\nactive " + std::to_string(active) +
                       "\napplied " + std::to_string(applied_at_ms) + "\nhistory";
    for (uint64_t v : history) text += " " + std::to_string(v);
    text += "\n";
    return util::writeFileAtomically(dir / "state", text, 0600);
  }
};

Result<std::unique_ptr<PolicyStore>> PolicyStore::open(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir / "global", ec);
  if (!ec) fs::create_directories(dir / "tenants", ec);
  if (ec) return Status::unavailable("cannot create " + dir.string() + ": " + ec.message());
  fs::permissions(dir, fs::perms::owner_all, ec);
  return std::unique_ptr<PolicyStore>(new PolicyStore(dir));
}

Result<fs::path> PolicyStore::scopeDir(std::string_view tenant) const {
  if (tenant.empty()) return dir_ / "global";
  if (!tenants::isValidTenantId(tenant)) {
    return Status::invalid("invalid tenant id \"" + std::string(tenant) + "\"");
  }
  return dir_ / "tenants" / std::string(tenant);
}

Result<std::vector<StoredPolicy>> PolicyStore::loadActive() const {
  std::vector<StoredPolicy> out;
  std::vector<std::string> scopes = {""};
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_ / "tenants", ec)) {
    std::string id = entry.path().filename().string();
    if (tenants::isValidTenantId(id)) scopes.push_back(id);
  }
  for (const auto& tenant : scopes) {
    auto dir = scopeDir(tenant);
    if (!dir) return dir.status();
    auto st = State::read(*dir);
    if (!st) return st.status();
    if (st->active == 0) continue;
    const std::string v = "v" + std::to_string(st->active);
    auto source = readText(*dir / (v + ".lua"));
    if (!source) return source.status();
    auto name = readText(*dir / (v + ".name"));
    out.push_back(
        {tenant, st->active, name ? *name : v + ".lua", std::move(*source), st->applied_at_ms});
  }
  return out;
}

Result<StoredPolicy> PolicyStore::save(std::string_view tenant, std::string_view name,
                                       std::string_view source) {
  auto dir = scopeDir(tenant);
  if (!dir) return dir.status();
  auto st = State::read(*dir);
  if (!st) return st.status();
  const uint64_t version = st->next;
  const std::string v = "v" + std::to_string(version);
  if (Status s = util::writeFileAtomically(*dir / (v + ".lua"), source, 0600); !s) return s;
  if (Status s = util::writeFileAtomically(*dir / (v + ".name"), name, 0600); !s) return s;
  if (st->active != 0) st->history.push_back(st->active);
  st->active = version;
  st->next = version + 1;
  st->applied_at_ms = nowMs();
  if (Status s = st->write(*dir); !s) return s;
  return StoredPolicy{std::string(tenant), version, std::string(name), std::string(source),
                      st->applied_at_ms};
}

Status PolicyStore::deactivate(std::string_view tenant) {
  auto dir = scopeDir(tenant);
  if (!dir) return dir.status();
  auto st = State::read(*dir);
  if (!st) return st.status();
  if (st->active == 0) return Status::notFound("no policy applied for " + describeScope(tenant));
  st->history.push_back(st->active);
  st->active = 0;
  st->applied_at_ms = nowMs();
  return st->write(*dir);
}

Status PolicyStore::purge(std::string_view tenant) {
  if (tenant.empty()) return Status::invalid("purge needs a tenant id");
  auto dir = scopeDir(tenant);
  if (!dir) return dir.status();
  std::error_code ec;
  fs::remove_all(*dir, ec);
  if (ec) return Status::unavailable("cannot remove " + dir->string() + ": " + ec.message());
  return Status::ok();
}

Result<StoredPolicy> PolicyStore::rollback(std::string_view tenant, bool commit) {
  auto dir = scopeDir(tenant);
  if (!dir) return dir.status();
  auto st = State::read(*dir);
  if (!st) return st.status();
  if (st->active == 0 && st->history.empty()) {
    return Status::notFound("no policy applied for " + describeScope(tenant));
  }
  if (st->history.empty()) {
    return Status::conflict(describeScope(tenant) + " has no earlier version to roll back to");
  }
  State next = *st;
  next.active = next.history.back();
  next.history.pop_back();
  next.applied_at_ms = nowMs();
  const std::string v = "v" + std::to_string(next.active);
  auto source = readText(*dir / (v + ".lua"));
  if (!source) return source.status();
  auto name = readText(*dir / (v + ".name"));
  if (commit) {
    if (Status s = next.write(*dir); !s) return s;
  }
  return StoredPolicy{std::string(tenant), next.active, name ? *name : v + ".lua",
                      std::move(*source), next.applied_at_ms};
}

}  // namespace trellis::kernel::lua
