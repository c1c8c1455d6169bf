#pragma once

// Base64 for the deployment plugin: AWS's JSON (inlineRecipe, digests, nextToken) and
// Greengrass IPC's payloads. Its own file so that the IPC request parser and its fuzz
// target need nothing else.

#include <string>
#include <string_view>

namespace grove::deployment {

/// Base64 (standard alphabet, padded).
std::string base64_encode(std::string_view data);

/// Base64 decoding (standard alphabet, padding required); false on a malformed input.
bool base64_decode(std::string_view in, std::string& out);

} // namespace grove::deployment
