"""What ml_inference's end-to-end scripts share (ml_e2e_test.py, function_ml_e2e_test.py,
and deployment's model_components_test.py): the models make_models.py builds, the group
resources naming them, PASS/FAIL checks, groved started and stopped, `grovectl ml models`
polled, and outputs compared. A script in this folder imports it directly (Python puts a
script's folder first on sys.path); one elsewhere adds this folder to sys.path first.
"""
import json
import os
import signal
import subprocess
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
failures = []


def check(ok, what):
    """Prints PASS or FAIL for `what`; a FAIL is kept in `failures` (the exit status)."""
    print(("PASS " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


def build_models(work):
    """Builds make_models.py's models in <work>/models; returns its index.json."""
    models = os.path.join(work, "models")
    subprocess.run(["/usr/bin/python3", os.path.join(HERE, "make_models.py"), models], check=True)
    return json.load(open(os.path.join(models, "index.json")))


def model_config(case, version=None):
    """The resource config (YAML lines under `config:`) of make_models.py case `case`:
    a package names its manifest inside, a bare .onnx gets the case's inputs."""
    g = ("      localMachineLearningModelResourceData:\n"
         "        path: %s\n        sha256: %s\n" % (case["path"], case["sha256"]))
    if version:
        g += "        version: %s\n" % version
    if "archive" not in case:
        ins = ", ".join("{name: %s, shape: %s}" % (i["name"], json.dumps(i["shape"]))
                        for i in case["manifest"]["inputs"])
        g += "        manifest: {inputs: [%s]}\n" % ins
    return g


def model_resources(index, versions=None):
    """The group's `resources:` section: every case of `index`, then `unsupported` (a
    model OpenCV cannot load: Hardmax). `versions` maps a case id to its `version`."""
    versions = versions or {}
    g = "resources:\n"
    for c in index["cases"]:
        g += "  - id: %s\n    config:\n%s" % (c["id"], model_config(c, versions.get(c["id"])))
    b = index["bad"]["unsupported"]
    g += ("  - id: unsupported\n    config:\n      localMachineLearningModelResourceData:\n"
          "        path: %s\n        sha256: %s\n        manifest: {inputs: [{name: x, shape: [1, 4]}]}\n"
          % (b["path"], b["sha256"]))
    return g


def start_groved(groved, work, profile):
    """groved on `profile` with write dir <work>/var, output in <work>/groved.out."""
    log = open(os.path.join(work, "groved.out"), "w")
    proc = subprocess.Popen([groved, "--config", profile, "--write-dir", os.path.join(work, "var")],
                            stdout=log, stderr=subprocess.STDOUT)
    return proc


def ctl_for(grovectl, work):
    """A function running grovectl against groved's socket in <work>/var."""
    sock = os.path.join(work, "var", "run", "control.sock")

    def ctl(*args, timeout=60):
        return subprocess.run([grovectl, "--socket", sock, *args], capture_output=True,
                              text=True, timeout=timeout)
    return ctl


def stop_groved(proc, work, logs=()):
    """SIGTERM (SIGKILL after 20 s); on failures, groved's output and `logs` (paths) tails."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    if failures:
        print(open(os.path.join(work, "groved.out")).read()[-4000:])
        for p in logs:
            if os.path.exists(p):
                print("--- %s\n%s" % (p, open(p).read()[-2000:]))


def listing(ctl):
    """`grovectl --json ml models` by model id ({} when it fails)."""
    r = ctl("--json", "ml", "models")
    return {m["id"]: m for m in json.loads(r.stdout)} if r.returncode == 0 else {}


def wait_loaded(ctl, count, timeout=120):
    """Polls until `count` models are listed and none is loading; returns the listing."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = listing(ctl)
        if m and len(m) == count and all(x["state"] != "loading" for x in m.values()):
            return m
        time.sleep(0.1)
    return listing(ctl)


def worst(a, b):
    """Largest difference of two output lists (shapes must match), inf when they do not."""
    if len(a) != len(b) or any(x["shape"] != y["shape"] for x, y in zip(a, b)):
        return float("inf")
    return max(float(np.max(np.abs(np.array(x["data"]) - np.array(y["data"])))) for x, y in zip(a, b))
