#pragma once

// EC2 Image Builder's component operations (botocore's model `imagebuilder` 2019-12-02):
// CreateComponent, GetComponent, ListComponents and DeleteComponent on the deployment
// API's server, so an operator stores build components with `aws imagebuilder` or boto3
// and names them in an image profile (tools/grove-image). The router (api.cpp) checks
// SigV4 (service `imagebuilder`), the allow-list (`imagebuilder:<Operation>`) and the
// rate limit first; this answers in Image Builder's error names. State: the component
// store's file (imagebuilder_store.hpp).

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <caf/expected.hpp>

#include "component_store.hpp"
#include "http.hpp"

namespace grove::deployment {

/// What the Image Builder routes need.
struct imagebuilder_settings {
  /// Region and account in ARNs.
  std::string region = "us-east-1";
  /// Account id in ARNs and `owner`.
  std::string account_id = "123456789012";
  /// How long a clientToken's first answer is kept.
  std::chrono::seconds token_ttl{8 * 3600};
  /// Reads CreateComponent's `uri` (s3:// or file://, the artifact rules and fetcher of
  /// artifacts.hpp): the document's text, or an error saying why not. Unset: a `uri` is
  /// refused.
  std::function<caf::expected<std::string>(const std::string& uri)> fetch_document;
};

/// The four operations (see the file comment). Thread-safe as the store is.
class imagebuilder_api {
public:
  /// Serves `settings` over `store`.
  imagebuilder_api(imagebuilder_settings settings, component_store& store);

  /// The allow-list name of the operation at `method` and path segments `segs`
  /// (`imagebuilder:CreateComponent`, ...), or "" when they are none of these.
  static std::string operation(const std::string& method, const std::vector<std::string>& segs);

  /// Answers operation `op` (as operation() named it).
  http_response handle(const std::string& op, const http_request& req, int64_t now_ms);

  /// The build version ARN of `arn_name` at `version`, build `build`.
  std::string build_arn(const std::string& arn_name, const std::string& version,
                        int64_t build) const;

private:
  http_response create_component(const http_request& req, int64_t now_ms);
  http_response get_component(const http_request& req);
  http_response list_components(const http_request& req);
  http_response delete_component(const http_request& req);

  imagebuilder_settings settings_;
  component_store& store_;
};

/// The name in ARNs of a component named `name`: lower case, spaces as `-`.
std::string imagebuilder_arn_name(std::string_view name);

} // namespace grove::deployment
