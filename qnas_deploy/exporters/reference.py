"""The numpy reference executor of the integer graph: the golden model of every parity test.

Quantized convolutions run in integers: ``acc = sum (q - zp_in) * w + bias`` in int64
(never overflowing int32 for these sizes), then the requantisation onnxruntime's
QLinearConv performs: ``clip(rint(float32(acc) * M) + zp_out)`` with the float32
multiplier ``M = s_in * s_w[c] / s_out`` (FACTS.md section 5), rounding half to even.
Elementwise operations compute the real values in float32 from their integer inputs
and quantize the result with ``rint(v / s_out)``, exactly as the fake-quant model does.
"""
from __future__ import annotations

import functools

import numpy as np

from .ir import Graph, Node, Tensor

F32 = np.float32


ARITHMETIC = ("torch", "ort", "xnnpack", "tflite", "tflite_int4")


def run(graph: Graph, image: np.ndarray, arithmetic: str = "torch") -> np.ndarray:
    """Run ``graph`` on ``image``: uint8 ``[N, 3, H, W]`` (or ``[3, H, W]``); returns uint8.

    ``arithmetic="ort"`` computes the 8-bit residual additions as onnxruntime's x86
    QLinearAdd kernel does (float32 fused multiply-adds, see :func:`qlinear_add_ort`) and requantisations
    as the identity QLinearConv the ONNX file holds (``rint(k * f32(s_in / s_out))``)
    instead of in float as the fake-quant model does (``rint(f32(k * s_in) / s_out)``).
    The two differ only where a value lies within float rounding of a tie.
    ``"xnnpack"`` is LiteRT with its XNNPACK delegate: onnxruntime's conv arithmetic,
    XNNPACK's fixed-point add, and TFLite's builtin integer bilinear resize (the resize
    takes a computed size, which XNNPACK does not delegate). ``"tflite"`` is LiteRT's
    builtin kernels: every requantisation in gemmlowp fixed point (``tflite_fixed.py``);
    ``"tflite_int4"`` the same for a file written with ``int4="packed"``, whose 4-bit
    filters are not widened (``tflite.widen``).
    """
    squeeze = image.ndim == 3
    values = run_tensors(graph, image[None] if squeeze else image, arithmetic)
    out = _to_uint8(graph.tensor(graph.output), values[graph.output])
    return out[0] if squeeze else out


def run_tensors(graph: Graph, image: np.ndarray, arithmetic: str = "torch") -> dict[str, np.ndarray]:
    """Every tensor's value (integers for quantized tensors), for debugging and tests."""
    if arithmetic not in ARITHMETIC:
        raise ValueError(f"arithmetic must be one of {ARITHMETIC}, got {arithmetic!r}")
    ops = _operations(arithmetic)
    values = {graph.input: _input(graph.tensor(graph.input), image)}
    for node in graph.nodes:
        values[node.output] = ops[node.op](graph, node, values)
    return values


def runner(graph: Graph, arithmetic: str = "torch"):
    """A runner (``infer.py``): uint8 HxWx3 image in, uint8 upscaled image out."""
    def run_one(lr: np.ndarray) -> np.ndarray:
        y = run(graph, np.ascontiguousarray(lr.transpose(2, 0, 1)), arithmetic)
        return np.ascontiguousarray(y.transpose(1, 2, 0))
    return run_one


# helpers ---------------------------------------------------------------------------------

def _input(t: Tensor, x: np.ndarray) -> np.ndarray:
    if x.dtype != np.uint8:
        raise ValueError("the reference executor takes uint8 images")
    if t.quantized:  # the input grid is 1/255 with zero point 0: uint8 pixels are its integers
        return x.astype(np.int32)
    return x.astype(F32) / F32(255.0)


def _to_uint8(t: Tensor, v: np.ndarray) -> np.ndarray:
    if t.quantized:
        return np.clip(v, 0, 255).astype(np.uint8)
    return np.clip(np.rint(v * F32(255.0)), 0, 255).astype(np.uint8)


def real(t: Tensor, v: np.ndarray) -> np.ndarray:
    """Real values of a tensor, in float32 (dequantization)."""
    if not t.quantized:
        return v.astype(F32)
    return (v - t.zero_point).astype(F32) * F32(t.scale)


def quantize(t: Tensor, v: np.ndarray) -> np.ndarray:
    """Real float32 values onto the grid of ``t`` (``rint(v / s) + zp``, clipped)."""
    if not t.quantized:
        return v.astype(F32)
    q = np.rint(v.astype(F32) / F32(t.scale)).astype(np.int64) + t.zero_point
    return np.clip(q, t.qmin, t.qmax).astype(np.int32)


def _conv_int(x: np.ndarray, w: np.ndarray, stride: int, pad, dilation: int, groups: int) -> np.ndarray:
    """Integer (or float) 2-D convolution by im2col, NCHW; zero padding."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    ph, pw = pad
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    ho = (h + 2 * ph - dilation * (kh - 1) - 1) // stride + 1
    wo = (wd + 2 * pw - dilation * (kw - 1) - 1) // stride + 1
    og = o // groups
    integer = np.issubdtype(x.dtype, np.integer)
    # Integer convs accumulate in float64, which BLAS multiplies (numpy's int64 einsum does
    # not): every product and partial sum is an integer below 2^53, so the result is exact.
    exact_in_f64 = integer and (float(np.abs(x).max(initial=0)) * float(np.abs(w).max(initial=0))
                                * cg * kh * kw < 2.0 ** 53)
    acc_dtype = np.float64 if exact_in_f64 else (np.int64 if integer else np.float32)
    out = np.zeros((n, o, ho, wo), dtype=acc_dtype)
    for g in range(groups):
        xg = xp[:, g * cg:(g + 1) * cg]
        wg = w[g * og:(g + 1) * og].astype(acc_dtype)
        for i in range(kh):
            for j in range(kw):
                patch = xg[:, :, i * dilation: i * dilation + stride * (ho - 1) + 1: stride,
                           j * dilation: j * dilation + stride * (wo - 1) + 1: stride].astype(acc_dtype)
                out[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, wg[:, :, i, j], optimize=True)
    return out.astype(np.int64) if exact_in_f64 else out


def _conv(graph: Graph, node: Node, values: dict) -> np.ndarray:
    a = node.attrs
    xt, yt = graph.tensor(node.inputs[0]), graph.tensor(node.output)
    x = values[node.inputs[0]]
    if a.get("float"):
        xr = real(xt, x)
        if a.get("relu_in"):
            xr = np.maximum(xr, 0)
        y = _conv_int(xr, a["weight"], a["stride"], a["pad"], a["dilation"], a["groups"])
        y = y + a["bias"].reshape(1, -1, 1, 1).astype(F32)
        return quantize(yt, y.astype(F32) * F32(a["mult"]) if a["mult"] != 1.0 else y.astype(F32))
    acc = _conv_int(x.astype(np.int64) - xt.zero_point, a["weight"], a["stride"], a["pad"], a["dilation"], a["groups"])
    acc = acc + a["bias"].astype(np.int64).reshape(1, -1, 1, 1)
    w_scale = (a["w_scale"].astype(F32) * F32(a["mult"])).astype(F32)
    if not yt.quantized:  # into a float layer
        return acc.astype(F32) * (F32(xt.scale) * w_scale).reshape(1, -1, 1, 1)
    m = ((F32(xt.scale) * w_scale) / F32(yt.scale)).astype(F32)
    q = np.rint(acc.astype(F32) * m.reshape(1, -1, 1, 1)).astype(np.int64)
    return np.clip(q + yt.zero_point, yt.qmin, yt.qmax).astype(np.int32)


def _elementwise(fn):
    def op(graph: Graph, node: Node, values: dict) -> np.ndarray:
        ins = [real(graph.tensor(i), values[i]) for i in node.inputs]
        v = fn(*ins).astype(F32)
        mult = node.attrs.get("mult", 1.0)
        if mult != 1.0:
            v = (v * F32(mult)).astype(F32)
        return quantize(graph.tensor(node.output), v)
    return op


def _requant(graph, node, values):
    return quantize(graph.tensor(node.output), real(graph.tensor(node.inputs[0]), values[node.inputs[0]]))


def _concat(graph, node, values):
    yt = graph.tensor(node.output)
    parts = []
    for i in node.inputs:
        t, v = graph.tensor(i), values[i]
        parts.append(v if t.quantized and t.same_grid(yt) else quantize(yt, real(t, v)))
    return np.concatenate(parts, axis=1)


def _depth_to_space(graph, node, values):
    v = values[node.inputs[0]]
    r = node.attrs["blocksize"]
    n, c, h, w = v.shape
    if node.attrs.get("mode", "CRD") == "DCR":
        v = v.reshape(n, r, r, c // (r * r), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        v = v.reshape(n, c // (r * r), r, r, h, w).transpose(0, 1, 4, 2, 5, 3)
    return v.reshape(n, c // (r * r), h * r, w * r)


def _tile(graph, node, values):
    return np.tile(values[node.inputs[0]], (1, node.attrs["times"], 1, 1))


def _max_pool(graph, node, values):
    v = values[node.inputs[0]]
    k, s = node.attrs["kernel"], node.attrs["stride"]
    n, c, h, w = v.shape
    ho, wo = (h - k) // s + 1, (w - k) // s + 1
    out = np.full((n, c, ho, wo), np.iinfo(np.int32).min if np.issubdtype(v.dtype, np.integer) else -np.inf,
                  dtype=v.dtype)
    for i in range(k):
        for j in range(k):
            out = np.maximum(out, v[:, :, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s])
    return out


def bilinear(v: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """onnxruntime's float Resize (linear, half_pixel, CPU provider), which the model's ESA
    computes too (``spaces.rfdn.bilinear``): source coordinates
    ``(o + 0.5) / (out / in) - 0.5`` clamped to the image, four corner weights formed as
    products ``dx * dy`` and summed in the order X11, X21, X12, X22, each step in float32.
    Other operation orders (PyTorch's kernel) differ in the last bits only, which is enough
    to move a value across a rounding boundary of the next quantizer."""
    n, c, h, w = v.shape
    oh, ow = size

    def axis(o, i):
        src = ((np.arange(o, dtype=F32) + F32(0.5)) / F32(F32(o) / F32(i)) - F32(0.5)).astype(F32)
        src = np.clip(src, F32(0), F32(i - 1)).astype(F32)
        i1 = np.minimum(src.astype(np.int64), i - 1)
        i2 = np.minimum(i1 + 1, i - 1)
        d1 = np.abs(src - i1.astype(F32)).astype(F32)
        d2 = np.abs(src - i2.astype(F32)).astype(F32)
        same = i1 == i2
        d1[same], d2[same] = F32(0.5), F32(0.5)
        return i1, i2, d1, d2

    y1, y2, dy1, dy2 = axis(oh, h)
    x1, x2, dx1, dx2 = axis(ow, w)
    v = v.astype(F32)
    out = np.zeros((n, c, oh, ow), F32)
    for ys, dy in ((y1, dy2), (y2, dy1)):
        for xs, dx in ((x1, dx2), (x2, dx1)):
            coef = (dy[:, None] * dx[None, :]).astype(F32)
            out = (out + (coef * v[:, :, ys][:, :, :, xs]).astype(F32)).astype(F32)
    return out


def _resizer(kernel):
    def op(graph, node, values):
        xt = graph.tensor(node.inputs[0])
        ref = values[node.inputs[1]]
        v = kernel(real(xt, values[node.inputs[0]]), ref.shape[-2:])
        return quantize(graph.tensor(node.output), v)
    return op


_resize = _resizer(bilinear)


def _sigmoid(graph, node, values):
    v = real(graph.tensor(node.inputs[0]), values[node.inputs[0]])
    return quantize(graph.tensor(node.output), (F32(1) / (F32(1) + np.exp(-v))).astype(F32))


def _adq_scale(graph, node, values):
    v = real(graph.tensor(node.inputs[0]), values[node.inputs[0]])
    std = v.reshape(v.shape[0], -1).astype(np.float64).std(axis=1, ddof=1).astype(F32)
    return (F32(node.attrs["a"]) * std + F32(node.attrs["c"])).reshape(-1, 1, 1, 1).astype(F32)


def _relu(graph, node, values):
    return quantize(graph.tensor(node.output), np.maximum(real(graph.tensor(node.inputs[0]), values[node.inputs[0]]), 0))


_OPS = {
    "conv": _conv,
    "requant": _requant,
    "add": _elementwise(lambda a, b: a + b),
    "mul": _elementwise(lambda a, b: a * b),
    "concat": _concat,
    "depth_to_space": _depth_to_space,
    "tile": _tile,
    "max_pool": _max_pool,
    "resize": _resize,
    "sigmoid": _sigmoid,
    "adq_scale": _adq_scale,
    "relu": _relu,
}


def qlinear_add_ort(a: np.ndarray, sa: float, za: int, b: np.ndarray, sb: float, zb: int,
                    sc: float, zc: int) -> np.ndarray:
    """onnxruntime's uint8 QLinearAdd on x86 (MLAS ``qladd_avx2.cpp``).

    In float32: ``fixed = zc - (ra * za + rb * zb)`` with ``ra = sa / sc``, then two
    fused multiply-adds on the raw uint8 values, ``a * ra + (b * rb + fixed)``, each
    rounded once, and ``cvtps`` rounding half to even. It differs from float addition of
    the dequantized values only near ties. ``fma`` is computed in float64 and rounded to
    float32: the products of an 8-bit integer and a float32 are exact in float64.
    """
    ra, rb = F32(F32(sa) / F32(sc)), F32(F32(sb) / F32(sc))
    fixed = F32(F32(zc) - F32(F32(ra * F32(za)) + F32(rb * F32(zb))))
    t = (b.astype(np.float64) * np.float64(rb) + np.float64(fixed)).astype(F32)
    c = (a.astype(np.float64) * np.float64(ra) + t.astype(np.float64)).astype(F32)
    return np.clip(np.rint(c), 0, 255).astype(np.int32)


def _add_ort(graph, node, values):
    ta, tb, tc = (graph.tensor(n) for n in (*node.inputs, node.output))
    if (ta.quantized and tb.quantized and tc.quantized and node.attrs.get("mult", 1.0) == 1.0
            and tc.qmin == 0 and tc.qmax == 255):
        return qlinear_add_ort(values[node.inputs[0]], ta.scale, ta.zero_point, values[node.inputs[1]],
                               tb.scale, tb.zero_point, tc.scale, tc.zero_point)
    return _OPS["add"](graph, node, values)


def _requant_ort(graph, node, values):
    xt, yt = graph.tensor(node.inputs[0]), graph.tensor(node.output)
    if not (xt.quantized and yt.quantized):
        return _requant(graph, node, values)
    m = F32(F32(xt.scale) * F32(1.0)) / F32(yt.scale)
    q = np.rint((values[node.inputs[0]] - xt.zero_point).astype(F32) * F32(m)).astype(np.int64) + yt.zero_point
    return np.clip(q, yt.qmin, yt.qmax).astype(np.int32)


_ORT = {**_OPS, "add": _add_ort, "requant": _requant_ort}


def _operations(arithmetic: str) -> dict:
    if arithmetic == "torch":
        return _OPS
    if arithmetic == "ort":
        return _ORT
    # LiteRT's arithmetic lives in tflite_fixed.py, which builds on this module: imported
    # here, on use, so that either module can be imported first.
    from . import tflite_fixed as fx

    if arithmetic == "xnnpack":
        return {**_ORT, "add": fx.add_xnnpack, "resize": fx.resize, "mul": fx.mul_xnnpack}
    conv = fx.conv if arithmetic == "tflite" else functools.partial(fx.conv, packed_int4=True)
    return {**_OPS, "conv": conv, "requant": fx.requant, "add": fx.add, "mul": fx.mul,
            "concat": fx.concat, "resize": fx.resize, "sigmoid": fx.sigmoid}
