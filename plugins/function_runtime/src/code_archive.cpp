#include "code_archive.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <memory>

#include "grove/errors.hpp"

namespace grove::fn {

namespace fs = std::filesystem;

bool is_code_archive(const std::string& uri) {
  return uri.ends_with(".zip") || uri.ends_with(".tar.gz") || uri.ends_with(".tgz");
}

caf::expected<std::string> sha256_file(const fs::path& path) {
  std::ifstream in{path, std::ios::binary};
  if (!in)
    return make_error(errc::system_error, "cannot read " + path.string());
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx{EVP_MD_CTX_new(),
                                                               &EVP_MD_CTX_free};
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1)
    return make_error(errc::system_error, "sha256: cannot initialise");
  char buf[65536];
  while (in) {
    in.read(buf, sizeof buf);
    if (in.gcount() > 0)
      EVP_DigestUpdate(ctx.get(), buf, static_cast<size_t>(in.gcount()));
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), md, &len);
  static constexpr char digits[] = "0123456789abcdef";
  std::string hex;
  for (unsigned i = 0; i < len; ++i) {
    hex += digits[md[i] >> 4];
    hex += digits[md[i] & 0xf];
  }
  return hex;
}

caf::expected<fs::path> unpack_code(const fs::path& file, const std::string& sha256,
                                    const fs::path& root) {
  std::string want = sha256;
  std::transform(want.begin(), want.end(), want.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  auto got = sha256_file(file);
  if (!got)
    return got.error();
  if (*got != want)
    return make_error(errc::invalid_config, "codeUri " + file.string() + ": SHA-256 is "
                                              + *got + ", codeSha256 says " + want);
  auto dest = root / want;
  auto done = dest / ".grove-unpacked";
  std::error_code ec;
  if (fs::exists(done, ec))
    return dest;
  fs::remove_all(dest, ec); // a half-done unpack of an earlier run
  fs::create_directories(dest, ec);
  if (ec)
    return make_error(errc::system_error, "cannot create " + dest.string() + ": " + ec.message());
  // groved's umask (077) would leave it 0700 root: the function's user must search the
  // directory its instance starts in (the 0700 directories above it stay closed).
  fs::permissions(dest, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec
                          | fs::perms::others_read | fs::perms::others_exec, ec);
  std::unique_ptr<struct archive, decltype(&archive_read_free)> in{archive_read_new(),
                                                             &archive_read_free};
  std::unique_ptr<struct archive, decltype(&archive_write_free)> out{archive_write_disk_new(),
                                                                      &archive_write_free};
  archive_read_support_format_zip(in.get());
  archive_read_support_format_tar(in.get());
  archive_read_support_filter_gzip(in.get());
  // Entries are written under `dest` by absolute path, so libarchive's absolute-path
  // guard cannot apply: the entry names are checked below before `dest` is prefixed.
  archive_write_disk_set_options(out.get(), ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME
                                              | ARCHIVE_EXTRACT_SECURE_NODOTDOT
                                              | ARCHIVE_EXTRACT_SECURE_SYMLINKS);
  auto failed = [&](struct archive* a, const std::string& what) {
    fs::remove_all(dest, ec);
    const char* msg = archive_error_string(a);
    return make_error(errc::invalid_config, "codeUri " + file.string() + ": " + what
                                              + (msg != nullptr ? std::string{": "} + msg : ""));
  };
  if (archive_read_open_filename(in.get(), file.c_str(), 65536) != ARCHIVE_OK)
    return failed(in.get(), "cannot open");
  for (;;) {
    archive_entry* entry = nullptr;
    auto r = archive_read_next_header(in.get(), &entry);
    if (r == ARCHIVE_EOF)
      break;
    if (r != ARCHIVE_OK)
      return failed(in.get(), "cannot read");
    std::string name = archive_entry_pathname(entry);
    if (name.empty() || name.front() == '/' || fs::path{name}.lexically_normal().string().starts_with(".."))
      return failed(in.get(), "entry '" + name + "' would land outside the code directory");
    archive_entry_set_pathname(entry, (dest / name).c_str());
    // groved unpacks as root, so a 04755 entry would come out setuid root: a function
    // running as grove-fn could exec it. Keep only rwx bits, and none for others to write.
    archive_entry_set_perm(entry, archive_entry_perm(entry) & 0755);
    if (const char* hl = archive_entry_hardlink(entry))
      archive_entry_set_hardlink(entry, (dest / hl).c_str());
    if (archive_write_header(out.get(), entry) != ARCHIVE_OK)
      return failed(out.get(), "cannot unpack '" + name + "'");
    const void* buf = nullptr;
    size_t size = 0;
    la_int64_t offset = 0;
    for (;;) {
      auto rr = archive_read_data_block(in.get(), &buf, &size, &offset);
      if (rr == ARCHIVE_EOF)
        break;
      if (rr != ARCHIVE_OK)
        return failed(in.get(), "cannot read '" + name + "'");
      if (archive_write_data_block(out.get(), buf, size, offset) != ARCHIVE_OK)
        return failed(out.get(), "cannot write '" + name + "'");
    }
    if (archive_write_finish_entry(out.get()) != ARCHIVE_OK)
      return failed(out.get(), "cannot finish '" + name + "'");
  }
  std::ofstream{done} << want << '\n';
  return dest;
}

} // namespace grove::fn
