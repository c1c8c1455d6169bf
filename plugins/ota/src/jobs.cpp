#include "jobs.hpp"

#include "bundle.hpp"

#include "grove/errors.hpp"
#include "grove/utf8.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>

namespace grove::ota::jobs {

namespace {

using json = nlohmann::json;

bool name_chars(std::string_view s, bool colon) {
  return std::all_of(s.begin(), s.end(), [colon](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'
           || c == '-' || (colon && c == ':');
  });
}

std::string base(std::string_view thing) {
  return "$aws/things/" + std::string{thing} + "/jobs/";
}

caf::error bad(std::string msg) {
  return make_error(errc::malformed, "ota jobs: " + std::move(msg));
}

// Cuts `s` to at most `n` bytes without splitting a UTF-8 sequence.
std::string cut(std::string s, size_t n) {
  s.resize(utf8_cut_point(s, n));
  return s;
}

} // namespace

bool valid_thing_name(std::string_view thing) {
  return !thing.empty() && thing.size() <= 128 && name_chars(thing, true);
}

bool valid_job_id(std::string_view id) {
  return !id.empty() && id.size() <= 64 && name_chars(id, false);
}

std::string notify_next_topic(std::string_view thing) {
  return base(thing) + "notify-next";
}

std::string get_topic(std::string_view thing, std::string_view job) {
  return base(thing) + std::string{job} + "/get";
}

std::string update_topic(std::string_view thing, std::string_view job) {
  return base(thing) + std::string{job} + "/update";
}

std::vector<std::string> filters(std::string_view thing) {
  return {notify_next_topic(thing), base(thing) + "+/get/accepted", base(thing) + "+/get/rejected",
          base(thing) + "+/update/accepted", base(thing) + "+/update/rejected"};
}

std::string job_of(std::string_view topic, std::string_view thing, std::string_view suffix) {
  auto prefix = base(thing);
  if (!topic.starts_with(prefix) || !topic.ends_with(suffix)
      || topic.size() <= prefix.size() + suffix.size())
    return {};
  // `suffix` starts with '/'; a job id has none.
  auto job = topic.substr(prefix.size(), topic.size() - prefix.size() - suffix.size());
  if (job != "$next" && !valid_job_id(job))
    return {};
  return std::string{job};
}

caf::expected<update_answer> parse_update_answer(std::string_view payload, bool rejected) {
  json doc = json::parse(payload.begin(), payload.end(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object())
    return bad("the update answer is not a JSON object");
  update_answer a;
  if (rejected) {
    auto code = doc.find("code");
    if (code == doc.end() || !code->is_string())
      return bad("the update rejection has no 'code'");
    a.code = code->get<std::string>();
    if (auto m = doc.find("message"); m != doc.end() && m->is_string())
      a.message = m->get<std::string>();
  }
  if (auto st = doc.find("executionState"); st != doc.end() && !st->is_null()) {
    if (!st->is_object())
      return bad("'executionState' is not an object");
    if (auto v = st->find("versionNumber"); v != st->end()) {
      if (!v->is_number_integer() || v->get<int64_t>() < 0)
        return bad("'executionState.versionNumber' is not a version");
      a.version = v->get<int64_t>();
    }
    if (auto s = st->find("status"); s != st->end() && s->is_string())
      a.state_status = s->get<std::string>();
  }
  return a;
}

bool terminal(std::string_view status) {
  return status == "SUCCEEDED" || status == "FAILED" || status == "REJECTED"
         || status == "CANCELED" || status == "TIMED_OUT" || status == "REMOVED";
}

caf::expected<std::optional<execution>> parse_execution(std::string_view payload) {
  json doc = json::parse(payload.begin(), payload.end(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object())
    return bad("the message is not a JSON object");
  auto it = doc.find("execution");
  if (it == doc.end() || it->is_null())
    return std::optional<execution>{}; // no pending execution
  if (!it->is_object())
    return bad("'execution' is not an object");
  execution ex;
  auto id = it->find("jobId");
  if (id == it->end() || !id->is_string() || !valid_job_id(id->get<std::string>()))
    return bad("'execution.jobId' is missing or not a job id");
  ex.job_id = id->get<std::string>();
  if (auto st = it->find("status"); st != it->end() && st->is_string())
    ex.status = st->get<std::string>();
  else
    return bad("'execution.status' is missing");
  if (auto v = it->find("versionNumber"); v != it->end()) {
    if (!v->is_number_integer())
      return bad("'execution.versionNumber' is not an integer");
    ex.version_number = v->get<int64_t>();
  }
  if (auto d = it->find("jobDocument"); d != it->end())
    ex.document = d->dump();
  return std::optional<execution>{std::move(ex)};
}

caf::expected<std::string> bundle_of(std::string_view document) {
  json doc = json::parse(document.begin(), document.end(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object())
    return bad("the job document is not a JSON object");
  auto op = doc.find("operation");
  if (op == doc.end() || !op->is_string() || *op != "grove-ota")
    return bad("the job document's operation is not 'grove-ota'");
  auto b = doc.find("bundle");
  if (b == doc.end() || !b->is_string())
    return bad("the job document names no 'bundle'");
  std::string path = b->get<std::string>();
  if (path.rfind("https://", 0) == 0) {
    // Downloaded (TLS verified against bundle_ca_file); the signature still decides.
    auto host_end = path.find_first_of("/?#", 8);
    auto host = path.substr(8, host_end == std::string::npos ? std::string::npos : host_end - 8);
    if (path.size() > 2048)
      return bad("the bundle URL is longer than 2048 characters");
    if (host.empty() || host.find('@') != std::string::npos)
      return bad("the bundle URL names no host (or has user info)");
    if (std::any_of(path.begin(), path.end(), [](char c) {
          return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f || c == '\\';
        }))
      return bad("the bundle URL has a space, a control character or a backslash");
    return path;
  }
  if (path.rfind("file://", 0) == 0)
    path = path.substr(7);
  else if (path.find("://") != std::string::npos)
    return make_error(errc::unsupported,
                      "ota jobs: only a path, a file:// or an https:// URL can name the bundle, "
                      "not '"
                        + path.substr(0, std::min<size_t>(path.find("://") + 3, 64)) + "…'");
  if (path.empty() || path.front() != '/' || !safe_relative_path(path.substr(1)))
    return bad("the bundle must be an absolute path without '.' or '..' segments");
  return path;
}

std::string update_payload(std::string_view status,
                           const std::map<std::string, std::string>& details,
                           int64_t expected_version, std::string_view client_token) {
  json doc = {{"status", status}};
  json sd = json::object();
  for (auto& [k, v] : details)
    sd[k] = cut(v, 1024);
  doc["statusDetails"] = sd;
  if (expected_version > 0)
    doc["expectedVersion"] = expected_version;
  doc["includeJobExecutionState"] = true;
  if (!client_token.empty())
    doc["clientToken"] = cut(std::string{client_token}, 64);
  return doc.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string get_payload(std::string_view client_token) {
  return json{{"clientToken", cut(std::string{client_token}, 64)}}.dump();
}

} // namespace grove::ota::jobs
