// The CPU-bound stages of a group change, one after another in one process, on a group
// file (group_bench.py --keep-group writes the one at Greengrass' limits): the kernel's
// read (grove::load_group: libyaml's events, the Group, the checks), the Group's
// serialization for the bus, message_manager's parse and table compile
// (grove::mm::routes), and the broker plugin's table parse (grove::broker::parse_acl).
// Peer, in the same run: libyaml's bare event scan of the same file, the floor of any
// reader built on it (ratio = load_group / scan). CPU time (CLOCK_PROCESS_CPUTIME_ID), the
// median of REPEAT rounds; on a shared machine count instructions instead:
//   valgrind --tool=callgrind build/bin/group_stages_bench FILE 1
// and read each stage's inclusive cost (callgrind_annotate --inclusive=yes).
//
// Usage: group_stages_bench FILE [REPEAT]

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <yaml.h>

#include "acl.hpp"
#include "grove/errors.hpp"
#include "grove/kernel/group.hpp"
#include "routes.hpp"

namespace {

double cpu_ms() {
  timespec t{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

// libyaml's events for the whole text, nothing kept: what every reader on it pays.
size_t scan(const std::string& text) {
  yaml_parser_t p;
  yaml_parser_initialize(&p);
  yaml_parser_set_input_string(&p, reinterpret_cast<const unsigned char*>(text.data()),
                               text.size());
  size_t events = 0;
  for (;;) {
    yaml_event_t e;
    if (!yaml_parser_parse(&p, &e))
      break;
    auto type = e.type;
    yaml_event_delete(&e);
    ++events;
    if (type == YAML_STREAM_END_EVENT)
      break;
  }
  yaml_parser_delete(&p);
  return events;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s FILE [REPEAT]\n", argv[0]);
    return 2;
  }
  int repeat = argc > 2 ? std::max(1, std::atoi(argv[2])) : 5;
  std::ifstream in{argv[1], std::ios::binary};
  std::stringstream buf;
  buf << in.rdbuf();
  auto text = buf.str();
  std::map<std::string, std::vector<double>> ms;
  nlohmann::json out{{"benchmark", "group_stages"}, {"file_bytes", text.size()}};
  for (int r = 0; r < repeat; ++r) {
    auto t0 = cpu_ms();
    auto events = scan(text);
    auto t1 = cpu_ms();
    auto g = grove::load_group(argv[1]);
    auto t2 = cpu_ms();
    if (!g) {
      out["error"] = grove::describe(g.error());
      std::printf("%s\n", out.dump().c_str());
      return 1;
    }
    auto bytes = g->SerializeAsString();
    auto t3 = cpu_ms();
    grove::group::Group received;
    received.ParseFromString(bytes);
    auto t4 = cpu_ms();
    grove::mm::routes table{received};
    auto acl = table.acl_text() + "end\n";
    auto t5 = cpu_ms();
    std::string error;
    auto parsed = grove::broker::parse_acl(acl, error);
    auto t6 = cpu_ms();
    if (!parsed || !parsed->complete) {
      out["error"] = "the table does not parse: " + error;
      std::printf("%s\n", out.dump().c_str());
      return 1;
    }
    ms["libyaml_scan"].push_back(t1 - t0);
    ms["kernel_load_group"].push_back(t2 - t1);
    ms["kernel_serialize"].push_back(t3 - t2);
    ms["mm_parse"].push_back(t4 - t3);
    ms["mm_compile"].push_back(t5 - t4);
    ms["broker_parse"].push_back(t6 - t5);
    out["events"] = events;
    out["subscriptions"] = g->subscriptions_size();
    out["table_bytes"] = acl.size();
  }
  double total = 0;
  for (auto& [stage, v] : ms) {
    out["cpu_ms"][stage] = median(v);
    if (stage != "libyaml_scan")
      total += median(v);
  }
  out["cpu_ms_path"] = total;
  out["load_group_ratio_to_scan"] = median(ms["kernel_load_group"]) / median(ms["libyaml_scan"]);
  out["repeat"] = repeat;
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
