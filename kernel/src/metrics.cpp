#include "grove/kernel/metrics.hpp"

#include <cctype>
#include <charconv>
#include <set>
#include <vector>

#include "grove/errors.hpp"

namespace grove {

const char* to_string(metric_kind x) noexcept {
  return x == metric_kind::counter ? "counter" : "gauge";
}

std::optional<metric_kind> parse_metric_kind(std::string_view x) noexcept {
  if (x == "counter")
    return metric_kind::counter;
  if (x == "gauge")
    return metric_kind::gauge;
  return std::nullopt;
}

namespace {

bool lower_or_digit(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

} // namespace

caf::error validate_metric_name(std::string_view name) {
  bool ok = !name.empty() && name.size() <= 128;
  bool segment_start = true;
  for (char c : name) {
    if (!ok)
      break;
    if (c == '.') {
      ok = !segment_start;
      segment_start = true;
    } else if (segment_start) {
      ok = c >= 'a' && c <= 'z';
      segment_start = false;
    } else {
      ok = lower_or_digit(c);
    }
  }
  if (!ok || segment_start)
    return make_error(errc::invalid_config,
                      "metric name '" + std::string{name}
                        + "': use 1-128 characters, dot-separated segments of "
                          "[a-z][a-z0-9_]* (e.g. routed.to_cloud)");
  return {};
}

caf::error validate_label_name(std::string_view label) {
  bool ok = !label.empty() && label.size() <= 64 && label.substr(0, 2) != "__"
            && !(label[0] >= '0' && label[0] <= '9');
  for (char c : label)
    ok = ok && lower_or_digit(c);
  if (!ok)
    return make_error(errc::invalid_config,
                      "label name '" + std::string{label}
                        + "': use 1-64 characters of [a-z0-9_], not starting with a "
                          "digit or '__'");
  return {};
}

// -- metric_registry ------------------------------------------------------------

struct metric_registry::family final : metric_series_source {
  std::string name;
  std::string help;
  std::string label;
  metric_kind kind = metric_kind::counter;
  mutable std::mutex mtx;
  std::map<std::string, std::unique_ptr<metric_cell>, std::less<>> series_by_value;

  metric_cell* series(std::string_view value) override {
    std::lock_guard guard{mtx};
    if (auto i = series_by_value.find(value); i != series_by_value.end())
      return i->second.get();
    // One place stays free for "_other", which takes every value past the cap.
    std::string key{value};
    if (series_by_value.size() + 1 >= metric_series_cap)
      key = "_other";
    auto& cell = series_by_value[key];
    if (!cell)
      cell = std::make_unique<metric_cell>();
    return cell.get();
  }
};

metric_registry::metric_registry() = default;

metric_registry::~metric_registry() = default;

caf::expected<metric_series_source*>
metric_registry::declare(std::string_view name, metric_kind kind, std::string_view help,
                         std::string_view label) {
  if (auto err = validate_metric_name(name))
    return err;
  if (!label.empty())
    if (auto err = validate_label_name(label))
      return err;
  std::lock_guard guard{mtx_};
  if (auto i = families_.find(name); i != families_.end()) {
    auto& f = *i->second;
    if (f.kind != kind || f.label != label)
      return make_error(errc::invalid_state,
                        "metric '" + std::string{name} + "' is already declared as a "
                          + to_string(f.kind)
                          + (f.label.empty() ? std::string{}
                                             : " labelled by '" + f.label + "'"));
    return i->second.get();
  }
  auto f = std::make_unique<family>();
  f->name = name;
  f->help = help;
  f->label = label;
  f->kind = kind;
  auto* result = f.get();
  families_.emplace(std::string{name}, std::move(f));
  return result;
}

caf::expected<counter> metric_registry::counter(std::string_view name,
                                                std::string_view help) {
  auto f = declare(name, metric_kind::counter, help, {});
  if (!f)
    return f.error();
  return grove::counter{(*f)->series({})};
}

caf::expected<gauge> metric_registry::gauge(std::string_view name, std::string_view help) {
  auto f = declare(name, metric_kind::gauge, help, {});
  if (!f)
    return f.error();
  return grove::gauge{(*f)->series({})};
}

void metric_registry::collect(
  google::protobuf::RepeatedPtrField<control::Metric>& out) const {
  std::lock_guard guard{mtx_};
  for (auto& [name, f] : families_) {
    std::lock_guard series_guard{f->mtx};
    for (auto& [value, cell] : f->series_by_value) {
      auto* m = out.Add();
      m->set_name(name);
      m->set_kind(to_string(f->kind));
      m->set_help(f->help);
      if (!f->label.empty())
        (*m->mutable_labels())[f->label] = value;
      m->set_value(static_cast<int64_t>(cell->bits.load(std::memory_order_relaxed)));
    }
  }
}

caf::error metric_registry::apply(const host::MetricUpdate& update) {
  auto kind = parse_metric_kind(update.kind());
  if (!kind)
    return make_error(errc::malformed, "unknown metric kind '" + update.kind() + "'");
  auto f = declare(update.name(), *kind, update.help(), update.label());
  if (!f)
    return f.error();
  auto* cell = (*f)->series(update.label_value());
  if (*kind == metric_kind::counter)
    cell->bits.fetch_add(update.counter_delta(), std::memory_order_relaxed);
  else
    cell->bits.store(static_cast<uint64_t>(update.gauge_value()),
                     std::memory_order_relaxed);
  return {};
}

size_t metric_registry::size() const {
  std::lock_guard guard{mtx_};
  size_t n = 0;
  for (auto& [name, f] : families_) {
    std::lock_guard series_guard{f->mtx};
    n += f->series_by_value.size();
  }
  return n;
}

// -- metric_uplink --------------------------------------------------------------

bool metric_uplink::diff(const metric_registry& reg, host::Metrics& out) {
  google::protobuf::RepeatedPtrField<control::Metric> now;
  reg.collect(now);
  for (auto& m : now) {
    std::string label;
    std::string value;
    if (!m.labels().empty()) {
      label = m.labels().begin()->first;
      value = m.labels().begin()->second;
    }
    auto key = m.name() + '\0' + value;
    auto [i, fresh] = sent_.try_emplace(key, 0);
    if (!fresh && i->second == m.value())
      continue;
    auto* u = out.add_updates();
    u->set_name(m.name());
    u->set_kind(m.kind());
    u->set_label(label);
    u->set_label_value(value);
    if (fresh)
      u->set_help(m.help()); // the kernel keeps the help of the first declaration
    if (m.kind() == "counter")
      u->set_counter_delta(static_cast<uint64_t>(m.value() - i->second));
    else
      u->set_gauge_value(m.value());
    i->second = m.value();
  }
  return out.updates_size() > 0;
}

// -- Prometheus text format -----------------------------------------------------

namespace {

/// Appends a metric or label name made of [a-zA-Z0-9_]: anything else becomes '_'.
void append_name(std::string& out, std::string_view x) {
  for (char c : x)
    out += (std::isalnum(static_cast<unsigned char>(c)) || c == '_') ? c : '_';
}

/// Escapes backslash and newline (HELP text), and the double quote too in label values.
void append_escaped(std::string& out, std::string_view x, bool label_value) {
  for (char c : x) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else if (c == '"' && label_value)
      out += "\\\"";
    else
      out += c;
  }
}

template <class T>
void append_number(std::string& out, T value) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), value);
  out.append(buf, end);
}

/// Writes families and samples; remembers family names so each appears once.
class exposition {
public:
  explicit exposition(std::string& out) : out_(out) {
  }

  /// Starts family `name`; false if a family of that name was already written.
  bool family(const std::string& name, const char* type, std::string_view help) {
    if (!names_.insert(name).second)
      return false;
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    append_escaped(out_, help, false);
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
    return true;
  }

  /// One sample with at most one label.
  template <class T>
  void sample(const std::string& name, std::string_view label, std::string_view value,
              T x) {
    out_ += name;
    if (!label.empty()) {
      out_ += '{';
      append_name(out_, label);
      out_ += "=\"";
      append_escaped(out_, value, true);
      out_ += "\"}";
    }
    out_ += ' ';
    append_number(out_, x);
    out_ += '\n';
  }

private:
  std::string& out_;
  std::set<std::string> names_;
};

/// A per-plugin kernel family: one sample per plugin, labelled `plugin`.
template <class F>
void per_plugin(exposition& ex, const control::Status& st, const std::string& name,
                const char* type, std::string_view help, F value) {
  if (st.plugins().empty() || !ex.family(name, type, help))
    return;
  for (auto& p : st.plugins())
    ex.sample(name, "plugin", p.name(), value(p));
}

} // namespace

void write_prometheus(const control::Status& st, std::string& out) {
  exposition ex{out};
  std::string name = "grove_info";
  ex.family(name, "gauge", "Grove kernel version (value is always 1).");
  ex.sample(name, "version", st.version(), 1);
  name = "grove_uptime_seconds";
  ex.family(name, "gauge", "Seconds since groved started.");
  ex.sample(name, {}, {}, st.uptime_seconds());
  auto bus_counter = [&](const char* n, const char* help, uint64_t value) {
    name = n;
    ex.family(name, "counter", help);
    ex.sample(name, {}, {}, value);
  };
  bus_counter("grove_bus_published_total", "Messages published on the bus.",
              st.bus_published());
  bus_counter("grove_bus_delivered_total", "Messages delivered to subscribers.",
              st.bus_delivered());
  bus_counter("grove_bus_dropped_total", "Deliveries dropped because a queue was full.",
              st.bus_dropped());
  bus_counter("grove_bus_unrouted_total", "Messages published with no subscriber.",
              st.bus_unrouted());
  bus_counter("grove_bus_refused_not_owner_total",
              "Publishes refused: the topic's events belong to another owner.",
              st.bus_refused_not_owner());
  bus_counter("grove_bus_refused_too_large_total",
              "Publishes, requests and replies refused: payload over the bus limit.",
              st.bus_refused_too_large());
  name = "grove_bus_subscriptions";
  ex.family(name, "gauge", "Subscriptions on the bus.");
  ex.sample(name, {}, {}, st.subscriptions());
  using info = control::PluginInfo;
  per_plugin(ex, st, "grove_plugin_running", "gauge",
             "1 if the plugin is running, else 0.",
             [](const info& p) { return p.state() == "running" ? 1 : 0; });
  per_plugin(ex, st, "grove_plugin_restarts_total", "counter",
             "Restarts of the plugin after failures.",
             [](const info& p) { return p.restarts(); });
  per_plugin(ex, st, "grove_plugin_queue_depth", "gauge",
             "Messages waiting in the plugin's bus queue.",
             [](const info& p) { return p.queue_depth(); });
  per_plugin(ex, st, "grove_plugin_queue_capacity", "gauge",
             "Capacity of the plugin's bus queue.",
             [](const info& p) { return p.queue_capacity(); });
  per_plugin(ex, st, "grove_plugin_delivered_total", "counter",
             "Messages delivered to the plugin.",
             [](const info& p) { return p.delivered(); });
  per_plugin(ex, st, "grove_plugin_dropped_total", "counter",
             "Messages for the plugin dropped because its queue was full.",
             [](const info& p) { return p.dropped(); });
  // The plugins' own metrics: collect() keeps the series of a family together.
  for (auto& p : st.plugins()) {
    bool skip = false;
    const std::string* current = nullptr;
    for (auto& m : p.metrics()) {
      if (current == nullptr || *current != m.name()) {
        current = &m.name();
        name = "grove_";
        append_name(name, p.name());
        name += '_';
        append_name(name, m.name());
        bool is_counter = m.kind() == "counter";
        if (is_counter && !name.ends_with("_total"))
          name += "_total";
        skip = !ex.family(name, is_counter ? "counter" : "gauge", m.help());
      }
      if (skip)
        continue;
      if (m.labels().empty())
        ex.sample(name, {}, {}, m.value());
      else
        ex.sample(name, m.labels().begin()->first, m.labels().begin()->second,
                  m.value());
    }
  }
}

} // namespace grove
