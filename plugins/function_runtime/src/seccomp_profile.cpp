#include "seccomp_profile.hpp"

#include <seccomp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <set>
#include <sstream>

#include "grove/errors.hpp"

namespace grove::fn {

namespace {

/// clone's namespace flags (NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET).
constexpr scmp_datum_t clone_namespace_flags = 0x7E020000;

/// Calls a worker cannot do without: grove::process hands the filter's listener over
/// with sendmsg and close, then execs; read and write report a failed start, which exit
/// ends.
constexpr const char* essential_calls[] = {"read", "write", "close", "sendmsg", "execve",
                                           "exit", "exit_group"};

/// What a sandboxed function may never call, whatever a profile says (issue 13's list):
/// a profile allowing one is refused.
constexpr const char* never_calls[] = {"mount",       "umount2",   "pivot_root",
                                       "ptrace",      "kexec_load", "init_module",
                                       "bpf",         "perf_event_open", "keyctl",
                                       "add_key",     "unshare",   "setns",
                                       "reboot",      "swapon"};

} // namespace

bool never_allowed(std::string_view name) {
  return std::find(std::begin(never_calls), std::end(never_calls), name)
         != std::end(never_calls);
}

caf::expected<seccomp_profile> parse_seccomp_profile(std::string_view text,
                                                     std::string_view origin) {
  seccomp_profile p;
  std::set<std::string> allowed, denied;
  size_t line_no = 0;
  size_t pos = 0;
  auto fail = [&](const std::string& what) {
    return make_error(errc::invalid_config,
                      std::string{origin} + ":" + std::to_string(line_no) + ": " + what);
  };
  while (pos <= text.size()) {
    auto end = text.find('\n', pos);
    auto line = std::string{text.substr(pos, end == std::string_view::npos ? std::string_view::npos
                                                                           : end - pos)};
    pos = end == std::string_view::npos ? text.size() + 1 : end + 1;
    ++line_no;
    if (auto hash = line.find('#'); hash != std::string::npos)
      line.erase(hash);
    std::istringstream words{line};
    std::string verb;
    if (!(words >> verb))
      continue;
    if (verb != "allow" && verb != "deny")
      return fail("expected 'allow' or 'deny', not '" + verb + "'");
    std::string name;
    bool any = false;
    while (words >> name) {
      any = true;
      if (seccomp_syscall_resolve_name(name.c_str()) == __NR_SCMP_ERROR)
        return fail("unknown system call '" + name + "'");
      if (verb == "allow" && never_allowed(name))
        return fail("'" + name + "' may never be allowed (a sandboxed function must not "
                    "call mount, umount2, pivot_root, ptrace, kexec_load, init_module, bpf, "
                    "perf_event_open, keyctl, add_key, unshare, setns, reboot or swapon)");
      auto& mine = verb == "allow" ? allowed : denied;
      auto& other = verb == "allow" ? denied : allowed;
      if (other.count(name) != 0)
        return fail("'" + name + "' is both allowed and denied");
      if (mine.insert(name).second)
        (verb == "allow" ? p.allow : p.deny).push_back(name);
    }
    if (!any)
      return fail("'" + verb + "' names no system call");
  }
  if (p.allow.empty())
    return make_error(errc::invalid_config, std::string{origin} + ": allows no system call");
  return p;
}

caf::expected<std::vector<sock_filter>> compile_seccomp(const seccomp_profile& p) {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_NOTIFY);
  if (ctx == nullptr)
    return make_error(errc::system_error, "seccomp_init failed");
  // The same rules as a binary tree of call numbers rather than a list: every instance
  // start loads the program, and the kernel fills its per-call cache by running it for
  // each call number, a walk of ~log2(n) steps in a tree (the 264-call default: 337
  // instructions, loaded in ~135 µs against ~310 µs for the list's 272), as is every
  // call the cache does not answer (clone's flags).
  if (int rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2); rc != 0) {
    seccomp_release(ctx);
    return make_error(errc::system_error, std::string{"seccomp_attr_set(optimize 2): "}
                                            + std::strerror(-rc));
  }
  std::set<std::string> deny{p.deny.begin(), p.deny.end()};
  std::vector<std::string> allow = p.allow;
  for (const char* c : essential_calls)
    allow.emplace_back(c);
  for (const auto& name : allow) {
    if (deny.count(name) != 0)
      continue;
    int nr = seccomp_syscall_resolve_name(name.c_str());
    if (nr < 0)
      continue; // not a call of this architecture
    int rc = 0;
    if (name == "clone") {
      // Threads and processes, but no namespaces: a new user namespace would give the
      // function capabilities again (inside it).
      rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
                            SCMP_A0(SCMP_CMP_MASKED_EQ, clone_namespace_flags, 0));
    } else if (name == "clone3") {
      // Its flags sit behind a pointer a filter cannot read: ENOSYS makes glibc use clone.
      rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), nr, 0);
    } else {
      rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
    }
    if (rc != 0 && rc != -EEXIST) {
      seccomp_release(ctx);
      return make_error(errc::system_error, "seccomp_rule_add " + name + ": "
                                              + std::strerror(-rc));
    }
  }
  int fd = ::memfd_create("grove-seccomp", MFD_CLOEXEC);
  if (fd < 0) {
    seccomp_release(ctx);
    return make_error(errc::system_error, std::string{"memfd_create: "} + std::strerror(errno));
  }
  int rc = seccomp_export_bpf(ctx, fd);
  seccomp_release(ctx);
  std::vector<sock_filter> prog;
  if (rc == 0) {
    auto size = ::lseek(fd, 0, SEEK_END);
    if (size > 0 && size % sizeof(sock_filter) == 0) {
      prog.resize(static_cast<size_t>(size) / sizeof(sock_filter));
      if (::pread(fd, prog.data(), static_cast<size_t>(size), 0) != size)
        prog.clear();
    }
  }
  ::close(fd);
  if (prog.empty())
    return make_error(errc::system_error, "seccomp_export_bpf failed");
  return prog;
}

std::string syscall_name(int nr) {
  char* name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
  if (name == nullptr)
    return "#" + std::to_string(nr);
  std::string out{name};
  std::free(name);
  return out;
}

} // namespace grove::fn
