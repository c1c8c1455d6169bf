#pragma once

// Reading rows from the plugin's SQLite stores (component_store, imagebuilder_store,
// v1_store): the one stepping loop they share, over grove::store's cached statements.

#include <string_view>
#include <type_traits>
#include <utility>

#include <caf/error.hpp>

#include "grove/store.hpp"

namespace grove::deployment {

/// Steps the bound statement `s` and calls `on_row(s)` for each row; when `on_row`
/// returns bool, false stops early. `s` is reset on every way out (a cached statement
/// left mid-step would hold its read snapshot).
template <class F>
caf::error each_row(grove::statement& s, F&& on_row) {
  for (;;) {
    auto row = s.step();
    if (!row) {
      s.reset();
      return std::move(row.error());
    }
    if (!*row)
      break;
    if constexpr (std::is_same_v<std::invoke_result_t<F&, grove::statement&>, bool>) {
      if (!on_row(s))
        break;
    } else {
      on_row(s);
    }
  }
  s.reset();
  return {};
}

/// Prepares `sql` (cached by `db`), binds `args` and reads its rows as above.
template <class F, class... Ts>
caf::error each_row(grove::store& db, std::string_view sql, F&& on_row, const Ts&... args) {
  auto stmt = db.prepare(sql);
  if (!stmt)
    return std::move(stmt.error());
  auto& s = **stmt;
  s.bind_all(args...);
  return each_row(s, std::forward<F>(on_row));
}

} // namespace grove::deployment
