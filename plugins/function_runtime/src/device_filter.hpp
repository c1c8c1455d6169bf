#pragma once

// The device access of a cgroup v2 (README.md, "Local resources"): v2 has no devices
// controller, its rules are a BPF_PROG_TYPE_CGROUP_DEVICE program attached to the
// cgroup, which the kernel runs on every open and mknod of a device node by a process in
// it. The program is generated here from the rules (a few instructions each, no compiler
// or libbpf needed), as container runtimes do.

#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <vector>

#include <string>

#include <caf/error.hpp>

namespace grove::fn {

/// One device an instance may open: type 'c' or 'b', its numbers, and whether for
/// writing too. mknod is never allowed.
struct device_rule {
  /// 'c' (character) or 'b' (block).
  char type = 'c';
  /// Major number.
  uint32_t major = 0;
  /// Minor number.
  uint32_t minor = 0;
  /// Read and write (else read only).
  bool write = false;
  /// Every minor of `major` (v1's "136:*": the pty slaves a devpts instance numbers).
  bool any_minor = false;
};

/// The device programs of one runtime: each rule set is loaded (and verified) once and
/// attached to every instance cgroup that needs it, so an instance start pays one
/// attach, not a load.
class device_programs {
public:
  device_programs() = default;
  device_programs(const device_programs&) = delete;
  device_programs& operator=(const device_programs&) = delete;

  /// Closes the loaded programs (attached ones live on with their cgroups).
  ~device_programs();

  /// Attaches the program for `rules` to the cgroup v2 directory `dir`
  /// (BPF_F_ALLOW_MULTI: programs above it still apply). The attachment lives as long as
  /// the cgroup does. Errors carry the kernel's reason (and the verifier's log).
  caf::error attach(const std::filesystem::path& dir, const std::vector<device_rule>& rules);

private:
  std::mutex mtx_;
  std::map<std::string, int> fds_; // rule set -> loaded program
};

/// Whether this kernel loads device programs (tried once with an allow-nothing program).
bool device_filter_supported(std::string* why = nullptr);

} // namespace grove::fn
