// local_resources' resource parser (plugins/local_resources/src/resource_def.cpp): a
// group's `resources[].config` text. An accepted volume never exposes /sys, /dev or /var
// nor lands where the sandbox makes its own mounts; an accepted device is under /dev.

#include "fuzz_support.hpp"
#include "resource_def.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto text = grove::fuzz::bytes(data, size);
  auto r = grove::lr::parse_resource(text, "fuzz");
  if (!r) {
    (void) grove::describe(r.error());
    return 0;
  }
  using kind = grove::lr::resource_kind;
  if (r->kind == kind::volume) {
    for (const char* root : {"/sys", "/dev", "/var"})
      grove::fuzz::require(!grove::lr::is_under(r->source_path, root),
                           "a volume source under /sys, /dev or /var was accepted");
    grove::fuzz::require(r->source_path.starts_with("/") && r->destination_path.starts_with("/"),
                         "a relative volume path was accepted");
    for (const char* root : {"/proc", "/dev", "/lambda", "/tmp", "/usr", "/etc"})
      grove::fuzz::require(!grove::lr::is_under(r->destination_path, root),
                           "a volume destination inside the sandbox's own mounts was accepted");
    grove::fuzz::require(r->destination_path != "/", "a volume at / was accepted");
  } else if (r->kind == kind::device) {
    grove::fuzz::require(grove::lr::is_under(r->source_path, "/dev") && r->source_path != "/dev",
                         "a device outside /dev was accepted");
    grove::fuzz::require(r->destination_path == r->source_path,
                         "a device moved to another path was accepted");
  }
  grove::fuzz::require(!(r->owner.auto_add_group_owner && !r->owner.group_owner.empty()),
                       "both group owner settings were accepted");
  return 0;
}
