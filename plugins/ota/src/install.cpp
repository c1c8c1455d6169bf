#include "install.hpp"

#include "grove/errors.hpp"
#include "grove/file.hpp"

#include <nlohmann/json.hpp>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace grove::ota {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

caf::error sys(const std::string& what) {
  return make_error(errc::system_error, "ota: " + what + ": " + std::strerror(errno));
}

} // namespace

void crash_point(const char* step) {
  if (auto* at = std::getenv("GROVE_OTA_CRASH_AT"); at && std::strcmp(at, step) == 0)
    ::kill(::getpid(), SIGKILL);
}

caf::expected<state> read_state(const fs::path& root) {
  std::ifstream in{root / "ota-state.json"};
  if (!in)
    return state{};
  std::stringstream buf;
  buf << in.rdbuf();
  json doc = json::parse(buf.str(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object())
    return make_error(errc::malformed, "ota: " + (root / "ota-state.json").string()
                                         + " is not a JSON object");
  state st;
  auto get = [&](const char* key, std::string& out) {
    if (auto it = doc.find(key); it != doc.end() && it->is_string())
      out = it->get<std::string>();
  };
  get("phase", st.phase);
  get("previous", st.previous);
  get("target", st.target);
  get("version", st.version);
  get("kind", st.kind);
  get("reason", st.reason);
  get("job_id", st.job_id);
  if (auto it = doc.find("attempts"); it != doc.end() && it->is_number_integer())
    st.attempts = it->get<int>();
  return st;
}

caf::error write_state(const fs::path& root, const state& st) {
  json doc = {{"phase", st.phase},   {"previous", st.previous}, {"target", st.target},
              {"version", st.version}, {"kind", st.kind}, {"reason", st.reason},   {"job_id", st.job_id},
              {"attempts", st.attempts}};
  return write_file_atomically(root / "ota-state.json", doc.dump(2) + "\n", {.mode = 0600});
}

std::string current_release(const fs::path& root) {
  std::error_code ec;
  auto link = fs::read_symlink(root / "current", ec);
  if (ec)
    return {};
  return link.filename().string();
}

std::string release_version(const fs::path& root, const std::string& release) {
  std::ifstream in{root / "releases" / release / "ota-manifest.json"};
  if (!in)
    return {};
  std::stringstream buf;
  buf << in.rdbuf();
  json doc = json::parse(buf.str(), nullptr, false);
  if (doc.is_object() && doc.contains("version") && doc["version"].is_string())
    return doc["version"].get<std::string>();
  return {};
}

caf::error switch_to(const fs::path& root, const std::string& release) {
  auto tmp = root / "current.new";
  ::unlink(tmp.c_str());
  auto target = "releases/" + release;
  if (::symlink(target.c_str(), tmp.c_str()) != 0)
    return sys("symlink " + tmp.string());
  // rename(2) replaces the old link in one step: `current` is always the old or the new.
  if (::rename(tmp.c_str(), (root / "current").c_str()) != 0)
    return sys("rename " + tmp.string());
  return sync_directory(root);
}

caf::expected<state> install(const fs::path& root, const source& src, policy pol,
                             const std::string& job_id) {
  std::error_code ec;
  fs::create_directories(root / "releases", ec);
  if (ec)
    return make_error(errc::system_error, "ota: create " + (root / "releases").string() + ": "
                                            + ec.message());
  auto prev = read_state(root);
  if (prev && prev->phase == "trial")
    return make_error(errc::invalid_state, "ota: version " + prev->version
                                             + " is still on trial; apply after it is healthy");
  auto current = current_release(root);
  if (pol.installed_version.empty() && !current.empty())
    pol.installed_version = release_version(root, current);
  auto h = read_header(src);
  if (!h)
    return std::move(h.error());
  auto m = verify(*h, pol.trusted_keys);
  if (!m)
    return std::move(m.error());
  if (auto err = check(*m, pol, root / "releases"))
    return err;
  if (m->kind == "plugins" && current.empty())
    return make_error(errc::invalid_state, "ota: a plugins bundle needs an installed release");
  auto release = m->version;
  auto dir = root / "releases" / release;
  // A release directory that is not running nor the rollback target is a leftover of an
  // earlier attempt at this version (rolled back, or killed while staging).
  if (release == current)
    return make_error(errc::invalid_state, "ota: release " + release + " is the running one");
  fs::remove_all(dir, ec);
  auto staging = root / "releases" / (release + ".staging");
  fs::remove_all(staging, ec);
  if (m->kind == "full") {
    if (auto err = stage(src, *m, staging))
      return err;
  } else {
    auto files = root / "releases" / (release + ".files");
    fs::remove_all(files, ec);
    if (auto err = stage(src, *m, files))
      return err;
    // Releases are never modified in place, so the new one may share the old one's files.
    fs::copy(root / "releases" / current, staging,
             fs::copy_options::recursive | fs::copy_options::copy_symlinks
               | fs::copy_options::create_hard_links,
             ec);
    for (auto& f : m->files) {
      if (ec)
        break;
      fs::remove(staging / f.path, ec);
      if (!ec)
        fs::create_directories((staging / f.path).parent_path(), ec);
      if (!ec)
        fs::rename(files / f.path, staging / f.path, ec);
    }
    std::error_code ignore;
    fs::remove_all(files, ignore);
    if (ec) {
      fs::remove_all(staging, ignore);
      return make_error(errc::system_error, "ota: making the plugins release: " + ec.message());
    }
    fs::remove(staging / "ota-manifest.json", ignore);
    if (auto err = sync_directory(staging / "lib/grove/plugins"))
      return err;
  }
  if (auto err = write_file_atomically(staging / "ota-manifest.json", h->manifest_json,
                                          {.mode = 0644}))
    return err;
  crash_point("staged");
  if (::rename(staging.c_str(), dir.c_str()) != 0)
    return sys("rename " + staging.string());
  if (auto err = sync_directory(root / "releases"))
    return err;
  state st;
  st.previous = current;
  st.target = release;
  st.version = m->version;
  st.kind = m->kind;
  st.job_id = job_id;
  // Journal first: a crash between the two leaves a "trial" whose target is not current,
  // which the watchdog reads as "interrupted before the switch".
  st.phase = current.empty() ? "idle" : "trial";
  if (auto err = write_state(root, st))
    return err;
  crash_point("journaled");
  if (auto err = switch_to(root, release))
    return err;
  crash_point("switched");
  return st;
}

} // namespace grove::ota
