#pragma once

// What the deployment API's unit tests share (deployments_test.cpp, lambda_test.cpp,
// unit_test.cpp): a real component store in a fresh directory, the API over it, and
// requests signed as a client signs them, at a fixed time.

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <unistd.h>

#include <boost/test/unit_test.hpp>

#include "api.hpp"
#include "sigv4.hpp"

namespace grove::deployment::test {

/// The key the tests sign with (all operations).
inline constexpr const char* key_id = "AKIAGROVETEST00001";
/// The secret of every test key.
inline constexpr const char* key_secret = "secret-secret-secret";

/// Settings that hold the test key.
inline api_settings settings_with_key() {
  api_settings settings;
  settings.keys[key_id] = access_key{key_secret, {"*"}};
  return settings;
}

/// A component store in a fresh directory (removed at the end) and the API over it.
struct api_fixture {
  /// <tmp>/<name>_<pid>, empty at the start.
  std::filesystem::path dir;
  std::unique_ptr<component_store> store;
  std::unique_ptr<api> service;
  /// The clock of every request.
  std::chrono::system_clock::time_point now = *parse_amz_date("20261202T120000Z");

  explicit api_fixture(const std::string& name)
    : dir(std::filesystem::temp_directory_path() / (name + "_" + std::to_string(::getpid()))) {
    std::filesystem::remove_all(dir);
  }

  ~api_fixture() {
    service.reset();
    store.reset();
    std::filesystem::remove_all(dir);
  }

  /// (Re)opens the store in `dir` and the API over it with `settings`.
  void open_api(const api_settings& settings) {
    service.reset();
    store.reset();
    auto s = component_store::open(dir / "components.db");
    BOOST_REQUIRE(s);
    store = std::move(*s);
    service = std::make_unique<api>(settings, *store);
  }

  /// METHOD TARGET with BODY, signed with `key` at `now`, as the API answers it.
  http_response call(std::string method, std::string target, std::string body = "",
                     std::string key = key_id) {
    http_request r{std::move(method), std::move(target), {{"host", "localhost"}}, std::move(body)};
    sign_sigv4(r, sigv4_scope{"us-east-1"}, key, key_secret, now);
    return service->handle(r, now);
  }
};

} // namespace grove::deployment::test
