#include "grove/testing/harness.hpp"

#include <cstdlib>

#include "grove/kernel/kernel.hpp"

namespace grove::testing {

// -- inbox ----------------------------------------------------------------------

bool inbox::wait_for(size_t n, std::chrono::milliseconds timeout) {
  std::unique_lock guard{mtx_};
  return cv_.wait_for(guard, timeout, [&] { return got_.size() >= n; });
}

std::vector<Envelope> inbox::messages() const {
  std::lock_guard guard{mtx_};
  return got_;
}

size_t inbox::size() const {
  std::lock_guard guard{mtx_};
  return got_.size();
}

void inbox::push(const Envelope& msg) {
  std::lock_guard guard{mtx_};
  got_.push_back(msg);
  cv_.notify_all();
}

// -- harness --------------------------------------------------------------------

namespace {

std::string plugin_name_of(const std::filesystem::path& library) {
  auto stem = library.stem().string(); // libfoo
  return stem.rfind("lib", 0) == 0 ? stem.substr(3) : stem;
}

} // namespace

harness::harness(std::filesystem::path library, std::string config_yaml,
                 harness_options options)
  : library_(std::filesystem::absolute(library)),
    name_(plugin_name_of(library_)),
    config_(std::move(config_yaml)),
    options_(std::move(options)) {
  if (options_.write_dir.empty()) {
    auto tmpl = (std::filesystem::temp_directory_path() / "grove-harness-XXXXXX").string();
    if (mkdtemp(tmpl.data()) != nullptr)
      temp_dir_ = tmpl;
    options_.write_dir = temp_dir_;
  }
  image_profile p;
  p.file = "<harness>";
  p.write_dir = options_.write_dir;
  p.plugin_dir = library_.parent_path();
  p.control_socket = options_.write_dir / "run" / "control.sock";
  p.log_level = options_.log_level;
  p.queue = options_.queue;
  if (options_.idle_poll_attempts)
    p.idle_poll_attempts = *options_.idle_poll_attempts;
  if (!options_.group_file.empty())
    p.group_file = std::filesystem::absolute(options_.group_file);
  kernel_options ko;
  ko.control_socket = false;
  ko.log_to_stderr = true;
  if (options_.manual_time) {
    clock_ = std::make_shared<manual_clock>();
    ko.clock = clock_;
  }
  kernel_ = std::make_unique<grove::kernel>(std::move(p), std::move(ko));
}

size_t harness::advance(std::chrono::milliseconds d) {
  return clock_ ? clock_->advance(d) : 0;
}

harness::~harness() {
  kernel_.reset();
  if (!temp_dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(temp_dir_, ec);
  }
}

caf::error harness::start() {
  if (auto err = kernel_->start())
    return err;
  plugin_spec spec;
  spec.name = name_;
  spec.file = "<harness config>";
  spec.queue = options_.queue;
  spec.may_claim = options_.may_claim;
  try {
    spec.config = make_yaml(YAML::Load(config_));
  } catch (const YAML::Exception& e) {
    return make_error(errc::invalid_config, "harness config: " + e.msg);
  }
  return kernel_->host().load(spec);
}

caf::expected<publish_result> harness::publish(const std::string& topic,
                                               std::string payload) {
  Envelope e;
  e.set_topic(topic);
  e.set_payload(std::move(payload));
  e.set_source("test");
  return kernel_->publish(std::move(e));
}

std::shared_ptr<inbox> harness::subscribe(const std::string& filter) {
  return collect(*kernel_, filter);
}

std::shared_ptr<inbox> collect(grove::kernel& k, const std::string& filter) {
  auto box = std::make_shared<inbox>();
  queue_settings q;
  q.overflow = overflow_policy::block;
  // A raw pointer is enough: the inbox owns the subscription, and releasing it (first
  // thing in the inbox's destruction) guarantees the callback never runs again.
  auto* raw = box.get();
  auto h = k.subscribe(
    filter, [raw](const Envelope& msg) { raw->push(msg); }, q);
  if (!h)
    throw std::runtime_error("subscribe failed: " + describe(h.error()));
  box->handle_ = *h;
  return box;
}

caf::expected<Envelope> harness::request(const std::string& topic, std::string payload,
                                         std::chrono::milliseconds timeout) {
  return kernel_->request(topic, std::move(payload), timeout);
}

control::PluginInfo harness::info() const {
  auto all = kernel_->plugins();
  for (auto& p : all.plugins())
    if (p.name() == name_)
      return p;
  return {};
}

std::filesystem::path harness::state_dir() const {
  return options_.write_dir / "plugins" / name_;
}

} // namespace grove::testing
