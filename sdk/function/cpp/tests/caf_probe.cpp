// A program that needs libcaf_core at run time and nothing of Grove: the binary
// function_sdk_needs_no_grove_library_refuses_caf shows the check refuses.

#include <cstdio>

#include <caf/sec.hpp>

int main() {
  std::puts(caf::to_string(caf::sec::none).c_str());
  return 0;
}
