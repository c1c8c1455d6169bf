#pragma once

// The C++ function SDK: what a Grove user function (a Greengrass "Lambda" on the device)
// links. Write a handler, export it with GROVE_FUNCTION(handler), and function_runtime
// runs the binary as the function's instances. The verbs below talk to the runtime over
// the instance's socket (plugins/function_runtime/README.md, "IPC"). See
// sdk/function/cpp/README.md.

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace grove::function {

/// A value or the error text of a failed verb.
template <class T>
struct outcome {
  /// The value, when the verb succeeded.
  std::optional<T> value;
  /// Why it failed; empty on success.
  std::string error;
  /// The error's code when the verb reports one (infer: malformed, queue_full, no_route,
  /// invalid_state, not_authorized, too_large, ...); empty otherwise.
  std::string code;

  /// True on success.
  explicit operator bool() const noexcept {
    return value.has_value();
  }

  /// The value (call only on success).
  const T& operator*() const {
    return *value;
  }

  /// The value's members (call only on success).
  const T* operator->() const {
    return &*value;
  }
};

/// What the handler learns about the work item it is given.
struct context {
  /// The function's name.
  std::string function_name;
  /// The MQTT topic the message came on (message_manager, PUB_SUB source); empty for a
  /// direct invocation.
  std::string subject;
  /// Who sent it: device:<thing>, cloud, shadow, function:<name>, grovectl, ...
  std::string source;
  /// Unique per work item.
  std::string invocation_id;
  /// The payload's content type as sent.
  std::string content_type;
  /// True when nobody waits for the return value (an event, a routed message).
  bool event = false;
  /// When timeoutInSeconds ends the instance.
  std::chrono::steady_clock::time_point deadline;

  /// Time left before the runtime ends the instance.
  std::chrono::milliseconds remaining_time() const;
};

/// A handler: takes the payload, returns the reply (ignored for events). A thrown
/// exception answers the item with its what() as the error (bytes that are not UTF-8
/// written as \xNN, cut at 16 KiB); the instance goes on.
using handler = std::function<std::string(const std::string& payload, const context& ctx)>;

/// How invoke() calls another function.
enum class invocation_type {
  /// Wait for its reply.
  request_response,
  /// Queue it as an event; returns once the runtime accepted it.
  event,
};

/// Log levels of log().
enum class level : uint32_t {
  /// Details.
  debug,
  /// Normal operation.
  info,
  /// Something to look at.
  warn,
  /// A failure.
  error,
  /// A failure the function cannot go on after.
  fatal,
};

/// Publishes `payload` on MQTT topic `topic` through the group's subscription table
/// (message_manager mm-3) as function:<name>; returns how many kinds of target took it
/// (0: no subscription routes it). Call from the handler's thread.
outcome<uint32_t> publish(std::string_view topic, std::string_view payload, uint32_t qos = 0,
                          std::string_view content_type = {});

/// Like publish() without waiting for where it went; the runtime ends an instance with
/// more than max_pending_frames publishes in flight.
bool publish_nowait(std::string_view topic, std::string_view payload, uint32_t qos = 0);

/// Invokes function `name` with `payload`: its reply (request_response), or an empty
/// string once the event was queued. `timeout` zero: the runtime's call_timeout_ms.
outcome<std::string> invoke(std::string_view name, std::string_view payload,
                            invocation_type type = invocation_type::request_response,
                            std::chrono::milliseconds timeout = {});

/// The Device Shadow of `thing` (classic, or named `shadow`): the accepted document, or
/// the error (`rejected: {"code":404,...}`, a timeout, no route to the shadow service).
/// Sent through the group's table to `$aws/things/<thing>/shadow[/name/<shadow>]/get`
/// with a clientToken; the table must route the shadow service's `.../get/accepted` and
/// `.../get/rejected` back to this function.
outcome<std::string> get_thing_shadow(std::string_view thing, std::string_view shadow = {},
                                      std::chrono::milliseconds timeout = {});

/// Updates the shadow with `document` (a JSON object: `{"state":{"reported":{...}}}`);
/// the accepted document or the error, as get_thing_shadow.
outcome<std::string> update_thing_shadow(std::string_view thing, std::string_view document,
                                         std::string_view shadow = {},
                                         std::chrono::milliseconds timeout = {});

/// Deletes the shadow; the accepted reply or the error, as get_thing_shadow.
outcome<std::string> delete_thing_shadow(std::string_view thing, std::string_view shadow = {},
                                         std::chrono::milliseconds timeout = {});

/// Element type of a tensor's data (ml_inference's ml.proto DataType).
enum class dtype : uint32_t {
  /// 4-byte IEEE floats, little-endian.
  float32 = 1,
  /// Bytes.
  uint8 = 2,
};

/// A named tensor: an input of infer() or one of its outputs. `data` holds the
/// product of `shape` elements of `type`, dense, row-major, little-endian.
struct tensor {
  /// The model's name for it.
  std::string name;
  /// Element type.
  dtype type = dtype::float32;
  /// Dimensions.
  std::vector<int64_t> shape;
  /// Raw element bytes.
  std::string data;

  /// A float32 tensor of `values`.
  static tensor of(std::string name, std::vector<int64_t> shape,
                   const std::vector<float>& values);

  /// The elements of a float32 tensor.
  std::vector<float> floats() const;
};

/// One of a classifier's best scores.
struct label {
  /// Index in the first output's last dimension.
  uint32_t index = 0;
  /// The model's label for it ("" when the model has none).
  std::string name;
  /// Its score.
  float score = 0;
};

/// What infer() returns.
struct inference {
  /// The model's outputs (float32).
  std::vector<tensor> outputs;
  /// top_k labels per item, item after item (classifiers).
  std::vector<label> top;
  /// The model version that ran it.
  std::string version;
  /// How many requests ran in the backend call with this one.
  uint32_t batch_size = 0;

  /// The output named `name`; null when there is none.
  const tensor* output(std::string_view name) const;
};

/// Runs ML model `model` (a group resource the function's resourceAccessPolicies grant)
/// on named input tensors through ml_inference; `top_k` 0: the model's default.
/// Errors carry the code: not_authorized (not granted), malformed (names the tensor and
/// what was expected), queue_full, no_route, invalid_state, too_large (the request is over
/// the runtime's max_frame_bytes: refused before it is sent), timeout. `timeout` zero:
/// the runtime's call_timeout_ms. Call from the handler's thread.
outcome<inference> infer(std::string_view model, const std::vector<tensor>& inputs,
                         uint32_t top_k = 0, std::chrono::milliseconds timeout = {});

/// The same with an encoded image (PNG, JPEG, BMP) that the model's preprocessing turns
/// into its first input.
outcome<inference> infer_image(std::string_view model, std::string_view image,
                               uint32_t top_k = 0, std::chrono::milliseconds timeout = {});

/// Writes a line to the function's log (<write_dir>/logs/functions/<name>.log); bytes
/// that are not UTF-8 are written as \xNN.
void log(level lvl, std::string_view text);

/// Runs the instance: says hello to the runtime, then calls `h` for each work item
/// until the runtime closes the socket. Returns the process exit code.
int run(handler h, int argc, char** argv);

} // namespace grove::function

/// Defines main() for a function whose handler is `h`.
#define GROVE_FUNCTION(h)                                                              \
  int main(int argc, char** argv) {                                                    \
    return ::grove::function::run(h, argc, argv);                                      \
  }
