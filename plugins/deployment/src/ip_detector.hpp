#pragma once

// Greengrass v1's IP detector: the core fills its own connectivity information
// (connectivity.hpp, the list discovery answers with) from its interfaces' addresses
// (getifaddrs), at start and whenever an address changes (a netlink RTMGRP_IPV4_IFADDR /
// RTMGRP_IPV6_IFADDR socket). The entries it writes carry a mark in `Metadata`
// (`grove:ip-detector <interface>`) and an `Id` of `ip-detector:<interface>:<address>`;
// it replaces only marked entries, so entries set by UpdateConnectivityInfo stay (after
// the detected ones).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <caf/expected.hpp>
#include <nlohmann/json.hpp>

namespace grove::deployment {

/// What the detector reports.
struct ip_detector_options {
  /// IPv6 addresses too (link-local fe80::/10 never: devices cannot use them unscoped).
  bool include_ipv6 = false;
  /// Loopback interfaces too.
  bool include_loopback = false;
  /// Only interfaces whose name matches one of these (fnmatch patterns); empty: all.
  std::vector<std::string> interfaces;
  /// No interface whose name matches one of these (fnmatch patterns).
  std::vector<std::string> exclude;
  /// The broker port each entry names.
  uint16_t port = 8883;
};

/// One address of an interface.
struct interface_address {
  /// The interface's name.
  std::string interface;
  /// The address, numeric (`192.168.1.20`, `2001:db8::1`).
  std::string address;
  /// An IPv6 address.
  bool ipv6 = false;
  /// The interface is a loopback one.
  bool loopback = false;
  /// The interface is up.
  bool up = true;
};

/// The mark at the start of the `Metadata` of the entries the detector writes.
inline constexpr std::string_view ip_detector_mark = "grove:ip-detector";

/// Every address of this machine's interfaces (getifaddrs).
caf::expected<std::vector<interface_address>> interface_addresses();

/// The addresses `o` selects from `all`, ordered by interface, IPv4 first, then address.
std::vector<interface_address> select_addresses(std::vector<interface_address> all,
                                                const ip_detector_options& o);

/// Whether a connectivity entry is the detector's (its `Metadata` carries the mark).
bool detected_entry(const nlohmann::json& entry);

/// `stored` with the detector's entries replaced by `detected` (first, with `port`), the
/// other entries kept after them in their order; detected entries are dropped when an
/// entry kept has their `Id`, or past the 100-entry limit.
nlohmann::json merge_detected(const nlohmann::json& stored,
                              const std::vector<interface_address>& detected, uint16_t port);

/// Watches the kernel's address changes (netlink) on a thread of its own and calls
/// `on_change` (on that thread) after each burst of them; when netlink cannot be opened
/// it calls `on_change` every `fallback` instead.
class address_watcher {
public:
  /// Starts watching; `how` says which way (netlink or the periodic fallback and why).
  static std::unique_ptr<address_watcher> start(std::function<void()> on_change,
                                                std::chrono::seconds fallback,
                                                std::string& how);

  /// Stops the thread (joined).
  ~address_watcher();

  address_watcher(const address_watcher&) = delete;
  address_watcher& operator=(const address_watcher&) = delete;

private:
  address_watcher() = default;
  void run(std::function<void()> on_change, std::chrono::seconds fallback);

  int netlink_ = -1;
  int wake_ = -1; // an eventfd: the destructor's stop
  std::thread thread_;
};

} // namespace grove::deployment
