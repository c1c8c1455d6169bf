// The deployment plugin's Greengrass IPC requests (plugins/deployment/src/ipc_request.cpp)
// as its IPC server reads them: the input's first line names the operation
// (`PublishToTopic`, ... without `aws.greengrass#`, or `connect`), the rest is the
// message's JSON payload. Nothing throws; a refusal has a known shape and a message
// that starts with the field it is about; what passes has the documented types and
// keeps the nesting bound (dump() never throws on it). An input whose first line is
// `frames` is read as a connection's bytes instead (eventstream.cpp, as ipc_server.cpp
// reads them): a connect frame's payload for its token, then each application frame's
// `operation` header and payload through the same checks.

#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>

#include <grove/topic.hpp>

#include "base64.hpp"
#include "eventstream.hpp"
#include "ipc_request.hpp"

using namespace grove::deployment::ipc;
using json = nlohmann::json;

namespace {

void check(bool ok) {
  if (!ok)
    std::abort();
}

// The fields (and the request itself) a refusal may be about.
void check_refusal(const refusal& r) {
  static const std::set<std::string> shapes{"ServiceError", "InvalidArgumentsError"};
  check(shapes.contains(r.shape));
  static const char* fields[] = {
    "the request ",      "unknown operation ", "operation ",      "topic: ",
    "publishMessage: ",  "publishMessage.binaryMessage.message: ", "state: ",
    "configurationValidityReport: ", "configurationValidityReport.status: ",
    "configurationValidityReport.deploymentId: ", "configurationValidityReport.message: ",
    "thingName: ",       "shadowName: ",       "payload: ",       "pageSize: ",
    "nextToken: ",       "topicName: ",        "keyPath: ",       "timestamp: ",
    "valueToMerge: ",    "accessControl ",    "componentName: "};
  bool named = false;
  for (auto* f : fields)
    named = named || std::string_view{r.message}.starts_with(f);
  check(named);
}

void check_request(const std::string& op, const request& parsed, const json& body) {
  if (auto* r = std::get_if<refusal>(&parsed))
    return check_refusal(*r);
  if (auto* r = std::get_if<publish_to_topic>(&parsed)) {
    check(op == "PublishToTopic" && !r->topic.empty() && !grove::validate_topic(r->topic));
    if (r->bad_message)
      return check_refusal(*r->bad_message);
    check(r->event.is_object() && r->event.size() == 1);
    auto kind = r->event.begin().key();
    check(kind == "jsonMessage" || kind == "binaryMessage");
    const auto& m = r->event.begin().value();
    check(m["context"]["topic"] == r->topic);
    if (kind == "binaryMessage")
      check(m["message"].is_string());
    check(depth_of(r->event) <= max_depth + 3);
    (void) r->event.dump(); // what subscribers and the bus get
    std::string bytes;
    (void) grove::deployment::base64_decode(
      kind == "binaryMessage" ? m["message"].get<std::string>() : "", bytes);
  } else if (auto* r = std::get_if<subscribe_to_topic>(&parsed)) {
    check(op == "SubscribeToTopic" && !r->topic.empty() && !grove::validate_filter(r->topic));
  } else if (auto* r = std::get_if<get_configuration>(&parsed)) {
    check(op == "GetConfiguration" && (r->key_path.is_null() || r->key_path.is_array()));
  } else if (auto* r = std::get_if<update_state>(&parsed)) {
    check(op == "UpdateState" && (r->state == "RUNNING" || r->state == "ERRORED"));
  } else if (auto* r = std::get_if<subscription>(&parsed)) {
    check(r->op == op);
    check(op == "SubscribeToComponentUpdates" ||
          op == "SubscribeToValidateConfigurationUpdates");
  } else if (auto* r = std::get_if<defer_component_update>(&parsed)) {
    check(op == "DeferComponentUpdate" && r->recheck_ms >= 0);
  } else if (auto* r = std::get_if<validity_report>(&parsed)) {
    check(op == "SendConfigurationValidityReport");
    check(r->status == "ACCEPTED" || r->status == "REJECTED");
  } else if (auto* r = std::get_if<shadow_request>(&parsed)) {
    check(r->op == op && !r->thing.empty());
    check(op == "GetThingShadow" || op == "UpdateThingShadow" || op == "DeleteThingShadow" ||
          op == "ListNamedShadowsForThing");
    check(r->page_size <= 100);
    check(op == "ListNamedShadowsForThing" || r->page_size == 0);
    check(op == "UpdateThingShadow" || r->payload.empty());
  } else if (auto* r = std::get_if<iotcore_request>(&parsed)) {
    check(r->publish == (op == "PublishToIoTCore"));
    check(r->publish || op == "SubscribeToIoTCore");
    check(!r->topic.empty());
    check(r->publish ? !grove::validate_topic(r->topic) : !grove::validate_filter(r->topic));
    check(r->publish || (!r->bad_payload && r->payload.empty()));
    if (r->bad_payload) {
      check(r->payload.empty());
      check_refusal(*r->bad_payload);
    }
  } else if (auto* r = std::get_if<subscribe_to_configuration>(&parsed)) {
    check(op == "SubscribeToConfigurationUpdate");
  } else if (auto* r = std::get_if<update_configuration>(&parsed)) {
    check(op == "UpdateConfiguration");
    check(r->key_path.size() + depth_of(r->value) <= max_depth);
    check(!r->key_path.empty() || r->value.is_object());
    check(r->key_path.empty() || r->key_path.front() != "accessControl");
    // What the server builds from it: the patch at the key path, merged and diffed.
    json patch = r->value;
    for (auto it = r->key_path.rbegin(); it != r->key_path.rend(); ++it)
      patch = json{{*it, std::move(patch)}};
    check(depth_of(patch) <= max_depth);
    json merged = json::object();
    merged.merge_patch(patch);
    (void) json::diff(json::object(), merged);
    (void) merged.dump();
  } else if (auto* r = std::get_if<component_control>(&parsed)) {
    check(r->pause == (op == "PauseComponent"));
    check(r->pause || op == "ResumeComponent");
    check(!r->component.empty());
  } else {
    std::abort();
  }
  (void) body;
}

} // namespace

void one(const std::string& op, std::string_view payload);

// The bytes of a connection: frames decoded as the server does, the first a connect.
void frames(std::string_view in) {
  namespace es = grove::deployment::eventstream;
  bool connected = false;
  while (!in.empty()) {
    es::message m;
    size_t used = 0;
    std::string why;
    if (es::decode(in, 1 << 20, m, used, why) != es::decode_status::ok)
      return;
    in.remove_prefix(used);
    auto type = m.int32_of(":message-type").value_or(-1);
    if (!connected) {
      if (type != 4)
        return; // the server: a protocol error
      one("connect", m.payload);
      connected = true;
      continue;
    }
    auto op = m.string_of("operation");
    if (type != 0 || !op)
      continue;
    auto name = std::string{*op};
    if (!name.starts_with("aws.greengrass#"))
      continue;
    one(name.substr(15), m.payload);
  }
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in{reinterpret_cast<const char*>(data), size};
  auto nl = in.find('\n');
  auto op = std::string{in.substr(0, nl)};
  auto payload = nl == std::string_view::npos ? std::string_view{} : in.substr(nl + 1);
  if (op == "frames")
    frames(payload);
  else
    one(op, payload);
  return 0;
}

void one(const std::string& op, std::string_view payload) {
  if (op == "connect") {
    auto token = connect_token(payload);
    if (!token.empty()) {
      auto body = json::parse(payload, nullptr, false);
      check(body.is_object() && body.at("authToken") == token);
    }
    return;
  }
  auto body = parse_body(payload);
  if (auto* r = std::get_if<refusal>(&body)) {
    check_refusal(*r);
    return;
  }
  const auto& req = std::get<json>(body);
  check(req.is_object() && depth_of(req) <= max_depth);
  (void) req.dump(); // answers echo parts of it
  check_request(op, parse_operation("aws.greengrass#" + op, req), req);
  // The same body under a name that is not Greengrass': refused as unknown.
  auto other = parse_operation(op, req);
  if (!op.starts_with("aws.greengrass#"))
    check(std::holds_alternative<refusal>(other));
}
