// Greengrass v2's IPC for generic components: the event-stream RPC protocol
// (eventstream.hpp) over a Unix socket, as the AWS IoT Device SDKs' greengrasscoreipc
// clients speak it. Components find the socket and their token in
// AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT and SVCUID (env()); the connect
// message's JSON carries the token (`authToken`), which names the component.
//
// One thread owns the socket and every connection (poll). Operations (README.md, "IPC"):
// PublishToTopic / SubscribeToTopic (local publish/subscribe between components,
// authorized by the components' `accessControl`), GetConfiguration, UpdateState,
// SubscribeToComponentUpdates / DeferComponentUpdate (pre_update), and
// SubscribeToValidateConfigurationUpdates / SendConfigurationValidityReport (validate),
// and the shadow operations (GetThingShadow, UpdateThingShadow, DeleteThingShadow,
// ListNamedShadowsForThing), which the plugin forwards to the shadow plugin (on_shadow),
// PublishToIoTCore / SubscribeToIoTCore, through message_manager's cloud link, and
// SubscribeToConfigurationUpdate / UpdateConfiguration (changes kept over the running
// set's configuration, see set_components), and PauseComponent / ResumeComponent
// (authorized here, done by the plugin's runner through on_control).
//
// A hot reload of the plugin hands the socket and the connections to the next instance's
// server (detach(), then start() with what it returned): groved's process stays, so the
// file descriptors do; the components' clients (which do not reconnect) go on.

#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <caf/expected.hpp>
#include <nlohmann/json.hpp>

namespace spdlog {
class logger;
}

namespace grove::deployment {

/// The IPC server (see the file comment).
class ipc_server {
public:
  /// The largest frame a client may send (a longer one ends its connection).
  static constexpr size_t max_frame = 1 << 20;

  /// Listens on `socket` (replacing what is there); tokens are derived from the key in
  /// `key_file` (made, 0600, when missing), so they survive restarts and hot reloads.
  /// UpdateConfiguration's changes are kept in `changes_file` (0600; read here), so they
  /// survive them too. With `handed` (what an earlier instance's detach() returned, in
  /// this process) its listening socket and connections are taken over instead, each
  /// checked to be a Unix stream socket on `socket` (one that is not, e.g. closed by a
  /// failed instance since, is left alone; without the listener a new one is made).
  /// Nothing is served until serve().
  static caf::expected<std::unique_ptr<ipc_server>>
  start(std::filesystem::path socket, const std::filesystem::path& key_file,
        const std::filesystem::path& changes_file, spdlog::logger& log,
        const nlohmann::json* handed = nullptr);

  /// Starts the server's thread (once the callbacks are set).
  void serve();

  /// For a hot reload: stops the thread without closing the listening socket or the
  /// connections, and returns them with each connection's protocol state (component,
  /// streams, a partly read frame, unsent bytes) and the components known, for the next
  /// instance's start(). Requests the plugin has not answered yet (shadow calls,
  /// PublishToIoTCore) are answered ServiceError first; rounds of pre_update and validate
  /// are dropped (their `done` never runs). Afterwards this server closes nothing.
  nlohmann::json detach();

  /// The topic filters (SubscribeToTopic) and cloud filters (SubscribeToIoTCore) of the
  /// connections taken over at start(): reported to no callback, the plugin subscribes
  /// to them itself.
  std::set<std::string> handed_filters() const;
  std::set<std::string> handed_iot_filters() const;

  /// How many connections start() took over.
  size_t handed_connections() const;

  ~ipc_server();

  /// The components that may connect, with their configurations (what GetConfiguration
  /// reads, accessControl). A component's UpdateConfiguration changes stay merged over
  /// its configuration until this changes it or leaves the component out; subscribers
  /// hear of the keys that changed. Thread-safe.
  void set_components(std::map<std::string, nlohmann::json> configs);

  /// The environment variables of `component`'s processes. Thread-safe.
  std::vector<std::string> env(const std::string& component) const;

  /// Called on the server's thread when a component reports a state (UpdateState).
  void on_state(std::function<void(const std::string&, const std::string&)> f);

  /// Called on the server's thread after each PublishToTopic a component made (its
  /// local subscribers already have it): the topic, the message's bytes (a jsonMessage
  /// as JSON text, a binaryMessage decoded) and their content type, for the bus.
  void on_publish(std::function<void(const std::string& topic, std::string payload,
                                     std::string content_type)> f);

  /// Called on the server's thread with every topic filter components subscribe to,
  /// each time that set changes (the plugin subscribes to them on the bus).
  void on_filters(std::function<void(std::set<std::string>)> f);

  /// A shadow operation a component asked for, authorized already.
  struct shadow_call {
    std::string op;      ///< GetThingShadow, UpdateThingShadow, DeleteThingShadow, ListNamedShadowsForThing
    std::string thing;   ///< thingName
    std::string name;    ///< shadowName (empty: the classic shadow)
    std::string payload; ///< the request document's bytes (Update; else empty)
    uint32_t page_size = 0;  ///< List's pageSize (0: the shadow plugin's default)
    std::string next_token;  ///< List's nextToken
  };

  /// The answer to an operation the plugin serves (a shadow_call, a PublishToIoTCore):
  /// `error` empty and `body` the response's JSON (with
  /// `payload`, when set, as its base64 `payload`), or `error` an IPC error shape
  /// (ResourceNotFoundError, ...) and `message` its text.
  struct answer_data {
    std::string error;
    std::string message;
    nlohmann::json body = nlohmann::json::object();
    std::optional<std::string> payload;
  };

  /// Called on the server's thread with each shadow operation; the plugin answers
  /// through the function it gets (from any thread, once). Without it the operations are
  /// ServiceError.
  void on_shadow(std::function<void(shadow_call, std::function<void(answer_data)>)> f);

  /// Called on the server's thread with each PublishToIoTCore (authorized already): the
  /// cloud topic and the payload's bytes; the plugin answers through the function it
  /// gets (from any thread, once). Without it the operation is ServiceError.
  void on_iot_publish(std::function<void(std::string topic, std::string payload,
                                         std::function<void(answer_data)>)> f);

  /// A PauseComponent (`pause`) or ResumeComponent, authorized already by the caller's
  /// accessControl."aws.greengrass.ipc.lifecycle" on the component's name.
  struct control_call {
    bool pause = false;
    std::string component;
  };

  /// Called on the server's thread with each PauseComponent / ResumeComponent; the plugin
  /// answers through the function it gets (from any thread, once): an empty body, or an
  /// error shape. Without it the operations are ServiceError.
  void on_control(std::function<void(control_call, std::function<void(answer_data)>)> f);

  /// Called on the server's thread with every cloud topic filter components subscribe to
  /// (SubscribeToIoTCore), each time that set changes.
  void on_iot_filters(std::function<void(std::set<std::string>)> f);

  /// Delivers a message from the cloud on `topic` to the components subscribed to it
  /// with SubscribeToIoTCore. Thread-safe.
  void deliver_iot(std::string topic, std::string payload);

  /// Delivers a message from the bus to the components subscribed to `topic` (JSON as a
  /// jsonMessage, anything else as a binaryMessage). Thread-safe.
  void deliver(std::string topic, std::string payload, std::string content_type);

  /// Tells each component subscribed to component updates that deployment `id` is about
  /// to update the core (preUpdateEvent), and waits up to `timeout` for their answers: a
  /// DeferComponentUpdate with recheckAfterMs > 0 asks again after that long. `done` (on
  /// the server's thread) gets the components that deferred, in order, once none does.
  void pre_update(std::string id, std::chrono::milliseconds timeout,
                  std::function<void(std::vector<std::string>)> done);

  /// Tells the subscribed components that deployment `id` has updated the core.
  void post_update(std::string id);

  /// Sends each component in `configs` that subscribed to validation its new
  /// configuration, and waits up to `timeout` for the reports. `done` (on the server's
  /// thread) gets the first REJECTED one's reason, or nullopt.
  void validate(std::string id, std::map<std::string, nlohmann::json> configs,
                std::chrono::milliseconds timeout,
                std::function<void(std::optional<std::string>)> done);

  /// The socket's path.
  const std::filesystem::path& socket() const;

  struct impl;

private:
  explicit ipc_server(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

} // namespace grove::deployment
