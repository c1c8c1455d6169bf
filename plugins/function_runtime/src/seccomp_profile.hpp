#pragma once

// A sandbox's seccomp profile: the text format (README.md, "Sandbox"; the default is
// seccomp/default.txt), its parser (outside input: tests/fuzz/targets/seccomp_profile.cpp)
// and its compilation to the BPF program grove::process loads (libseccomp).

#include <linux/filter.h>

#include <string>
#include <string_view>
#include <vector>

#include <caf/expected.hpp>

namespace grove::fn {

/// A seccomp profile: the system calls a sandboxed function may make (everything else
/// is denied and ends the instance), and those denied whatever the allow lines say.
struct seccomp_profile {
  /// Allowed system calls, by name.
  std::vector<std::string> allow;
  /// Always denied (the list); a name in both is an error.
  std::vector<std::string> deny;
};

/// Whether `name` is one of the calls no profile may allow (mount, umount2, pivot_root,
/// ptrace, kexec_load, init_module, bpf, perf_event_open, keyctl, add_key, unshare, setns,
/// reboot, swapon).
bool never_allowed(std::string_view name);

/// Parses a profile: lines `allow NAME...` and `deny NAME...`, `#` comments. Errors read
/// `<origin>:<line>: <what>` (an unknown system call name, an unknown word, a name both
/// allowed and denied, an allowed call that never_allowed() names).
caf::expected<seccomp_profile> parse_seccomp_profile(std::string_view text,
                                                     std::string_view origin);

/// The profile as a BPF program for process_sandbox::seccomp: allowed calls pass,
/// everything else is SECCOMP_RET_USER_NOTIF (the supervisor kills and reports it).
caf::expected<std::vector<sock_filter>> compile_seccomp(const seccomp_profile& p);

/// A system call's name on this architecture ("ptrace"), or its number as text.
std::string syscall_name(int nr);

/// The built-in profile's text (seccomp/default.txt).
std::string_view default_seccomp_profile();

} // namespace grove::fn
