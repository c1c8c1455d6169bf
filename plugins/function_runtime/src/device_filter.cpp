#include "device_filter.hpp"

#include <fcntl.h>
#include <linux/bpf.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include <caf/expected.hpp>

#include "grove/errors.hpp"

namespace grove::fn {

namespace {

bpf_insn insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
  bpf_insn i{};
  i.code = code;
  i.dst_reg = dst;
  i.src_reg = src;
  i.off = off;
  i.imm = imm;
  return i;
}

// The few instruction shapes the program uses.
bpf_insn load_ctx_u32(uint8_t dst, int16_t off) {
  return insn(BPF_LDX | BPF_MEM | BPF_W, dst, BPF_REG_1, off, 0);
}
bpf_insn mov_reg(uint8_t dst, uint8_t src) {
  return insn(BPF_ALU64 | BPF_MOV | BPF_X, dst, src, 0, 0);
}
bpf_insn mov_imm(uint8_t dst, int32_t imm) {
  return insn(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm);
}
bpf_insn and_imm(uint8_t dst, int32_t imm) {
  return insn(BPF_ALU64 | BPF_AND | BPF_K, dst, 0, 0, imm);
}
bpf_insn rsh_imm(uint8_t dst, int32_t imm) {
  return insn(BPF_ALU64 | BPF_RSH | BPF_K, dst, 0, 0, imm);
}
bpf_insn jne_imm(uint8_t dst, int32_t imm, int16_t skip) {
  return insn(BPF_JMP | BPF_JNE | BPF_K, dst, 0, skip, imm);
}
bpf_insn exit_insn() {
  return insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
}

std::vector<bpf_insn> program(const std::vector<device_rule>& rules) {
  // r1: struct bpf_cgroup_dev_ctx {access_type = access << 16 | type, major, minor}.
  std::vector<bpf_insn> p{
    load_ctx_u32(BPF_REG_2, 0),
    mov_reg(BPF_REG_3, BPF_REG_2),
    and_imm(BPF_REG_3, 0xffff), // r3: the type
    rsh_imm(BPF_REG_2, 16),     // r2: the access asked (mknod, read, write bits)
    load_ctx_u32(BPF_REG_4, 4), // r4: major
    load_ctx_u32(BPF_REG_5, 8), // r5: minor
  };
  for (const auto& r : rules) {
    // Eight instructions a rule (seven for any minor); a mismatch jumps to the next rule.
    int32_t type = r.type == 'b' ? BPF_DEVCG_DEV_BLOCK : BPF_DEVCG_DEV_CHAR;
    int32_t allowed = BPF_DEVCG_ACC_READ | (r.write ? BPF_DEVCG_ACC_WRITE : 0);
    int16_t rest = r.any_minor ? 5 : 6; // instructions after the major's test
    p.push_back(jne_imm(BPF_REG_3, type, static_cast<int16_t>(rest + 1)));
    p.push_back(jne_imm(BPF_REG_4, static_cast<int32_t>(r.major), rest));
    if (!r.any_minor)
      p.push_back(jne_imm(BPF_REG_5, static_cast<int32_t>(r.minor), 5));
    p.push_back(mov_reg(BPF_REG_0, BPF_REG_2));
    p.push_back(and_imm(BPF_REG_0, ~allowed)); // what is asked beyond the rule
    p.push_back(jne_imm(BPF_REG_0, 0, 2));
    p.push_back(mov_imm(BPF_REG_0, 1));
    p.push_back(exit_insn());
  }
  p.push_back(mov_imm(BPF_REG_0, 0)); // no rule allows it
  p.push_back(exit_insn());
  return p;
}

long sys_bpf(int cmd, bpf_attr& attr) {
  return ::syscall(SYS_bpf, cmd, &attr, sizeof attr);
}

// The program's fd, or an error with the verifier's log.
caf::expected<int> load(const std::vector<device_rule>& rules) {
  auto insns = program(rules);
  static const char license[] = "GPL";
  std::string log(16384, '\0');
  bpf_attr attr{};
  attr.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
  attr.insns = reinterpret_cast<uint64_t>(insns.data());
  attr.insn_cnt = static_cast<uint32_t>(insns.size());
  attr.license = reinterpret_cast<uint64_t>(license);
  attr.log_buf = reinterpret_cast<uint64_t>(log.data());
  attr.log_size = static_cast<uint32_t>(log.size());
  attr.log_level = 1;
  int fd = static_cast<int>(sys_bpf(BPF_PROG_LOAD, attr));
  if (fd < 0) {
    int e = errno;
    log.resize(std::strlen(log.c_str()));
    return make_error(errc::system_error, std::string{"cannot load the device program: "}
                                            + std::strerror(e)
                                            + (log.empty() ? "" : " (verifier: " + log + ")"));
  }
  return fd;
}

} // namespace

device_programs::~device_programs() {
  for (const auto& [key, fd] : fds_)
    ::close(fd);
}

caf::error device_programs::attach(const std::filesystem::path& dir,
                                   const std::vector<device_rule>& rules) {
  std::string key;
  for (const auto& r : rules) {
    key.push_back(r.type);
    key.append(std::to_string(r.major)).append(":");
    key.append(r.any_minor ? std::string{"*"} : std::to_string(r.minor));
    key.append(r.write ? "w " : "r ");
  }
  int prog = -1;
  {
    std::lock_guard guard{mtx_};
    if (auto it = fds_.find(key); it != fds_.end()) {
      prog = it->second;
    } else {
      auto loaded = load(rules);
      if (!loaded)
        return std::move(loaded.error());
      prog = fds_.emplace(key, *loaded).first->second;
    }
  }
  int cg = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (cg < 0)
    return make_error(errc::system_error,
                      "cannot open " + dir.string() + ": " + std::strerror(errno));
  bpf_attr attr{};
  attr.target_fd = static_cast<uint32_t>(cg);
  attr.attach_bpf_fd = static_cast<uint32_t>(prog);
  attr.attach_type = BPF_CGROUP_DEVICE;
  attr.attach_flags = BPF_F_ALLOW_MULTI;
  long rc = sys_bpf(BPF_PROG_ATTACH, attr);
  int e = errno;
  ::close(cg);
  if (rc != 0)
    return make_error(errc::system_error, "cannot attach the device program to " + dir.string()
                                            + ": " + std::strerror(e));
  return {};
}

bool device_filter_supported(std::string* why) {
  auto prog = load({});
  if (!prog) {
    if (why != nullptr)
      *why = grove::describe(prog.error());
    return false;
  }
  ::close(*prog);
  return true;
}

} // namespace grove::fn
