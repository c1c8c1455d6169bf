#include "sigv4.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <ctime>

#include <openssl/crypto.h>

namespace grove::deployment {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

// A header value as SigV4 canonicalizes it: trimmed, inner runs of spaces made one.
std::string canonical_value(std::string_view v) {
  v = trim(v);
  std::string out;
  out.reserve(v.size());
  bool space = false;
  for (char c : v) {
    if (c == ' ' || c == '\t') {
      space = true;
      continue;
    }
    if (space)
      out.push_back(' ');
    space = false;
    out.push_back(c);
  }
  return out;
}

bool all_digits(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

} // namespace

std::string amz_date(std::chrono::system_clock::time_point t) {
  auto secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

std::optional<std::chrono::system_clock::time_point> parse_amz_date(std::string_view s) {
  if (s.size() != 16 || s[8] != 'T' || s[15] != 'Z' || !all_digits(s.substr(0, 8))
      || !all_digits(s.substr(9, 6)))
    return std::nullopt;
  auto num = [&](size_t pos, size_t len) {
    int v = 0;
    for (size_t i = pos; i < pos + len; ++i)
      v = v * 10 + (s[i] - '0');
    return v;
  };
  // system_clock counts nanoseconds in 64 bits (years 1678 to 2262): a year outside
  // that would overflow the conversion, and no real request is dated there.
  auto year = num(0, 4);
  if (year < 1970 || year > 2200)
    return std::nullopt;
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = num(4, 2) - 1;
  tm.tm_mday = num(6, 2);
  tm.tm_hour = num(9, 2);
  tm.tm_min = num(11, 2);
  tm.tm_sec = num(13, 2);
  if (tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59
      || tm.tm_sec > 60)
    return std::nullopt;
  auto t = timegm(&tm);
  if (t == static_cast<time_t>(-1))
    return std::nullopt;
  return std::chrono::system_clock::from_time_t(t);
}

std::optional<sigv4_header> parse_authorization(std::string_view value, std::string& why) {
  constexpr std::string_view algo = "AWS4-HMAC-SHA256";
  value = trim(value);
  if (value.substr(0, algo.size()) != algo
      || (value.size() > algo.size() && value[algo.size()] != ' ')) {
    why = "Authorization header requires the AWS4-HMAC-SHA256 algorithm";
    return std::nullopt;
  }
  value.remove_prefix(algo.size());
  sigv4_header h;
  std::string credential;
  bool have_cred = false, have_signed = false, have_sig = false;
  while (!value.empty()) {
    auto comma = value.find(',');
    auto part = trim(value.substr(0, comma));
    value = comma == std::string_view::npos ? std::string_view{} : value.substr(comma + 1);
    auto eq = part.find('=');
    if (eq == std::string_view::npos) {
      why = "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' "
            "parameters; malformed element '" + std::string{part.substr(0, 64)} + "'";
      return std::nullopt;
    }
    auto key = part.substr(0, eq);
    auto val = part.substr(eq + 1);
    if (key == "Credential") {
      credential = std::string{val};
      have_cred = true;
    } else if (key == "SignedHeaders") {
      h.signed_headers = std::string{val};
      have_signed = true;
    } else if (key == "Signature") {
      h.signature = std::string{val};
      have_sig = true;
    }
  }
  if (!have_cred || !have_signed || !have_sig) {
    why = std::string{"Authorization header requires '"}
          + (!have_cred ? "Credential" : !have_signed ? "SignedHeaders" : "Signature")
          + "' parameter";
    return std::nullopt;
  }
  // Credential=AKID/yyyymmdd/region/service/aws4_request
  std::string_view c{credential};
  std::string_view parts[5];
  for (int i = 0; i < 5; ++i) {
    auto slash = c.find('/');
    if (i < 4 && slash == std::string_view::npos) {
      why = "Credential should be scoped to a valid region, service and aws4_request: '"
            + credential.substr(0, 128) + "'";
      return std::nullopt;
    }
    parts[i] = c.substr(0, slash);
    c = i < 4 ? c.substr(slash + 1) : std::string_view{};
    if (i == 4 && slash != std::string_view::npos) {
      why = "Credential has too many parts: '" + credential.substr(0, 128) + "'";
      return std::nullopt;
    }
  }
  h.access_key_id = std::string{parts[0]};
  h.date = std::string{parts[1]};
  h.region = std::string{parts[2]};
  h.service = std::string{parts[3]};
  h.terminator = std::string{parts[4]};
  if (h.access_key_id.empty() || h.date.size() != 8 || !all_digits(h.date)) {
    why = "Credential should be scoped to a valid date: '" + credential.substr(0, 128) + "'";
    return std::nullopt;
  }
  if (h.signature.size() != 64
      || !std::all_of(h.signature.begin(), h.signature.end(), [](char ch) {
           return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f');
         })) {
    why = "Signature must be 64 lower-case hex digits";
    return std::nullopt;
  }
  if (h.signed_headers.empty()) {
    why = "SignedHeaders must not be empty";
    return std::nullopt;
  }
  return h;
}

std::string canonical_request(const http_request& req, std::string_view signed_headers,
                              std::string_view payload_hash) {
  std::string out;
  out += req.method;
  out += '\n';
  auto path = req.raw_path();
  out += path.empty() ? std::string{"/"} : uri_encode(path, true);
  out += '\n';
  // Query: decoded, re-encoded strictly, sorted by key then value.
  auto pairs = parse_query(req.raw_query());
  std::vector<std::pair<std::string, std::string>> enc;
  enc.reserve(pairs.size());
  for (auto& [k, v] : pairs)
    enc.emplace_back(uri_encode(k, false), uri_encode(v, false));
  std::sort(enc.begin(), enc.end());
  for (size_t i = 0; i < enc.size(); ++i) {
    if (i > 0)
      out += '&';
    out += enc[i].first;
    out += '=';
    out += enc[i].second;
  }
  out += '\n';
  // Headers: each signed name with its values (joined by commas), in the order given.
  std::string_view names = signed_headers;
  while (!names.empty()) {
    auto semi = names.find(';');
    auto name = names.substr(0, semi);
    names = semi == std::string_view::npos ? std::string_view{} : names.substr(semi + 1);
    out += name;
    out += ':';
    bool first = true;
    for (const auto& [k, v] : req.headers) {
      if (k != name)
        continue;
      if (!first)
        out += ',';
      out += canonical_value(v);
      first = false;
    }
    out += '\n';
  }
  out += '\n';
  out += signed_headers;
  out += '\n';
  out += payload_hash;
  return out;
}

namespace {

std::string signature_of(std::string_view secret, std::string_view date, const sigv4_scope& s,
                         std::string_view amzdate, std::string_view canonical) {
  std::string scope = std::string{date} + "/" + s.region + "/" + s.service + "/aws4_request";
  std::string to_sign = "AWS4-HMAC-SHA256\n" + std::string{amzdate} + "\n" + scope + "\n"
                        + hex(sha256(canonical));
  auto k = hmac_sha256("AWS4" + std::string{secret}, date);
  k = hmac_sha256(k, s.region);
  k = hmac_sha256(k, s.service);
  k = hmac_sha256(k, "aws4_request");
  return hex(hmac_sha256(k, to_sign));
}

} // namespace

std::variant<std::string, auth_error> verify_sigv4(const http_request& req,
                                                   const sigv4_scope& scope,
                                                   const secret_lookup& secret_of,
                                                   std::chrono::system_clock::time_point now) {
  auto auth = req.header("authorization");
  if (auth.empty()) {
    if (req.raw_query().find("X-Amz-Signature") != std::string_view::npos)
      return auth_error{"IncompleteSignatureException",
                        "Grove accepts the Authorization header form of Signature Version "
                        "4 only (no presigned query strings)"};
    return auth_error{"MissingAuthenticationTokenException", "Missing Authentication Token"};
  }
  std::string why;
  auto h = parse_authorization(auth, why);
  if (!h)
    return auth_error{"IncompleteSignatureException", why};
  auto secret = secret_of(h->access_key_id);
  if (!secret)
    return auth_error{"UnrecognizedClientException",
                      "The security token included in the request is invalid."};
  auto date_text = req.header("x-amz-date");
  if (date_text.empty())
    return auth_error{"IncompleteSignatureException",
                      "Authorization header requires existence of either a 'X-Amz-Date' or "
                      "a 'Date' header."};
  auto when = parse_amz_date(date_text);
  if (!when)
    return auth_error{"IncompleteSignatureException",
                      "X-Amz-Date must be in the ISO8601 basic format yyyyMMdd'T'HHmmss'Z'"};
  if (h->terminator != "aws4_request" || h->service != scope.service
      || h->region != scope.region || h->date != date_text.substr(0, 8))
    return auth_error{"InvalidSignatureException",
                      "Credential should be scoped to a valid region, service and date: "
                      "expected '" + std::string{date_text.substr(0, 8)} + "/" + scope.region
                        + "/" + scope.service + "/aws4_request'"};
  // Host and x-amz-date must be signed, so neither can be replayed under another.
  auto signed_list = ";" + h->signed_headers + ";";
  for (auto need : {";host;", ";x-amz-date;"})
    if (signed_list.find(need) == std::string::npos)
      return auth_error{"InvalidSignatureException",
                        std::string{"'"} + std::string{need}.substr(1, std::strlen(need) - 2)
                          + "' must be a signed header"};
  auto skew = std::chrono::duration_cast<std::chrono::seconds>(now - *when);
  if (skew > scope.max_skew)
    return auth_error{"InvalidSignatureException",
                      "Signature expired: " + std::string{date_text} + " is now earlier than "
                        + amz_date(now - scope.max_skew) + " (" + amz_date(now) + " - "
                        + std::to_string(scope.max_skew.count() / 60) + " min.)"};
  if (-skew > scope.max_skew)
    return auth_error{"InvalidSignatureException",
                      "Signature not yet current: " + std::string{date_text}
                        + " is still later than " + amz_date(now + scope.max_skew) + " ("
                        + amz_date(now) + " + " + std::to_string(scope.max_skew.count() / 60)
                        + " min.)"};
  auto payload = hex(sha256(req.body));
  auto sent_hash = req.header("x-amz-content-sha256");
  if (!sent_hash.empty() && sent_hash != payload)
    return auth_error{"InvalidSignatureException",
                      "The provided 'x-amz-content-sha256' header does not match what was "
                      "computed."};
  auto canonical = canonical_request(req, h->signed_headers, payload);
  auto expected = signature_of(*secret, h->date, scope, date_text, canonical);
  if (expected.size() != h->signature.size()
      || CRYPTO_memcmp(expected.data(), h->signature.data(), expected.size()) != 0)
    return auth_error{"InvalidSignatureException",
                      "The request signature we calculated does not match the signature you "
                      "provided. Check your AWS Secret Access Key and signing method. Consult "
                      "the service documentation for details."};
  return std::move(h->access_key_id);
}

void sign_sigv4(http_request& req, const sigv4_scope& scope, std::string_view key_id,
                std::string_view secret, std::chrono::system_clock::time_point now) {
  auto date = amz_date(now);
  req.headers.emplace_back("x-amz-date", date);
  std::vector<std::string> names;
  for (const auto& [k, v] : req.headers)
    if (std::find(names.begin(), names.end(), k) == names.end())
      names.push_back(k);
  std::sort(names.begin(), names.end());
  std::string signed_headers;
  for (const auto& n : names)
    signed_headers += (signed_headers.empty() ? "" : ";") + n;
  auto canonical = canonical_request(req, signed_headers, hex(sha256(req.body)));
  auto sig = signature_of(secret, date.substr(0, 8), scope, date, canonical);
  req.headers.emplace_back("authorization", "AWS4-HMAC-SHA256 Credential=" + std::string{key_id}
                                              + "/" + date.substr(0, 8) + "/" + scope.region
                                              + "/" + scope.service
                                              + "/aws4_request, SignedHeaders="
                                              + signed_headers + ", Signature=" + sig);
}

} // namespace grove::deployment
