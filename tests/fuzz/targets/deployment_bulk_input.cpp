// Greengrass v1 bulk deployments' input files (plugins/deployment/src/bulk_input.cpp),
// what StartBulkDeployment's InputFileUri names: JSON lines of {GroupId, GroupVersionId,
// DeploymentType}. Every non-blank line is a record (or the file is refused whole with a
// reason and no records); a record either failed with a reason naming its line, or
// carries ids of 1-128 printable characters and NewDeployment.

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "bulk_input.hpp"

using namespace grove::deployment;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text{reinterpret_cast<const char*>(data), size};
  std::string file_error;
  auto records = parse_bulk_input(text, file_error);
  if (!file_error.empty()) {
    if (!records.empty())
      std::abort(); // a refused file yields no records
    return 0;
  }
  if (records.empty() || records.size() > max_bulk_records)
    std::abort();
  size_t last = 0;
  auto printable = [](const std::string& s) {
    if (s.empty() || s.size() > 128)
      return false;
    for (char c : s)
      if (c <= 0x20 || c >= 0x7f)
        return false;
    return true;
  };
  for (const auto& r : records) {
    if (r.line <= last)
      std::abort(); // in file order, one record per line
    last = r.line;
    if (!r.error.empty()) {
      if (r.error.rfind("line " + std::to_string(r.line) + ": ", 0) != 0)
        std::abort(); // a failed record names its line
      continue;
    }
    if (!printable(r.group_id) || !printable(r.group_version_id)
        || r.deployment_type != "NewDeployment")
      std::abort();
  }
  return 0;
}
