"""LiteRT's optimized builtin int8 kernels on aarch64 (``litert.BUILTIN_AARCH64``).

Numpy only, but for one slow test that runs the tie-rich graph below in the emulated
aarch64 LiteRT (``qnas-deploy target setup aarch64``; it skips without it). The golden
digest of that graph's outputs was recorded there, on cortex-a72 (no dot product),
neoverse-n1 (dot product) and max (i8mm, SVE2): the three computed the same bytes.
"""
import hashlib

import numpy as np
import pytest

from qnas_deploy.exporters import reference, targets
from qnas_deploy.exporters.arithmetic import exact, litert
from qnas_deploy.exporters.ir import OPS, Graph, Node, Tensor

M_HALF = 1 << 30            # the Q31 significand of 0.5
_FAST_3X3 = litert.fast_3x3_depthwise


def ruy(x, m, e):
    return litert.ruy_arm64_requantize(np.asarray(x, np.int64), m, e)


def x86(x, m, e):           # ruy's AVX2 kernels and LiteRT's NEON code: two roundings, the last one upward
    return litert.multiply_round_half_up(np.asarray(x, np.int64), m, e)


def gemmlowp(x, m, e):      # the scalar routine (reference kernels, SIMD tails): ties away from zero
    return litert.multiply_by_quantized_multiplier(np.asarray(x, np.int64), m, e)


# CONV_2D: ruy's arm64 kernels (sshl, sqdmulh, srshl) --------------------------------------

def test_ruy_arm64_rounds_once_where_x86_rounds_twice():
    # 0.5 * 2^-8 = 1/512. 255/512 = 0.498 is 0; x86's first rounding makes it 127.5 -> 128,
    # exactly half of 256, which the second rounds up to 1.
    assert ruy([255], M_HALF, -8).tolist() == [0]
    assert x86([255], M_HALF, -8).tolist() == [1]
    # -257/512 = -0.502 is -1; x86: -128.5 -> -128 (up), then -0.5 -> 0 (up).
    assert ruy([-257], M_HALF, -8).tolist() == [-1]
    assert x86([-257], M_HALF, -8).tolist() == [0]


def test_ruy_arm64_ties_round_upward_negative_ones_too():
    x = [256, -256, 768, -768, 1280, -1280]            # +-0.5, +-1.5, +-2.5
    assert ruy(x, M_HALF, -8).tolist() == [1, 0, 2, -1, 3, -2]
    assert x86(x, M_HALF, -8).tolist() == [1, 0, 2, -1, 3, -2]
    assert gemmlowp(x, M_HALF, -8).tolist() == [1, -1, 2, -2, 3, -3]


def test_ruy_arm64_is_the_single_rounding_of_apply_multiplier():
    """ruy's ``MultiplyByQuantizedMultiplier`` (``apply_multiplier.cc``): one rounding
    ``(x * m + 2^(30 - e)) >> (31 - e)``, in Python integers, wherever nothing wraps."""
    rng = np.random.default_rng(0)
    for e in range(-24, 8):
        m = int(rng.integers(1 << 30, 1 << 31))
        bound = 1 << min(29 - max(e, 0), 24)
        x = rng.integers(-bound, bound, 2000)
        want = [(int(v) * m + (1 << (30 - e))) >> (31 - e) for v in x]
        assert ruy(x, m, e).tolist() == want, e


def test_ruy_arm64_shifts_left_one_more_and_wraps():
    """The exponent splits into ``max(e + 1, 0)`` left and ``max(-e, 1)`` right (``smin`` with
    -1): at e = 0 the accumulator is doubled in int32 by ``sshl``, which wraps; 2^30 * 0.5
    comes out negative. (From the instruction semantics: no exported file comes near it.)"""
    assert ruy([(1 << 30) - 1], M_HALF, 0).tolist() == [1 << 29]
    assert ruy([1 << 30], M_HALF, 0).tolist() == [-(1 << 29)]


def test_srdhm_is_arms_sqrdmulh():
    """``SQRDMULH`` is ``(2ab + 2^31) >> 32``: gemmlowp's ``srdhm`` bit for bit, negative ties
    included. So LiteRT's NEON requantisations (DepthwiseConvGeneral's Quantize, ADD, MUL)
    compute on aarch64 what the x86 table computes."""
    rng = np.random.default_rng(1)
    a = np.concatenate([[-3, -1, 1, 3, -5, 5], rng.integers(-(1 << 24), 1 << 24, 5000)])
    b = np.concatenate([[M_HALF] * 6, rng.integers(0, 1 << 31, 5000)])
    assert litert.srdhm(a, b).tolist()[:6] == [-1, 0, 1, 2, -2, 3]
    assert np.array_equal(litert.srdhm(a, b), (2 * a * b + (1 << 31)) >> 32)


# DEPTHWISE_CONV_2D: the aarch64 3x3 kernel ---------------------------------------------

def test_3x3_depthwise_shifts_after_the_multiply():
    """``sqrdmulh`` then ``sqrshl``: a positive shift scales the rounded product, where the
    generic kernels shift the accumulator before multiplying."""
    x = np.array([3, -3, 5, -5])
    assert litert.requantize_3x3_depthwise(x, M_HALF, 1).tolist() == [4, -2, 6, -4]
    assert x86(x, M_HALF, 1).tolist() == [3, -3, 5, -5]
    rng = np.random.default_rng(2)
    y = rng.integers(-(1 << 20), 1 << 20, 3000)
    for e in range(-12, 1):    # not positive: the x86 formula
        assert np.array_equal(litert.requantize_3x3_depthwise(y, 1518500250, e), x86(y, 1518500250, e))


def _conv(weight, *, groups=1, stride=1, pad=(0, 0), dilation=1, w_scale=None, bias=None):
    weight = np.asarray(weight, np.int8)
    o, _, kh, kw = weight.shape
    return OPS["conv"](stride=stride, pad=pad, dilation=dilation, groups=groups, kernel=(kh, kw), weight=weight,
                       w_scale=np.full(o, 0.01, np.float32) if w_scale is None else np.asarray(w_scale, np.float32),
                       bias=np.zeros(o, np.int32) if bias is None else np.asarray(bias, np.int32), w_bits=8)


def _node(attrs):
    return Node("conv", ["x"], "y", attrs, "c")


def test_fast_3x3_depthwise_is_chosen_as_litert_chooses_it():
    fast = litert.fast_3x3_depthwise
    w = np.ones((16, 1, 3, 3))
    assert fast(_node(_conv(w, groups=16, pad=(1, 1))), (9, 9))
    assert fast(_node(_conv(w, groups=16, stride=2, pad=(1, 1))), (9, 9))   # padded by a PAD op
    assert fast(_node(_conv(w, groups=16)), (9, 9))
    assert not fast(_node(_conv(np.ones((12, 1, 3, 3)), groups=12, pad=(1, 1))), (9, 9))  # depth % 8
    assert not fast(_node(_conv(np.ones((16, 1, 1, 1)), groups=16)), (9, 9))
    assert not fast(_node(_conv(w, groups=16, pad=(2, 2), dilation=2)), (9, 9))
    assert not fast(_node(_conv(w, groups=16, stride=3)), (9, 9))
    # padding 1 (in the conv): a 1xN or Nx1 input is not supported, 1x1 is
    assert not fast(_node(_conv(w, groups=16, pad=(1, 1))), (1, 9))
    assert not fast(_node(_conv(w, groups=16, pad=(1, 1))), (9, 1))
    assert fast(_node(_conv(w, groups=16, pad=(1, 1))), (1, 1))
    assert fast(_node(_conv(w, groups=16, stride=2, pad=(1, 1))), (1, 9))   # padding 0 after the PAD op


def test_one_output_pixel_goes_to_litert_gemv_not_ruy():
    gemv = litert.custom_gemv
    assert gemv(_node(_conv(np.ones((4, 8, 1, 1)))), (1, 4, 1, 1))
    assert gemv(_node(_conv(np.ones((4, 1, 3, 3)))), (1, 4, 1, 1))          # 9 filter values
    assert not gemv(_node(_conv(np.ones((3, 8, 1, 1)))), (1, 3, 1, 1))      # fewer than 4 rows
    assert not gemv(_node(_conv(np.ones((4, 7, 1, 1)))), (1, 4, 1, 1))      # fewer than 8 columns
    assert not gemv(_node(_conv(np.ones((4, 8, 1, 1)))), (1, 4, 1, 2))


# the table ---------------------------------------------------------------------------------

def test_the_aarch64_table_replaces_conv_only_and_is_the_targets():
    assert {k for k in litert.BUILTIN if litert.BUILTIN_AARCH64[k] is not litert.BUILTIN[k]} == {"conv"}
    assert reference.ARITHMETIC["litert-builtin-aarch64"] is litert.BUILTIN_AARCH64
    assert targets.get("litert-builtin").arithmetic_on("aarch64") == "litert-builtin-aarch64"


def _one_conv_graph(attrs, c_in):
    t = {"x": Tensor("x", c_in, 2.0 ** -4, 128), "y": Tensor("y", attrs.c_out, 2.0 ** -3, 128)}
    return Graph(t, [_node(attrs)], "x", "y", 1)


@pytest.mark.parametrize("case", ["conv", "depthwise-1x1", "depthwise-3x3", "grouped", "gemv"])
def test_conv_dispatch(case):
    """Which rule each conv gets: ruy's single rounding, LiteRT's 3x3 kernel, or what x86
    computes. Multipliers of few bits (0.375; 1.5 for the 3x3 kernel's positive shift) and
    inputs near the zero point make the roundings differ often."""
    rng = np.random.default_rng(3)
    pm1 = lambda *s: rng.choice([-1, 1], s)
    attrs, c_in, hw = {     # multiplier = w_scale * 2^-4 / 2^-3
        "conv": (_conv(pm1(8, 6, 1, 1), w_scale=np.full(8, 0.75)), 6, (7, 9)),
        "depthwise-1x1": (_conv(pm1(12, 1, 1, 1), groups=12, w_scale=np.full(12, 0.75)), 12, (7, 9)),
        "depthwise-3x3": (_conv(pm1(8, 1, 3, 3), groups=8, pad=(1, 1), w_scale=[3.0, 0.75] * 4), 8, (7, 9)),
        "grouped": (_conv(pm1(8, 3, 1, 1), groups=2, w_scale=np.full(8, 0.75)), 6, (7, 9)),
        "gemv": (_conv(pm1(8, 6, 3, 3), pad=(1, 1), w_scale=np.full(8, 0.75)), 6, (1, 1)),
    }[case]
    g = _one_conv_graph(attrs, c_in)
    values = {"x": rng.integers(112, 145, (1, c_in, *hw))}
    got = litert.BUILTIN_AARCH64["conv"](g, g.nodes[0], values)
    x86_got = litert.BUILTIN["conv"](g, g.nodes[0], values)
    acc = exact.accumulate(g, g.nodes[0], values)
    sig, sh = litert._per_channel(attrs.scaled_w_scale().astype(np.float64) / 2)
    if case in ("depthwise-1x1", "grouped", "gemv"):
        assert np.array_equal(got, x86_got)
        if case == "gemv":  # where ruy would have rounded otherwise
            assert not np.array_equal(got, np.clip(litert.ruy_arm64_requantize(acc, sig, sh) + 128, 0, 255))
        return
    rule = litert.requantize_3x3_depthwise if case == "depthwise-3x3" else litert.ruy_arm64_requantize
    assert np.array_equal(got, np.clip(rule(acc, sig, sh) + 128, 0, 255))
    assert (got != x86_got).sum() > 10


# a tie-rich graph, checked against LiteRT on aarch64 ------------------------------------------

IMAGE = float(np.float32(1 / 255))


def tie_graph() -> Graph:
    """x -> conv 3x3 (3->16) -> depthwise 3x3 (16: the aarch64 3x3 kernel, half the channels
    with multipliers 1 and 1.5, a positive shift) -> conv 1x1 (16->12) -> depthwise 1x1 (12: 8
    channels in SIMD, 4 scalar) -> conv 3x3 (12->3) -> add x. Activation scales are powers of
    two and weight scales have two significant bits, so that the multipliers are dyadic and
    exact rounding ties are common: every rule of the aarch64 table changes some output."""
    rng = np.random.default_rng(0)
    odd = lambda *s: 2 * rng.integers(-4, 4, s) + 1
    ws = lambda n, base: base * rng.choice([1.0, 1.5], n)
    t = {"x": Tensor("x", 3, IMAGE, 0), "y": Tensor("y", 3, IMAGE, 0)}
    for name, c, s in (("t1", 16, 2.0 ** -3), ("t2", 16, 2.0 ** -2), ("t3", 12, 2.0 ** -2), ("t4", 12, 2.0 ** -3),
                       ("t5", 3, 2.0 ** -7)):
        t[name] = Tensor(name, c, s, 128)
    w1, s1, b1 = odd(16, 3, 3, 3), ws(16, 2.0 ** -5), rng.integers(-300, 300, 16)
    s2 = ws(16, 2.0 ** -4)
    s2[::2] *= 32
    w2 = np.zeros((16, 1, 3, 3), np.int64)              # the centre and one neighbour: small sums
    w2[:, 0, 1, 1] = rng.choice([-1, 1], 16)
    w2[np.arange(16), 0, rng.integers(0, 3, 16), rng.integers(0, 2, 16) * 2] = rng.choice([-1, 1], 16)
    nodes = [
        Node("conv", ["x"], "t1", _conv(w1, pad=(1, 1), w_scale=s1, bias=b1), "c1"),
        Node("conv", ["t1"], "t2", _conv(w2, groups=16, pad=(1, 1), w_scale=s2, bias=rng.integers(-9, 9, 16)), "d1"),
        Node("conv", ["t2"], "t3", _conv(odd(12, 16, 1, 1), w_scale=ws(12, 2.0 ** -4), bias=rng.integers(-60, 60, 12)),
             "c2"),
        Node("conv", ["t3"], "t4", _conv(odd(12, 1, 1, 1), groups=12, w_scale=ws(12, 2.0 ** -2),
                                        bias=rng.integers(-9, 9, 12)), "d2"),
        Node("conv", ["t4"], "t5", _conv(odd(3, 12, 3, 3), pad=(1, 1), w_scale=ws(3, 2.0 ** -7),
                                        bias=rng.integers(-300, 300, 3)), "c3"),
        Node("add", ["x", "t5"], "y", OPS["add"](), "sum"),
    ]
    return Graph(t, nodes, "x", "y", 1)


def tie_images() -> list[np.ndarray]:
    """HxWx3: 12x13, a grey 9x12, 1x9 (no 3x3 kernel with padding 1) and eight 1x1 (GEMV)."""
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (9, 12, 1), dtype=np.uint8)
    return ([rng.integers(0, 256, (12, 13, 3), dtype=np.uint8), np.repeat(grey, 3, axis=2),
             rng.integers(0, 256, (1, 9, 3), dtype=np.uint8)]
            + [rng.integers(0, 256, (1, 1, 3), dtype=np.uint8) for _ in range(8)])


def _digest(outputs) -> str:
    h = hashlib.sha256()
    for o in outputs:
        h.update(np.ascontiguousarray(o, np.uint8).tobytes())
    return h.hexdigest()


# LiteRT 2.3.0's BUILTIN_WITHOUT_DEFAULT_DELEGATES kernels on emulated cortex-a72, neoverse-n1, max
AARCH64_DIGEST = "3074638b1843cf8e9b4e15e3a5d049f70d36a7c273d80442d35ea05b9718ba94"


def test_tie_graph_reference_is_what_litert_computed_on_aarch64():
    g = tie_graph()
    outputs = [reference.runner(g, "litert-builtin-aarch64")(im) for im in tie_images()]
    assert _digest(outputs) == AARCH64_DIGEST
    x86_outputs = [reference.runner(g, "litert-builtin")(im) for im in tie_images()]
    assert _digest(x86_outputs) != AARCH64_DIGEST


@pytest.mark.parametrize("rule, replacement", [
    ("ruy_arm64_requantize", litert.multiply_round_half_up),                 # x86's conv rounding
    ("requantize_3x3_depthwise", litert.multiply_round_half_up),             # shift before the multiply
    ("fast_3x3_depthwise", lambda node, hw: False),                          # no 3x3 kernel
    ("fast_3x3_depthwise", lambda node, hw: _FAST_3X3(node, (2, 2))),      # 1xN inputs in it
    ("custom_gemv", lambda node, shape: False),                              # ruy for one pixel too
    ("custom_gemv", lambda node, shape: True),                               # the GEMV's rounding everywhere
])
def test_every_rule_shows_in_the_tie_graph(rule, replacement, monkeypatch):
    """Each rule of the table changes at least one recorded output, so the digest pins them all."""
    g = tie_graph()
    monkeypatch.setattr(litert, rule, replacement)
    assert _digest([reference.runner(g, "litert-builtin-aarch64")(im) for im in tie_images()]) != AARCH64_DIGEST


@pytest.mark.slow
@pytest.mark.parametrize("cpu", ["cortex-a72", "neoverse-n1", "max"])
def test_tie_graph_in_emulated_aarch64_litert(cpu, tmp_path, aarch64_env):
    from qnas_deploy.emulation import aarch64
    from qnas_deploy.exporters.tflite import to_tflite

    env = aarch64_env
    g = tie_graph()
    path = tmp_path / "ties.tflite"
    path.write_bytes(to_tflite(g, input_size=(12, 13)))
    images = tie_images()
    got = aarch64.run_images(env, aarch64.CPUS[cpu], [(str(path), "litert-builtin")], images)[0]
    want = [reference.runner(g, "litert-builtin-aarch64")(im) for im in images]
    for i, (o, w) in enumerate(zip(got, want)):
        assert np.array_equal(o, w), (i, int((o != w).sum()))
    assert _digest(got) == AARCH64_DIGEST
