#include "auth.hpp"

#include <sodium.h>

#include <algorithm>

#include "grove/utf8.hpp"

namespace grove::console {

bool sodium_ready() {
  // sodium_init is thread-safe and returns 1 once already initialized.
  return sodium_init() >= 0;
}

std::string hash_password(std::string_view password) {
  if (!sodium_ready())
    return {};
  char out[crypto_pwhash_STRBYTES];
  if (crypto_pwhash_str(out, password.data(), password.size(),
                        crypto_pwhash_OPSLIMIT_INTERACTIVE, crypto_pwhash_MEMLIMIT_INTERACTIVE)
      != 0)
    return {};
  return out;
}

bool verify_password(const std::string& hash, std::string_view password) {
  if (!sodium_ready() || hash.size() >= crypto_pwhash_STRBYTES)
    return false;
  return crypto_pwhash_str_verify(hash.c_str(), password.data(), password.size()) == 0;
}

std::string random_token() {
  unsigned char bytes[32];
  if (!sodium_ready())
    std::abort(); // no randomness, no sessions: never hand out a guessable token
  randombytes_buf(bytes, sizeof bytes);
  char hex[sizeof bytes * 2 + 1];
  sodium_bin2hex(hex, sizeof hex, bytes, sizeof bytes);
  return hex;
}

bool same_token(std::string_view a, std::string_view b) {
  if (a.size() != b.size() || a.empty())
    return false;
  return sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string cookie_value(std::string_view header, std::string_view name) {
  while (!header.empty()) {
    auto semi = header.find(';');
    auto pair = header.substr(0, semi);
    header = semi == std::string_view::npos ? std::string_view{} : header.substr(semi + 1);
    while (!pair.empty() && (pair.front() == ' ' || pair.front() == '\t'))
      pair.remove_prefix(1);
    while (!pair.empty() && (pair.back() == ' ' || pair.back() == '\t'))
      pair.remove_suffix(1);
    auto eq = pair.find('=');
    if (eq == std::string_view::npos)
      continue;
    if (pair.substr(0, eq) == name)
      return std::string{pair.substr(eq + 1)};
  }
  return {};
}

std::optional<nlohmann::json> parse_object(std::string_view body, std::string& error) {
  // Depth bounded before nlohmann's recursive parser sees it: the console's bodies are flat.
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < body.size(); ++i) {
    char c = body[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > 16) {
        error = "the JSON body nests deeper than 16 levels";
        return std::nullopt;
      }
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  auto j = nlohmann::json::parse(body.begin(), body.end(), nullptr, false);
  if (j.is_discarded()) {
    error = "the body is not JSON";
    return std::nullopt;
  }
  if (!j.is_object()) {
    error = "the body is not a JSON object";
    return std::nullopt;
  }
  return j;
}

std::optional<std::string> string_field(const nlohmann::json& obj, std::string_view key,
                                        std::string fallback) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null())
    return fallback;
  if (!it->is_string())
    return std::nullopt;
  return it->get<std::string>();
}

bool printable_utf8(std::string_view s) {
  // In UTF-8 a byte below 0x80 is always a whole character: the control check needs no
  // decoding.
  for (auto ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f)
      return false;
  }
  return grove::valid_utf8(s);
}

nlohmann::json describe_payload(std::string_view payload, std::string_view content_type,
                                size_t limit) {
  nlohmann::json out;
  out["size"] = payload.size();
  bool truncated = payload.size() > limit;
  auto shown = payload.substr(0, limit);
  out["truncated"] = truncated;
  if (printable_utf8(payload)) {
    auto j = truncated ? nlohmann::json{}
                       : nlohmann::json::parse(payload.begin(), payload.end(), nullptr, false);
    bool is_json = !truncated && !j.is_discarded()
                   && (content_type.find("json") != std::string_view::npos || j.is_object()
                       || j.is_array());
    out["kind"] = is_json ? "json" : "text";
    // A truncated text may end inside a character: cut back to its start.
    shown = payload.substr(0, grove::utf8_cut_point(payload, limit));
    out["text"] = is_json ? j.dump(2) : std::string{shown};
    return out;
  }
  static constexpr char digits[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(shown.size() * 3);
  for (size_t i = 0; i < shown.size(); ++i) {
    auto c = static_cast<unsigned char>(shown[i]);
    if (i > 0)
      hex.push_back(i % 16 == 0 ? '\n' : ' ');
    hex.push_back(digits[c >> 4]);
    hex.push_back(digits[c & 15]);
  }
  out["kind"] = "binary";
  out["hex"] = std::move(hex);
  return out;
}

std::string session_table::create(std::string name, std::chrono::seconds ttl,
                                  clock::time_point now) {
  auto token = random_token();
  std::lock_guard lock{mtx_};
  // Expired sessions go first; past the cap, the one ending soonest.
  std::erase_if(sessions_, [now](const auto& kv) { return kv.second.expires <= now; });
  if (sessions_.size() >= max_sessions) {
    auto oldest = std::min_element(sessions_.begin(), sessions_.end(),
                                   [](const auto& a, const auto& b) {
                                     return a.second.expires < b.second.expires;
                                   });
    sessions_.erase(oldest);
  }
  sessions_.emplace(token, session{std::move(name), random_token(), now + ttl});
  return token;
}

std::optional<session> session_table::find(std::string_view token, clock::time_point now) {
  if (token.empty())
    return std::nullopt;
  std::lock_guard lock{mtx_};
  auto it = sessions_.find(token);
  if (it == sessions_.end())
    return std::nullopt;
  if (it->second.expires <= now) {
    sessions_.erase(it);
    return std::nullopt;
  }
  auto s = it->second;
  s.token = it->first;
  return s;
}

void session_table::erase(std::string_view token) {
  std::lock_guard lock{mtx_};
  if (auto it = sessions_.find(token); it != sessions_.end())
    sessions_.erase(it);
}

size_t session_table::size() const {
  std::lock_guard lock{mtx_};
  return sessions_.size();
}

std::string session_table::dump(clock::time_point now) const {
  auto out = nlohmann::json::array();
  std::lock_guard lock{mtx_};
  for (const auto& [token, s] : sessions_)
    if (s.expires > now)
      out.push_back({{"token", token},
                     {"name", s.name},
                     {"csrf", s.csrf},
                     {"ms_left", std::chrono::duration_cast<std::chrono::milliseconds>(
                                   s.expires - now)
                                   .count()}});
  return out.dump();
}

bool session_table::load(std::string_view dumped, clock::time_point now) {
  auto j = nlohmann::json::parse(dumped.begin(), dumped.end(), nullptr, false);
  if (!j.is_array())
    return false;
  std::map<std::string, session, std::less<>> loaded;
  for (const auto& e : j) {
    if (!e.is_object() || !e.contains("token") || !e["token"].is_string()
        || !e.contains("name") || !e["name"].is_string() || !e.contains("csrf")
        || !e["csrf"].is_string() || !e.contains("ms_left")
        || !e["ms_left"].is_number_integer())
      return false;
    auto token = e["token"].get<std::string>();
    auto csrf = e["csrf"].get<std::string>();
    if (token.size() != 64 || csrf.size() != 64)
      return false;
    loaded.emplace(std::move(token),
                   session{e["name"].get<std::string>(), std::move(csrf),
                           now + std::chrono::milliseconds{e["ms_left"].get<int64_t>()}});
  }
  std::lock_guard lock{mtx_};
  for (auto& kv : loaded)
    if (sessions_.size() < max_sessions)
      sessions_.insert(std::move(kv));
  return true;
}

login_limiter::login_limiter(int64_t max_failures, std::chrono::seconds window)
  : max_failures_(max_failures), window_(window) {
}

int64_t login_limiter::locked_for(const std::string& key, clock::time_point now) {
  std::lock_guard lock{mtx_};
  auto it = entries_.find(key);
  if (it == entries_.end())
    return 0;
  auto end = it->second.since + window_;
  if (now >= end) {
    entries_.erase(it);
    return 0;
  }
  if (it->second.failures < max_failures_)
    return 0;
  return std::chrono::duration_cast<std::chrono::seconds>(end - now).count() + 1;
}

void login_limiter::failed(const std::string& key, clock::time_point now) {
  std::lock_guard lock{mtx_};
  // Bounded: addresses are the client's to choose. Past the bound, keys already counted
  // go on counting and new ones are not added (never cleared: that would lift locks).
  if (entries_.size() >= max_keys) {
    std::erase_if(entries_, [&](const auto& kv) { return kv.second.since + window_ <= now; });
    if (entries_.size() >= max_keys && !entries_.contains(key))
      return;
  }
  auto& e = entries_[key];
  if (e.failures == 0 || e.since + window_ <= now) {
    e.failures = 0;
    e.since = now;
  }
  ++e.failures;
}

void login_limiter::succeeded(const std::string& key) {
  std::lock_guard lock{mtx_};
  entries_.erase(key);
}

} // namespace grove::console
