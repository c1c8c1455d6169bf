#!/usr/bin/env python3
"""Device -> device MQTT throughput and latency through Grove's local broker, against a bare
Mosquitto (the peer). Both get the same load from mqtt_load (N publishers, each with K
subscribers on its own topic); runs are interleaved (bare, grove, bare, grove, ...). Prints one
JSON object on stdout. Not a test: it reports figures and never fails on them.

(a) bare:  /usr/sbin/mosquitto, no plugin, allow_anonymous true, plain TCP, free port.
(b) grove: a real groved (BUILD/bin/groved) running the message_manager plugin in
           development mode (plain TCP, username = thing name) on 127.0.0.1 and a free port;
           its group (kernel.group) holds the devices dev-pub-i, dev-sub-i-j and one
           subscription per pair {source: device:dev-pub-i, subject: bench/i,
           target: device:dev-sub-i-j}. The load starts once `grovectl status` shows the
           group loaded and the local link connected, and the broker takes a device's login.

Usage: device_bench.py [--build DIR] [--repeat R] [--pubs N] [--subs-per-pub K]
                       [--messages M] [--payload BYTES] [--qos 0|1] [--rate R]
"""

import argparse
import json
import os
import pwd
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchutil import stop, wait_status  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "support"))
from free_port import free_port  # noqa: E402,F401  (others import it from here)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET_RATIO = 0.85
USER_PREFIX = "dev"
TOPIC_PREFIX = "bench"
GROUP_NAME = "bench"


def wait_listening(proc, port, what, timeout_s=10.0):
    """Waits until the broker accepts TCP connections on `port`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("%s exited (%s) before listening" % (what, proc.returncode))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("%s does not listen on port %d after %.0f s" % (what, port, timeout_s))


class broker:
    """A running broker: its port and how to stop it."""

    def __init__(self, name, proc, port, log):
        self.name, self.proc, self.port, self.log = name, proc, port, log

    def stop(self):
        stop(self.proc)


def common_conf(port):
    # As root, Mosquitto 2.0 drops to user `mosquitto` unless told otherwise.
    return ("persistence false\n"
            "user %s\n"
            "listener %d 127.0.0.1\n" % (pwd.getpwuid(os.geteuid()).pw_name, port))


def launch(name, mosquitto, work, conf_text, port):
    conf = os.path.join(work, name + ".conf")
    with open(conf, "w") as f:
        f.write(conf_text)
    log = os.path.join(work, name + ".log")
    with open(log, "wb") as out:
        proc = subprocess.Popen([mosquitto, "-c", conf], stdout=out, stderr=subprocess.STDOUT)
    b = broker(name, proc, port, log)
    try:
        wait_listening(proc, port, name)
    except Exception:
        b.stop()
        with open(log, errors="replace") as f:
            sys.stderr.write(f.read())
        raise
    return b


def start_bare(args, work):
    """(a) the peer: a bare Mosquitto, anonymous, plain TCP."""
    port = free_port()
    return launch("bare", args.mosquitto, work, common_conf(port) + "allow_anonymous true\n", port)


def grove_group(pubs, subs_per_pub):
    """The group: publisher dev-pub-i reaches its subscribers dev-sub-i-j on bench/i."""
    devices, subs = [], []
    for i in range(pubs):
        pub = "%s-pub-%d" % (USER_PREFIX, i)
        devices.append(pub)
        for j in range(subs_per_pub):
            sub = "%s-sub-%d-%d" % (USER_PREFIX, i, j)
            devices.append(sub)
            subs.append('  - {id: "%s-to-%s", source: "device:%s", subject: "%s/%d", '
                        'target: "device:%s"}' % (pub, sub, pub, TOPIC_PREFIX, i, sub))
    return ("# device_bench: every publisher reaches its own subscribers\n"
            "name: %s\ndevices:\n%s\nsubscriptions:\n%s\n"
            % (GROUP_NAME, "\n".join("  - thing: " + d for d in devices), "\n".join(subs)))


def grove_profile(args, group_file, port):
    """groved's image profile: only message_manager, development mode, loopback."""
    return ("kernel:\n"
            "  log_level: info\n"
            "  group: %s\n"
            "plugins:\n"
            "  - name: message_manager\n"
            "    may_claim: [\"device:*\", \"cloud\", \"function:*\", \"shadow\"]\n"
            "    config:\n"
            "      development_mode: true\n"
            "      broker:\n"
            "        bind: 127.0.0.1\n"
            "        port: %d\n"
            "        mosquitto: %s\n"
            "        plugin: %s\n"
            % (json.dumps(group_file), port, json.dumps(args.mosquitto),
               json.dumps(args.plugin)))


def mqtt_string(text):
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def try_login(port, username, timeout_s=2.0):
    """One MQTT 3.1.1 CONNECT with `username`; True if the broker accepts it (CONNACK 0).
    The broker plugin only takes things of the table it has loaded, so this tells when the
    group has reached the broker."""
    body = (mqtt_string("MQTT") + bytes([4, 0x82]) + (30).to_bytes(2, "big")
            + mqtt_string(username) + mqtt_string(username))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
            s.sendall(bytes([0x10, len(body)]) + body)  # body < 128 bytes: 1-byte length
            reply = b""
            while len(reply) < 4:
                chunk = s.recv(4 - len(reply))
                if not chunk:
                    return False
                reply += chunk
            ok = reply[0] == 0x20 and reply[3] == 0
            if ok:
                s.sendall(b"\xe0\x00")  # DISCONNECT
            return ok
    except OSError:
        return False


def start_grove(args, work):
    """(b) Grove: groved with message_manager (development mode) on a free loopback port.
    Returns once the group is loaded, the plugin's own client is connected and the broker
    takes the bench devices' logins."""
    port = free_port()
    group_file = os.path.join(work, "group.yaml")
    with open(group_file, "w") as f:
        f.write(grove_group(args.pubs, args.subs_per_pub))
    profile = os.path.join(work, "grove.yaml")
    with open(profile, "w") as f:
        f.write(grove_profile(args, group_file, port))
    users = ["%s-pub-%d" % (USER_PREFIX, args.pubs - 1),
             "%s-sub-%d-%d" % (USER_PREFIX, args.pubs - 1, args.subs_per_pub - 1)]
    return launch_groved(args, work, profile, port,
                         ["message_manager.group: '%s' v" % GROUP_NAME,
                          "message_manager.local_link: connected",
                          "message_manager.broker: running"], users)


def launch_groved(args, work, profile, port, needles, users):
    """Starts args.groved with `profile`; returns (a broker) once `grovectl status` shows
    every string of `needles`, its broker listens on `port` and takes the logins of
    `users` (the broker plugin knows them). On failure: groved stopped, its log's tail on
    stderr, the error raised."""
    write_dir = os.path.join(work, "grove-var")
    log = os.path.join(work, "grove.log")
    with open(log, "wb") as out:
        # cwd = the repository, as tools/run does (profiles name files relative to it).
        proc = subprocess.Popen([args.groved, "--config", profile, "--write-dir", write_dir],
                                cwd=REPO, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    b = broker("grove", proc, port, log)
    try:
        wait_status(proc, args.grovectl, os.path.join(write_dir, "run", "control.sock"),
                    needles)
        wait_listening(proc, port, "groved's broker")
        deadline = time.monotonic() + 10.0
        while not all(try_login(port, u) for u in users):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("groved's broker refuses the bench devices (see %s)" % log)
            time.sleep(0.1)
    except Exception:
        b.stop()
        with open(log, errors="replace") as f:
            sys.stderr.write(f.read()[-4000:])
        raise
    return b


def run_load(args, port):
    cmd = [args.mqtt_load, "--host", "127.0.0.1", "--port", str(port),
           "--pubs", str(args.pubs), "--subs-per-pub", str(args.subs_per_pub),
           "--messages", str(args.messages), "--payload", str(args.payload),
           "--qos", str(args.qos), "--rate", str(args.rate),
           "--user-prefix", USER_PREFIX, "--topic-prefix", TOPIC_PREFIX]
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)
    lines = res.stdout.decode(errors="replace").strip().splitlines()
    if not lines:
        return {"error": "mqtt_load printed nothing (exit %d): %s"
                % (res.returncode, res.stderr.decode(errors="replace").strip())}
    return json.loads(lines[-1])


def summarize(runs):
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[-1].get("error") if runs else "no runs", "runs": runs}
    rates = [r["msgs_per_s"] for r in ok]
    return {
        "msgs_per_s_median": round(statistics.median(rates)),
        "msgs_per_s_best": round(max(rates)),
        "latency_p50_us_median": statistics.median(r["latency_p50_us"] for r in ok),
        "latency_p99_us_median": statistics.median(r["latency_p99_us"] for r in ok),
        "lost_total": sum(r["lost"] for r in ok),
        "runs_msgs_per_s": [round(x) for x in rates],
        "runs_lost": [r["lost"] for r in ok],
        "failed_runs": len(runs) - len(ok),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", default=os.path.join(REPO, "build"))
    p.add_argument("--mqtt-load", help="default: BUILD/bin/mqtt_load")
    p.add_argument("--plugin", help="default: BUILD/lib/grove/broker/grove_broker_plugin.so")
    p.add_argument("--mosquitto", default="/usr/sbin/mosquitto")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--pubs", type=int, default=4)
    p.add_argument("--subs-per-pub", type=int, default=4)
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--payload", type=int, default=64)
    p.add_argument("--qos", type=int, default=0, choices=(0, 1))
    p.add_argument("--rate", type=float, default=0, help="total msgs/s, 0 = full speed")
    args = p.parse_args()
    args.mqtt_load = args.mqtt_load or os.path.join(args.build, "bin", "mqtt_load")
    args.plugin = os.path.abspath(args.plugin or os.path.join(
        args.build, "lib", "grove", "broker", "grove_broker_plugin.so"))
    args.groved = os.path.join(args.build, "bin", "groved")
    args.grovectl = os.path.join(args.build, "bin", "grovectl")
    mm = os.path.join(args.build, "lib", "grove", "plugins", "libmessage_manager.so")
    for path in (args.mqtt_load, args.plugin, args.mosquitto, args.groved, args.grovectl, mm):
        if not os.path.exists(path):
            print(json.dumps({"error": "missing %s (build mqtt_load, groved, grovectl, "
                              "message_manager and grove_broker_plugin)" % path}))
            return 1

    work = tempfile.mkdtemp(prefix="device_bench.")
    brokers = {}
    runs = {"bare": [], "grove": []}
    try:
        brokers["bare"] = start_bare(args, work)
        brokers["grove"] = start_grove(args, work)
        for _ in range(args.repeat):
            for name in ("bare", "grove"):
                runs[name].append(run_load(args, brokers[name].port))
    except Exception as e:  # report, never a traceback instead of the JSON line
        print(json.dumps({"error": str(e), "runs": runs}))
        return 1
    finally:
        for b in brokers.values():
            b.stop()
        shutil.rmtree(work, ignore_errors=True)

    bare, grove = summarize(runs["bare"]), summarize(runs["grove"])
    report = {
        "load": {"pubs": args.pubs, "subs_per_pub": args.subs_per_pub,
                 "messages_per_pub": args.messages, "payload": args.payload, "qos": args.qos,
                 "rate": args.rate, "repeat": args.repeat,
                 "deliveries_per_run": args.pubs * args.subs_per_pub * args.messages},
        "bare": bare,
        "grove": grove,
        "grove_setup": "groved + message_manager, development_mode, group '%s': %d devices, "
                       "%d subscriptions" % (GROUP_NAME, args.pubs * (1 + args.subs_per_pub),
                                             args.pubs * args.subs_per_pub),
        "target_ratio": TARGET_RATIO,
    }
    if "error" not in bare and "error" not in grove:
        report["ratio_median"] = round(grove["msgs_per_s_median"] / bare["msgs_per_s_median"], 3)
        report["ratio_best"] = round(grove["msgs_per_s_best"] / bare["msgs_per_s_best"], 3)
        report["meets_target"] = report["ratio_median"] >= TARGET_RATIO
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
