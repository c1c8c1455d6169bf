#!/usr/bin/python3
"""ml_inference end to end with real processes: groved loads the plugin and a group with
the models make_models.py builds; grovectl ml infer sends each case's tensors (a .json
file) and the PNG, and its JSON output is compared with numpy's within 1e-4; grovectl ml
models shows the states; a bad request exits 1 with the error; a model swapped by
rewriting the group file answers with its new version (groved watches the file).

Usage: ml_e2e_test.py GROVED GROVECTL"""
import json, os, subprocess, sys, tempfile, time

import numpy as np

from ml_test_support import (build_models, check, ctl_for, failures, listing, model_resources,
                             start_groved, stop_groved, wait_loaded)

GROVED, GROVECTL = (os.path.abspath(a) for a in sys.argv[1:3])
work = tempfile.mkdtemp(prefix="ml_e2e.")
index = build_models(work)


def group(version=None):
    return "name: ml-e2e\n" + model_resources(index, {"conv_relu": version})


gfile = os.path.join(work, "group.yaml")
open(gfile, "w").write(group())
profile = os.path.join(work, "profile.yaml")
# ml_e2e_test_isolated runs the same with the plugin in a child process of its own.
isolation = "    isolation: process\n" if os.environ.get("ML_E2E_ISOLATION") == "process" else ""
open(profile, "w").write("kernel:\n  log_level: info\n  group: %s\nplugins:\n  - name: ml_inference\n%s"
                         "    config: {threads: 2, max_batch_size: 8, max_batch_delay_us: 1000}\n"
                         % (gfile, isolation))
groved = start_groved(GROVED, work, profile)
ctl = ctl_for(GROVECTL, work)


try:
    wait_loaded(ctl, len(index["cases"]) + 1)
    m = listing(ctl)
    check(all(m[c["id"]]["state"] == "serving" for c in index["cases"]), "every good model serves")
    check(m.get("unsupported", {}).get("state") == "failed"
          and "Hardmax" in m["unsupported"]["error"], "the Hardmax model failed with the reason")

    for c in index["cases"]:
        f = os.path.join(work, c["id"] + ".json")
        json.dump({"inputs": c["inputs"]}, open(f, "w"))
        r = ctl("ml", "infer", c["id"], "--input", f)
        if r.returncode != 0:
            check(False, "%s: grovectl ml infer: %s" % (c["id"], r.stderr.strip()))
            continue
        out = json.loads(r.stdout)
        worst = max(float(np.max(np.abs(np.array(o["data"]) - np.array(w["data"]))))
                    for o, w in zip(out["outputs"], c["outputs"]))
        shapes = all(o["shape"] == w["shape"] for o, w in zip(out["outputs"], c["outputs"]))
        check(shapes and worst <= 1e-4, "%s through groved: largest difference %.2e" % (c["id"], worst))

    cnn = [c for c in index["cases"] if c["id"] == "cnn"][0]
    r = ctl("ml", "infer", "cnn", "--input", cnn["image"], "--top-k", "2")
    out = json.loads(r.stdout) if r.returncode == 0 else {}
    want = np.array(cnn["image_output"])
    check(r.returncode == 0 and float(np.max(np.abs(np.array(out["outputs"][0]["data"]) - want))) <= 1e-4
          and [t["label"] for t in out["top"]] == [cnn["labels"][i] for i in np.argsort(-want)[:2]],
          "the PNG through the preprocessing, top-2 labels")

    bad = os.path.join(work, "bad.json")
    json.dump({"inputs": [{"name": "x", "shape": [1, 3, 8, 9], "data": [0.0] * 216}]}, open(bad, "w"))
    r = ctl("ml", "infer", "conv_relu", "--input", bad)
    check(r.returncode == 1 and "input 'x': shape [1, 3, 8, 9], expected [1, 3, 8, 8]" in r.stderr,
          "a wrong shape: exit 1 naming the tensor (%s)" % r.stderr.strip())

    wide = os.path.join(work, "wide.json")
    json.dump({"inputs": [{"name": "x", "dtype": "uint8", "shape": [1, 3, 8, 8],
                           "data": [300] + [0] * 191}]}, open(wide, "w"))
    r = ctl("ml", "infer", "conv_relu", "--input", wide)
    check(r.returncode == 2 and "uint8 values are integers 0-255, got 300" in r.stderr,
          "a uint8 value over 255 is refused, not wrapped (%s)" % r.stderr.strip())
    r = ctl("--json", "ml", "models")
    check(r.returncode == 0 and all(m["loading"] is False for m in json.loads(r.stdout)),
          "grovectl --json ml models carries the loading flag")

    # A new version through the group file (groved --watch re-reads it).
    open(gfile, "w").write(group(version="v2"))
    deadline = time.time() + 60
    while time.time() < deadline and listing(ctl).get("conv_relu", {}).get("version") != "v2":
        time.sleep(0.1)
    r = ctl("ml", "infer", "conv_relu", "--input", os.path.join(work, "conv_relu.json"))
    check(r.returncode == 0 and json.loads(r.stdout)["version"] == "v2", "a new version swapped in")
    text = ctl("ml", "models").stdout
    check("conv_relu  serving  v2" in text and "p50" in text, "grovectl ml models prints the table")
    print(text)
finally:
    stop_groved(groved, work)
    subprocess.run(["rm", "-rf", work])
sys.exit(1 if failures else 0)
