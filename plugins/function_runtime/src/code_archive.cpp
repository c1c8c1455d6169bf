#include "code_archive.hpp"

#include <openssl/evp.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <memory>
#include <system_error>

#include "grove/archive.hpp"
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

namespace {

/// What identifies the archive file as checked: a different file, or this one written
/// since, is hashed again.
std::string file_identity(const fs::path& file) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0)
    return {};
  return std::to_string(st.st_dev) + ' ' + std::to_string(st.st_ino) + ' '
         + std::to_string(st.st_size) + ' ' + std::to_string(st.st_mtim.tv_sec) + '.'
         + std::to_string(st.st_mtim.tv_nsec) + ' ' + std::to_string(st.st_ctim.tv_sec) + '.'
         + std::to_string(st.st_ctim.tv_nsec);
}

std::string read_first_lines(const fs::path& file, int n) {
  std::ifstream in{file};
  std::string all, line;
  for (int i = 0; i < n && std::getline(in, line); ++i)
    all += line + '\n';
  return all;
}

} // namespace

caf::expected<fs::path> unpack_code(const fs::path& file, const std::string& sha256,
                                    const fs::path& root) {
  std::string want = sha256;
  std::transform(want.begin(), want.end(), want.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  auto dest = root / want;
  auto done = dest / ".grove-unpacked";
  // Every group change comes here: an archive already unpacked from this very file, not
  // written since (its identity in the marker), is not read and hashed again.
  auto identity = file_identity(file);
  std::error_code ec;
  if (!identity.empty() && read_first_lines(done, 2) == want + '\n' + identity + '\n')
    return dest;
  auto got = sha256_file(file);
  if (!got)
    return got.error();
  if (*got != want)
    return make_error(errc::invalid_config, "codeUri " + file.string() + ": SHA-256 is "
                                              + *got + ", codeSha256 says " + want);
  if (fs::exists(done, ec)) {
    // Unpacked before (from another file, or this one rewritten with the same bytes).
    std::ofstream{done} << want << '\n' << identity << '\n';
    return dest;
  }
  fs::remove_all(dest, ec); // a half-done unpack of an earlier run
  // Code packages carry links (node_modules/.bin, lib*.so -> lib*.so.1): those that
  // stay inside the code directory are kept, any other is refused.
  grove::archive::options opts;
  opts.links = grove::archive::link_policy::inside;
  if (auto unpacked = grove::archive::extract(file, dest, opts); !unpacked)
    return make_error(errc::invalid_config,
                      "codeUri " + file.string() + ": " + message_of(unpacked.error()));
  // groved's umask (077) would leave it 0700 root: the function's user must search the
  // directory its instance starts in (the 0700 directories above it stay closed).
  fs::permissions(dest, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec
                          | fs::perms::others_read | fs::perms::others_exec, ec);
  std::ofstream{done} << want << '\n' << identity << '\n';
  return dest;
}

} // namespace grove::fn
