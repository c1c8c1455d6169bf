#pragma once

// The answer to a Call over the plugin host channel, in either direction: the kernel's
// isolated slot answering its child (isolated_slot.cpp) and the child answering the
// kernel (plugin_host_child.cpp).

#include <cstdint>
#include <utility>

#include <caf/error.hpp>

#include "grove/errors.hpp"
#include "grove/plugin_host.pb.h"
#include "grove/rpc.hpp"

namespace grove {

/// Fills `r` as the answer to call `id`: the envelope when there is one, and an error's
/// code and category as fields of the envelope (old readers still get the text).
inline void fill_reply(host::Reply& r, uint64_t id, Envelope* env, const caf::error& error) {
  r.set_id(id);
  if (env != nullptr)
    *r.mutable_msg() = std::move(*env);
  if (error) {
    set_error(*r.mutable_msg(), error);
    r.set_error(describe(error));
  }
}

} // namespace grove
