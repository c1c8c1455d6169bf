// Plugin-host frames (kernel/src/frame_channel.cpp) as groved reads them from an
// isolated plugin's child process, which runs plugin code and so is not trusted
// (isolated_slot.cpp: read_loop): host::ToKernel frames until the stream ends or
// breaks, the topic and filter checks the bus makes, and the child's metric updates
// applied to a registry (metrics.cpp) and written as Prometheus text, whose lines must
// stay well formed whatever names, help and label values the child sent. The child's
// side (host::ToChild) is decoded from the same bytes.

#include "frame_channel.hpp"
#include "fuzz_support.hpp"
#include "grove/kernel/metrics.hpp"
#include "grove/plugin_host.pb.h"
#include "grove/topic.hpp"

namespace {

void check_exposition(const std::string& text) {
  using grove::fuzz::require;
  require(text.empty() || text.back() == '\n', "exposition does not end in a newline");
  for (size_t start = 0; start < text.size();) {
    auto end = text.find('\n', start);
    auto line = std::string_view{text}.substr(start, end - start);
    require(line.starts_with("# HELP grove_") || line.starts_with("# TYPE grove_")
              || line.starts_with("grove_"),
            "exposition line is neither a comment nor a sample");
    start = end + 1;
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using grove::host::ToKernel;
  auto in = grove::fuzz::bytes(data, size);
  grove::metric_registry registry;
  {
    grove::fuzz::memory_fd fd{in};
    grove::frame_channel ch{fd.release()};
    for (;;) {
      ToKernel msg;
      if (auto err = ch.receive(msg)) {
        (void) grove::describe(err);
        break;
      }
      switch (msg.kind_case()) {
        case ToKernel::kSubscribe:
          (void) grove::validate_filter(msg.subscribe());
          break;
        case ToKernel::kServe:
          (void) grove::validate_filter(msg.serve());
          break;
        case ToKernel::kPublish:
          (void) grove::validate_topic(msg.publish().topic());
          break;
        case ToKernel::kWatch:
          (void) grove::validate_topic(msg.watch().topic());
          break;
        case ToKernel::kMetrics:
          for (auto& u : msg.metrics().updates())
            (void) registry.apply(u);
          break;
        default:
          break;
      }
    }
  }
  grove::control::Status st;
  auto* p = st.add_plugins();
  p->set_name("fuzz");
  registry.collect(*p->mutable_metrics());
  std::string text;
  grove::write_prometheus(st, text);
  check_exposition(text);
  grove::fuzz::memory_fd fd{in};
  grove::frame_channel ch{fd.release()};
  grove::host::ToChild msg;
  while (!ch.receive(msg))
    msg.Clear();
  return 0;
}
