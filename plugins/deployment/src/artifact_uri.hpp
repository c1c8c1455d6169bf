#pragma once

// Artifact URIs and the pre-signed URLs of GetComponentVersionArtifact, without I/O (so
// unit tests and the fuzzer call them directly): which artifacts of a recipe Grove
// fetches, where each comes from (an `s3://` URI maps to the configured
// `artifacts_base_url`, a `file://` one must lie under `artifacts_file_dir`), and an
// HMAC-signed, expiring URL on the API's own server for one stored artifact.

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "platform.hpp"

namespace grove::deployment {

/// One artifact of a recipe that Grove fetches.
struct artifact_ref {
  /// `Uri` as the recipe has it.
  std::string uri;
  /// `Digest` (base64, as AWS writes it), or "".
  std::string digest;
  /// `Algorithm` (SHA-256, SHA-384, SHA-512), or "" with no digest.
  std::string algorithm;
  /// `Unarchive: ZIP`.
  bool unzip = false;
  /// The mode `Permission` asks for the artifact ({Read, Execute}: NONE, OWNER or ALL; the
  /// owner is the component's user), or -1 when the recipe gives none.
  int mode = -1;
};

/// The artifacts of a (checked) recipe that are fetched: those of the manifest that runs
/// on `platform` (manifest_for; as Greengrass, another platform's are neither downloaded
/// nor linked), `s3://`, `https://` and `file://`, each Uri once. `greengrass:` and
/// `docker:` artifacts are the device runtime's business and not fetched.
std::vector<artifact_ref> fetchable_artifacts(const nlohmann::json& recipe,
                                              const platform_attributes& platform);

/// Where an artifact comes from.
struct artifact_source {
  /// An `http(s)://` URL to GET, or "" for a local file.
  std::string url;
  /// The local file (for `file://`).
  std::filesystem::path file;
};

/// What resolve_artifact_uri() needs to know.
struct artifact_uri_settings {
  /// What `s3://bucket/key` maps to: `<base>/bucket/key`; "" refuses s3 URIs.
  std::string base_url;
  /// The directory `file://` URIs must lie in; "" refuses file URIs.
  std::filesystem::path file_dir;
};

/// Maps `uri` to its source; "" in `why` on success, else what is wrong (no base URL,
/// an empty bucket or key, a `..` or `.` segment, a file outside `file_dir`, ...).
artifact_source resolve_artifact_uri(std::string_view uri, const artifact_uri_settings& s,
                                     std::string& why);

/// The path and query of a pre-signed URL for stored artifact `sha256_hex`, served as
/// `file_name`, valid until `expires` (seconds since the epoch).
std::string presign_artifact(std::string_view key, std::string_view sha256_hex,
                             std::string_view file_name, int64_t expires);

/// The outcome of check_presigned().
enum class presign_check {
  /// Signed by `key` and not expired; `sha256_hex` is set.
  valid,
  /// Not a pre-signed artifact URL (path or query malformed).
  malformed,
  /// Its signature is not this core's.
  forged,
  /// Past its expiry.
  expired,
};

/// Checks a request for a pre-signed artifact URL (raw path and query as received).
presign_check check_presigned(std::string_view key, std::string_view raw_path,
                              std::string_view raw_query, int64_t now, std::string& sha256_hex);

/// The path prefix of pre-signed artifact URLs.
inline constexpr std::string_view presigned_prefix = "/grove/artifacts/";

} // namespace grove::deployment
