#pragma once

// What function_runtime accepts from a worker on its socket (README.md, "IPC"): frames
// arrive through the kernel's framing (grove::framing::frame_stream, bounded by
// max_frame_bytes); this decides whether a decoded frame may be acted on. Apart from the
// plugin so the fuzz target (tests/fuzz/targets/function_frame.cpp) runs the same check.

#include <cstdint>
#include <string>

#include <caf/error.hpp>

#include "grove/function.pb.h"
#include "grove/function/names.hpp"

namespace grove::fn {

/// Why `f` ends the instance that sent it, or an empty error when the runtime may act on
/// it: before the hello only a Hello carrying `token`; after it Result, Publish, Call,
/// ShadowCall, InferCall and Log (a bad name or topic in one is that verb's own error,
/// answered to the worker), never a second Hello nor a frame only the runtime sends.
caf::error check_worker_frame(const Frame& f, bool said_hello, const std::string& token);

/// Longest Hello or Result error the runtime passes on (the SDKs cut theirs to it too).
constexpr size_t max_error_text = 16u << 10;

/// Escapes (grove::escape_invalid_utf8) bytes that are not UTF-8 in the text a worker
/// sends as `bytes` (Hello.error, Result.error, Log.text: function.proto says why), so
/// the runtime passes on only valid text (errors to callers, grovectl, the log), and cuts
/// Hello and Result errors to max_error_text (grove::cut_utf8). The SDKs already send
/// them so; this is for a worker that does not.
void make_text_valid(Frame& f);

// The names a Call, ShadowCall or InferCall may carry: the function SDK's rules
// (sdk/function/cpp/include/grove/function/names.hpp), which the SDKs check before they
// send and the runtime checks again here.
using ::grove::function::names::valid_function_name;
using ::grove::function::names::valid_model_name;
using ::grove::function::names::valid_shadow_name;

/// Token comparison whose time does not depend on where the strings differ.
bool same_token(const std::string& a, const std::string& b) noexcept;

} // namespace grove::fn
