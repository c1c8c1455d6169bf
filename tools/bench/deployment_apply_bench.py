#!/usr/bin/python3
"""A deployment of 3 small generic components and one plugin configuration change applied
end to end on a real groved, against starting the same 3 processes by hand in the same
run. Prints one JSON object
on stdout. Not a test: it reports figures and never fails on them (issue 15, target
<= 1 s; Greengrass v2 takes 17-254 s).

(a) grove: boto3 CreateDeployment of a new version of 3 components (each `run` touches a
           ready file in its {work:path}, then sleeps) and a new configuration of the
           plugin component grove.heartbeat (its topic) until all 3 ready files exist and
           GetDeployment says COMPLETED: the API, the journal, resolution, artifact
           links, rendering, the old processes stopped and the new ones started, the
           kernel's status read and the plugin reconfigured through the kernel.
(b) peer:  the same 3 shell scripts started with subprocess.Popen until their 3 ready
           files exist (the floor: fork, exec, a shell).

Usage: /usr/bin/python3 deployment_apply_bench.py [--build DIR] [--rounds 20]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import boto3
import botocore.config

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchutil import start_deployment_api, stop  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEY, SECRET, REGION = "AKIAGROVEBENCH0001", "bench-secret-bench-secret", "us-east-1"
THING = "arn:aws:iot:us-east-1:123456789012:thing/bench-core"
NAMES = ["bench.A", "bench.B", "bench.C"]
SCRIPT = "rm -f {dir}/ready; echo started; touch {dir}/ready; exec sleep 600"


def recipe(name, version):
    return ("RecipeFormatVersion: '2020-01-25'\nComponentName: %s\nComponentVersion: '%s'\n"
            "Manifests:\n  - Platform: {os: linux}\n    Lifecycle:\n      run: '%s'\n"
            % (name, version, SCRIPT.format(dir="{work:path}")))


def wait_files(paths, timeout=30):
    end = time.monotonic() + timeout
    while not all(os.path.exists(p) for p in paths):
        if time.monotonic() > end:
            raise RuntimeError("not ready: %s" % [p for p in paths if not os.path.exists(p)])
        time.sleep(0.002)


def stats(samples):
    s = sorted(samples)
    return {"p50_ms": round(statistics.median(s) * 1000, 1),
            "p90_ms": round(s[int(len(s) * 0.9) - 1] * 1000, 1),
            "max_ms": round(s[-1] * 1000, 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    grovectl = os.path.join(args.build, "bin", "grovectl")
    work = tempfile.mkdtemp(prefix="grove-apply-bench-")
    proc = None
    try:
        proc, port, ca, write_dir = start_deployment_api(
            args.build, work, KEY, SECRET, entry="    may_control_plugins: true\n",
            config="      thing_name: bench-core\n")
        gg = boto3.client("greengrassv2", endpoint_url="https://127.0.0.1:%d" % port, verify=ca,
                          region_name=REGION, aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                          config=botocore.config.Config(retries={"max_attempts": 1}))
        wdir = os.path.join(write_dir, "plugins", "deployment", "components", "work")
        ready = [os.path.join(wdir, n, "ready") for n in NAMES]
        # The plugin component: the SDK's heartbeat (built beside groved), a new topic each
        # round (a configure through the kernel; the first round loads it).
        gg.create_component_version(inlineRecipe=(
            "RecipeFormatVersion: '2020-01-25'\nComponentName: grove.heartbeat\n"
            "ComponentVersion: '1.0.0'\nComponentConfiguration:\n"
            "  DefaultConfiguration: {interval_ms: 1000, topic: bench/beat}\n").encode())
        grove = []
        for r in range(args.rounds + 1):  # round 0 warms up (first start, caches)
            version = "1.0.%d" % r
            for n in NAMES:
                gg.create_component_version(inlineRecipe=recipe(n, version).encode())
            for p in ready:
                if os.path.exists(p):
                    os.remove(p)
            t0 = time.monotonic()
            components = {n: {"componentVersion": version} for n in NAMES}
            components["grove.heartbeat"] = {"componentVersion": "1.0.0", "configurationUpdate": {
                "merge": json.dumps({"topic": "bench/r%d" % r})}}
            d = gg.create_deployment(targetArn=THING, components=components)
            wait_files(ready)
            while gg.get_deployment(deploymentId=d["deploymentId"])["deploymentStatus"] != "COMPLETED":
                time.sleep(0.002)
            if r:
                grove.append(time.monotonic() - t0)
        # The plugin runs with the last round's configuration (checked once, untimed).
        st = json.loads(subprocess.run(
            [grovectl, "--socket", os.path.join(write_dir, "run", "control.sock"), "status",
             "--json"], capture_output=True, text=True, check=True).stdout)
        beating = st.get("details", {}).get("heartbeat.beating", "")
        if not beating.endswith("on bench/r%d" % args.rounds):
            raise RuntimeError("heartbeat not reconfigured: %r" % beating)
        peer = []
        hand = os.path.join(work, "hand")
        for r in range(args.rounds + 1):
            dirs = [os.path.join(hand, n) for n in NAMES]
            for d in dirs:
                os.makedirs(d, exist_ok=True)
                if os.path.exists(os.path.join(d, "ready")):
                    os.remove(os.path.join(d, "ready"))
            t0 = time.monotonic()
            kids = [subprocess.Popen(["/bin/sh", "-c", SCRIPT.format(dir=d)], cwd=d,
                                     stdout=subprocess.DEVNULL) for d in dirs]
            wait_files([os.path.join(d, "ready") for d in dirs])
            if r:
                peer.append(time.monotonic() - t0)
            for k in kids:
                k.kill()
                k.wait()
        g, p = stats(grove), stats(peer)
        print(json.dumps({"bench": "deployment_apply", "components": len(NAMES),
                          "plugin_configuration_changes": 1,
                          "rounds": args.rounds, "grove_deployment": g, "peer_by_hand": p,
                          "ratio_p50_grove_over_peer": round(g["p50_ms"] / p["p50_ms"], 1),
                          "target_ms": 1000}, indent=2))
    finally:
        stop(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
