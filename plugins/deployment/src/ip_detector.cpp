#include "ip_detector.hpp"

#include <arpa/inet.h>
#include <fnmatch.h>
#include <ifaddrs.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <tuple>

#include "connectivity.hpp"
#include "grove/errors.hpp"

namespace grove::deployment {

using nlohmann::json;

caf::expected<std::vector<interface_address>> interface_addresses() {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0)
    return grove::make_error(grove::errc::system_error,
                             std::string{"getifaddrs: "} + std::strerror(errno));
  std::vector<interface_address> out;
  for (auto* a = list; a != nullptr; a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_name == nullptr)
      continue;
    char buf[INET6_ADDRSTRLEN] = {};
    interface_address ia;
    ia.interface = a->ifa_name;
    ia.loopback = (a->ifa_flags & IFF_LOOPBACK) != 0;
    ia.up = (a->ifa_flags & IFF_UP) != 0;
    if (a->ifa_addr->sa_family == AF_INET) {
      auto* sin = reinterpret_cast<const sockaddr_in*>(a->ifa_addr);
      if (!inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof buf))
        continue;
    } else if (a->ifa_addr->sa_family == AF_INET6) {
      auto* sin6 = reinterpret_cast<const sockaddr_in6*>(a->ifa_addr);
      if (!inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof buf))
        continue;
      ia.ipv6 = true;
    } else {
      continue;
    }
    ia.address = buf;
    out.push_back(std::move(ia));
  }
  freeifaddrs(list);
  return out;
}

namespace {

bool matches(const std::vector<std::string>& patterns, const std::string& name) {
  return std::any_of(patterns.begin(), patterns.end(), [&](const std::string& p) {
    return fnmatch(p.c_str(), name.c_str(), 0) == 0;
  });
}

bool link_local_v6(const std::string& a) {
  // fe80::/10: fe80 to febf.
  if (a.size() < 4)
    return false;
  auto head = a.substr(0, 4);
  for (auto& c : head)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return head >= "fe80" && head <= "febf" && (a.size() == 4 || a[4] == ':');
}

} // namespace

std::vector<interface_address> select_addresses(std::vector<interface_address> all,
                                                const ip_detector_options& o) {
  std::vector<interface_address> out;
  std::set<std::pair<std::string, std::string>> seen;
  for (auto& a : all) {
    if (!a.up || (a.loopback && !o.include_loopback) || (a.ipv6 && !o.include_ipv6))
      continue;
    if (a.ipv6 && link_local_v6(a.address))
      continue;
    if (!o.interfaces.empty() && !matches(o.interfaces, a.interface))
      continue;
    if (matches(o.exclude, a.interface))
      continue;
    if (!seen.insert({a.interface, a.address}).second)
      continue;
    out.push_back(std::move(a));
  }
  std::sort(out.begin(), out.end(), [](const interface_address& x, const interface_address& y) {
    return std::tie(x.interface, x.ipv6, x.address) < std::tie(y.interface, y.ipv6, y.address);
  });
  return out;
}

bool detected_entry(const json& entry) {
  if (!entry.is_object())
    return false;
  auto it = entry.find("Metadata");
  return it != entry.end() && it->is_string()
         && it->get_ref<const std::string&>().starts_with(ip_detector_mark);
}

json merge_detected(const json& stored, const std::vector<interface_address>& detected,
                    uint16_t port) {
  json kept = json::array();
  std::set<std::string> ids;
  if (stored.is_array())
    for (const auto& e : stored)
      if (!detected_entry(e)) {
        kept.push_back(e);
        if (e.is_object() && e.contains("Id") && e["Id"].is_string())
          ids.insert(e["Id"].get<std::string>());
      }
  json out = json::array();
  for (const auto& a : detected) {
    if (out.size() + kept.size() >= max_connectivity_entries)
      break;
    auto id = "ip-detector:" + a.interface + ":" + a.address;
    if (id.size() > 128 || ids.count(id))
      continue;
    out.push_back({{"HostAddress", a.address},
                   {"Id", id},
                   {"Metadata", std::string{ip_detector_mark} + " " + a.interface},
                   {"PortNumber", port}});
  }
  for (auto& e : kept)
    out.push_back(std::move(e));
  return out;
}

// ---- the watcher -------------------------------------------------------------------

std::unique_ptr<address_watcher> address_watcher::start(std::function<void()> on_change,
                                                        std::chrono::seconds fallback,
                                                        std::string& how) {
  std::unique_ptr<address_watcher> w{new address_watcher};
  w->wake_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (w->wake_ < 0) {
    how = std::string{"cannot watch: eventfd: "} + std::strerror(errno);
    return nullptr;
  }
  w->netlink_ = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE);
  if (w->netlink_ >= 0) {
    sockaddr_nl sa{};
    sa.nl_family = AF_NETLINK;
    sa.nl_groups = RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_LINK;
    if (bind(w->netlink_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
      how = std::string{"netlink bind failed ("} + std::strerror(errno) + "): checked every "
            + std::to_string(fallback.count()) + " s instead";
      ::close(w->netlink_);
      w->netlink_ = -1;
    } else {
      how = "netlink address notifications";
    }
  } else {
    how = std::string{"no netlink socket ("} + std::strerror(errno) + "): checked every "
          + std::to_string(fallback.count()) + " s instead";
  }
  w->thread_ = std::thread([p = w.get(), f = std::move(on_change), fallback]() mutable {
    p->run(std::move(f), fallback);
  });
  return w;
}

void address_watcher::run(std::function<void()> on_change, std::chrono::seconds fallback) {
  char buf[16384];
  auto drain = [&] {
    // Every message is a reason to look again: what changed is read from getifaddrs.
    // ENOBUFS: notifications were lost; the next look sees the state anyway.
    for (;;) {
      auto got = recv(netlink_, buf, sizeof buf, 0);
      if (got > 0 || (got < 0 && (errno == ENOBUFS || errno == EINTR)))
        continue;
      break;
    }
  };
  for (;;) {
    pollfd fds[2] = {{wake_, POLLIN, 0}, {netlink_, POLLIN, 0}};
    int n = poll(fds, netlink_ >= 0 ? 2 : 1,
                 netlink_ >= 0 ? -1 : static_cast<int>(fallback.count() * 1000));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 || (fds[0].revents & POLLIN))
      return;
    if (netlink_ >= 0) {
      if (!(fds[1].revents & POLLIN))
        continue;
      drain();
      // A change is often several messages (an address, its route, the link): they are
      // taken together, 100 ms after the last one.
      for (;;) {
        pollfd more[2] = {{wake_, POLLIN, 0}, {netlink_, POLLIN, 0}};
        int m = poll(more, 2, 100);
        if (m < 0 && errno == EINTR)
          continue;
        if (m < 0 || (more[0].revents & POLLIN))
          return;
        if (m == 0)
          break;
        drain();
      }
    }
    on_change();
  }
}

address_watcher::~address_watcher() {
  if (wake_ >= 0) {
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_, &one, sizeof one);
  }
  if (thread_.joinable())
    thread_.join();
  if (netlink_ >= 0)
    ::close(netlink_);
  if (wake_ >= 0)
    ::close(wake_);
}

} // namespace grove::deployment
