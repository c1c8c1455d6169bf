// Image Builder component documents (plugins/deployment/src/imagebuilder_document.cpp),
// what CreateComponent's `data` (or the document its `uri` names) carries: a refusal
// always names a field and says what is wrong; a document that passes holds only what
// grove-image runs (phases build/validate/test once each, ExecuteBash steps with unique
// names, commands, onFailure, timeoutSeconds and maxAttempts within their ranges). The
// input's first line is also checked as a CreateComponent name.

#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>

#include "imagebuilder_document.hpp"

using namespace grove::deployment;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view all{reinterpret_cast<const char*>(data), size};
  auto line = all.substr(0, all.find('\n'));
  if (valid_imagebuilder_name(line) && (line.size() < 3 || line.size() > 128))
    std::abort();
  component_document_error err;
  auto doc = parse_component_document(all, err);
  if (!doc) {
    if (err.field.empty() || err.message.empty())
      std::abort(); // a refusal always says where and why
    return 0;
  }
  if (!valid_imagebuilder_name(doc->name) || doc->phases.empty() || doc->phases.size() > 3)
    std::abort();
  std::set<std::string> phases;
  for (const auto& p : doc->phases) {
    if ((p.name != "build" && p.name != "validate" && p.name != "test")
        || !phases.insert(p.name).second || p.steps.empty())
      std::abort();
    std::set<std::string> names;
    for (const auto& s : p.steps)
      if (s.action != "ExecuteBash" || s.commands.empty() || !names.insert(s.name).second
          || s.timeout_seconds < 1 || s.timeout_seconds > 86400 || s.max_attempts < 1
          || s.max_attempts > 10
          || (s.on_failure != "Abort" && s.on_failure != "Continue" && s.on_failure != "Ignore"))
        std::abort();
  }
  return 0;
}
