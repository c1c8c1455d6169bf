#!/usr/bin/python3
"""Builds the test models of ml_inference_test with onnx.helper (Debian's python3-onnx) and
their expected outputs with numpy, computed independently of any inference engine.

Usage: make_models.py OUTDIR. Writes OUTDIR/<case>.onnx (or .tar.gz), OUTDIR/cat.png and
OUTDIR/index.json: per case the model file, its sha256, the manifest, inputs and
expected outputs (lists of floats)."""
import hashlib, io, json, os, struct, sys, tarfile, zipfile, zlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = sys.argv[1]
os.makedirs(OUT, exist_ok=True)
rng = np.random.default_rng(17)
cases = []


def model(nodes, inputs, outputs, inits, name):
    g = helper.make_graph(nodes, name, inputs, outputs,
                          [numpy_helper.from_array(v.astype(np.float32) if v.dtype == np.float64 else v, k)
                           for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)])
    m.ir_version = 7
    onnx.checker.check_model(m)
    return m.SerializeToString()


def vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def f32(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def write(name, data):
    path = os.path.join(OUT, name)
    with open(path, "wb") as f:
        f.write(data)
    return path, hashlib.sha256(data).hexdigest()


def case(cid, onnx_bytes, manifest_inputs, feeds, expected, **extra):
    path, digest = write(cid + ".onnx", onnx_bytes)
    cases.append(dict(id=cid, path=path, sha256=digest,
                      manifest=dict(inputs=manifest_inputs),
                      inputs=[dict(name=k, shape=list(v.shape), data=v.ravel().tolist()) for k, v in feeds],
                      outputs=[dict(name=k, shape=list(v.shape), data=v.astype(np.float32).ravel().tolist())
                               for k, v in expected], **extra))


# numpy references ------------------------------------------------------------------------
# Convolution summed per kernel offset, in float64.
def conv_fast(x, w, stride, pad, group=1):
    n, c, h, wd = x.shape
    o, ci, kh, kw = w.shape
    # Only the groups the models use: none, or depthwise (one filter per channel).
    assert group == 1 or (group == c == o and ci == 1), (group, c, o, ci)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    y = np.zeros((n, o, oh, ow))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride]
            if group == 1:
                y += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j].astype(np.float64))
            else:  # depthwise: one filter per channel
                y += patch * w[:, 0, i, j].astype(np.float64).reshape(1, -1, 1, 1)
    return y


def conv2d(x, w, b, pad, stride=1):
    return conv_fast(x, w, stride, pad) + b.reshape(1, -1, 1, 1)


def pool(x, k, s, fn):
    n, c, h, w = x.shape
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    y = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            y[:, :, i, j] = fn(x[:, :, i * s:i * s + k, j * s:j * s + k], axis=(2, 3))
    return y


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def bn(x, s, b, m, v, eps=1e-5):
    r = lambda a: a.reshape(1, -1, 1, 1)
    return (x - r(m)) / np.sqrt(r(v) + eps) * r(s) + r(b)


# operator cases --------------------------------------------------------------------------
# Conv + Relu
W, B = f32(4, 3, 3, 3), f32(4)
x = f32(1, 3, 8, 8)
case("conv_relu",
     model([helper.make_node("Conv", ["x", "W", "B"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["y"])],
           [vi("x", [1, 3, 8, 8])], [vi("y", [1, 4, 8, 8])], {"W": W, "B": B}, "conv_relu"),
     [dict(name="x", shape=[1, 3, 8, 8])], [("x", x)], [("y", np.maximum(conv2d(x, W, B, 1), 0))])

# Gemm + Sigmoid, a batch dimension
W, B = f32(8, 16), f32(8)
x = f32(3, 16)
case("gemm_sigmoid",
     model([helper.make_node("Gemm", ["x", "W", "B"], ["g"], transB=1),
            helper.make_node("Sigmoid", ["g"], ["y"])],
           [vi("x", ["N", 16])], [vi("y", ["N", 8])], {"W": W, "B": B}, "gemm_sigmoid"),
     [dict(name="x", shape=[-1, 16])], [("x", x)], [("y", sigmoid(x.astype(np.float64) @ W.T + B))])

# MatMul + Add + Mul + Softmax
W, B, S = f32(10, 5), f32(1, 5), np.float32(0.5) * np.ones((1, 5), np.float32)
x = f32(1, 10)
case("matmul_softmax",
     model([helper.make_node("MatMul", ["x", "W"], ["m"]), helper.make_node("Add", ["m", "B"], ["a"]),
            helper.make_node("Mul", ["a", "S"], ["s"]), helper.make_node("Softmax", ["s"], ["y"], axis=1)],
           [vi("x", [1, 10])], [vi("y", [1, 5])], {"W": W, "B": B, "S": S}, "matmul_softmax"),
     [dict(name="x", shape=[1, 10])], [("x", x)], [("y", softmax((x.astype(np.float64) @ W + B) * S))])

# MaxPool + AveragePool
x = f32(1, 2, 8, 8)
case("pooling",
     model([helper.make_node("MaxPool", ["x"], ["m"], kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("AveragePool", ["m"], ["y"], kernel_shape=[2, 2], strides=[2, 2])],
           [vi("x", [1, 2, 8, 8])], [vi("y", [1, 2, 2, 2])], {}, "pooling"),
     [dict(name="x", shape=[1, 2, 8, 8])], [("x", x)],
     [("y", pool(pool(x, 2, 2, np.max), 2, 2, np.mean))])

# BatchNormalization
s, b, m, v = f32(3), f32(3), f32(3), np.abs(f32(3)) + 0.5
x = f32(1, 3, 4, 4)
case("batchnorm",
     model([helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-5)],
           [vi("x", [1, 3, 4, 4])], [vi("y", [1, 3, 4, 4])], {"s": s, "b": b, "m": m, "v": v}, "batchnorm"),
     [dict(name="x", shape=[1, 3, 4, 4])], [("x", x)], [("y", bn(x.astype(np.float64), s, b, m, v))])

# Concat of two inputs + Reshape
shape = np.array([1, 18], dtype=np.int64)
x1, x2 = f32(1, 2, 3), f32(1, 4, 3)
case("concat_reshape",
     model([helper.make_node("Concat", ["a", "b"], ["c"], axis=1),
            helper.make_node("Reshape", ["c", "shape"], ["y"])],
           [vi("a", [1, 2, 3]), vi("b", [1, 4, 3])], [vi("y", [1, 18])], {"shape": shape}, "concat_reshape"),
     [dict(name="a", shape=[1, 2, 3]), dict(name="b", shape=[1, 4, 3])], [("a", x1), ("b", x2)],
     [("y", np.concatenate([x1, x2], axis=1).reshape(1, 18))])

# A small CNN classifier: Conv-BN-Relu-MaxPool-Conv-Relu-GlobalAveragePool-Flatten-Gemm-
# Softmax on 3x32x32 images, 10 classes, as an archive with manifest.yaml (preprocessing:
# RGB, (x - 127.5) / 127.5, NCHW). Its expected output for cat.png is computed here.
W1, B1 = f32(8, 3, 3, 3) * 0.3, f32(8) * 0.1
s1, b1, m1, v1 = f32(8), f32(8), f32(8) * 0.1, np.abs(f32(8)) + 0.5
W2, B2 = f32(16, 8, 3, 3) * 0.2, f32(16) * 0.1
W3, B3 = f32(10, 16), f32(10)
labels = ["cat", "dog", "bird", "fish", "frog", "horse", "ship", "truck", "plane", "car"]
cnn = model([
    helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    helper.make_node("BatchNormalization", ["c1", "s1", "b1", "m1", "v1"], ["n1"]),
    helper.make_node("Relu", ["n1"], ["r1"]),
    helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
    helper.make_node("Conv", ["p1", "W2", "B2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    helper.make_node("Relu", ["c2"], ["r2"]),
    helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
    helper.make_node("Flatten", ["g"], ["f"], axis=1),
    helper.make_node("Gemm", ["f", "W3", "B3"], ["l"], transB=1),
    helper.make_node("Softmax", ["l"], ["prob"], axis=1)],
    [vi("x", ["N", 3, 32, 32])], [vi("prob", ["N", 10])],
    {"W1": W1, "B1": B1, "s1": s1, "b1": b1, "m1": m1, "v1": v1, "W2": W2, "B2": B2, "W3": W3, "B3": B3}, "cnn")


def cnn_ref(x):
    x = x.astype(np.float64)
    r1 = np.maximum(bn(conv2d(x, W1, B1, 1), s1, b1, m1, v1), 0)
    r2 = np.maximum(conv2d(pool(r1, 2, 2, np.max), W2, B2, 1), 0)
    return softmax(r2.mean(axis=(2, 3)) @ W3.T.astype(np.float64) + B3)


# The image: 32x32 RGB, a PNG written with zlib (no imaging library needed).
img = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
def png(a):
    h, w, _ = a.shape
    raw = b"".join(b"\x00" + a[y].tobytes() for y in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
png_path, _ = write("cat.png", png(img))
# 5000x5000 black pixels in ~75 KB of PNG: over max_image_pixels (16.7 M) by default.
big_png, _ = write("big.png", png(np.zeros((5000, 5000, 3), dtype=np.uint8)))
img_x = ((img.astype(np.float64) - 127.5) / 127.5).transpose(2, 0, 1)[None]

manifest = ("inputs:\n  - {name: x, dtype: float32, shape: [-1, 3, 32, 32]}\n"
            "preprocessing: {width: 32, height: 32, mean: [127.5, 127.5, 127.5], scale: 0.00784313725490196,"
            " channel_order: rgb, layout: nchw}\n"
            "labels: [" + ", ".join(labels) + "]\ntop_k: 3\n")
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w:gz") as tar:
    for name, data in (("model.onnx", cnn), ("manifest.yaml", manifest.encode())):
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        tar.addfile(ti, io.BytesIO(data))
path, digest = write("cnn.tar.gz", buf.getvalue())
# The same package as a .zip (libarchive reads both), model and manifest under "./".
zbuf = io.BytesIO()
with zipfile.ZipFile(zbuf, "w") as z:
    z.writestr("./model.onnx", cnn)
    z.writestr("./manifest.yaml", manifest)
zip_path, zip_digest = write("cnn.zip", zbuf.getvalue())
xs = f32(2, 3, 32, 32)
cases.append(dict(id="cnn", path=path, sha256=digest, archive=True,
                  inputs=[dict(name="x", shape=[2, 3, 32, 32], data=xs.ravel().tolist())],
                  outputs=[dict(name="prob", shape=[2, 10], data=cnn_ref(xs).astype(np.float32).ravel().tolist())],
                  image=png_path, image_output=cnn_ref(img_x).astype(np.float32).ravel().tolist(),
                  labels=labels, zip=dict(path=zip_path, sha256=zip_digest)))
# The same network as a bare .onnx (the benchmark's CNN) and a small MLP.
write("cnn.onnx", cnn)
Wa, Ba, Wb, Bb = f32(64, 32) * 0.2, f32(64), f32(10, 64) * 0.2, f32(10)
write("mlp.onnx", model([helper.make_node("Gemm", ["x", "Wa", "Ba"], ["h"], transB=1),
                         helper.make_node("Relu", ["h"], ["r"]),
                         helper.make_node("Gemm", ["r", "Wb", "Bb"], ["l"], transB=1),
                         helper.make_node("Softmax", ["l"], ["y"], axis=1)],
                        [vi("x", ["N", 32])], [vi("y", ["N", 10])],
                        {"Wa": Wa, "Ba": Ba, "Wb": Wb, "Bb": Bb}, "mlp"))

# The benchmark's larger CNN (tools/bench/ml_bench.cpp): 3x96x96, three Conv+Relu+MaxPool
# stages (16, 32, 64 channels), GlobalAveragePool, Gemm, Softmax; ~25 M multiply-adds.
C1, C2, C3, G = f32(16, 3, 3, 3) * 0.3, f32(32, 16, 3, 3) * 0.1, f32(64, 32, 3, 3) * 0.1, f32(10, 64)
write("cnn96.onnx", model([
    helper.make_node("Conv", ["x", "C1"], ["a1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    helper.make_node("Relu", ["a1"], ["b1"]),
    helper.make_node("MaxPool", ["b1"], ["c1"], kernel_shape=[2, 2], strides=[2, 2]),
    helper.make_node("Conv", ["c1", "C2"], ["a2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    helper.make_node("Relu", ["a2"], ["b2"]),
    helper.make_node("MaxPool", ["b2"], ["c2"], kernel_shape=[2, 2], strides=[2, 2]),
    helper.make_node("Conv", ["c2", "C3"], ["a3"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    helper.make_node("Relu", ["a3"], ["b3"]),
    helper.make_node("GlobalAveragePool", ["b3"], ["g"]),
    helper.make_node("Flatten", ["g"], ["f"], axis=1),
    helper.make_node("Gemm", ["f", "G"], ["l"], transB=1),
    helper.make_node("Softmax", ["l"], ["y"], axis=1)],
    [vi("x", ["N", 3, 96, 96])], [vi("y", ["N", 10])], {"C1": C1, "C2": C2, "C3": C3, "G": G}, "cnn96"))

# A realistic small classifier (ml_inference_test's mobilenet case, ml_bench's "mobilenet"
# leg): MobileNet v1 at width 0.5 on 3x128x128 images, as devices run them: a stride-2
# Conv, 13 depthwise-separable blocks (3x3 depthwise Conv, group = channels, and 1x1
# pointwise Conv, each with BatchNormalization and Relu: OpenCV 4.6 reads only the opset-6
# Clip, with attributes, so not ReLU6 as Clip(0, 6) at opset 11), GlobalAveragePool,
# Flatten, Gemm to 1000 classes, Softmax; ~49 M multiply-adds, 1.3 M weights. He-scaled
# weights and batch statistics near (0, 1) keep the activations in range through the
# 27 layers. Its numpy reference is conv_fast's, per kernel offset (fast enough for 128x128).
mb_nodes, mb_inits, mb_layers = [], {}, []
def mb_conv(src, cin, cout, k, stride, group, tag):
    w = (rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / (cin // group * k * k))).astype(np.float32)
    s = (1 + 0.1 * rng.standard_normal(cout)).astype(np.float32)
    b = (0.1 * rng.standard_normal(cout)).astype(np.float32)
    m = (0.1 * rng.standard_normal(cout)).astype(np.float32)
    v = (1 + 0.2 * np.abs(rng.standard_normal(cout))).astype(np.float32)
    names = [tag + "_" + a for a in ("w", "s", "b", "m", "v")]
    mb_inits.update(zip(names, (w, s, b, m, v)))
    mb_nodes.extend([
        helper.make_node("Conv", [src, names[0]], [tag + "_c"], kernel_shape=[k, k], strides=[stride, stride],
                         pads=[k // 2] * 4, group=group),
        helper.make_node("BatchNormalization", [tag + "_c"] + names[1:], [tag + "_n"], epsilon=1e-5),
        helper.make_node("Relu", [tag + "_n"], [tag])])
    mb_layers.append((w, stride, k // 2, group, s, b, m, v))
    return tag


t, c = mb_conv("x", 3, 16, 3, 2, 1, "conv0"), 16
for i, (cout, stride) in enumerate([(32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (256, 1),
                                    (256, 1), (256, 1), (256, 1), (512, 2), (512, 1)]):
    t = mb_conv(t, c, c, 3, stride, c, "dw%d" % (i + 1))
    t, c = mb_conv(t, c, cout, 1, 1, 1, "pw%d" % (i + 1)), cout
# Scaled so the logits spread as a trained classifier's do (std ~3): a peaked Softmax, so the
# comparison within 1e-4 checks more than a flat 1/1000.
Wfc, Bfc = (rng.standard_normal((1000, c)) * 14 / np.sqrt(c)).astype(np.float32), (0.01 * rng.standard_normal(1000)).astype(np.float32)
mb_inits["fc_w"], mb_inits["fc_b"] = Wfc, Bfc
mb_nodes.extend([helper.make_node("GlobalAveragePool", [t], ["gap"]),
                 helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
                 helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1),
                 helper.make_node("Softmax", ["logits"], ["prob"], axis=1)])
mb_path, mb_digest = write("mobilenet.onnx", model(mb_nodes, [vi("x", ["N", 3, 128, 128])], [vi("prob", ["N", 1000])],
                                                   mb_inits, "mobilenet_v1_050_128"))


def mobilenet_ref(x):
    y = x.astype(np.float64)
    for w, stride, pad, group, s, b, m, v in mb_layers:
        y = np.maximum(bn(conv_fast(y, w, stride, pad, group), s, b, m, v), 0)
    return softmax(y.mean(axis=(2, 3)) @ Wfc.T.astype(np.float64) + Bfc)


mb_x = rng.uniform(-1, 1, size=(1, 3, 128, 128)).astype(np.float32)
mobilenet = dict(id="mobilenet", path=mb_path, sha256=mb_digest,
                 manifest=dict(inputs=[dict(name="x", shape=[-1, 3, 128, 128])]),
                 inputs=[dict(name="x", shape=list(mb_x.shape), data=mb_x.ravel().tolist())],
                 outputs=[dict(name="prob", shape=[1, 1000], data=mobilenet_ref(mb_x).astype(np.float32).ravel().tolist())])

# A fully convolutional model whose spatial size is free (manifest [-1, 3, -1, -1]):
# requests of different sizes must not be joined into one batch (ml_inference_test).
Wf, Bf = f32(4, 3, 3, 3), f32(4)
free_path, free_digest = write("free_size.onnx", model(
    [helper.make_node("Conv", ["x", "W", "B"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
     helper.make_node("Relu", ["c"], ["r"]),
     helper.make_node("GlobalAveragePool", ["r"], ["g"]),
     helper.make_node("Flatten", ["g"], ["y"], axis=1)],
    [vi("x", ["N", 3, "H", "W"])], [vi("y", ["N", 4])], {"W": Wf, "B": Bf}, "free_size"))
free_size = dict(path=free_path, sha256=free_digest, sizes=[])
for side in (8, 12):
    fx = f32(1, 3, side, side)
    fy = np.maximum(conv2d(fx, Wf, Bf, 1), 0).mean(axis=(2, 3))
    free_size["sizes"].append(dict(shape=list(fx.shape), data=fx.ravel().tolist(),
                                   output=fy.astype(np.float32).ravel().tolist()))

# A graph with no batch dimension (ReduceSum over axis 0 adds every item into one row) that
# a manifest may still claim one for: joined requests come back as one row, so each request
# must be run alone (ml_inference_test).
Wn = f32(1, 4)
nb_path, nb_digest = write("no_batch.onnx", model(
    [helper.make_node("Mul", ["x", "W"], ["m"]),
     helper.make_node("ReduceSum", ["m"], ["y"], axes=[0], keepdims=1)],
    [vi("x", [1, 4])], [vi("y", [1, 4])], {"W": Wn}, "no_batch"))
nb_x = f32(1, 4)
no_batch = dict(path=nb_path, sha256=nb_digest, input=nb_x.ravel().tolist(),
                output=(nb_x.astype(np.float64) * Wn).astype(np.float32).ravel().tolist())

# Models that must fail: not ONNX, an operator OpenCV 4.6 lacks (Hardmax), and one that
# loads but throws at inference (a fixed Reshape after a Conv of any spatial size).
bad = {}
bad["not_onnx"] = write("not_onnx.onnx", b"this is not an ONNX model\n" * 10)
bad["unsupported"] = write("unsupported.onnx", model(
    [helper.make_node("Hardmax", ["x"], ["y"])], [vi("x", [1, 4])], [vi("y", [1, 4])], {}, "hardmax"))
Wt = f32(2, 1, 3, 3)
bad["throws"] = write("throws.onnx", model(
    [helper.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
     helper.make_node("Reshape", ["c", "shape"], ["y"])],
    [vi("x", [1, 1, "H", "W"])], [vi("y", [1, 32])],
    {"W": Wt, "shape": np.array([1, 32], dtype=np.int64)}, "throws"))

# Image preprocessing (ml_inference_test's image cases) -----------------------------------
# Every option of a manifest's preprocessing (src/preprocess.cpp: resize, mean, scale, std,
# channel order, layout, one or three channels, a free spatial size) and every image
# format the plugin takes (PNG, JPEG, BMP, in the variants their decoders read), each
# driven end to end: the encoded image in an InferRequest, through the plugin, into a probe
# model whose output is its input (Mul by 1), compared with the same image preprocessed here
# in numpy. PNG and BMP are written here from numpy arrays, so the array is the decoded
# image; JPEG is lossy, so its reference decodes the file with PIL (Debian's python3-pil,
# on the libjpeg-turbo that OpenCV's imgcodecs uses too), EXIF orientation applied.
#
# Tolerance, in the tensor's units: 1e-4 (the issue's) plus `levels` of the 0..255 pixel
# scale times |scale| / the smallest std. 0 levels where the pixels are exact (no resize;
# the image's own channels, alpha dropped, gray repeated into three); 1 level for a resize
# (preprocess.cpp resizes the 8-bit image, as OpenCV's blobFromImage and PIL-based
# pipelines do: OpenCV's INTER_LINEAR weighs with 11-bit fixed-point weights and rounds to
# 8 bits, where numpy's bilinear here is exact, with the same half-pixel centres and edges
# clamped; up to 0.8 level measured); 1.5 levels for a colour PNG or BMP into a one-channel
# model (each decoder has a fixed-point luma of its own, 0.299 R + 0.587 G + 0.114 B here,
# unrounded: OpenCV's BMP rounds it, within 0.5 level, libpng truncates it, below by up to
# 1.03 levels); 2.5 for both.
from PIL import Image, ImageOps

pp_rng = np.random.default_rng(1718)  # its own: the cases above keep their values
PW, PH = 24, 16                       # not square: a width and height swapped shows
pp_rgb = pp_rng.integers(0, 256, size=(PH, PW, 3), dtype=np.uint8)
pp_gray = pp_rng.integers(0, 256, size=(PH, PW), dtype=np.uint8)
pp_palette = pp_rng.integers(0, 256, size=(256, 3), dtype=np.uint8)
pp_index = pp_rng.integers(0, 256, size=(PH, PW), dtype=np.uint8)


def png_any(a, ctype, depth=8, plte=None):
    """A PNG of colour type ctype (0 gray, 2 RGB, 3 palette, 4 gray+alpha, 6 RGBA)."""
    h, w = a.shape[:2]
    rows = (a.astype(">u2") if depth == 16 else a.astype(np.uint8)).reshape(h, -1)
    raw = b"".join(b"\x00" + rows[y].tobytes() for y in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0))
            + (chunk(b"PLTE", plte.astype(np.uint8).tobytes()) if plte is not None else b"")
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def bmp_any(rgb=None, bits=24, top_down=False, os2=False, index=None, palette=None):
    """An uncompressed BMP: 24 or 32 bits of BGR(X), or 8 bits of index into palette; rows
    bottom-up unless top_down; os2: the 12-byte BITMAPCOREHEADER of OS/2 (24 bits)."""
    h, w = (rgb if index is None else index).shape[:2]
    if bits == 8:
        pix, pal = index, np.concatenate([palette[:, ::-1], np.zeros((len(palette), 1), np.uint8)], 1).tobytes()
    else:
        pix, pal = rgb[:, :, ::-1], b""
        if bits == 32:  # the fourth byte is not alpha in BI_RGB: random, to be ignored
            pix = np.concatenate([pix, pp_rng.integers(0, 256, (h, w, 1), dtype=np.uint8)], 2)
    stride = (w * bits // 8 + 3) // 4 * 4
    rows = [np.ascontiguousarray(pix[y]).tobytes().ljust(stride, b"\x00") for y in range(h)]
    data = b"".join(rows if top_down else rows[::-1])
    if os2:
        info = struct.pack("<IHHHH", 12, w, h, 1, bits)
    else:
        info = struct.pack("<IiiHHIIiiII", 40, w, -h if top_down else h, 1, bits, 0, len(data), 2835, 2835,
                           len(palette) if bits == 8 else 0, 0)
    off = 14 + len(info) + len(pal)
    return b"BM" + struct.pack("<IHHI", off + len(data), 0, 0, off) + info + pal + data


def jpeg(a, **kw):
    buf = io.BytesIO()
    (a if isinstance(a, Image.Image) else Image.fromarray(a)).save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def pil_decode(data, mode):
    """The JPEG decoded by PIL, turned as its EXIF orientation says; "L": libjpeg's own gray
    (the Y channel, what a gray decode of a colour JPEG gives)."""
    im = Image.open(io.BytesIO(data))
    im.draft(mode, im.size)
    return np.asarray(ImageOps.exif_transpose(im).convert(mode))


def luma(rgb):
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


# name: bytes, decoded RGB, decoded gray, levels of the gray (1.5 when it is a colour image's luma).
pp_images = {}
def pp_image(name, data, rgb=None, gray=None):
    path, _ = write("pp_" + name + "." + ("png" if data[:4] == b"\x89PNG" else "bmp" if data[:2] == b"BM" else "jpg"), data)
    levels = 0
    if gray is None:
        gray, levels = luma(rgb), 1.5
    if rgb is None:
        rgb = np.repeat(np.asarray(gray)[:, :, None], 3, axis=2)
    pp_images[name] = dict(path=path, rgb=rgb, gray=gray, gray_levels=levels, data=data)


rgba = np.concatenate([pp_rgb, pp_rng.integers(0, 256, (PH, PW, 1), dtype=np.uint8)], 2)
graya = np.stack([pp_gray, pp_rng.integers(0, 256, (PH, PW), dtype=np.uint8)], 2)
rgb16 = pp_rgb.astype(np.uint16) * 256 + pp_rng.integers(0, 256, (PH, PW, 3), dtype=np.uint16)
pp_image("png_rgb", png_any(pp_rgb, 2), rgb=pp_rgb)
pp_image("png_gray", png_any(pp_gray, 0), gray=pp_gray)
pp_image("png_rgba", png_any(rgba, 6), rgb=pp_rgb)             # alpha dropped, not blended
pp_image("png_graya", png_any(graya, 4), gray=pp_gray)
pp_image("png_palette", png_any(pp_index, 3, plte=pp_palette), rgb=pp_palette[pp_index])
pp_image("png_rgb16", png_any(rgb16, 2, depth=16), rgb=pp_rgb)  # 16 bits: the high byte
pp_image("bmp24", bmp_any(pp_rgb), rgb=pp_rgb)
pp_image("bmp24_top_down", bmp_any(pp_rgb, top_down=True), rgb=pp_rgb)
pp_image("bmp32", bmp_any(pp_rgb, bits=32), rgb=pp_rgb)
pp_image("bmp8", bmp_any(bits=8, index=pp_index, palette=pp_palette), rgb=pp_palette[pp_index])
pp_image("bmp_os2", bmp_any(pp_rgb, os2=True), rgb=pp_rgb)
for name, data in (("jpeg", jpeg(pp_rgb)), ("jpeg_progressive", jpeg(pp_rgb, progressive=True))):
    pp_image(name, data, rgb=pil_decode(data, "RGB"), gray=pil_decode(data, "L"))
data = jpeg(pp_gray)
pp_image("jpeg_gray", data, gray=pil_decode(data, "L"))
# EXIF orientation 6 (turn 90 degrees clockwise to show): decoded 16 wide and 24 high.
exif = Image.Exif()
exif[0x0112] = 6
data = jpeg(pp_rgb, exif=exif.tobytes())
pp_image("jpeg_exif_rotated", data, rgb=pil_decode(data, "RGB"), gray=pil_decode(data, "L"))
assert pp_images["jpeg_exif_rotated"]["rgb"].shape == (PW, PH, 3)
# Stray bytes between markers (libjpeg's warning "N extraneous bytes before marker"), which
# some encoders write and PIL reads past: before the frame header, and between the scan and
# the end marker. Decoded as PIL decodes them: the clean JPEG's pixels.
j = pp_images["jpeg"]["data"]
sof = j.find(b"\xff\xc0")
assert sof > 0
for name, data in (("jpeg_stray_header", j[:sof] + b"\x00\x11\x55" + j[sof:]),
                   ("jpeg_stray_end", j[:-2] + b"\x55" * 64 + b"\xff\xd9")):
    pp_image(name, data, rgb=pil_decode(data, "RGB"), gray=pil_decode(data, "L"))
    assert (pp_images[name]["rgb"] == pp_images["jpeg"]["rgb"]).all()

# Images the plugin must refuse, with the reason (ml_inference_test names the error):
# a JPEG cut inside its scan (libjpeg decodes it with a warning, the rest gray); a JPEG
# that still reaches its end marker but whose data is corrupt (libjpeg warns and decodes
# it too): the scan cut in the middle and closed with the end marker; a BMP cut
# in its pixels, a PNG whose IDAT fails its CRC, and a PPM (OpenCV reads it; the plugin
# takes PNG, JPEG and BMP only).
j, b, p = pp_images["jpeg"]["data"], pp_images["bmp24"]["data"], pp_images["png_rgb"]["data"]
sos = j.rfind(b"\xff\xda")
idat = p.find(b"IDAT")
pp_bad_images = {
    "jpeg_cut": write("pp_bad_cut.jpg", j[:(sos + len(j)) // 2])[0],
    "jpeg_cut_closed": write("pp_bad_cut_closed.jpg", j[:(sos + len(j)) // 2] + b"\xff\xd9")[0],
    "bmp_cut": write("pp_bad_cut.bmp", b[:len(b) // 2])[0],
    "png_crc": write("pp_bad_crc.png", p[:idat + 10] + bytes([p[idat + 10] ^ 0xff]) + p[idat + 11:])[0],
    "ppm": write("pp_bad.ppm", b"P6\n24 16\n255\n" + pp_rgb.tobytes())[0],
}


def bilinear(a, w, h):
    """a (rows, columns, channels) resized to w x h: half-pixel centres, edges clamped."""
    def taps(n_out, n_in):
        f = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
        i0 = np.floor(f).astype(int)
        return i0, np.minimum(i0 + 1, n_in - 1), f - i0
    y0, y1, fy = taps(h, a.shape[0])
    x0, x1, fx = taps(w, a.shape[1])
    fx, fy = fx[None, :, None], fy[:, None, None]
    top = a[y0][:, x0] * (1 - fx) + a[y0][:, x1] * fx
    bottom = a[y1][:, x0] * (1 - fx) + a[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy


# The probe models: y = x * 1, x of the manifest's shape (-1: free), and their manifests.
pp_models = {}
def pp_model(mid, shape, pre=None, onnx_of=None):
    if onnx_of is None:
        dims = [d if d != -1 else "d%d" % i for i, d in enumerate(shape)]
        path, digest = write(mid + ".onnx", model([helper.make_node("Mul", ["x", "one"], ["y"])], [vi("x", dims)],
                                                  [vi("y", dims)], {"one": np.ones([1], np.float32)}, mid))
    else:  # a manifest that is refused: the file is another probe's
        path, digest = pp_models[onnx_of]["path"], pp_models[onnx_of]["sha256"]
    man = dict(inputs=[dict(name="x", shape=shape)])
    if pre is not None:
        man["preprocessing"] = pre
    pp_models[mid] = dict(id=mid, path=path, sha256=digest, manifest=man)


pp_model("pp_rgb", [1, 3, PH, PW], dict(width=PW, height=PH, mean=[120.0, 110.0, 100.0], scale=0.015625,
                                        std=[0.5, 1.0, 2.0], channel_order="rgb", layout="nchw"))
pp_model("pp_defaults", [1, 3, PH, PW], dict(width=PW, height=PH))  # rgb, nchw, no mean, scale 1
pp_model("pp_bgr_nhwc", [1, PH, PW, 3], dict(width=PW, height=PH, mean=[127.5], scale=0.00392156862745098,
                                             channel_order="bgr", layout="nhwc"))
pp_model("pp_gray", [1, 1, PH, PW], dict(width=PW, height=PH, mean=[128.0], scale=0.0078125, std=[0.25]))
pp_model("pp_gray_nhwc", [1, PH, PW, 1], dict(width=PW, height=PH, scale=0.00392156862745098, layout="nhwc"))
pp_model("pp_up", [1, 3, 30, 40], dict(width=40, height=30, mean=[100.0, 0.0, 50.0], scale=0.03125,
                                       channel_order="bgr"))
pp_model("pp_down", [1, 7, 10, 3], dict(width=10, height=7, std=[64.0, 32.0, 16.0], layout="nhwc"))
pp_model("pp_half", [1, 3, 8, 12], dict(width=12, height=8, mean=[127.5], scale=0.0078125))
pp_model("pp_free", [-1, 3, -1, -1], dict(width=20, height=20, mean=[10.0, 20.0, 30.0], scale=0.0625))
pp_model("pp_gray_resize", [1, 1, 10, 15], dict(width=15, height=10, scale=0.00390625))
pp_model("pp_portrait", [1, 3, PW, PH], dict(width=PH, height=PW, mean=[127.5], scale=0.0078125))
pp_model("pp_none", [1, 3, PH, PW])  # no preprocessing: images refused
# Manifests refused at load (the model FAILED with the reason, the others serving).
pp_model("pp_bad_4ch", [1, 4, PH, PW], dict(width=PW, height=PH), onnx_of="pp_rgb")
pp_model("pp_bad_2ch_nhwc", [1, PH, PW, 2], dict(width=PW, height=PH, layout="nhwc"), onnx_of="pp_rgb")
pp_model("pp_bad_gray_3mean", [1, 1, PH, PW], dict(width=PW, height=PH, mean=[1.0, 2.0, 3.0]), onnx_of="pp_rgb")
pp_model("pp_bad_2std", [1, 3, PH, PW], dict(width=PW, height=PH, std=[1.0, 2.0]), onnx_of="pp_rgb")
pp_model("pp_bad_size", [1, 3, PH, PW], dict(width=32, height=PH), onnx_of="pp_rgb")


def pp_reference(img, man):
    """The image preprocessed as the manifest says, in numpy; and its levels of tolerance."""
    pre, shape = man["preprocessing"], man["inputs"][0]["shape"]
    nchw = pre.get("layout", "nchw") == "nchw"
    channels = shape[1] if nchw else shape[3]
    pix = (img["rgb"] if channels == 3 else np.asarray(img["gray"])[:, :, None]).astype(np.float64)
    levels = img["gray_levels"] if channels == 1 else 0
    if pix.shape[:2] != (pre["height"], pre["width"]):
        pix, levels = bilinear(pix, pre["width"], pre["height"]), levels + 1
    if channels == 3 and pre.get("channel_order", "rgb") == "bgr":
        pix = pix[:, :, ::-1]
    mean, std = np.array(pre.get("mean") or [0.0]), np.array(pre.get("std") or [1.0])
    v = (pix - mean) * pre.get("scale", 1.0) / std
    return (v.transpose(2, 0, 1) if nchw else v)[None], 1e-4 + levels * abs(pre.get("scale", 1.0)) / std.min()


pp_cases = []
def pp_case(mid, name):
    ref, tol = pp_reference(pp_images[name], pp_models[mid]["manifest"])
    pp_cases.append(dict(model=mid, image=pp_images[name]["path"], what=name + " through " + mid,
                         shape=list(ref.shape), data=ref.astype(np.float32).ravel().tolist(), tolerance=tol))


for name in pp_images:  # every format and variant, three channels, every option but resize
    if name != "jpeg_exif_rotated":
        pp_case("pp_rgb", name)
for name in ("png_gray", "png_graya", "jpeg_gray", "png_rgb", "png_palette", "bmp24", "bmp8", "jpeg"):
    pp_case("pp_gray", name)  # one channel: gray as it is, colour by luma
for mid, name in (("pp_defaults", "png_rgb"), ("pp_bgr_nhwc", "png_rgb"), ("pp_bgr_nhwc", "jpeg"),
                  ("pp_gray_nhwc", "png_gray"), ("pp_gray_nhwc", "bmp24"), ("pp_up", "png_rgb"),
                  ("pp_down", "png_rgb"), ("pp_down", "bmp24_top_down"), ("pp_half", "png_rgb"),
                  ("pp_free", "jpeg_progressive"), ("pp_gray_resize", "png_rgb"),
                  ("pp_portrait", "jpeg_exif_rotated")):
    pp_case(mid, name)
# JPEGs that the plugin's own decode (jpeg_check.cpp) must turn into OpenCV imdecode's
# pixels exactly (ml_inference_test compares the two): each EXIF orientation, in both byte
# orders, CMYK, gray, progressive, 4:2:0 and 4:4:4 sampling, an odd size, stray bytes.
def exif_tiff(orientation, order):
    e = order + (b"\x2a\x00\x08\x00\x00\x00" if order == b"II" else b"\x00\x2a\x00\x00\x00\x08")
    pk = (lambda f, *v: struct.pack("<" + f, *v)) if order == b"II" else (lambda f, *v: struct.pack(">" + f, *v))
    # Two entries: XResolution's tag first (its value elsewhere: not read), then the orientation.
    return b"Exif\x00\x00" + e + pk("H", 2) + pk("HHI", 0x011A, 5, 1) + pk("I", 0) \
        + pk("HHI", 0x0112, 3, 1) + pk("H", orientation) + b"\x00\x00" + pk("I", 0)
odd = pp_rng.integers(0, 256, size=(13, 19, 3), dtype=np.uint8)
jpeg_vs_opencv = {}
for o in range(1, 9):
    for order in (b"II", b"MM"):
        jpeg_vs_opencv["exif%d_%s" % (o, order.decode())] = jpeg(odd, exif=exif_tiff(o, order))
jpeg_vs_opencv.update({
    "cmyk": jpeg(Image.fromarray(pp_rgb).convert("CMYK")),
    "cmyk_exif6": jpeg(Image.fromarray(odd).convert("CMYK"), exif=exif_tiff(6, b"II")),
    "gray": pp_images["jpeg_gray"]["data"],
    "progressive": pp_images["jpeg_progressive"]["data"],
    "sampling_444": jpeg(odd, subsampling=0),
    "sampling_420": jpeg(odd, subsampling=2),
    "stray_header": pp_images["jpeg_stray_header"]["data"],
    "pil_exif6": pp_images["jpeg_exif_rotated"]["data"],
})
jpeg_vs_opencv = {k: write("cv_" + k + ".jpg", v)[0] for k, v in jpeg_vs_opencv.items()}
preprocessing = dict(models=list(pp_models.values()), cases=pp_cases, bad_images=pp_bad_images,
                     images={k: v["path"] for k, v in pp_images.items()},
                     jpeg_vs_opencv=jpeg_vs_opencv)

with open(os.path.join(OUT, "index.json"), "w") as f:
    json.dump(dict(big_png=big_png, cases=cases, mobilenet=mobilenet, free_size=free_size, no_batch=no_batch,
                   bad={k: dict(path=p, sha256=d) for k, (p, d) in bad.items()}, preprocessing=preprocessing), f)
