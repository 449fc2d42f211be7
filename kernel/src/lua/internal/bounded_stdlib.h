// Budget-aware versions of the standard-library functions a sandboxed script can reach,
// installed by Sandbox::setUp over the originals. Private to sandbox.cc.
//
// Why: the instruction hook and the allocator only see work that runs VM instructions or
// allocates; a C function that loops without doing either (table.insert under a huge
// __len, a literal search of a long pattern in a long subject, a sort of long equal
// strings, table.move over a huge range) would hold its thread for as long as it likes.
// So every function of string, table and utf8 either charges the work it is about to do
// against the rest of the call's budget (Sandbox::charge), or counts its work as it goes
// and charges it in steps; none calls the original with a cost it has not charged.
// math and coroutine need none: math is O(1), and coroutines run Lua (hooked).
#pragma once

#include <cstddef>
#include <cstdint>

#include "lua.hpp"

namespace trellis::kernel::lua::bounded_stdlib {

// Each replaces the functions of the library table at stack index `lib`.
void replaceStringFunctions(lua_State* L, int lib);
void replaceTableFunctions(lua_State* L, int lib);
void replaceUtf8Functions(lua_State* L, int lib);

// The units a scan of `bytes` bytes in C costs (memchr, memcmp, UTF-8 decoding).
inline uint64_t scanUnits(size_t bytes) {
  return 1 + bytes / 64;
}

}  // namespace trellis::kernel::lua::bounded_stdlib
