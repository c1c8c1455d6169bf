#pragma once

// A/B install (README.md, "Install tree and journal"): releases live in
// <root>/releases/<version>/, <root>/current is a symlink to the running one, and
// <root>/ota-state.json journals an update so that a kill -9 at any step leaves a
// bootable previous or new version. The watchdog (watchdog.cpp) reads the same journal.

#include "bundle.hpp"

#include <caf/expected.hpp>

#include <filesystem>
#include <string>

namespace grove::ota {

/// The journal. phase: "idle" (nothing pending), "trial" (current is `target`, on
/// probation until healthy), "healthy", "rolled_back", "failed" (refused or interrupted).
struct state {
  std::string phase = "idle";
  std::string previous; // release directory names under releases/
  std::string target;
  std::string version;
  std::string kind; // the bundle's: "full" or "plugins"
  std::string reason;
  std::string job_id;
  int attempts = 0; // boots of `target` on trial
};

/// Reads <root>/ota-state.json; a missing file is the idle state.
caf::expected<state> read_state(const std::filesystem::path& root);
/// Writes it atomically (temporary file, fsync, rename, fsync of the directory).
caf::error write_state(const std::filesystem::path& root, const state& st);

/// The release `current` points at (a name under releases/), or empty when none.
std::string current_release(const std::filesystem::path& root);
/// The version of a release (its ota-manifest.json), or empty.
std::string release_version(const std::filesystem::path& root, const std::string& release);
/// Points <root>/current at releases/<release> atomically (symlink, rename, fsync).
caf::error switch_to(const std::filesystem::path& root, const std::string& release);

/// Test hook: with GROVE_OTA_CRASH_AT=<step> in the environment, kills the process
/// with SIGKILL at that step (the power-loss tests).
void crash_point(const char* step);

/// Verifies, checks and stages a bundle as releases/<version>/ and switches `current`
/// to it with the journal in phase "trial" (or "idle" for a first install, which has
/// nothing to roll back to). A plugins bundle is a copy of the current release (hard
/// links) with its .so files replaced. Nothing changes when it fails.
caf::expected<state> install(const std::filesystem::path& root, const source& src,
                             policy pol, const std::string& job_id);

} // namespace grove::ota
