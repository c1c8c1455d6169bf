// function_runtime's seccomp profile (plugins/function_runtime/src/seccomp_profile.cpp):
// the text an image's `seccomp_profile` names, parsed and, when valid, compiled to the BPF
// program grove::process loads. A valid profile never both allows and denies a call, and
// always compiles.

#include "fuzz_support.hpp"
#include "seccomp_profile.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto text = grove::fuzz::bytes(data, size);
  auto p = grove::fn::parse_seccomp_profile(text, "fuzz");
  if (!p) {
    (void) grove::describe(p.error());
    return 0;
  }
  grove::fuzz::require(!p->allow.empty(), "a profile allowing nothing was accepted");
  for (const auto& a : p->allow)
    grove::fuzz::require(!grove::fn::never_allowed(a), "a profile allowing a never-call was accepted");
  for (const auto& a : p->allow)
    for (const auto& d : p->deny)
      grove::fuzz::require(a != d, "a call both allowed and denied was accepted");
  auto prog = grove::fn::compile_seccomp(*p);
  grove::fuzz::require(prog && !prog->empty(), "a valid profile did not compile");
  return 0;
}
