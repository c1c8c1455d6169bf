// Greengrass IPC requests, read and checked (ipc_request.hpp).

#include "ipc_request.hpp"

#include "base64.hpp"

#include <grove/topic.hpp>

#include <openssl/evp.h>

#include <algorithm>

namespace grove::deployment::ipc {

using json = nlohmann::json;

namespace {

const std::string gg = "aws.greengrass#";

refusal refuse(std::string shape, std::string message) {
  return refusal{std::move(shape), std::move(message)};
}

// A string field, empty when missing or not a string (Greengrass' optional fields).
std::string str(const json& req, const char* k) {
  auto it = req.find(k);
  return it != req.end() && it->is_string() ? it->get<std::string>() : std::string{};
}

// A string field that may be missing or null (left as it is) but no other type.
bool opt_str(const json& req, const char* k, std::string& out) {
  auto it = req.find(k);
  if (it == req.end() || it->is_null())
    return true;
  if (!it->is_string())
    return false;
  out = it->get<std::string>();
  return true;
}

request publish(const json& req) {
  publish_to_topic r;
  r.topic = str(req, "topic");
  if (r.topic.empty() || validate_topic(r.topic))
    return refuse("ServiceError", "topic: not a valid topic name");
  auto pm = req.find("publishMessage");
  if (pm == req.end() || !pm->is_object()) {
    r.bad_message = refuse("ServiceError", "publishMessage: required");
    return r;
  }
  if (auto j = pm->find("jsonMessage"); j != pm->end() && j->is_object()) {
    auto m = j->find("message");
    r.event["jsonMessage"] = {{"message", m == j->end() ? json{} : *m},
                              {"context", {{"topic", r.topic}}}};
  } else if (auto b = pm->find("binaryMessage"); b != pm->end() && b->is_object()) {
    std::string bytes;
    // A message that is no string used to make json::value throw on the server's thread.
    if (!opt_str(*b, "message", bytes)) {
      r.bad_message = refuse("ServiceError", "publishMessage.binaryMessage.message: a string");
      return r;
    }
    r.event["binaryMessage"] = {{"message", bytes}, {"context", {{"topic", r.topic}}}};
  } else {
    r.bad_message = refuse("ServiceError", "publishMessage: jsonMessage or binaryMessage");
  }
  return r;
}

request shadow(const std::string& op, const json& req) {
  shadow_request call;
  call.op = op;
  if (!opt_str(req, "thingName", call.thing) || call.thing.empty())
    return refuse("InvalidArgumentsError", "thingName: required");
  if (op != "ListNamedShadowsForThing" && !opt_str(req, "shadowName", call.name))
    return refuse("InvalidArgumentsError", "shadowName: a string");
  if (op == "UpdateThingShadow") {
    std::string b64;
    if (!opt_str(req, "payload", b64) || b64.empty())
      return refuse("InvalidArgumentsError", "payload: required");
    if (!base64_decode(b64, call.payload))
      return refuse("InvalidArgumentsError", "payload: not base64");
  }
  if (op == "ListNamedShadowsForThing") {
    if (auto ps = req.find("pageSize"); ps != req.end() && !ps->is_null()) {
      if (!ps->is_number_integer() || *ps < 1 || *ps > 100)
        return refuse("InvalidArgumentsError", "pageSize: 1 to 100");
      call.page_size = ps->get<uint32_t>();
    }
    if (!opt_str(req, "nextToken", call.next_token))
      return refuse("InvalidArgumentsError", "nextToken: a string");
  }
  return call;
}

request iotcore(const std::string& op, const json& req) {
  iotcore_request r;
  r.publish = op == "PublishToIoTCore";
  r.topic = str(req, "topicName");
  if (r.topic.empty() ||
      (r.publish ? bool(validate_topic(r.topic)) : bool(validate_filter(r.topic))))
    return refuse("InvalidArgumentsError", std::string{"topicName: not a valid topic "} +
                                             (r.publish ? "name" : "filter"));
  if (!r.publish)
    return r;
  if (auto p = req.find("payload"); p != req.end() && !p->is_null()) {
    std::string bytes; // a payload that is not base64 leaves none
    if (p->is_string() && base64_decode(p->get<std::string>(), bytes))
      r.payload = std::move(bytes);
    else
      r.bad_payload = refuse("InvalidArgumentsError", "payload: not base64");
  }
  return r;
}

request update(const json& req) {
  update_configuration r;
  if (auto k = req.find("keyPath"); k != req.end() && !k->is_null()) {
    if (!k->is_array())
      return refuse("InvalidArgumentsError", "keyPath: a list of strings");
    for (const auto& x : *k) {
      if (!x.is_string())
        return refuse("InvalidArgumentsError", "keyPath: a list of strings");
      r.key_path.push_back(x.get<std::string>());
    }
  }
  auto ts = req.find("timestamp");
  if (ts == req.end() || !ts->is_number())
    return refuse("InvalidArgumentsError", "timestamp: required");
  auto value = req.find("valueToMerge");
  if (value == req.end())
    return refuse("InvalidArgumentsError", "valueToMerge: required");
  if (r.key_path.empty() && !value->is_object())
    return refuse("InvalidArgumentsError", "valueToMerge: an object to merge at the root");
  if (r.key_path.size() + depth_of(*value) > max_depth)
    return refuse("InvalidArgumentsError",
                  "valueToMerge: nested deeper than " + std::to_string(max_depth) + " levels");
  if (!r.key_path.empty() && r.key_path.front() == "accessControl")
    return refuse("InvalidArgumentsError", "accessControl is set by deployments only");
  r.timestamp = ts->get<double>();
  r.value = *value;
  return r;
}

} // namespace

size_t depth_of(const json& v) {
  size_t deepest = 0;
  std::vector<std::pair<const json*, size_t>> todo{{&v, 0}};
  while (!todo.empty()) {
    auto [at, d] = todo.back();
    todo.pop_back();
    if (!at->is_structured())
      continue;
    deepest = std::max(deepest, d + 1);
    if (deepest > max_depth)
      return deepest;
    for (const auto& x : *at)
      todo.emplace_back(&x, d + 1);
  }
  return deepest;
}

std::string connect_token(std::string_view payload) {
  auto body = json::parse(payload, nullptr, false);
  if (body.is_object())
    if (auto it = body.find("authToken"); it != body.end() && it->is_string())
      return it->get<std::string>();
  return {};
}

std::variant<json, refusal> parse_body(std::string_view payload) {
  auto body = json::parse(payload.empty() ? std::string_view{"{}"} : payload, nullptr, false);
  if (!body.is_object())
    return refuse("ServiceError", "the request is not a JSON object");
  // Answers, the bus and dump() recurse: a request nested past the bound is refused
  // here, before anything walks it (a 1 MiB frame of '[' would overflow the stack).
  if (depth_of(body) > max_depth)
    return refuse("InvalidArgumentsError",
                  "the request nests deeper than " + std::to_string(max_depth) + " levels");
  return body;
}

request parse_operation(const std::string& full, const json& req) {
  if (!full.starts_with(gg))
    return refuse("ServiceError", "unknown operation " + full);
  auto op = full.substr(gg.size());
  if (op == "PublishToTopic")
    return publish(req);
  if (op == "SubscribeToTopic") {
    auto topic = str(req, "topic");
    if (topic.empty() || validate_filter(topic))
      return refuse("InvalidArgumentsError", "topic: not a valid topic filter");
    return subscribe_to_topic{topic, str(req, "receiveMode") == "RECEIVE_MESSAGES_FROM_OTHERS"};
  }
  if (op == "GetConfiguration") {
    get_configuration r{str(req, "componentName"), nullptr};
    if (auto kp = req.find("keyPath"); kp != req.end() && kp->is_array())
      r.key_path = *kp;
    return r;
  }
  if (op == "UpdateState") {
    auto state = str(req, "state");
    if (state != "RUNNING" && state != "ERRORED")
      return refuse("ServiceError", "state: RUNNING or ERRORED");
    return update_state{state};
  }
  if (op == "SubscribeToComponentUpdates" || op == "SubscribeToValidateConfigurationUpdates")
    return subscription{op};
  if (op == "DeferComponentUpdate") {
    defer_component_update r{str(req, "deploymentId"), 0, str(req, "message")};
    if (auto ms = req.find("recheckAfterMs"); ms != req.end() && ms->is_number_integer())
      r.recheck_ms = std::max<int64_t>(0, ms->get<int64_t>());
    return r;
  }
  if (op == "SendConfigurationValidityReport") {
    auto rep = req.find("configurationValidityReport");
    if (rep != req.end() && !rep->is_object())
      return refuse("InvalidArgumentsError", "configurationValidityReport: required");
    validity_report r;
    // Fields of another type used to make json::value throw on the server's thread.
    if (rep != req.end()) {
      if (!opt_str(*rep, "deploymentId", r.deployment_id))
        return refuse("InvalidArgumentsError",
                      "configurationValidityReport.deploymentId: a string");
      if (!opt_str(*rep, "message", r.message))
        return refuse("InvalidArgumentsError", "configurationValidityReport.message: a string");
      opt_str(*rep, "status", r.status);
    }
    if (r.status != "ACCEPTED" && r.status != "REJECTED")
      return refuse("InvalidArgumentsError",
                    "configurationValidityReport.status: ACCEPTED or REJECTED");
    return r;
  }
  if (op == "GetThingShadow" || op == "UpdateThingShadow" || op == "DeleteThingShadow" ||
      op == "ListNamedShadowsForThing")
    return shadow(op, req);
  if (op == "PublishToIoTCore" || op == "SubscribeToIoTCore")
    return iotcore(op, req);
  if (op == "SubscribeToConfigurationUpdate") {
    subscribe_to_configuration r{str(req, "componentName"), {}};
    if (auto k = req.find("keyPath"); k != req.end() && k->is_array())
      for (const auto& x : *k) {
        if (!x.is_string())
          return refuse("InvalidArgumentsError", "keyPath: strings");
        r.key_path.push_back(x.get<std::string>());
      }
    return r;
  }
  if (op == "UpdateConfiguration")
    return update(req);
  if (op == "PauseComponent" || op == "ResumeComponent") {
    // Greengrass checks the name before authorization.
    auto name = str(req, "componentName");
    if (name.empty())
      return refuse("InvalidArgumentsError", "componentName: Component name is required.");
    return component_control{op == "PauseComponent", name};
  }
  return refuse("ServiceError", "operation " + op + " is not supported by this core");
}

} // namespace grove::deployment::ipc
