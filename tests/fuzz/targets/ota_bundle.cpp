// The ota plugin's bundle reader and manifest parser (plugins/ota/src/bundle.cpp): the
// input as manifest.json text, and as a bundle (tar): its header read, the manifest
// verified against a fixed key (never passes unsigned), and the unsigned manifest staged
// into a fresh directory. What parses has only paths that stay inside the tree; what
// stages left exactly the manifest's files, each of its size; what fails left nothing.

#include "bundle.hpp"
#include "fuzz_support.hpp"

#include <unistd.h>

#include <cstdlib>

using namespace grove::ota;
namespace fs = std::filesystem;

namespace {

void check_manifest(const manifest& m) {
  for (auto& f : m.files)
    if (!safe_relative_path(f.path) || f.sha256.size() != 64 || f.path.empty())
      std::abort();
  if (!valid_version(m.version) || (m.kind != "full" && m.kind != "plugins"))
    std::abort();
}

const fs::path& scratch() {
  static const fs::path dir = [] {
    auto d = fs::temp_directory_path() / ("fuzz_ota_bundle." + std::to_string(::getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
  }();
  return dir;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto input = grove::fuzz::bytes(data, size);
  if (auto m = parse_manifest(input)) {
    check_manifest(*m);
    // What the signer writes parses back the same.
    auto again = parse_manifest(to_json(*m));
    if (!again || to_json(*again) != to_json(*m))
      std::abort();
  }
  source src{{}, input};
  auto h = read_header(src);
  if (!h)
    return 0;
  static const std::string key(64, 'a');
  if (verify(*h, {key}))
    std::abort(); // no fuzzer input is signed by this key
  auto m = parse_manifest(h->manifest_json);
  if (!m || m->files.size() > 64 || m->total_size() > (1 << 20))
    return 0;
  auto dir = scratch() / "release";
  auto err = stage(src, *m, dir);
  if (err) {
    if (fs::exists(dir))
      std::abort(); // a refusal leaves nothing behind
  } else {
    size_t count = 0;
    for (auto& e : fs::recursive_directory_iterator(dir))
      if (e.is_regular_file())
        ++count;
    if (count != m->files.size())
      std::abort();
    for (auto& f : m->files)
      if (fs::file_size(dir / f.path) != f.size)
        std::abort();
  }
  fs::remove_all(dir);
  return 0;
}
