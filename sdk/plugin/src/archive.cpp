#include "grove/archive.hpp"

#include <dlfcn.h>
#include <fcntl.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>

#include <algorithm>
#include <cerrno>
#include <functional>
#include <memory>
#include <system_error>

#include "grove/errors.hpp"

namespace grove::archive {

namespace fs = std::filesystem;

namespace {

// libarchive is opened at the first use, not linked: it brings libxml2, ICU, nettle and
// five compression libraries whose relocated data (0.2 MB, which no page-out returns)
// and start-up pages an idle groved held for an archive it may never read
// (tools/bench/README.md, memory_bench.py; on a quiet device the expected saving is the
// 0.2 MB, reasoned from kernel.release_code_pages, not measured there). Its soname comes
// from the build (GROVE_LIBARCHIVE_SONAME); the declarations from <archive.h> keep every
// call type-checked.
#define GROVE_LIBARCHIVE_FUNCTIONS(X)                                                     \
  X(archive_entry_filetype)                                                               \
  X(archive_entry_hardlink)                                                               \
  X(archive_entry_pathname)                                                               \
  X(archive_entry_perm)                                                                   \
  X(archive_entry_set_hardlink)                                                           \
  X(archive_entry_set_pathname)                                                           \
  X(archive_entry_set_perm)                                                               \
  X(archive_entry_size)                                                                   \
  X(archive_entry_size_is_set)                                                            \
  X(archive_entry_symlink)                                                                \
  X(archive_errno)                                                                        \
  X(archive_error_string)                                                                 \
  X(archive_read_data)                                                                    \
  X(archive_read_data_block)                                                              \
  X(archive_read_free)                                                                    \
  X(archive_read_new)                                                                     \
  X(archive_read_next_header)                                                             \
  X(archive_read_open_filename)                                                           \
  X(archive_read_open_memory)                                                             \
  X(archive_read_support_filter_gzip)                                                     \
  X(archive_read_support_format_tar)                                                      \
  X(archive_read_support_format_zip)                                                      \
  X(archive_write_close)                                                                  \
  X(archive_write_data_block)                                                             \
  X(archive_write_disk_new)                                                               \
  X(archive_write_disk_set_options)                                                       \
  X(archive_write_finish_entry)                                                           \
  X(archive_write_free)                                                                   \
  X(archive_write_header)

struct libarchive {
#define GROVE_LIBARCHIVE_MEMBER(fn) decltype(&::fn) fn = nullptr;
  GROVE_LIBARCHIVE_FUNCTIONS(GROVE_LIBARCHIVE_MEMBER)
#undef GROVE_LIBARCHIVE_MEMBER
  std::string failure; // why it could not be loaded; empty once loaded
};

// Loaded at the first call, thread-safe, and kept loaded. open_reader() checks
// `failure`; everything else runs after it.
const libarchive& api() {
  static const libarchive lib = [] {
    libarchive l;
    void* handle = ::dlopen(GROVE_LIBARCHIVE_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      const char* why = ::dlerror();
      l.failure = std::string{"cannot load " GROVE_LIBARCHIVE_SONAME ": "}
                  + (why != nullptr ? why : "unknown error");
      return l;
    }
#define GROVE_LIBARCHIVE_RESOLVE(fn)                                                      \
  l.fn = reinterpret_cast<decltype(&::fn)>(::dlsym(handle, #fn));                         \
  if (l.fn == nullptr && l.failure.empty())                                               \
    l.failure = GROVE_LIBARCHIVE_SONAME " has no " #fn;
    GROVE_LIBARCHIVE_FUNCTIONS(GROVE_LIBARCHIVE_RESOLVE)
#undef GROVE_LIBARCHIVE_RESOLVE
    if (!l.failure.empty()) {
      // Not the libarchive we were built for: unload it, and keep no pointer into it.
      libarchive failed;
      failed.failure = std::move(l.failure);
      ::dlclose(handle);
      return failed;
    }
    return l;
  }();
  return lib;
}

struct read_free {
  void operator()(struct ::archive* a) const {
    api().archive_read_free(a);
  }
};
struct write_free {
  void operator()(struct ::archive* a) const {
    api().archive_write_free(a);
  }
};
using reader_ptr = std::unique_ptr<struct ::archive, read_free>;
using writer = std::unique_ptr<struct ::archive, write_free>;

// An entry name as it may appear in a message: at most 256 bytes, control bytes as '?'.
std::string printable(std::string_view name) {
  std::string out{name.substr(0, 256)};
  for (auto& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
      c = '?';
  if (name.size() > 256)
    out += "...";
  return out;
}

caf::error entry_error(errc code, std::string_view name, const std::string& why) {
  return make_error(code, "entry '" + printable(name) + "': " + why);
}

std::string libarchive_text(struct ::archive* a) {
  const char* msg = api().archive_error_string(a);
  return msg != nullptr ? msg : "unknown libarchive error";
}

// The segments of a '/'-separated path, without empty and "." ones.
std::vector<std::string_view> segments(std::string_view p) {
  std::vector<std::string_view> out;
  for (size_t pos = 0; pos <= p.size();) {
    auto end = std::min(p.find('/', pos), p.size());
    auto seg = p.substr(pos, end - pos);
    pos = end + 1;
    if (!seg.empty() && seg != ".")
      out.push_back(seg);
  }
  return out;
}

// Why `name` is not a safe relative path ("" if it is); `out` gets it normalised.
std::string path_defect(std::string_view name, std::string& out) {
  out.clear();
  if (name.empty())
    return "an empty name";
  if (name.front() == '/')
    return "an absolute path: it would land outside the directory (zip-slip)";
  for (char c : name) {
    if (c == '\\')
      return "a backslash: a Windows path that may land outside the directory (zip-slip)";
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
      return "a control character in the name";
  }
  for (auto seg : segments(name)) {
    if (seg == "..")
      return "a '..' segment: it would land outside the directory (zip-slip)";
    if (!out.empty())
      out += '/';
    out += seg;
  }
  if (out.empty())
    return "a name that is only '.' segments";
  return {};
}

// Whether a directory entry names the directory itself ("./" in `tar -C dir -c .`).
bool is_top(std::string_view name) {
  return !name.empty() && name.front() != '/'
         && name.find_first_not_of("./") == std::string_view::npos
         && name.find("..") == std::string_view::npos;
}

// Why symbolic link `path` -> `target` may leave the directory ("" if it stays inside):
// a relative target whose `..` segments form only a leading run no longer than the
// link's own depth. Every link is checked so, and entries are never written through a
// link, so following any chain of them stays inside too.
std::string link_defect(const std::string& path, std::string_view target) {
  if (target.empty())
    return "a symbolic link with an empty target";
  if (target.front() == '/')
    return "a symbolic link to the absolute path '" + printable(target)
           + "': it leaves the directory";
  if (target.find('\\') != std::string_view::npos)
    return "a symbolic link with a backslash in its target";
  size_t depth = 0; // folders above the link inside the directory
  for (char c : path)
    depth += c == '/' ? 1 : 0;
  size_t ups = 0;
  bool down = false;
  for (auto seg : segments(target)) {
    if (seg != "..") {
      down = true;
      continue;
    }
    if (down || ++ups > depth)
      return "a symbolic link to '" + printable(target) + "': it leaves the directory";
  }
  return {};
}

// One entry, checked.
struct checked {
  bool end = false;  // no more entries
  bool skip = false; // the directory itself
  std::string path;     // safe, normalised
  std::string hardlink; // safe, normalised; empty if none
  int type = 0;
};

caf::expected<checked> check(archive_entry* e, const options& opts, uint64_t index) {
  if (index >= opts.limits.max_entries)
    return make_error(errc::too_large, "more than " + std::to_string(opts.limits.max_entries)
                                         + " entries (max_entries)");
  const char* raw = api().archive_entry_pathname(e);
  if (raw == nullptr)
    return make_error(errc::malformed,
                      "entry #" + std::to_string(index + 1) + ": a name that cannot be read");
  std::string_view name{raw};
  checked c;
  c.type = api().archive_entry_filetype(e);
  if (c.type == AE_IFDIR && is_top(name)) {
    c.skip = true;
    return c;
  }
  if (auto why = path_defect(name, c.path); !why.empty())
    return entry_error(errc::malformed, name, why + "; refused");
  const char* hl = api().archive_entry_hardlink(e);
  if (hl != nullptr) {
    if (opts.links == link_policy::refuse)
      return entry_error(errc::malformed, name,
                         "a hard link to '" + printable(hl) + "'; links are refused");
    if (auto why = path_defect(hl, c.hardlink); !why.empty())
      return entry_error(errc::malformed, name,
                         "a hard link to '" + printable(hl) + "', " + why + "; refused");
    return c;
  }
  switch (c.type) {
    case AE_IFREG:
      if (api().archive_entry_size_is_set(e) != 0
          && static_cast<uint64_t>(api().archive_entry_size(e)) > opts.limits.max_entry_bytes)
        return entry_error(errc::too_large, name,
                           std::to_string(api().archive_entry_size(e)) + " bytes, more than "
                             + std::to_string(opts.limits.max_entry_bytes)
                             + " (max_entry_bytes)");
      return c;
    case AE_IFDIR:
      return c;
    case AE_IFLNK: {
      const char* t = api().archive_entry_symlink(e);
      std::string_view target = t != nullptr ? t : "";
      if (opts.links == link_policy::refuse)
        return entry_error(errc::malformed, name,
                           "a symbolic link to '" + printable(target) + "'; links are refused");
      if (auto why = link_defect(c.path, target); !why.empty())
        return entry_error(errc::malformed, name, why + "; refused");
      return c;
    }
    case AE_IFCHR:
      return entry_error(errc::malformed, name, "a character device; refused");
    case AE_IFBLK:
      return entry_error(errc::malformed, name, "a block device; refused");
    case AE_IFIFO:
      return entry_error(errc::malformed, name, "a FIFO; refused");
    case AE_IFSOCK:
      return entry_error(errc::malformed, name, "a socket; refused");
    default:
      return entry_error(errc::malformed, name, "an entry of unknown type; refused");
  }
}

caf::expected<reader_ptr> open_reader(const options& opts) {
  if (!opts.zip && !opts.tar)
    return make_error(errc::invalid_config, "archive options accept no format");
  if (const auto& lib = api(); !lib.failure.empty())
    return make_error(errc::system_error, lib.failure);
  reader_ptr in{api().archive_read_new()};
  if (!in)
    return make_error(errc::system_error, "out of memory");
  if (opts.zip)
    api().archive_read_support_format_zip(in.get());
  if (opts.tar) {
    api().archive_read_support_format_tar(in.get());
    api().archive_read_support_filter_gzip(in.get());
  }
  return in;
}

std::string formats(const options& opts) {
  return opts.zip && opts.tar ? "ZIP, tar or tar.gz" : opts.zip ? "ZIP" : "tar or tar.gz";
}

// The next entry (`e`), checked; `end` after the last.
caf::expected<checked> next(struct ::archive* in, const options& opts, uint64_t index,
                            archive_entry*& e) {
  auto r = api().archive_read_next_header(in, &e);
  if (r == ARCHIVE_EOF) {
    checked c;
    c.end = true;
    return c;
  }
  if (r != ARCHIVE_OK && r != ARCHIVE_WARN)
    return make_error(errc::malformed,
                      "not a readable " + formats(opts) + " archive: " + libarchive_text(in));
  return check(e, opts, index);
}

// Counts `n` more bytes of entry `name`; the error when a limit is passed.
caf::error count(const options& opts, std::string_view name, uint64_t n, uint64_t& entry,
                 uint64_t& total) {
  entry += n;
  total += n;
  if (entry > opts.limits.max_entry_bytes)
    return entry_error(errc::too_large, name,
                       "unpacks to more than " + std::to_string(opts.limits.max_entry_bytes)
                         + " bytes (max_entry_bytes)");
  if (total > opts.limits.max_total_bytes)
    return make_error(errc::too_large, "the entries unpack to more than "
                                         + std::to_string(opts.limits.max_total_bytes)
                                         + " bytes in all (max_total_bytes)");
  return {};
}

void sync_path(const fs::path& p, bool dir) {
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC | (dir ? O_DIRECTORY : 0));
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

caf::error disk_error(struct ::archive* out, std::string_view name, const std::string& what) {
  // libarchive's own refusals (a path through a link) carry no errno.
  auto code = api().archive_errno(out) > 0 ? errc::system_error : errc::malformed;
  return entry_error(code, name, what + ": " + libarchive_text(out));
}

} // namespace

caf::expected<std::string> safe_relative_path(std::string_view name) {
  std::string out;
  if (auto why = path_defect(name, out); !why.empty())
    return make_error(errc::malformed, "path '" + printable(name) + "': " + why);
  return out;
}

caf::expected<summary> extract(const fs::path& archive, const fs::path& dest,
                               const options& opts) {
  auto in = open_reader(opts);
  if (!in)
    return std::move(in.error());
  std::error_code ec;
  auto root = fs::absolute(dest, ec).lexically_normal();
  if (ec)
    return make_error(errc::system_error, "cannot resolve " + dest.string() + ": " + ec.message());
  if (fs::exists(root, ec) && !fs::is_empty(root, ec))
    return make_error(errc::invalid_state, root.string() + " is not empty; refusing to unpack into it");
  fs::create_directories(root, ec);
  if (ec)
    return make_error(errc::system_error, "cannot create " + root.string() + ": " + ec.message());
  // All or nothing: on any error below the directory goes.
  struct cleanup {
    fs::path p;
    bool keep = false;
    ~cleanup() {
      std::error_code e;
      if (!keep)
        fs::remove_all(p, e);
    }
  } guard{root};
  writer out{api().archive_write_disk_new()};
  if (!out)
    return make_error(errc::system_error, "out of memory");
  // Names are checked (above all, not absolute) before `root` is prefixed, so
  // libarchive's absolute-path guard cannot apply; its `..` and link guards stay on.
  api().archive_write_disk_set_options(out.get(), ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME
                                                    | ARCHIVE_EXTRACT_SECURE_NODOTDOT
                                                    | ARCHIVE_EXTRACT_SECURE_SYMLINKS);
  if (api().archive_read_open_filename(in->get(), archive.c_str(), 65536) != ARCHIVE_OK)
    return make_error(errc::malformed, "cannot open " + archive.string() + " as "
                                         + formats(opts) + ": " + libarchive_text(in->get()));
  summary sum;
  uint64_t index = 0;
  std::vector<fs::path> files;
  for (;; ++index) {
    archive_entry* e = nullptr;
    auto c = next(in->get(), opts, index, e);
    if (!c)
      return std::move(c.error());
    if (c->end)
      break;
    if (c->skip)
      continue;
    std::string name = api().archive_entry_pathname(e);
    auto target = root / c->path;
    api().archive_entry_set_pathname(e, target.c_str());
    if (!c->hardlink.empty())
      api().archive_entry_set_hardlink(e, (root / c->hardlink).c_str());
    // Unpacked as root in groved: rwx bits only (no setuid), none for others to write,
    // and the owner may always read what it unpacked.
    if (c->type != AE_IFLNK)
      api().archive_entry_set_perm(e, (api().archive_entry_perm(e) & 0755)
                                        | (c->type == AE_IFDIR ? 0700 : 0400));
    if (api().archive_write_header(out.get(), e) != ARCHIVE_OK)
      return disk_error(out.get(), name, "cannot unpack");
    uint64_t entry_bytes = 0;
    const void* buf = nullptr;
    size_t size = 0;
    la_int64_t offset = 0;
    for (;;) {
      auto rr = api().archive_read_data_block(in->get(), &buf, &size, &offset);
      if (rr == ARCHIVE_EOF)
        break;
      if (rr != ARCHIVE_OK && rr != ARCHIVE_WARN)
        return entry_error(errc::malformed, name, "cannot read: " + libarchive_text(in->get()));
      if (auto err = count(opts, name, size, entry_bytes, sum.bytes))
        return err;
      // A sparse entry's holes take no bytes but make the file as large as its offsets.
      if (offset < 0 || static_cast<uint64_t>(offset) + size > opts.limits.max_entry_bytes)
        return entry_error(errc::too_large, name,
                           "reaches past " + std::to_string(opts.limits.max_entry_bytes)
                             + " bytes (max_entry_bytes)");
      if (api().archive_write_data_block(out.get(), buf, size, offset) != ARCHIVE_OK)
        return disk_error(out.get(), name, "cannot write");
    }
    if (api().archive_write_finish_entry(out.get()) != ARCHIVE_OK)
      return disk_error(out.get(), name, "cannot finish");
    ++sum.entries;
    if (c->type == AE_IFREG && c->hardlink.empty())
      files.push_back(target);
  }
  // Directory modes and times are set here (libarchive defers them).
  if (api().archive_write_close(out.get()) != ARCHIVE_OK)
    return make_error(errc::system_error,
                      "cannot finish unpacking into " + root.string() + ": "
                        + libarchive_text(out.get()));
  if (opts.sync) {
    for (const auto& f : files)
      sync_path(f, false);
    for (const auto& d : fs::recursive_directory_iterator(root, ec))
      if (d.is_directory(ec) && !d.is_symlink(ec))
        sync_path(d.path(), true);
    sync_path(root, true);
  }
  guard.keep = true;
  return sum;
}

struct reader::impl {
  reader_ptr in;
  options opts;
  uint64_t index = 0;       // entries seen, skipped ones too (max_entries)
  uint64_t total = 0;       // bytes read, all entries (max_total_bytes)
  uint64_t entry_bytes = 0; // bytes read of the current entry (max_entry_bytes)
  entry current;
  bool readable = false;    // the current entry is a file with contents to read
  bool done = false;
  caf::error failed;        // sticky: after an error the stream is in no known state

  caf::error fail(caf::error err) {
    failed = err;
    readable = false;
    return err;
  }
};

reader::reader(std::unique_ptr<impl> ptr) : impl_(std::move(ptr)) {
  // nop
}

reader::reader(reader&&) noexcept = default;
reader& reader::operator=(reader&&) noexcept = default;
reader::~reader() = default;

caf::expected<reader> reader::open(const fs::path& archive, const options& opts) {
  auto in = open_reader(opts);
  if (!in)
    return std::move(in.error());
  if (api().archive_read_open_filename(in->get(), archive.c_str(), 65536) != ARCHIVE_OK)
    return make_error(errc::malformed, "cannot open " + archive.string() + " as "
                                         + formats(opts) + ": " + libarchive_text(in->get()));
  auto p = std::make_unique<impl>();
  p->in = std::move(*in);
  p->opts = opts;
  return reader{std::move(p)};
}

caf::expected<reader> reader::open_memory(std::string_view bytes, const options& opts) {
  auto in = open_reader(opts);
  if (!in)
    return std::move(in.error());
  if (api().archive_read_open_memory(in->get(), bytes.data(), bytes.size()) != ARCHIVE_OK)
    return make_error(errc::malformed, "not a readable " + formats(opts) + " archive: "
                                         + libarchive_text(in->get()));
  auto p = std::make_unique<impl>();
  p->in = std::move(*in);
  p->opts = opts;
  return reader{std::move(p)};
}

caf::expected<const entry*> reader::next() {
  auto& s = *impl_;
  if (s.failed)
    return s.failed;
  if (s.done)
    return nullptr;
  s.readable = false;
  for (;; ++s.index) {
    archive_entry* e = nullptr;
    auto c = grove::archive::next(s.in.get(), s.opts, s.index, e);
    if (!c)
      return s.fail(std::move(c.error()));
    if (c->end) {
      s.done = true;
      return nullptr;
    }
    if (c->skip)
      continue;
    ++s.index;
    auto& cur = s.current;
    cur.name = std::move(c->path);
    cur.link.clear();
    cur.size.reset();
    cur.mode = static_cast<uint32_t>(api().archive_entry_perm(e)) & 07777;
    if (!c->hardlink.empty()) {
      cur.kind = entry_kind::hardlink;
      cur.link = std::move(c->hardlink);
    } else if (c->type == AE_IFDIR) {
      cur.kind = entry_kind::directory;
    } else if (c->type == AE_IFLNK) {
      cur.kind = entry_kind::symlink;
      cur.link = api().archive_entry_symlink(e) != nullptr ? api().archive_entry_symlink(e) : "";
    } else {
      cur.kind = entry_kind::file;
      if (api().archive_entry_size_is_set(e) != 0)
        cur.size = static_cast<uint64_t>(api().archive_entry_size(e));
      s.readable = true;
    }
    s.entry_bytes = 0;
    return &cur;
  }
}

caf::expected<size_t> reader::read(char* buf, size_t size) {
  auto& s = *impl_;
  if (s.failed)
    return s.failed;
  if (!s.readable || size == 0)
    return size_t{0};
  auto n = api().archive_read_data(s.in.get(), buf, size);
  if (n < 0)
    return s.fail(entry_error(errc::malformed, s.current.name,
                              "cannot read: " + libarchive_text(s.in.get())));
  if (n == 0) {
    s.readable = false;
    return size_t{0};
  }
  if (auto err = count(s.opts, s.current.name, static_cast<uint64_t>(n), s.entry_bytes, s.total))
    return s.fail(std::move(err));
  return static_cast<size_t>(n);
}

caf::expected<std::vector<file>> read_files(std::string_view bytes, const options& opts) {
  auto in = reader::open_memory(bytes, opts);
  if (!in)
    return std::move(in.error());
  std::vector<file> files;
  for (;;) {
    auto e = in->next();
    if (!e)
      return std::move(e.error());
    if (*e == nullptr)
      break;
    if ((*e)->kind != entry_kind::file)
      continue;
    file f{(*e)->name, {}};
    char buf[65536];
    for (;;) {
      auto n = in->read(buf, sizeof buf);
      if (!n)
        return std::move(n.error());
      if (*n == 0)
        break;
      f.data.append(buf, *n);
    }
    files.push_back(std::move(f));
  }
  return files;
}

} // namespace grove::archive
