// The SDK's archive reader (sdk/plugin/src/archive.cpp, grove::archive): an archive from
// outside (a component's ZIP artifact, a function's code, a model package), unpacked into
// a directory with links kept inside, and read into memory with links refused. Whatever
// the bytes: an error, or every file unpacked lies inside the directory, every link
// there points inside, the limits hold, no device or FIFO appears, and the reader in
// memory agrees with safe_relative_path on every name. On an error nothing is left.

#include <sys/stat.h>

#include <filesystem>
#include <system_error>

#include "fuzz_support.hpp"
#include "grove/archive.hpp"

namespace fs = std::filesystem;

namespace {

bool inside(const fs::path& root, const fs::path& p) {
  auto rel = p.lexically_normal().lexically_relative(root);
  return !rel.empty() && *rel.begin() != "..";
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static grove::fuzz::input_file input{"input.archive"};
  static grove::test::temp_dir out;
  auto bytes = grove::fuzz::bytes(data, size);
  grove::archive::options opts;
  opts.limits.max_entries = 64;
  opts.limits.max_total_bytes = 1 << 20;
  opts.limits.max_entry_bytes = 1 << 19;
  // In memory, links refused.
  if (auto files = grove::archive::read_files(bytes, opts)) {
    uint64_t total = 0;
    for (const auto& f : *files) {
      auto safe = grove::archive::safe_relative_path(f.name);
      grove::fuzz::require(safe && *safe == f.name, "read_files: an unsafe or raw name");
      grove::fuzz::require(f.data.size() <= opts.limits.max_entry_bytes,
                           "read_files: max_entry_bytes passed");
      total += f.data.size();
    }
    grove::fuzz::require(total <= opts.limits.max_total_bytes,
                         "read_files: max_total_bytes passed");
  } else {
    (void) grove::describe(files.error());
  }
  // To disk, links inside allowed.
  const auto& file = input.write(bytes);
  auto dest = out.path() / "d";
  std::error_code ec;
  fs::remove_all(dest, ec);
  opts.links = grove::archive::link_policy::inside;
  auto r = grove::archive::extract(file, dest, opts);
  if (!r) {
    (void) grove::describe(r.error());
    grove::fuzz::require(!fs::exists(dest, ec), "extract: a failed unpack left its directory");
    grove::fuzz::require(fs::is_empty(out.path(), ec), "extract: wrote outside its directory");
    return 0;
  }
  auto root = fs::canonical(dest, ec);
  for (auto it = fs::recursive_directory_iterator(dest, ec); it != fs::end(it);
       it.increment(ec)) {
    struct stat st{};
    grove::fuzz::require(::lstat(it->path().c_str(), &st) == 0, "extract: an entry vanished");
    grove::fuzz::require(S_ISREG(st.st_mode) || S_ISDIR(st.st_mode) || S_ISLNK(st.st_mode),
                         "extract: a device, FIFO or socket appeared");
    grove::fuzz::require(S_ISLNK(st.st_mode) || (st.st_mode & (S_ISUID | S_ISGID | S_IWOTH)) == 0,
                         "extract: setuid, setgid or world-writable bits kept");
    if (S_ISLNK(st.st_mode)) {
      // Where it leads, resolved without following links out of the tree.
      auto target = fs::read_symlink(it->path(), ec);
      grove::fuzz::require(!target.is_absolute(), "extract: an absolute link kept");
      auto from = it->path().parent_path().lexically_relative(dest);
      grove::fuzz::require(inside(root, root / from / target),
                           "extract: a link that leaves the directory");
      it.disable_recursion_pending();
    } else if (S_ISREG(st.st_mode)) {
      grove::fuzz::require(static_cast<uint64_t>(st.st_size) <= opts.limits.max_entry_bytes,
                           "extract: max_entry_bytes passed");
    }
  }
  grove::fuzz::require(r->bytes <= opts.limits.max_total_bytes, "extract: bytes over the limit");
  fs::remove_all(dest, ec);
  grove::fuzz::require(fs::is_empty(out.path(), ec), "extract: wrote outside its directory");
  return 0;
}
