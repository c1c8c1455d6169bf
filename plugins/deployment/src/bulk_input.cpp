#include "bulk_input.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

namespace grove::deployment {

namespace {

// Ids as the API gives them (UUIDs); anything 1-128 printable without spaces is looked
// up, the rest is refused here so a report never carries control characters.
bool valid_id(const std::string& s) {
  return !s.empty() && s.size() <= 128 && std::all_of(s.begin(), s.end(), [](char c) {
    return c > 0x20 && c < 0x7f;
  });
}

bulk_record parse_line(std::string_view line, size_t number) {
  bulk_record r;
  r.line = number;
  auto fail = [&](std::string why) {
    r.error = "line " + std::to_string(number) + ": " + std::move(why);
    return r;
  };
  if (line.size() > max_bulk_line_bytes)
    return fail("longer than " + std::to_string(max_bulk_line_bytes) + " bytes");
  auto j = nlohmann::json::parse(line, nullptr, false);
  if (j.is_discarded())
    return fail("not JSON (or not UTF-8)");
  if (!j.is_object())
    return fail("not a JSON object {\"GroupId\", \"GroupVersionId\", \"DeploymentType\"}");
  for (auto it = j.begin(); it != j.end(); ++it)
    if (it.key() != "GroupId" && it.key() != "GroupVersionId" && it.key() != "DeploymentType")
      return fail("unknown key '" + it.key().substr(0, 64)
                  + "' (GroupId, GroupVersionId, DeploymentType)");
  for (auto key : {"GroupId", "GroupVersionId"}) {
    auto it = j.find(key);
    if (it == j.end())
      return fail(std::string{key} + " is required");
    if (!it->is_string() || !valid_id(it->get<std::string>()))
      return fail(std::string{key} + " must be 1 to 128 printable characters");
  }
  r.group_id = j["GroupId"].get<std::string>();
  r.group_version_id = j["GroupVersionId"].get<std::string>();
  r.deployment_type = "NewDeployment";
  if (auto it = j.find("DeploymentType"); it != j.end()) {
    if (!it->is_string())
      return fail("DeploymentType must be a string");
    r.deployment_type = it->get<std::string>();
    // AWS: "Currently, AWS IoT Greengrass supports only NewDeployment deployment types."
    if (r.deployment_type != "NewDeployment")
      return fail("DeploymentType '" + r.deployment_type.substr(0, 64)
                  + "': a bulk deployment takes only NewDeployment");
  }
  return r;
}

} // namespace

std::vector<bulk_record> parse_bulk_input(std::string_view text, std::string& file_error) {
  file_error.clear();
  std::vector<bulk_record> out;
  if (text.size() > max_bulk_input_bytes) {
    file_error = "the input file is larger than 100 MB";
    return out;
  }
  // A UTF-8 byte order mark is not the first record's fault.
  if (text.starts_with("\xEF\xBB\xBF"))
    text.remove_prefix(3);
  size_t number = 0;
  while (!text.empty()) {
    auto end = text.find('\n');
    auto line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
    ++number;
    if (line.ends_with('\r'))
      line.remove_suffix(1);
    if (std::all_of(line.begin(), line.end(),
                    [](char c) { return c == ' ' || c == '\t' || c == '\r'; }))
      continue;
    if (out.size() == max_bulk_records) {
      file_error = "the input file has more than " + std::to_string(max_bulk_records)
                   + " records (the rest from line " + std::to_string(number)
                   + " would not be deployed)";
      out.clear();
      return out;
    }
    out.push_back(parse_line(line, number));
  }
  if (out.empty())
    file_error = "the input file holds no records (JSON lines of {\"GroupId\", "
                 "\"GroupVersionId\", \"DeploymentType\"})";
  return out;
}

} // namespace grove::deployment
