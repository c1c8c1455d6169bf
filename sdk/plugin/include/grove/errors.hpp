#pragma once

#include <cstdint>
#include <string>

#include <caf/error.hpp>
#include <caf/make_message.hpp>

namespace grove {

/// Error codes of the Grove kernel and SDK (CAF category "grove").
enum class errc : uint8_t {
  none = 0,
  /// A configuration file or value is invalid; the context names file, line and field.
  invalid_config,
  /// A topic or topic filter is malformed.
  invalid_topic,
  /// A plugin library could not be opened or lacks the entry symbol.
  load_failed,
  /// A plugin was built for another ABI, CAF or Protobuf version.
  abi_mismatch,
  /// A plugin with this name is already loaded.
  duplicate_plugin,
  /// No plugin with this name is loaded.
  unknown_plugin,
  /// A plugin's init, start or restore failed or threw.
  init_failed,
  /// A plugin failed while running (threw or called fail()).
  plugin_failed,
  /// A plugin failed too often and stays down.
  plugin_broken,
  /// No subscriber matches a request's topic.
  no_route,
  /// A request got no reply in time.
  timeout,
  /// A subscriber's queue is full and the message was dropped.
  queue_full,
  /// A payload or frame is larger than allowed.
  too_large,
  /// Malformed bytes on a socket or in a file.
  malformed,
  /// The plugin does not support the operation (e.g. snapshot).
  unsupported,
  /// An operating-system call failed; the context carries errno text.
  system_error,
  /// The operation is not allowed in the current state.
  invalid_state,
  /// A plugin set an envelope source its profile entry does not grant (may_claim).
  not_authorized,
  /// A request topic is already served by another plugin (serve claims are exclusive).
  already_served,
  /// A compare-and-set found the state changed since the caller read it (re-read, retry).
  conflict,
};

/// Returns the name of an error code, e.g. "invalid_config".
const char* to_string(errc x) noexcept;

/// Builds a Grove error carrying a human-readable message.
caf::error make_error(errc code, std::string msg);

/// The message an error carries (its context as text), without code or category.
std::string message_of(const caf::error& err);

/// Renders any CAF error as one line: "<code>: <message>" for Grove errors,
/// CAF's own rendering otherwise. Empty for a default-constructed error.
std::string describe(const caf::error& err);

} // namespace grove

CAF_ERROR_CODE_ENUM(grove::errc, "grove")
