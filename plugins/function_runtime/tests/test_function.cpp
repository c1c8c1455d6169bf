// The function the runtime tests run: its first execArg picks what the handler does, so
// one binary plays every well- and badly-behaved function of the tests.

#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>

#include "grove/function.pb.h"
#include "grove/function/function.hpp"
#include "grove/kernel/framing_core.hpp"

namespace gf = grove::function;

namespace {

std::string mode;

std::string handle(const std::string& payload, const gf::context& ctx) {
  if (mode == "echo")
    return payload;
  if (mode == "uid")
    return std::to_string(::getuid());
  if (mode == "context") {
    auto json = "{\"function\":\"" + ctx.function_name + "\",\"subject\":\"" + ctx.subject
                + "\",\"source\":\"" + ctx.source + "\",\"invocation\":\""
                + ctx.invocation_id + "\",\"event\":" + (ctx.event ? "true" : "false")
                + ",\"remaining_ms\":" + std::to_string(ctx.remaining_time().count()) + "}";
    gf::log(gf::level::info, json);
    return json;
  }
  if (mode == "pid")
    return std::to_string(::getpid());
  if (mode == "throw")
    throw std::runtime_error("handler refused: " + payload);
  if (mode == "crash")
    std::raise(SIGSEGV);
  if (mode == "exit")
    std::_Exit(3);
  if (mode == "hang")
    for (;;)
      ::pause();
  if (mode == "garbage") {
    // Not a frame: a length far beyond max_frame_bytes, then bytes.
    static const char junk[] = "\xff\xff\xff\xffgarbage";
    [[maybe_unused]] auto n = ::write(3, junk, sizeof junk - 1);
    for (;;)
      ::pause();
  }
  if (mode == "flood") {
    for (int i = 0; i < 1000000; ++i)
      if (!gf::publish_nowait("flood/topic", "x"))
        break;
    for (;;)
      ::pause();
  }
  if (mode == "stdout_flood") {
    // "tail": one line. Anything else: 30 MB of stdout in 300,000 lines, as fast as the
    // pipe takes them (more than the runtime's actor writes to the log in that time).
    if (payload == "\"tail\"") {
      std::fputs("tail\n", stdout);
      std::fflush(stdout);
      return "tail";
    }
    std::string line(98, 'x');
    line += '\n';
    for (int i = 0; i < 300000; ++i)
      std::fwrite(line.data(), 1, line.size(), stdout);
    std::fflush(stdout);
    return "flooded";
  }
  if (mode == "unread_acks") {
    // Publishes asking for acks, written straight to the socket, and never reads them:
    // the acks fill the runtime's end of the socket. In batches, so message_manager
    // keeps up (the publishes in flight stay far under max_pending_frames); then holds
    // the item until the file named by the payload exists, still reading nothing.
    int fd = std::atoi(std::getenv("GROVE_FUNCTION_FD"));
    grove::fn::Frame f;
    f.mutable_publish()->set_topic("acks/topic");
    f.mutable_publish()->set_payload("x");
    for (uint64_t i = 1; i <= 20000; ++i) {
      f.mutable_publish()->set_ack_id(1000000 + i);
      if (grove::framing::core::write_frame(fd, f))
        break; // the runtime ended the instance
      if (i % 64 == 0)
        std::this_thread::sleep_for(std::chrono::milliseconds{5});
    }
    auto path = payload.substr(1, payload.size() - 2);
    while (!std::filesystem::exists(path))
      std::this_thread::sleep_for(std::chrono::milliseconds{5});
    return "read nothing";
  }
  if (mode == "unread_replies") {
    // Calls function "e" 16 times with 100 KiB payloads, written straight to the socket,
    // writes <path>.sent and reads none of the replies (1.6 MB, more than the socket
    // holds) until the file named by the payload exists; then reads them all and answers
    // "<n> replies" (those that came whole and in one piece each).
    int fd = std::atoi(std::getenv("GROVE_FUNCTION_FD"));
    auto path = payload.substr(1, payload.size() - 2);
    constexpr int calls = 16;
    const std::string body = "\"" + std::string(100u << 10, 'y') + "\"";
    grove::fn::Frame f;
    f.mutable_call()->set_function("e");
    f.mutable_call()->set_payload(body);
    for (uint64_t i = 1; i <= calls; ++i) {
      f.mutable_call()->set_call_id(i);
      if (grove::framing::core::write_frame(fd, f))
        return "cannot write";
    }
    std::ofstream{path + ".sent"} << "\n";
    while (!std::filesystem::exists(path))
      std::this_thread::sleep_for(std::chrono::milliseconds{5});
    grove::framing::core::frame_stream in{8u << 20};
    int ok = 0;
    for (int got = 0; got < calls;) {
      grove::fn::Frame r;
      if (in.receive(fd, r))
        return "lost the socket after " + std::to_string(got) + " replies";
      if (r.body_case() != grove::fn::Frame::kCallReply)
        continue;
      ++got;
      if (r.call_reply().error().empty() && r.call_reply().payload() == body
          && r.call_reply().call_id() == static_cast<uint64_t>(got))
        ++ok;
    }
    return std::to_string(ok) + " replies";
  }
  if (mode == "wait_file") {
    // Holds the item until the test creates the file named by the payload (a JSON
    // string): lets a test keep instances busy as long as it needs, without timing.
    auto path = payload.substr(1, payload.size() - 2);
    while (!std::filesystem::exists(path))
      std::this_thread::sleep_for(std::chrono::milliseconds{5});
    return std::to_string(::getpid());
  }
  if (mode == "pipeline") {
    // Items sent ahead: "crash" (a JSON string) dies, "wait:<path>" writes its pid to
    // <path>.pid and holds until the file exists, "pid" answers its pid, "mark:<path>"
    // appends a line to <path> (each run of the item leaves one), "note:<path>|<tag>"
    // appends the line <tag> to <path> (the order items ran in), anything else is
    // echoed.
    if (payload == "\"crash\"")
      std::raise(SIGSEGV);
    if (payload.starts_with("\"note:")) {
      auto arg = payload.substr(6, payload.size() - 7);
      auto bar = arg.rfind('|');
      std::ofstream{arg.substr(0, bar), std::ios::app} << arg.substr(bar + 1) << "\n";
      return payload;
    }
    if (payload == "\"pid\"")
      return std::to_string(::getpid());
    if (payload.starts_with("\"mark:")) {
      std::ofstream{payload.substr(6, payload.size() - 7), std::ios::app} << "ran\n";
      return payload;
    }
    if (payload.starts_with("\"wait:")) {
      auto path = payload.substr(6, payload.size() - 7);
      {
        std::ofstream pid{path + ".pid.tmp"};
        pid << ::getpid();
      }
      std::filesystem::rename(path + ".pid.tmp", path + ".pid");
      while (!std::filesystem::exists(path))
        std::this_thread::sleep_for(std::chrono::milliseconds{5});
    }
    return payload;
  }
  if (mode == "infer") {
    // Infers on the model the payload (a JSON string) names; answers "<code>|<error>" or
    // "ok|<outputs>": the runtime's grant check with or without ml_inference in the image.
    auto model = payload.substr(1, payload.size() - 2);
    auto r = gf::infer(model, {gf::tensor::of("x", {1, 4}, {0.f, 1.f, 2.f, 3.f})});
    if (!r)
      return r.code + "|" + r.error;
    return "ok|" + std::to_string(r->outputs.size());
  }
  if (mode == "publish") {
    auto routed = gf::publish("fn/out", payload);
    if (!routed)
      throw std::runtime_error("publish: " + routed.error);
    return std::to_string(*routed);
  }
  if (mode == "relay") {
    // Publishes the payload on $RELAY_TOPIC (environmentVariables) and on
    // "<subject>/seen" when it came routed: device -> function -> device.
    const char* topic = std::getenv("RELAY_TOPIC");
    auto routed = gf::publish(topic != nullptr ? topic : "relay", payload, 1);
    if (!routed)
      throw std::runtime_error("publish: " + routed.error);
    gf::log(gf::level::info, "relayed from " + ctx.source + " on '" + ctx.subject + "' to "
                               + std::to_string(*routed) + " targets");
    return "{\"targets\":" + std::to_string(*routed) + "}";
  }
  if (mode == "shadow") {
    // Sends the payload as an update of lamp's shadow; the accepted document is the reply.
    auto doc = gf::update_thing_shadow("lamp", payload);
    if (!doc)
      throw std::runtime_error("update_thing_shadow: " + doc.error);
    return *doc;
  }
  if (mode == "invoke") {
    // payload: "<function>" as a JSON string; invokes it with {"from":"invoke"}.
    auto target = payload.substr(1, payload.size() - 2);
    auto reply = gf::invoke(target, "{\"from\":\"invoke\"}");
    if (!reply)
      throw std::runtime_error("invoke: " + reply.error);
    return *reply;
  }
  if (mode == "event") {
    // payload: "<function>" as a JSON string; invokes it as an event: "queued" or the
    // error.
    auto target = payload.substr(1, payload.size() - 2);
    auto reply = gf::invoke(target, "{\"from\":\"event\"}", gf::invocation_type::event);
    return reply ? "\"queued\"" : "\"" + reply.error + "\"";
  }
  if (mode == "names") {
    // Bad names in the verbs. "sdk": each verb's error, one per line (the SDK refuses
    // them, nothing sent); "raw": a Call and a ShadowCall with bad names written straight
    // to the socket, as a worker whose SDK does not check would, and the runtime's
    // answers read back, one per line; "pid": its pid.
    if (payload == "\"pid\"")
      return std::to_string(::getpid());
    std::string out;
    if (payload == "\"sdk\"") {
      for (auto name : {"a/b", "a+b", "a#", ""})
        out += gf::invoke(name, "{}").error + "\n";
      out += gf::invoke("x/y", "{}", gf::invocation_type::event).error + "\n";
      out += gf::get_thing_shadow("my lamp").error + "\n";
      out += gf::get_thing_shadow(std::string(129, 't')).error + "\n";
      out += gf::update_thing_shadow("lamp", "{}", "bad name").error + "\n";
      return out;
    }
    const char* env = std::getenv("GROVE_FUNCTION_FD");
    if (env == nullptr)
      throw std::runtime_error("no GROVE_FUNCTION_FD");
    int fd = std::atoi(env);
    std::vector<grove::fn::Frame> calls(3);
    calls[0].mutable_call()->set_call_id(900001);
    calls[0].mutable_call()->set_function("a/b");
    calls[1].mutable_shadow_call()->set_call_id(900002);
    calls[1].mutable_shadow_call()->set_op("get");
    calls[1].mutable_shadow_call()->set_thing("my lamp");
    calls[2].mutable_shadow_call()->set_call_id(900003);
    calls[2].mutable_shadow_call()->set_op("get");
    calls[2].mutable_shadow_call()->set_thing(std::string(129, 't'));
    for (auto& f : calls) {
      // One at a time: the item in hand is the only thing the runtime sends meanwhile.
      if (grove::framing::core::write_frame(fd, f))
        throw std::runtime_error("cannot write the raw frame");
      grove::fn::Frame r;
      if (grove::framing::core::read_frame(fd, r) || !r.has_call_reply())
        throw std::runtime_error("no call reply");
      out += std::to_string(r.call_reply().call_id()) + " " + r.call_reply().error() + "\n";
    }
    return out;
  }
  if (mode == "oversize") {
    // Payload "result:<n>" answers a JSON string of n bytes, "publish:<n>" publishes n
    // bytes and answers the verb's outcome, "throw:<n>" throws n three-byte UTF-8
    // characters (a cut can land inside one), "pid" answers its pid: frames over
    // max_frame_bytes from the SDK's side.
    auto arg = payload.substr(1, payload.size() - 2);
    if (arg == "pid")
      return std::to_string(::getpid());
    auto colon = arg.find(':');
    auto n = std::stoul(arg.substr(colon + 1));
    if (arg.starts_with("result:"))
      return "\"" + std::string(n, 'r') + "\"";
    if (arg.starts_with("throw:")) {
      std::string what;
      for (size_t i = 0; i < n; ++i)
        what += "\u20ac";
      throw std::runtime_error(what);
    }
    auto routed = gf::publish("fn/out", std::string(n, 'p'));
    return "\"" + (routed ? std::string{"published"} : routed.error) + "\"";
  }
  if (mode == "badtext") {
    // Text that is not UTF-8 from user code. Payload "throw" throws it, "log" logs it
    // (the SDK escapes both), "raw_log" writes a Log frame of it straight to the socket,
    // as a worker whose SDK does not escape would (the runtime must); "pid" answers the
    // pid.
    static const std::string bad = "bad \xff\xfe text";
    if (payload == "\"throw\"")
      throw std::runtime_error(bad);
    if (payload == "\"log\"")
      gf::log(gf::level::warn, bad);
    if (payload == "\"raw_log\"") {
      grove::fn::Frame f;
      f.mutable_log()->set_level(1);
      f.mutable_log()->set_text("raw " + bad);
      std::string frame;
      const char* fd = std::getenv("GROVE_FUNCTION_FD");
      if (fd == nullptr || grove::framing::core::append_frame(frame, f, 1u << 20)
          || grove::framing::core::write_all(std::atoi(fd), frame))
        throw std::runtime_error("cannot write the raw log frame");
    }
    if (payload == "\"verbs\"") {
      // Each verb given a name or topic that is not UTF-8: one error per line (the SDK
      // refuses them; sent, the frame would not parse and the instance would end).
      std::string errors;
      auto add = [&](const std::string& e) { errors += e + "\n"; };
      add(gf::publish(bad, "x").error);
      add(gf::publish("fn/out", "x", 0, bad).error);
      add(gf::invoke(bad, "{}").error);
      add(gf::get_thing_shadow(bad).error);
      add(gf::get_thing_shadow("lamp", bad).error);
      add(gf::infer(bad, {}).error);
      add(gf::publish_nowait(bad, "x") ? "sent" : "refused");
      return errors;
    }
    return std::to_string(::getpid());
  }
  if (mode == "nowait_fail") {
    // `payload` no-ack publishes the runtime refuses (a wildcard in a publish's topic).
    auto n = std::stoi(payload);
    for (int i = 0; i < n; ++i)
      if (!gf::publish_nowait("nowait/+/bad", "x"))
        return "not sent";
    return "sent";
  }
  if (mode == "log") {
    for (int i = 0; i < 100; ++i)
      gf::log(gf::level::info, "line " + std::to_string(i) + " " + std::string(200, 'x'));
    return "logged";
  }
  throw std::runtime_error("unknown mode " + mode);
}

} // namespace

int main(int argc, char** argv) {
  mode = argc > 1 ? argv[1] : "echo";
  if (mode == "nohello")
    return 4; // exits before saying hello: a function that cannot start
  // Fails to start (exits before its hello) once the file $START_GATE exists.
  if (const char* gate = std::getenv("START_GATE"); gate && std::filesystem::exists(gate))
    return 4;
  // Once the file $HELLO_GATE.armed exists, an instance holds its hello until the file
  // $HELLO_GATE exists: a start as slow as the test needs, without timing.
  if (const char* gate = std::getenv("HELLO_GATE");
      gate && std::filesystem::exists(std::string{gate} + ".armed"))
    while (!std::filesystem::exists(gate))
      std::this_thread::sleep_for(std::chrono::milliseconds{5});
  if (mode == "badtoken")
    ::setenv("GROVE_FUNCTION_TOKEN", "not-the-token", 1);
  return gf::run(handle, argc, argv);
}
