#include "ipc.hpp"

#include "grove/errors.hpp"
#include "grove/topic.hpp"
#include "grove/utf8.hpp"

namespace grove::fn {

bool same_token(const std::string& a, const std::string& b) noexcept {
  if (a.size() != b.size())
    return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i)
    diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

namespace {

void make_valid(std::string& text) {
  if (!valid_utf8(text))
    text = escape_invalid_utf8(text);
}

// An error is kept (the function list's last error) and passed to callers: escaping may
// have made it 4 times its frame's size, so it is cut after it.
void make_valid_error(std::string& text) {
  make_valid(text);
  if (text.size() > max_error_text)
    text = cut_utf8(std::move(text), max_error_text);
}

} // namespace

void make_text_valid(Frame& f) {
  switch (f.body_case()) {
    case Frame::kHello:
      return make_valid_error(*f.mutable_hello()->mutable_error());
    case Frame::kResult:
      return make_valid_error(*f.mutable_result()->mutable_error());
    case Frame::kLog:
      return make_valid(*f.mutable_log()->mutable_text());
    default:
      return;
  }
}

caf::error check_worker_frame(const Frame& f, bool said_hello, const std::string& token) {
  if (!said_hello) {
    if (f.body_case() != Frame::kHello || token.empty() || !same_token(f.hello().token(), token))
      return make_error(errc::not_authorized,
                        "the first frame was not a hello with its token");
    return {};
  }
  switch (f.body_case()) {
    case Frame::kResult:
    case Frame::kLog:
    case Frame::kStatus:
      return {};
    case Frame::kRecalled:
      // One the runtime did not ask for ends the instance there (function_runtime.cpp).
      return {};
    case Frame::kPublish:
      // A bad topic is the publish's own error (answered), not the instance's.
      return {};
    case Frame::kCall:
    case Frame::kShadowCall:
      // A bad function, thing or shadow name is the call's own error (answered, see
      // valid_function_name and valid_shadow_name), not the instance's.
      return {};
    case Frame::kInferCall:
      // A model name the function is not granted (or that is no topic level) is the
      // call's own error (answered, see valid_model_name), not the instance's.
      return {};
    default:
      return make_error(errc::malformed, "a frame a worker may not send (case "
                                           + std::to_string(static_cast<int>(f.body_case()))
                                           + ")");
  }
}

} // namespace grove::fn
