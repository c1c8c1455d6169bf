#include "ipc.hpp"

#include "grove/errors.hpp"
#include "grove/topic.hpp"

namespace grove::fn {

bool same_token(const std::string& a, const std::string& b) noexcept {
  if (a.size() != b.size())
    return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i)
    diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
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
      return {};
    case Frame::kPublish:
      // A bad topic is the publish's own error (answered), not the instance's.
      return {};
    case Frame::kCall:
      if (f.call().function().empty() || f.call().function().find('/') != std::string::npos
          || f.call().function().find_first_of("+#") != std::string::npos)
        return make_error(errc::malformed, "a call without a valid function name");
      return {};
    default:
      return make_error(errc::malformed, "a frame a worker may not send (case "
                                           + std::to_string(static_cast<int>(f.body_case()))
                                           + ")");
  }
}

} // namespace grove::fn
