#!/usr/bin/python3
"""Device round trip of the shadow service: a device publishes shadow updates at a fixed
rate and times each `update/accepted` (matched by clientToken), against a bare Mosquitto
request/echo in the same run (the peer). Prints one JSON object on stdout. Not a test: it
reports figures and never fails on them (issue 11, "Device round trip").

(a) bare:  /usr/sbin/mosquitto, anonymous, plain TCP; the echo is the C clients
           `mosquitto_sub -t bench/req | mosquitto_pub -t bench/reply -l`; the device
           publishes on bench/req and times the copy on bench/reply.
(b) grove: a real groved with message_manager (development mode: plain TCP, username =
           thing name) and shadow; group device `bench` reaches its own shadow through the
           table; the device publishes `$aws/things/bench/shadow/update` and subscribes to
           `.../update/accepted` only. Each update is durable (SQLite, fsync) before its
           answer.

Both run with the same client (python3-paho-mqtt, QoS --qos, one connection), interleaved
(bare, grove, bare, grove, ...). Payloads are {"state":{"reported":{"n":i,"pad":...}},
"clientToken":"i"} of about --payload bytes.

Usage: /usr/bin/python3 shadow_rtt_bench.py [--build DIR] [--rate 1000] [--messages 5000] [--repeat 3]
                           [--payload 200] [--qos 0|1]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchutil import stop  # noqa: E402
from device_bench import (common_conf, free_port, grove_profile, launch,  # noqa: E402
                          launch_groved)

import paho.mqtt.client as mqtt  # Debian's python3-paho-mqtt  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
THING = "bench"
SHADOW = "$aws/things/%s/shadow/update" % THING


def start_grove(args, work):
    port = free_port()
    group = os.path.join(work, "group.yaml")
    with open(group, "w") as f:
        f.write("name: shadow-rtt\ndevices: [{thing: %s}]\nsubscriptions:\n"
                '  - {id: to-shadow, source: "device:%s", subject: "$aws/things/%s/shadow/#",'
                " target: shadow}\n"
                '  - {id: to-device, source: shadow, subject: "$aws/things/%s/shadow/#",'
                ' target: "device:%s"}\n' % (THING, THING, THING, THING, THING))
    profile = os.path.join(work, "grove.yaml")
    with open(profile, "w") as f:
        f.write(grove_profile(args, group, port)
                + "  - name: shadow\n    config: {max_inflight_per_thing: 100000, rateLimits:"
                + " {maxTotalLocalRequestsRate: 1000000,"
                + " maxLocalRequestsPerSecondPerThing: 1000000}}\n")
    return launch_groved(args, work, profile, port,
                         ["message_manager.group: 'shadow-rtt' v",
                          "message_manager.local_link: connected", "shadow.devices: 1"],
                         [THING])


def start_bare(args, work):
    port = free_port()
    b = launch("bare", args.mosquitto, work, common_conf(port) + "allow_anonymous true\n", port)
    sub = subprocess.Popen(["mosquitto_sub", "-p", str(port), "-q", str(args.qos),
                            "-t", "bench/req", "-F", "%p"], stdout=subprocess.PIPE)
    echo = subprocess.Popen(["mosquitto_pub", "-p", str(port), "-q", str(args.qos),
                             "-t", "bench/reply", "-l"], stdin=sub.stdout)
    sub.stdout.close()
    return b, [sub, echo], port


def run_once(args, port, request_topic, reply_topic, username):
    """Publishes --messages requests at --rate; returns latencies (µs) of the answers."""
    sent = {}
    got = {}
    done = threading.Event()
    subscribed = threading.Event()
    # Client id = thing name: the broker plugin's default client_id_patterns.
    c = mqtt.Client(client_id=username, clean_session=True)
    c.username_pw_set(username)

    def on_message(_c, _u, msg):
        t = time.perf_counter()
        try:
            token = json.loads(msg.payload)["clientToken"]
        except (ValueError, KeyError, TypeError):
            return
        if token in sent and token not in got:
            got[token] = t
            if len(got) == args.messages:
                done.set()

    c.on_message = on_message
    c.on_subscribe = lambda *_: subscribed.set()
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    try:
        c.subscribe(reply_topic, qos=args.qos)
        if not subscribed.wait(10):
            raise RuntimeError("no SUBACK")
        pad = "x" * max(0, args.payload - 60)
        # Warm-up: one round trip, so the first timed request does not pay for set-up.
        sent["warm"] = time.perf_counter()
        c.publish(request_topic, json.dumps({"state": {"reported": {"n": -1}},
                                             "clientToken": "warm"}), qos=args.qos)
        deadline = time.monotonic() + 10
        while "warm" not in got and time.monotonic() < deadline:
            time.sleep(0.01)
        sent.clear()
        got.clear()
        period = 1.0 / args.rate
        start = time.perf_counter()
        for i in range(args.messages):
            due = start + i * period
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
            token = str(i)
            payload = json.dumps({"state": {"reported": {"n": i, "pad": pad}},
                                  "clientToken": token}, separators=(",", ":"))
            sent[token] = time.perf_counter()
            c.publish(request_topic, payload, qos=args.qos)
        send_s = time.perf_counter() - start
        done.wait(30)
    finally:
        c.loop_stop()
        c.disconnect()
    lat = sorted((got[t] - sent[t]) * 1e6 for t in got)
    if not lat:
        return {"error": "no answers"}
    q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [lat[0]] * 99
    return {"answered": len(lat), "lost": args.messages - len(lat),
            "send_rate": round(args.messages / send_s), "p50_us": round(q[49]),
            "p99_us": round(q[98])}


def summarize(runs):
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[-1].get("error") if runs else "no runs"}
    return {"p50_us_median": statistics.median(r["p50_us"] for r in ok),
            "p99_us_median": statistics.median(r["p99_us"] for r in ok),
            "lost_total": sum(r["lost"] for r in ok),
            "send_rate_min": min(r["send_rate"] for r in ok), "runs": ok}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", default=os.path.join(REPO, "build"))
    p.add_argument("--plugin", help="default: BUILD/lib/grove/broker/grove_broker_plugin.so")
    p.add_argument("--mosquitto", default="/usr/sbin/mosquitto")
    p.add_argument("--rate", type=float, default=1000)
    p.add_argument("--messages", type=int, default=5000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--payload", type=int, default=200)
    p.add_argument("--qos", type=int, default=0, choices=(0, 1))
    args = p.parse_args()
    args.plugin = os.path.abspath(args.plugin or os.path.join(
        args.build, "lib", "grove", "broker", "grove_broker_plugin.so"))
    args.groved = os.path.join(args.build, "bin", "groved")
    args.grovectl = os.path.join(args.build, "bin", "grovectl")
    for path in (args.plugin, args.mosquitto, args.groved, args.grovectl,
                 os.path.join(args.build, "lib", "grove", "plugins", "libshadow.so")):
        if not os.path.exists(path):
            print(json.dumps({"error": "missing %s (build groved, grovectl, message_manager, "
                              "shadow and grove_broker_plugin)" % path}))
            return 1
    work = tempfile.mkdtemp(prefix="shadow_rtt_bench.")
    procs = []
    runs = {"bare": [], "grove": []}
    try:
        bare, echo, bare_port = start_bare(args, work)
        procs += echo
        grove = start_grove(args, work)
        procs.append(grove.proc)
        grove_port = grove.port
        for _ in range(args.repeat):
            runs["bare"].append(run_once(args, bare_port, "bench/req", "bench/reply", "peer"))
            runs["grove"].append(run_once(args, grove_port, SHADOW, SHADOW + "/accepted", THING))
    except Exception as e:  # report, never a traceback instead of the JSON line
        print(json.dumps({"error": str(e), "runs": runs}))
        return 1
    finally:
        for proc in procs:
            stop(proc)
        if "bare" in locals():
            bare.stop()
        shutil.rmtree(work, ignore_errors=True)
    b, g = summarize(runs["bare"]), summarize(runs["grove"])
    report = {"load": {"rate": args.rate, "messages": args.messages, "repeat": args.repeat,
                       "payload": args.payload, "qos": args.qos},
              "bare_echo": b, "grove_shadow": g}
    if "error" not in b and "error" not in g:
        report["ratio_p50"] = round(g["p50_us_median"] / b["p50_us_median"], 2)
        report["ratio_p99"] = round(g["p99_us_median"] / b["p99_us_median"], 2)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
