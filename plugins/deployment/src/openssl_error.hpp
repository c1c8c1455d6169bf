#pragma once

#include <string>

#include <openssl/err.h>

namespace grove::deployment {

/// The first error on this thread's OpenSSL queue as text ("no detail" when there is
/// none), the queue cleared so that a later failure is not blamed on this one.
inline std::string openssl_error() {
  auto code = ERR_get_error();
  ERR_clear_error();
  if (code == 0)
    return "no detail";
  char buf[256];
  ERR_error_string_n(code, buf, sizeof buf);
  return buf;
}

} // namespace grove::deployment
