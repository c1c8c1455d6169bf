"""The Python function of function_ml_e2e_test: greengrasssdk's client('ml').infer on
what its payload names, the outputs answered as JSON (or the error's code and message).

Payload: {"model", "inputs": [{"name", "dtype", "shape", "data"}], "image_path", "top_k",
"numpy": false (send and take (dtype, shape, bytes) as without numpy)}; or "inputs_file":
a .json file whose "inputs" are those (the file grovectl ml infer --input reads)."""

import json
import struct

import greengrasssdk
import grove_function

ml = greengrasssdk.client("ml")


def handler(event, context):
    use_numpy = event.get("numpy", True)
    numpy_of = grove_function._numpy
    if not use_numpy:
        grove_function._numpy = lambda: None  # as on a device without numpy
    try:
        return run(event, use_numpy)
    finally:
        grove_function._numpy = numpy_of


def run(event, use_numpy):
    try:
        import numpy as np
    except ImportError:
        np = None
    inputs = {}
    listed = (json.load(open(event["inputs_file"]))["inputs"] if "inputs_file" in event
              else event.get("inputs", []))
    for t in listed:
        dtype = t.get("dtype", "float32")
        if use_numpy:
            inputs[t["name"]] = np.array(t["data"], dtype=np.float32 if dtype == "float32"
                                         else np.uint8).reshape(t["shape"])
        else:
            data = (struct.pack("<%df" % len(t["data"]), *t["data"]) if dtype == "float32"
                    else bytes(t["data"]))
            inputs[t["name"]] = (dtype, t["shape"], data)
    image = open(event["image_path"], "rb").read() if "image_path" in event else None
    try:
        r = ml.infer(model=event["model"], inputs=inputs or None, image=image,
                     top_k=event.get("top_k", 0))
    except greengrasssdk.InferenceError as e:
        return {"error": {"code": e.code, "message": e.message}}
    outputs = []
    for name, value in r["outputs"].items():
        if use_numpy:
            outputs.append({"name": name, "shape": list(value.shape),
                            "data": [float(v) for v in value.reshape(-1)],
                            "type": type(value).__name__})
        else:
            dtype, shape, data = value
            outputs.append({"name": name, "shape": list(shape),
                            "data": list(struct.unpack("<%df" % (len(data) // 4), data)),
                            "type": type(value).__name__})
    return {"version": r["version"], "batch_size": r["batch_size"], "outputs": outputs,
            "top": r["top"]}
