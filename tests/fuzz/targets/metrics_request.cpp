// The Prometheus endpoint's request parser (kernel/src/metrics_server.cpp,
// parse_metrics_request): bytes any local user can send to groved's metrics port.
// Beyond "no crash": only a request line "GET|HEAD /metrics[?...] HTTP/1.x" scrapes.

#include "fuzz_support.hpp"
#include "grove/kernel/metrics_server.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using grove::metrics_request;
  auto in = grove::fuzz::bytes(data, size);
  auto kind = grove::parse_metrics_request(in);
  // 431 exactly when no blank line ends the head (the server calls this only then, or
  // once its size limit is passed).
  grove::fuzz::require((kind == metrics_request::too_large)
                         == (in.find("\r\n\r\n") == std::string_view::npos),
                       "431 for a complete head, or an answer to an incomplete one");
  if (kind == metrics_request::get || kind == metrics_request::head) {
    auto line = in.substr(0, in.find("\r\n"));
    auto method = kind == metrics_request::get ? std::string_view{"GET /metrics"}
                                               : std::string_view{"HEAD /metrics"};
    grove::fuzz::require(line.starts_with(method), "a scrape without its request line");
    auto after = line.substr(method.size());
    grove::fuzz::require(after.starts_with(" HTTP/1.") || after.starts_with("?"),
                         "a scrape of another target");
    grove::fuzz::require(in.find("\r\n\r\n") != std::string_view::npos,
                         "a scrape before the head is complete");
  }
  return 0;
}
