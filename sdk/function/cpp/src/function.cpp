#include "grove/function/function.hpp"

#include <poll.h>

#include <algorithm>
#include <cctype>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

#include "grove/errors.hpp" // errc and to_string only: nothing here may call into CAF
#include "grove/function.pb.h"
#include "grove/function/names.hpp"
#include "grove/kernel/framing_core.hpp"
#include "grove/ml.pb.h"
#include "grove/utf8.hpp"

namespace grove::function {

namespace {

/// The instance's channel to the runtime; one per process, used from the handler's
/// thread only.
struct channel {
  int fd = -1;
  uint32_t max_frame = 4u << 20;
  std::string name;
  uint64_t next_id = 0;
  // What the runtime sent: one read takes every frame that has arrived (it sends the
  // Invokes of its pipeline together), so a frame costs no read of its own.
  framing::core::frame_stream in{4u << 20};
  // The frame being sent, its buffer kept from one send to the next.
  std::string out;
  // Invokes the runtime sent ahead (Hello.pipeline) that arrived while a verb waited for
  // its reply: run next, in order.
  std::deque<fn::Frame> invokes;
  // The runtime took back the Invokes it sent ahead (Recall): none of those held runs.
  bool recall = false;
  // Whole frames only: the status thread (status_loop) writes between the others.
  std::mutex send_mtx;
};

/// Invokes this SDK takes in flight: it keeps those read ahead (the runtime sends at most
/// its pipeline_depth) and runs them one at a time, in order.
constexpr uint32_t pipeline = 64;

/// Longest error text a Result carries (or half of max_frame_bytes, if less): an
/// exception's what() is for a person, and one of any size must not make the Result
/// too large for the runtime.
constexpr size_t max_error_bytes = 16u << 10;

channel& chan() {
  static channel c;
  return c;
}

/// The first `string` field of `f` that user code filled and that is not UTF-8 (the
/// runtime's parse of the frame would fail and end the instance), or nullptr.
const char* field_not_utf8(const fn::Frame& f) {
  auto bad = [](const std::string& s) { return !valid_utf8(s); };
  switch (f.body_case()) {
    case fn::Frame::kPublish:
      return bad(f.publish().topic())          ? "the topic"
             : bad(f.publish().content_type()) ? "the content type"
                                               : nullptr;
    case fn::Frame::kCall:
      return bad(f.call().function())       ? "the function name"
             : bad(f.call().content_type()) ? "the content type"
                                            : nullptr;
    case fn::Frame::kShadowCall:
      return bad(f.shadow_call().thing())    ? "the thing name"
             : bad(f.shadow_call().shadow()) ? "the shadow name"
                                             : nullptr;
    case fn::Frame::kInferCall:
      return bad(f.infer_call().model()) ? "the model name" : nullptr;
    default:
      return nullptr;
  }
}

/// Why the runtime would refuse a Call's function name or a ShadowCall's thing or shadow
/// name (the rules both follow: grove/function/names.hpp), or "" for a good one: refused
/// here, nothing sent.
std::string bad_name(const fn::Frame& f) {
  using namespace grove::function::names;
  if (f.body_case() == fn::Frame::kCall) {
    if (!valid_function_name(f.call().function()))
      return std::string{"the function name is not "} + function_rule;
  } else if (f.body_case() == fn::Frame::kShadowCall) {
    if (!valid_shadow_name(f.shadow_call().thing(), max_thing))
      return std::string{"the thing name is not "} + thing_rule;
    if (!f.shadow_call().shadow().empty()
        && !valid_shadow_name(f.shadow_call().shadow(), max_shadow))
      return std::string{"the shadow name is not "} + shadow_rule;
  }
  return {};
}

// The framing core's results (framing_core.hpp): CAF's error type would make every
// function binary load libcaf_core, most of its start.
using framing::core::status;

/// Sends `f`: errc::malformed or errc::too_large, with nothing sent, for a frame the
/// runtime would refuse by ending the instance (a text field that is not UTF-8, a frame
/// over its max_frame_bytes); the socket's error otherwise.
status send(const fn::Frame& f) {
  auto& c = chan();
  if (c.fd < 0)
    return {errc::system_error, "not connected to the runtime"};
  if (auto field = field_not_utf8(f))
    return {errc::malformed, std::string{field} + " is not UTF-8"};
  if (auto why = bad_name(f); !why.empty())
    return {errc::malformed, std::move(why)};
  std::lock_guard guard{c.send_mtx};
  c.out.clear();
  if (auto err = framing::core::append_frame(c.out, f, c.max_frame))
    return err;
  return framing::core::write_all(c.fd, c.out);
}

/// A pinned instance's status reports (Hello.status, statusTimeoutInSeconds): every
/// `interval`, from this thread, so a handler that runs long does not hold them back.
/// Ends with the process (detached); a failed write means the runtime is gone, which
/// the main loop notices by itself.
void status_loop(std::chrono::seconds interval) {
  fn::Frame f;
  f.mutable_status();
  for (;;) {
    std::this_thread::sleep_for(interval);
    if (send(f))
      return;
  }
}

/// What a verb answers when its request was not sent.
std::string send_failure(const status& err) {
  if (err.code == errc::too_large)
    return "too_large: the request's " + err.message + " (the runtime's max_frame_bytes)";
  if (err.code == errc::malformed)
    return "malformed: " + err.message;
  return "the runtime's socket: " + framing::core::describe(err);
}

/// The next frame from the runtime: errc::system_error when the runtime closed the
/// socket, another error for bytes that are no frame.
status receive(fn::Frame& f) {
  return chan().in.receive(chan().fd, f);
}

/// Reads frames until `take` accepts one (a reply the verb waits for).
template <class Take>
std::string await(Take take) {
  for (;;) {
    fn::Frame f;
    if (auto err = receive(f))
      return "the runtime's socket: " + framing::core::describe(err);
    if (f.body_case() == fn::Frame::kInvoke)
      chan().invokes.push_back(std::move(f));
    else if (f.body_case() == fn::Frame::kRecall)
      chan().recall = true;
    else if (take(f))
      return {};
  }
}

/// Whether the runtime has taken back the Invokes it sent ahead (Recall), with every
/// frame that has arrived read first, without waiting: the runtime retired this instance
/// while its handler ran (a narrowed resource grant, a new definition), and those items
/// must run in a new instance, not here after the current one.
bool recalled() {
  auto& c = chan();
  for (;;) {
    for (;;) {
      fn::Frame f;
      bool got = false;
      if (c.in.next(f, got) || !got)
        break; // none complete (one announced too large stays for receive() to report)
      if (f.body_case() == fn::Frame::kInvoke)
        c.invokes.push_back(std::move(f));
      else if (f.body_case() == fn::Frame::kRecall)
        c.recall = true;
    }
    pollfd p{c.fd, POLLIN, 0};
    if (c.recall || c.in.ended() || ::poll(&p, 1, 0) != 1 || c.in.fill(c.fd))
      return c.recall;
  }
}

std::string env_or(const char* name, const char* def) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : def;
}

/// `what` as a Result's error: bytes that are not UTF-8 written as \xNN, cut (cut_utf8)
/// to max_error_bytes (or half the frame limit).
std::string error_text(std::string_view what) {
  auto cap = std::min<size_t>(max_error_bytes, chan().max_frame / 2);
  if (what.empty())
    return "exception";
  return cut_utf8(escape_invalid_utf8(what), cap);
}

} // namespace

std::chrono::milliseconds context::remaining_time() const {
  auto left = deadline - std::chrono::steady_clock::now();
  return std::max(std::chrono::milliseconds{0},
                  std::chrono::duration_cast<std::chrono::milliseconds>(left));
}

outcome<uint32_t> publish(std::string_view topic, std::string_view payload, uint32_t qos,
                          std::string_view content_type) {
  outcome<uint32_t> out;
  fn::Frame f;
  auto* p = f.mutable_publish();
  p->set_topic(std::string{topic});
  p->set_payload(std::string{payload});
  p->set_qos(qos);
  p->set_content_type(std::string{content_type});
  auto id = ++chan().next_id;
  p->set_ack_id(id);
  if (auto sent = send(f)) {
    out.error = send_failure(sent);
    return out;
  }
  auto err = await([&](const fn::Frame& r) {
    if (r.body_case() != fn::Frame::kPublishAck || r.publish_ack().ack_id() != id)
      return false;
    if (r.publish_ack().error().empty())
      out.value = r.publish_ack().targets();
    else
      out.error = r.publish_ack().error();
    return true;
  });
  if (!err.empty())
    out.error = err;
  return out;
}

bool publish_nowait(std::string_view topic, std::string_view payload, uint32_t qos) {
  fn::Frame f;
  auto* p = f.mutable_publish();
  p->set_topic(std::string{topic});
  p->set_payload(std::string{payload});
  p->set_qos(qos);
  return !send(f);
}

namespace {

/// Sends `f` (a Call or ShadowCall with call id `id`) and waits for its CallReply.
outcome<std::string> call_runtime(const fn::Frame& f, uint64_t id) {
  outcome<std::string> out;
  if (auto sent = send(f)) {
    out.error = send_failure(sent);
    return out;
  }
  auto err = await([&](const fn::Frame& r) {
    if (r.body_case() != fn::Frame::kCallReply || r.call_reply().call_id() != id)
      return false;
    if (r.call_reply().error().empty())
      out.value = r.call_reply().payload();
    else
      out.error = r.call_reply().error();
    return true;
  });
  if (!err.empty())
    out.error = err;
  return out;
}

outcome<std::string> shadow_call(std::string_view op, std::string_view thing,
                                 std::string_view shadow, std::string_view document,
                                 std::chrono::milliseconds timeout) {
  fn::Frame f;
  auto* c = f.mutable_shadow_call();
  auto id = ++chan().next_id;
  c->set_call_id(id);
  c->set_op(std::string{op});
  c->set_thing(std::string{thing});
  c->set_shadow(std::string{shadow});
  c->set_payload(std::string{document});
  c->set_timeout_ms(static_cast<uint64_t>(timeout.count()));
  return call_runtime(f, id);
}

} // namespace

outcome<std::string> invoke(std::string_view name, std::string_view payload,
                            invocation_type type, std::chrono::milliseconds timeout) {
  fn::Frame f;
  auto* c = f.mutable_call();
  auto id = ++chan().next_id;
  c->set_call_id(id);
  c->set_function(std::string{name});
  c->set_payload(std::string{payload});
  c->set_event(type == invocation_type::event);
  c->set_timeout_ms(static_cast<uint64_t>(timeout.count()));
  return call_runtime(f, id);
}

outcome<std::string> get_thing_shadow(std::string_view thing, std::string_view shadow,
                                      std::chrono::milliseconds timeout) {
  return shadow_call("get", thing, shadow, {}, timeout);
}

outcome<std::string> update_thing_shadow(std::string_view thing, std::string_view document,
                                         std::string_view shadow,
                                         std::chrono::milliseconds timeout) {
  return shadow_call("update", thing, shadow, document, timeout);
}

outcome<std::string> delete_thing_shadow(std::string_view thing, std::string_view shadow,
                                         std::chrono::milliseconds timeout) {
  return shadow_call("delete", thing, shadow, {}, timeout);
}

tensor tensor::of(std::string name, std::vector<int64_t> shape,
                  const std::vector<float>& values) {
  tensor t;
  t.name = std::move(name);
  t.type = dtype::float32;
  t.shape = std::move(shape);
  t.data.assign(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  return t;
}

std::vector<float> tensor::floats() const {
  std::vector<float> out(data.size() / sizeof(float));
  std::memcpy(out.data(), data.data(), out.size() * sizeof(float));
  return out;
}

const tensor* inference::output(std::string_view name) const {
  for (const auto& t : outputs)
    if (t.name == name)
      return &t;
  return nullptr;
}

namespace {

/// Sends `req` to the runtime as an InferCall on `model` and decodes the reply.
outcome<inference> infer_call(std::string_view model, const ml::InferRequest& req,
                              std::chrono::milliseconds timeout) {
  outcome<inference> out;
  fn::Frame f;
  auto* c = f.mutable_infer_call();
  auto id = ++chan().next_id;
  c->set_call_id(id);
  c->set_model(std::string{model});
  c->set_timeout_ms(static_cast<uint64_t>(timeout.count()));
  if (!req.SerializeToString(c->mutable_request())) {
    out.code = "malformed";
    out.error = "malformed: the request does not serialize";
    return out;
  }
  if (auto sent = send(f)) {
    if (sent.code == errc::too_large)
      out.code = "too_large";
    else if (sent.code == errc::malformed)
      out.code = "malformed";
    out.error = send_failure(sent);
    return out;
  }
  auto err = await([&](const fn::Frame& r) {
    if (r.body_case() != fn::Frame::kCallReply || r.call_reply().call_id() != id)
      return false;
    const auto& rep = r.call_reply();
    if (!rep.error().empty() || !rep.error_code().empty()) {
      out.code = rep.error_code();
      out.error = out.code.empty() ? rep.error() : out.code + ": " + rep.error();
      return true;
    }
    ml::InferResponse resp;
    if (!resp.ParseFromString(rep.payload())) {
      out.code = "malformed";
      out.error = "malformed: the reply is not a grove.ml.InferResponse";
      return true;
    }
    inference inf;
    inf.version = resp.version();
    inf.batch_size = resp.batch_size();
    for (const auto& t : resp.outputs()) {
      tensor x;
      x.name = t.name();
      x.type = t.dtype() == ml::UINT8 ? dtype::uint8 : dtype::float32;
      x.shape.assign(t.shape().begin(), t.shape().end());
      x.data = t.data();
      inf.outputs.push_back(std::move(x));
    }
    for (const auto& l : resp.top())
      inf.top.push_back(label{l.index(), l.label(), l.score()});
    out.value = std::move(inf);
    return true;
  });
  if (!err.empty())
    out.error = err;
  return out;
}

} // namespace

outcome<inference> infer(std::string_view model, const std::vector<tensor>& inputs,
                         uint32_t top_k, std::chrono::milliseconds timeout) {
  ml::InferRequest req;
  for (const auto& in : inputs) {
    auto* t = req.add_inputs();
    t->set_name(in.name);
    t->set_dtype(in.type == dtype::uint8 ? ml::UINT8 : ml::FLOAT32);
    for (auto d : in.shape)
      t->add_shape(d);
    t->set_data(in.data);
  }
  req.set_top_k(top_k);
  return infer_call(model, req, timeout);
}

outcome<inference> infer_image(std::string_view model, std::string_view image, uint32_t top_k,
                               std::chrono::milliseconds timeout) {
  ml::InferRequest req;
  req.set_image(std::string{image});
  req.set_top_k(top_k);
  return infer_call(model, req, timeout);
}

void log(level lvl, std::string_view text) {
  fn::Frame f;
  f.mutable_log()->set_level(static_cast<uint32_t>(lvl));
  f.mutable_log()->set_text(escape_invalid_utf8(text)); // the log's lines are text
  if (send(f))
    std::fprintf(stderr, "%.*s\n", static_cast<int>(text.size()), text.data());
}

int run(handler h, int, char**) {
  std::signal(SIGPIPE, SIG_IGN);
  auto& c = chan();
  c.fd = std::atoi(env_or("GROVE_FUNCTION_FD", "-1").c_str());
  c.max_frame = static_cast<uint32_t>(
    std::strtoul(env_or("GROVE_FUNCTION_MAX_FRAME", "4194304").c_str(), nullptr, 10));
  c.name = env_or("GROVE_FUNCTION_NAME", "");
  c.in = framing::core::frame_stream{c.max_frame};
  if (c.fd < 0) {
    std::fprintf(stderr, "grove function: GROVE_FUNCTION_FD is not set; function_runtime "
                         "starts this program\n");
    return 2;
  }
  fn::Frame hello;
  hello.mutable_hello()->set_token(env_or("GROVE_FUNCTION_TOKEN", ""));
  hello.mutable_hello()->set_protocol(1);
  hello.mutable_hello()->set_pipeline(pipeline);
  hello.mutable_hello()->set_recall(true);
  // Set for pinned instances only (statusTimeoutInSeconds).
  auto status_interval = std::strtol(env_or("GROVE_FUNCTION_STATUS_INTERVAL_S", "0").c_str(),
                                     nullptr, 10);
  hello.mutable_hello()->set_status(status_interval > 0);
  if (send(hello))
    return 1;
  if (status_interval > 0)
    std::thread{status_loop, std::chrono::seconds{status_interval}}.detach();
  for (;;) {
    fn::Frame f;
    if (!c.invokes.empty()) {
      f = std::move(c.invokes.front());
      c.invokes.pop_front();
    } else if (auto err = receive(f)) {
      return err.code == errc::system_error ? 0 : 1; // closed: the runtime ended us
    }
    if (f.body_case() == fn::Frame::kRecall)
      c.recall = true;
    else if (f.body_case() != fn::Frame::kInvoke)
      continue; // a late reply of a verb that gave up
    if (recalled()) {
      // None of the items held runs here (nor `f`): the runtime queues them again.
      c.invokes.clear();
      c.recall = false;
      fn::Frame ack;
      ack.mutable_recalled();
      if (send(ack))
        return 1;
      continue;
    }
    auto& inv = *f.mutable_invoke();
    context ctx;
    ctx.function_name = c.name;
    ctx.subject = std::move(*inv.mutable_subject());
    ctx.source = std::move(*inv.mutable_source());
    ctx.invocation_id = std::move(*inv.mutable_invocation_id());
    ctx.content_type = std::move(*inv.mutable_content_type());
    ctx.event = inv.event();
    ctx.deadline = std::chrono::steady_clock::now()
                   + std::chrono::milliseconds{inv.remaining_ms()};
    fn::Frame out;
    auto* r = out.mutable_result();
    r->set_id(inv.id());
    try {
      r->set_payload(h(inv.payload(), ctx));
    } catch (const std::exception& e) {
      r->set_error(error_text(e.what()));
    } catch (...) {
      r->set_error("a non-standard exception");
    }
    auto sent = send(out);
    if (sent.code == errc::too_large) {
      // A result the runtime would refuse (ending this instance): its error instead.
      auto size = r->payload().size();
      r->clear_payload();
      r->set_error("result of " + std::to_string(size) + " bytes exceeds max_frame_bytes ("
                   + std::to_string(c.max_frame) + ")");
      sent = send(out);
    }
    if (sent)
      return 1;
  }
}

} // namespace grove::function
