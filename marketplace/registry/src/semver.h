// Strict semantic versions (semver.org 2.0.0) for the registry: which versions a publish may
// carry, and the order versions are listed in.
//
//   auto v = Semver::parse("1.4.2-rc.1+build.5");   // INVALID names what is wrong
//   compareSemver(*a, *b) < 0                       // precedence; build metadata ignored
//
// Why not the kernel's semver: plugins link nothing of the kernel (the isolation check
// proves it), and the registry only needs parsing and precedence, not ranges. The unit
// test registry_semver_test cross-checks this parser against the kernel's on the same
// inputs, so the two cannot drift apart unnoticed.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "trellis/status.hpp"

namespace trellis::registry {

struct Semver {
  uint64_t major = 0, minor = 0, patch = 0;
  std::vector<std::string> prerelease;

  static Result<Semver> parse(std::string_view text);
};

// <0, 0, >0 by semver.org §11 precedence.
int compareSemver(const Semver& a, const Semver& b);

}  // namespace trellis::registry
