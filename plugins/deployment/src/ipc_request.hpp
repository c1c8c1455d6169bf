// Greengrass IPC requests as the IPC server (ipc_server.cpp) reads them, pure of the
// socket and of the server's state: the connect message's token, a request's JSON body
// and each operation's fields, checked. The server calls these and then authorizes and
// acts; the fuzzer (tests/fuzz/targets/deployment_ipc.cpp) calls them alone.

#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

namespace grove::deployment::ipc {

/// The deepest nesting a request (or a message for components, or UpdateConfiguration's
/// value under its key path) may have: merge, diff and dump recurse.
constexpr size_t max_depth = 64;

/// The nesting depth of `v` (a scalar: 0), counted without recursion.
size_t depth_of(const nlohmann::json& v);

/// Why a request is refused: an IPC error shape (ServiceError, InvalidArgumentsError,
/// ...) and its message, which starts with the field it is about.
struct refusal {
  std::string shape;
  std::string message;
};

/// The token a connect message's JSON carries (`authToken`), empty when it has none.
std::string connect_token(std::string_view payload);

/// A request's body: a JSON object (an empty payload is `{}`) nested at most max_depth.
std::variant<nlohmann::json, refusal> parse_body(std::string_view payload);

/// PublishToTopic: `topic` a valid topic name, and the event for subscribers
/// ({"jsonMessage"|"binaryMessage": {message, context: {topic}}}). `bad_message` is
/// answered after authorization, as Greengrass does.
struct publish_to_topic {
  std::string topic;
  nlohmann::json event;
  std::optional<refusal> bad_message;
};

/// SubscribeToTopic: `topic` a valid topic filter.
struct subscribe_to_topic {
  std::string topic;
  bool others_only = false; ///< RECEIVE_MESSAGES_FROM_OTHERS
};

/// GetConfiguration: `component` (empty: the caller) and `key_path` as sent (an array,
/// or null: the whole configuration); its keys are checked against the configuration.
struct get_configuration {
  std::string component;
  nlohmann::json key_path;
};

/// UpdateState: RUNNING or ERRORED.
struct update_state {
  std::string state;
};

/// DeferComponentUpdate: `recheck_ms` >= 0.
struct defer_component_update {
  std::string deployment_id;
  int64_t recheck_ms = 0;
  std::string message;
};

/// SendConfigurationValidityReport: `status` ACCEPTED or REJECTED.
struct validity_report {
  std::string deployment_id;
  std::string status;
  std::string message;
};

/// A shadow operation: `thing` non-empty, `payload` (UpdateThingShadow) decoded and
/// non-empty, `page_size` 0 (unset) or 1 to 100.
struct shadow_request {
  std::string op;
  std::string thing;
  std::string name;
  std::string payload;
  uint32_t page_size = 0;
  std::string next_token;
};

/// PublishToIoTCore (`topic` a topic name, `payload` decoded) or SubscribeToIoTCore (a
/// filter). `bad_payload` is answered after authorization.
struct iotcore_request {
  bool publish = false;
  std::string topic;
  std::string payload;
  std::optional<refusal> bad_payload;
};

/// SubscribeToConfigurationUpdate: `component` (empty: the caller), `key_path` strings.
struct subscribe_to_configuration {
  std::string component;
  std::vector<std::string> key_path;
};

/// UpdateConfiguration: `value` an object at the root, key_path.size() plus its depth at
/// most max_depth, never under accessControl.
struct update_configuration {
  std::vector<std::string> key_path;
  double timestamp = 0;
  nlohmann::json value;
};

/// PauseComponent (`pause`) or ResumeComponent: `component` non-empty.
struct component_control {
  bool pause = false;
  std::string component;
};

/// The operations without fields: SubscribeToComponentUpdates,
/// SubscribeToValidateConfigurationUpdates.
struct subscription {
  std::string op;
};

/// A request read: one of the operations, or why it is refused (an unknown or
/// unsupported operation is a ServiceError).
using request =
  std::variant<refusal, publish_to_topic, subscribe_to_topic, get_configuration, update_state,
               defer_component_update, validity_report, shadow_request, iotcore_request,
               subscribe_to_configuration, update_configuration, subscription,
               component_control>;

/// Reads operation `full` (`aws.greengrass#PublishToTopic`, ...) with body `req` (a JSON
/// object from parse_body). Never throws.
request parse_operation(const std::string& full, const nlohmann::json& req);

} // namespace grove::deployment::ipc
