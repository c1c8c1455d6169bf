// The function the sandbox tests run (GreengrassContainer): each payload "<attempt>
// [argument]" tries one way out of the sandbox and answers what happened, "denied: <why>"
// when the attempt failed and "REACHED: <what>" when it got through. Attempts the seccomp
// filter stops never answer: the runtime reports the denied call.

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "grove/function/function.hpp"

namespace gf = grove::function;

namespace {

std::string denied(const std::string& what) {
  return "denied: " + what + ": " + std::strerror(errno);
}

std::string read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return denied("open " + path);
  char buf[256];
  auto n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  if (n < 0)
    return denied("read " + path);
  return "REACHED: read " + std::to_string(n) + " bytes of " + path;
}

std::string write_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    return denied("open " + path + " for writing");
  auto n = ::write(fd, "x", 1);
  ::close(fd);
  if (n != 1)
    return denied("write " + path);
  return "REACHED: wrote " + path;
}

std::string connect_to(const std::string& path) {
  int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  int rc = ::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  auto r = rc == 0 ? "REACHED: connected to " + path : denied("connect " + path);
  ::close(s);
  return r;
}

// Lines of /proc/self/status the tests look at.
std::string status() {
  std::ifstream in{"/proc/self/status"};
  std::string line, out;
  while (std::getline(in, line))
    for (const char* key : {"CapEff:", "CapPrm:", "CapBnd:", "CapAmb:", "NoNewPrivs:", "Seccomp:",
                            "Groups:"})
      if (line.starts_with(key))
        out += line + "\n";
  return out;
}

std::string whoami() {
  char host[128] = {};
  ::gethostname(host, sizeof host - 1);
  return "uid=" + std::to_string(::getuid()) + " gid=" + std::to_string(::getgid())
         + " pid=" + std::to_string(::getpid()) + " host=" + host;
}

// Forks until the pids limit stops it; the children wait for the instance's end.
std::string fork_bomb() {
  int n = 0;
  for (; n < 100000; ++n) {
    pid_t p = ::fork();
    if (p == 0) {
      for (;;)
        ::pause();
    }
    if (p < 0)
      return "stopped after " + std::to_string(n) + " forks: " + std::strerror(errno);
  }
  return "REACHED: " + std::to_string(n) + " forks";
}

// Touches memory until the cgroup's OOM killer ends the instance.
std::string memory_hog() {
  std::vector<char*> kept;
  for (size_t mib = 0; mib < 1 << 16; ++mib) {
    auto* p = new char[1 << 20];
    std::memset(p, static_cast<int>(mib), 1 << 20);
    kept.push_back(p);
  }
  return "REACHED: 64 GiB";
}

// A POSIX shared memory segment `name` (shm_open: a file of /dev/shm), written through
// one mapping and read back through another, then kept (the test looks for it on the
// host); what /dev/shm is: its file system (tmpfs) and whether the segment is there.
std::string shared_memory(const std::string& name) {
  int fd = ::shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0)
    return denied("shm_open " + name);
  if (::ftruncate(fd, 4096) != 0) {
    ::close(fd);
    return denied("ftruncate");
  }
  auto* w = static_cast<char*>(::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  ::close(fd);
  if (w == MAP_FAILED)
    return denied("mmap");
  std::strcpy(w, "shared");
  fd = ::shm_open(name.c_str(), O_RDONLY, 0);
  if (fd < 0)
    return denied("shm_open again " + name);
  auto* r = static_cast<char*>(::mmap(nullptr, 4096, PROT_READ, MAP_SHARED, fd, 0));
  ::close(fd);
  if (r == MAP_FAILED)
    return denied("mmap again");
  std::string got{r};
  ::munmap(r, 4096);
  ::munmap(w, 4096);
  struct statfs st {};
  if (::statfs("/dev/shm", &st) != 0)
    return denied("statfs /dev/shm");
  return "REACHED: read '" + got + "' back; /dev/shm is "
         + (st.f_type == TMPFS_MAGIC ? "tmpfs" : "not tmpfs") + " of "
         + std::to_string(st.f_blocks * st.f_bsize / 1024) + " KiB";
}

// Runs `python3 -c` under this sandbox (its filter, its root) and answers its output.
std::string python(const std::string& code) {
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0)
    return denied("pipe");
  pid_t p = ::fork();
  if (p == 0) {
    ::dup2(out[1], 1);
    ::dup2(out[1], 2);
    ::execlp("python3", "python3", "-c", code.c_str(), static_cast<char*>(nullptr));
    ::_exit(126);
  }
  ::close(out[1]);
  std::string text;
  char buf[512];
  ssize_t n;
  while ((n = ::read(out[0], buf, sizeof buf)) > 0)
    text.append(buf, static_cast<size_t>(n));
  ::close(out[0]);
  int st = 0;
  ::waitpid(p, &st, 0);
  return "exit " + std::to_string(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st)) + ": "
         + text;
}

std::string attempt(const std::string& payload, const gf::context&) {
  std::istringstream in{payload};
  std::string what, arg;
  in >> what;
  std::getline(in >> std::ws, arg);
  if (what == "whoami")
    return whoami();
  if (what == "status")
    return status();
  if (what == "read")
    return read_file(arg);
  if (what == "write")
    return write_file(arg);
  if (what == "list") {
    int fd = ::open(arg.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
      return denied("open " + arg);
    ::close(fd);
    return "REACHED: opened " + arg;
  }
  if (what == "connect")
    return connect_to(arg);
  if (what == "mount") {
    if (::mount("none", "/tmp", "tmpfs", 0, nullptr) != 0)
      return denied("mount");
    return "REACHED: mounted";
  }
  if (what == "ptrace") {
    if (::ptrace(PTRACE_ATTACH, std::stoi(arg), nullptr, nullptr) != 0)
      return denied("ptrace " + arg);
    return "REACHED: attached to " + arg;
  }
  if (what == "add_key") {
    // A key in the user keyring, which is per user namespace: instances of one user
    // share theirs (the raw call: no libkeyutils in the image).
    static constexpr char payload[] = "secret";
    long rc = ::syscall(SYS_add_key, "user", "grove-escape", payload, sizeof(payload) - 1,
                        -4 /* KEY_SPEC_USER_KEYRING */);
    if (rc < 0)
      return denied("add_key");
    return "REACHED: key " + std::to_string(rc);
  }
  if (what == "keyctl") {
    long rc = ::syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */,
                        -4 /* KEY_SPEC_USER_KEYRING */, 1);
    if (rc < 0)
      return denied("keyctl");
    return "REACHED: keyring " + std::to_string(rc);
  }
  if (what == "setuid") {
    if (::setuid(0) != 0)
      return denied("setuid(0)");
    return "REACHED: uid 0";
  }
  if (what == "mounts") {
    // The mount table lines whose mount point starts with `arg`: "<point> <options>".
    std::ifstream in{"/proc/self/mountinfo"};
    std::string line, out;
    while (std::getline(in, line)) {
      std::istringstream f{line};
      std::string id, parent, dev, root, point, opts;
      f >> id >> parent >> dev >> root >> point >> opts;
      if (point.starts_with(arg))
        out += point + " " + opts + "\n";
    }
    return out;
  }
  if (what == "wait") {
    // Holds its instance (busy) until `arg` exists (a file the test makes in a volume).
    while (::access(arg.c_str(), F_OK) != 0)
      ::usleep(10000);
    return "REACHED: " + arg + " is there";
  }
  if (what == "shm")
    return shared_memory(arg);
  if (what == "hang") {
    // Never answers; catches nothing.
    for (;;)
      ::pause();
  }
  if (what == "fork_bomb")
    return fork_bomb();
  if (what == "memory_hog")
    return memory_hog();
  if (what == "python")
    return python(arg);
  return "unknown attempt '" + what + "'";
}

} // namespace

GROVE_FUNCTION(attempt)
