#!/usr/bin/python3
"""The function SDKs' infer verb end to end with real processes: groved runs ml_inference
(the models make_models.py builds) and function_runtime with a C++ function
(infer_function.cpp on grove::function::infer) and a Python one (python/infer_fn.py on
greengrasssdk's client('ml')), both granted the models by resourceAccessPolicies.
`grovectl invoke` has each run infer on every case's input file and on the PNG; the
outputs are compared with what `grovectl ml infer` answers for the same file and with
numpy's (within 1e-4). A function not granted the model gets not_authorized naming it, a
wrong shape ml_inference's malformed naming the tensor, a model the group lacks
no_route, a request over max_frame_bytes too_large (refused by the SDK before it is sent;
the instance serves on).

Usage: function_ml_e2e_test.py GROVED GROVECTL INFER_FUNCTION PYTHON_CODE_DIR"""
import json, os, shutil, subprocess, sys, tempfile, time

import numpy as np

from ml_test_support import (build_models, check, ctl_for, failures, model_resources,
                             start_groved, stop_groved, wait_loaded, worst)

GROVED, GROVECTL, CFN, PYCODE = (os.path.abspath(a) for a in sys.argv[1:5])
work = tempfile.mkdtemp(prefix="fn_ml_e2e.")
index = build_models(work)
cases = {c["id"]: c for c in index["cases"]}


def group(nf_grants="conv_relu"):
    # Every model, and one OpenCV cannot load (Hardmax): granted, it answers invalid_state.
    g = "name: fn-ml-e2e\n" + model_resources(index)
    grants = ", ".join("{resourceId: %s}" % c for c in list(cases) + ["unsupported"])
    common = ("      timeoutInSeconds: 30\n      runAs: {uid: 0, gid: 0}\n"
              "      linuxProcessParams: {isolationMode: NoContainer}\n")
    g += "functions:\n"
    # CF and PF are granted every model; NF only conv_relu.
    g += ("  - name: CF\n    config:\n      handler: %s\n%s      resourceAccessPolicies: [%s]\n"
          % (CFN, common, grants))
    g += ("  - name: PF\n    config:\n      runtime: python3\n      handler: infer_fn.handler\n"
          "      codeUri: %s\n%s      resourceAccessPolicies: [%s]\n" % (PYCODE, common, grants))
    g += ("  - name: NF\n    config:\n      handler: %s\n%s      resourceAccessPolicies: "
          "[%s]\n" % (CFN, common, ", ".join("{resourceId: %s}" % m for m in nf_grants.split())))
    # SF: in its sandbox (GreengrassContainer), granted a model only: no local_resources
    # plugin is needed (a model is a grant of the verb, not a mount).
    g += ("  - name: SF\n    config:\n      handler: fn\n      codeUri: %s\n"
          "      timeoutInSeconds: 30\n      resourceAccessPolicies: [{resourceId: conv_relu}]\n"
          % sf_code)
    # SC: the same sandbox without a grant, the control that this host runs sandboxes.
    g += ("  - name: SC\n    config:\n      handler: fn\n      codeUri: %s\n"
          "      timeoutInSeconds: 30\n" % sf_code)
    return g


# SF's code: a copy of the C++ function in a directory its user (grove-fn) may enter.
os.chmod(work, 0o755)
sf_code = os.path.join(work, "sf")
os.makedirs(sf_code)
shutil.copy(CFN, os.path.join(sf_code, "fn"))
gfile = os.path.join(work, "group.yaml")
open(gfile, "w").write(group())
profile = os.path.join(work, "profile.yaml")
open(profile, "w").write(
    "kernel:\n  log_level: info\n  group: %s\nplugins:\n  - name: ml_inference\n"
    "    config: {threads: 2}\n  - name: function_runtime\n    may_claim: [\"function:*\"]\n"
    "    config: {allow_run_as_root: true}  # the test functions run as root from the build tree\n"
    % gfile)
groved = start_groved(GROVED, work, profile)
ctl = ctl_for(GROVECTL, work)


def invoke(fn, payload):
    """The function's JSON answer, or {"invoke_error": stderr} when grovectl exits 1."""
    r = ctl("invoke", fn, "--payload", json.dumps(payload))
    if r.returncode != 0:
        return {"invoke_error": r.stderr.strip()}
    return json.loads(r.stdout)


try:
    m = wait_loaded(ctl, len(cases) + 1)
    check(all(m.get(c, {}).get("state") == "serving" for c in cases), "every good model serves")
    check(m.get("unsupported", {}).get("state") == "failed", "the Hardmax model failed")

    for cid, c in cases.items():
        f = os.path.join(work, cid + ".json")
        json.dump({"inputs": c["inputs"]}, open(f, "w"))
        r = ctl("ml", "infer", cid, "--input", f)
        ref = json.loads(r.stdout)["outputs"] if r.returncode == 0 else None
        check(ref is not None, "%s: grovectl ml infer answers (%s)" % (cid, r.stderr.strip()))
        for fn in ("CF", "PF"):
            out = invoke(fn, {"model": cid, "inputs_file": f})
            if "outputs" not in out:
                check(False, "%s: %s's infer: %s" % (cid, fn, out))
                continue
            d_ref = worst(out["outputs"], ref) if ref is not None else float("inf")
            d_np = worst(out["outputs"], c["outputs"])
            check(d_ref <= 1e-6 and d_np <= 1e-4,
                  "%s: %s's infer matches grovectl ml infer (%.1e) and numpy (%.1e)"
                  % (cid, fn, d_ref, d_np))

    # Without numpy the Python SDK takes and gives (dtype, shape, bytes).
    cid = "gemm_sigmoid"
    f = os.path.join(work, cid + ".json")
    out = invoke("PF", {"model": cid, "inputs_file": f, "numpy": False})
    check("outputs" in out and worst(out["outputs"], cases[cid]["outputs"]) <= 1e-4
          and all(o["type"] == "tuple" for o in out["outputs"]),
          "%s: PF without numpy: (dtype, shape, bytes) in and out (%s)" % (cid, str(out)[:200]))

    # The PNG through the model's preprocessing, with top-2 labels.
    cnn = cases["cnn"]
    want = np.array(cnn["image_output"])
    labels = [cnn["labels"][i] for i in np.argsort(-want)[:2]]
    r = ctl("ml", "infer", "cnn", "--input", cnn["image"], "--top-k", "2")
    ref = json.loads(r.stdout) if r.returncode == 0 else {}
    for fn in ("CF", "PF"):
        out = invoke(fn, {"model": "cnn", "image_path": cnn["image"], "top_k": 2})
        ok = "outputs" in out and float(np.max(np.abs(np.array(out["outputs"][0]["data"]) - want))) <= 1e-4
        check(ok and [t["label"] for t in out["top"]] == labels
              and [t["label"] for t in out["top"]] == [t["label"] for t in ref.get("top", [])],
              "cnn: %s's infer on the PNG, top-2 labels %s as grovectl ml infer" % (fn, labels))

    # Errors, each with its code; the instances serve on.
    bad = os.path.join(work, "bad.json")
    json.dump({"inputs": [{"name": "x", "shape": [1, 3, 8, 9], "data": [0.0] * 216}]}, open(bad, "w"))
    for fn in ("CF", "PF"):
        e = invoke(fn, {"model": "conv_relu", "inputs_file": bad}).get("error", {})
        check(e.get("code") == "malformed"
              and "input 'x': shape [1, 3, 8, 9], expected [1, 3, 8, 8]" in e.get("message", ""),
              "%s: a wrong shape is ml_inference's malformed naming the tensor (%s)" % (fn, e))
        e = invoke(fn, {"model": "no_such_model", "inputs_file": bad}).get("error", {})
        check(e.get("code") == "no_route" and "no_such_model" in e.get("message", ""),
              "%s: a model the group lacks is no_route (%s)" % (fn, e))
        # Over max_frame_bytes (4 MiB): refused by the SDK, never sent.
        huge = {"inputs": [{"name": "x", "shape": [1, 1100000], "data": [0.0] * 1100000}]}
        json.dump(huge, open(os.path.join(work, "huge.json"), "w"))
        e = invoke(fn, {"model": "conv_relu", "inputs_file": os.path.join(work, "huge.json")}).get("error", {})
        check(e.get("code") == "too_large" and "max_frame_bytes" in e.get("message", ""),
              "%s: a request over max_frame_bytes is refused before it is sent (%s)" % (fn, e))
    for fn in ("CF", "PF"):
        e = invoke(fn, {"model": "unsupported", "inputs": [{"name": "x", "shape": [1, 4],
                                                           "data": [0.0] * 4}]}).get("error", {})
        check(e.get("code") == "invalid_state" and "Hardmax" in e.get("message", ""),
              "%s: a granted model that failed to load is invalid_state with the reason (%s)"
              % (fn, e))
    e = invoke("NF", {"model": "cnn", "image_path": cnn["image"]}).get("error", {})
    check(e.get("code") == "not_authorized" and "'cnn'" in e.get("message", "")
          and "NF" in e.get("message", ""),
          "NF, not granted cnn: not_authorized naming the model (%s)" % e)
    out = invoke("NF", {"model": "conv_relu", "inputs_file": os.path.join(work, "conv_relu.json")})
    check("outputs" in out, "NF runs the model it is granted")
    # In a sandbox, with the tensors in the payload (the sandbox sees no test files).
    cr = cases["conv_relu"]
    control = invoke("SC", {"model": "conv_relu", "inputs": cr["inputs"]})
    if "invoke_error" in control:
        # Not this feature's fault: no sandboxed function starts on this host.
        print("SKIP SF: a sandboxed function without grants does not run here either (%s)"
              % control["invoke_error"][:300], flush=True)
    else:
        check(control.get("error", {}).get("code") == "not_authorized",
              "SC (sandboxed, no grant) gets not_authorized (%s)" % str(control)[:300])
        out = invoke("SF", {"model": "conv_relu", "inputs": cr["inputs"]})
        check("outputs" in out and worst(out["outputs"], cr["outputs"]) <= 1e-4,
              "SF (GreengrassContainer, no local_resources in the image) infers conv_relu (%s)"
              % str(out)[:300])

    # Grants follow the group: NF granted cnn by a change of the group file (groved
    # watches it) runs it.
    open(gfile, "w").write(group(nf_grants="conv_relu cnn"))
    deadline = time.time() + 60
    out = {}
    while time.time() < deadline:
        out = invoke("NF", {"model": "cnn", "image_path": cnn["image"], "top_k": 2})
        if "outputs" in out:
            break
        time.sleep(0.2)
    check("outputs" in out and [t["label"] for t in out["top"]] == labels,
          "NF runs cnn once the group grants it (%s)" % str(out)[:300])

    r = ctl("--json", "functions")
    fl = {f["name"]: f for f in map(json.loads, r.stdout.splitlines())} if r.returncode == 0 else {}
    check(all(fl.get(n, {}).get("instances", 0) == 1 for n in ("CF", "PF")),
          "CF and PF kept their one instance through the errors (%s)"
          % {n: fl.get(n, {}).get("instances") for n in ("CF", "PF")})
finally:
    stop_groved(groved, work, [os.path.join(work, "var", "logs", "functions", n + ".log")
                               for n in ("CF", "PF", "NF")])
    subprocess.run(["rm", "-rf", work])
sys.exit(1 if failures else 0)
