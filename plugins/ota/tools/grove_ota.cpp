// grove-ota: makes keys, signs and packs update bundles, and verifies or installs one
// without a running groved (README.md, "The grove-ota tool").
//   grove-ota keygen PREFIX                 PREFIX.key (secret, 0600), PREFIX.pub
//   grove-ota sign KEY FILE                 prints manifest.sig for FILE's exact bytes
//   grove-ota bundle --tree DIR --version V --key KEY --out FILE [options]
//   grove-ota verify BUNDLE --trust PUB...  checks signature and manifest, prints it
//   grove-ota install BUNDLE --root R --trust PUB... [--allow-downgrade] [--margin-bytes N]
//                                           [--restart-pid PID]
//   grove-ota state --root R                prints the journal

#include "bundle.hpp"
#include "install.hpp"

#include "grove/errors.hpp"
#include "grove/file.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>

namespace fs = std::filesystem;
using namespace grove::ota;

namespace {

int usage() {
  std::cerr << "usage: grove-ota keygen PREFIX | sign KEY FILE | bundle --tree DIR --version V"
               " --key KEY --out FILE [--kind full|plugins] [--groved-version V]"
               " [--plugin NAME=V]... [--min-version V] [--allow-downgrade] |"
               " verify BUNDLE --trust PUB... | install BUNDLE --root DIR --trust PUB..."
               " [--allow-downgrade] [--margin-bytes N] [--restart-pid PID] | state --root DIR\n";
  return 2;
}

int fail(const caf::error& err) {
  std::cerr << "grove-ota: " << grove::describe(err) << "\n";
  return 1;
}

std::string slurp(const fs::path& p) {
  std::ifstream in{p, std::ios::binary};
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

// A public key file, or a key given as hex.
std::string read_key(const std::string& arg) {
  std::error_code ec;
  auto text = fs::is_regular_file(arg, ec) ? slurp(arg) : arg;
  text.erase(std::remove_if(text.begin(), text.end(), ::isspace), text.end());
  return text;
}

struct archive_writer {
  archive* a = archive_write_new();
  ~archive_writer() { archive_write_free(a); }
  bool add(const std::string& name, const std::string* data, const fs::path* file,
           uint64_t size, unsigned mode) {
    auto* e = archive_entry_new();
    archive_entry_set_pathname(e, name.c_str());
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, mode);
    archive_entry_set_size(e, static_cast<la_int64_t>(size));
    bool ok = archive_write_header(a, e) == ARCHIVE_OK;
    archive_entry_free(e);
    if (!ok)
      return false;
    if (data)
      return archive_write_data(a, data->data(), data->size()) == static_cast<la_ssize_t>(data->size());
    std::ifstream in{*file, std::ios::binary};
    char buf[64 * 1024];
    while (in) {
      in.read(buf, sizeof buf);
      if (in.gcount() > 0 && archive_write_data(a, buf, static_cast<size_t>(in.gcount())) < 0)
        return false;
    }
    return true;
  }
};

int cmd_bundle(int argc, char** argv) {
  manifest m;
  m.kind = "full";
  std::string tree, key, out;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--tree") tree = next();
    else if (a == "--version") m.version = next();
    else if (a == "--key") key = next();
    else if (a == "--out") out = next();
    else if (a == "--kind") m.kind = next();
    else if (a == "--groved-version") m.groved_version = next();
    else if (a == "--min-version") m.min_version = next();
    else if (a == "--allow-downgrade") m.allow_downgrade = true;
    else if (a == "--plugin") {
      auto kv = next();
      auto eq = kv.find('=');
      if (eq == std::string::npos)
        return usage();
      m.plugins[kv.substr(0, eq)] = kv.substr(eq + 1);
    } else
      return usage();
  }
  if (tree.empty() || m.version.empty() || key.empty() || out.empty())
    return usage();
  if (m.kind == "full" && m.groved_version.empty())
    m.groved_version = m.version;
  std::vector<fs::path> files;
  for (auto& e : fs::recursive_directory_iterator(tree))
    if (e.is_regular_file() && !e.is_symlink())
      files.push_back(e.path());
  std::sort(files.begin(), files.end());
  for (auto& f : files) {
    auto digest = sha256_file(f);
    if (!digest)
      return fail(digest.error());
    file_entry fe;
    fe.path = fs::relative(f, tree).generic_string();
    fe.sha256 = *digest;
    fe.size = fs::file_size(f);
    fe.mode = static_cast<uint32_t>(fs::status(f).permissions()) & 0755;
    m.files.push_back(std::move(fe));
  }
  auto text = to_json(m);
  if (auto parsed = parse_manifest(text); !parsed)
    return fail(parsed.error()); // the tool refuses what a device would
  auto sig = sign(text, read_key(key));
  if (!sig)
    return fail(sig.error());
  archive_writer w;
  archive_write_set_format_pax_restricted(w.a);
  if (archive_write_open_filename(w.a, out.c_str()) != ARCHIVE_OK) {
    std::cerr << "grove-ota: " << out << ": " << archive_error_string(w.a) << "\n";
    return 1;
  }
  bool ok = w.add("manifest.json", &text, nullptr, text.size(), 0644)
            && w.add("manifest.sig", &*sig, nullptr, sig->size(), 0644);
  for (size_t i = 0; ok && i < files.size(); ++i)
    ok = w.add("files/" + m.files[i].path, nullptr, &files[i], m.files[i].size, m.files[i].mode);
  if (!ok || archive_write_close(w.a) != ARCHIVE_OK) {
    std::cerr << "grove-ota: writing " << out << ": " << archive_error_string(w.a) << "\n";
    return 1;
  }
  std::cout << out << ": " << m.kind << " " << m.version << ", " << m.files.size() << " files, "
            << m.total_size() << " bytes\n";
  return 0;
}

int cmd_verify_install(int argc, char** argv, bool install_it) {
  if (argc < 3)
    return usage();
  source src{argv[2], {}};
  policy pol;
  fs::path root;
  pid_t restart_pid = 0;
  for (int i = 3; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--trust") pol.trusted_keys.push_back(read_key(next()));
    else if (a == "--root") root = next();
    else if (a == "--allow-downgrade") pol.allow_downgrade = true;
    else if (a == "--margin-bytes") pol.margin_bytes = std::stoull(next());
    else if (a == "--installed-version") pol.installed_version = next();
    else if (a == "--restart-pid") restart_pid = static_cast<pid_t>(std::stol(next()));
    else return usage();
  }
  if (!install_it) {
    auto h = read_header(src);
    if (!h)
      return fail(h.error());
    auto m = verify(*h, pol.trusted_keys);
    if (!m)
      return fail(m.error());
    if (!pol.installed_version.empty())
      if (auto err = check(*m, pol, fs::current_path()))
        return fail(err);
    std::cout << to_json(*m);
    return 0;
  }
  if (root.empty())
    return usage();
  auto st = install(root, src, pol, "");
  if (!st)
    return fail(st.error());
  std::cout << "installed " << st->version << " as releases/" << st->target
            << (st->phase == "trial" ? " (on trial; previous " + st->previous + ")" : "") << "\n";
  // The watchdog starts the new release when the running groved exits.
  if (restart_pid > 0 && ::kill(restart_pid, SIGTERM) != 0) {
    std::cerr << "grove-ota: cannot signal " << restart_pid << ": " << std::strerror(errno) << "\n";
    return 1;
  }
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 2)
    return usage();
  std::string cmd = argv[1];
  if (cmd == "keygen" && argc == 3) {
    auto [sk, pk] = make_key_pair();
    std::string prefix = argv[2];
    auto err = grove::write_file_atomically(prefix + ".key", sk + "\n", {.mode = 0600});
    if (!err)
      err = grove::write_file_atomically(prefix + ".pub", pk + "\n", {.mode = 0644});
    if (err) {
      std::cerr << "grove-ota: " << grove::message_of(err) << "\n";
      return 1;
    }
    std::cout << pk << "\n";
    return 0;
  }
  if (cmd == "sign" && argc == 4) {
    auto sig = sign(slurp(argv[3]), read_key(argv[2]));
    if (!sig)
      return fail(sig.error());
    std::cout << *sig;
    return 0;
  }
  if (cmd == "bundle")
    return cmd_bundle(argc, argv);
  if (cmd == "verify")
    return cmd_verify_install(argc, argv, false);
  if (cmd == "install")
    return cmd_verify_install(argc, argv, true);
  if (cmd == "state" && argc == 4 && std::string{argv[2]} == "--root") {
    auto st = read_state(argv[3]);
    if (!st)
      return fail(st.error());
    std::cout << "phase=" << st->phase << " previous=" << st->previous << " target="
              << st->target << " version=" << st->version << " attempts=" << st->attempts
              << " current=" << current_release(argv[3]) << " reason=" << st->reason << "\n";
    return 0;
  }
  return usage();
}
