#include "grove/http_fetch.hpp"

#include <httplib.h>

#include <charconv>

namespace grove::http {

std::string get(const std::string& url, const fetch_options& opts, const body_sink& sink) {
  auto scheme_end = url.find("://");
  if (scheme_end == std::string::npos)
    return "not a URL: " + url.substr(0, 512);
  auto path_start = url.find('/', scheme_end + 3);
  auto origin = url.substr(0, path_start);
  auto path = path_start == std::string::npos ? std::string{"/"} : url.substr(path_start);
  httplib::Client cli{origin};
  if (!cli.is_valid())
    return "cannot make a client for " + origin.substr(0, 512);
  cli.set_connection_timeout(opts.timeout);
  cli.set_read_timeout(opts.timeout);
  cli.set_follow_location(true);
  cli.enable_server_certificate_verification(true);
  if (!opts.ca_file.empty())
    cli.set_ca_cert_path(opts.ca_file.c_str());
  // A stop cuts the download (its socket shut), even one waiting for bytes.
  if (opts.cancel && !opts.cancel->add(&cli, [&cli] { cli.stop(); }))
    return "cancelled: the plugin is stopping";
  struct unregister {
    const fetch_options& o;
    const void* id;
    ~unregister() {
      if (o.cancel)
        o.cancel->remove(id);
    }
  } registered{opts, &cli};
  auto too_large = [&] {
    return "larger than " + opts.max_bytes_name + " (" + std::to_string(opts.max_bytes) + " bytes)";
  };
  int status = 0;
  bool over = false;
  uint64_t announced = 0;
  bool stopped = false;
  uint64_t size = 0;
  auto res = cli.Get(
    path, httplib::Headers{},
    [&](const httplib::Response& r) {
      status = r.status;
      if (r.status != 200)
        return false;
      // Refused before the body when the server says how large it is.
      auto len = r.get_header_value("Content-Length");
      uint64_t n = 0;
      if (!len.empty()
          && std::from_chars(len.data(), len.data() + len.size(), n).ec == std::errc{}
          && n > opts.max_bytes) {
        over = true;
        announced = n;
        return false;
      }
      return true;
    },
    [&](const char* data, size_t n) {
      if (opts.cancel && opts.cancel->cancelled())
        return false;
      if (size + n > opts.max_bytes) {
        over = true;
        return false;
      }
      size += n;
      if (!sink(data, n)) {
        stopped = true;
        return false;
      }
      return true;
    });
  if (over)
    return announced > 0 ? too_large() + ": the server announced " + std::to_string(announced)
                             + " bytes"
                         : too_large();
  if (stopped)
    return "stopped";
  if (opts.cancel && opts.cancel->cancelled())
    return "cancelled: the plugin is stopping";
  if (status != 0 && status != 200)
    return "GET " + url.substr(0, 512) + ": HTTP status " + std::to_string(status);
  if (!res) {
    auto why = "GET " + url.substr(0, 512) + ": " + httplib::to_string(res.error());
    if (res.error() == httplib::Error::SSLServerVerification)
      why += " (the server certificate is not from the configured CA)";
    return why;
  }
  return {};
}

} // namespace grove::http
