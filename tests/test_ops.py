"""Integer inference of the quantized convs: exact accumulators, fast where float32 allows."""
import torch

import qnas_deploy.ops as ops


def _conv_dtypes(monkeypatch):
    seen = []
    real = ops.TF.conv2d

    def spy(x, *args, **kw):
        seen.append(x.dtype)
        return real(x, *args, **kw)

    monkeypatch.setattr(ops.TF, "conv2d", spy)
    return seen


def test_float32_accumulators_are_the_float64_ones(zoo_model, monkeypatch):
    """Where no sum can pass 2^24 the conv runs in float32 (oneDNN, several times faster on
    CPU), and every output pixel is what float64 accumulators give."""
    g = torch.Generator().manual_seed(2)
    x = torch.nn.functional.interpolate(torch.rand(2, 3, 6, 6, generator=g), size=(20, 20), mode="bicubic",
                                        align_corners=False).clamp(0, 1)
    for name in ("basic_mixed", "basic_mixed_bicubic", "espcn_w8a8"):
        model = zoo_model(name)
        seen = _conv_dtypes(monkeypatch)
        with torch.inference_mode():
            fast = model(x)
        assert torch.float32 in seen, name
        monkeypatch.setattr(ops, "_FLOAT32_EXACT", 0)  # no conv qualifies: float64 everywhere, as before
        seen.clear()
        with torch.inference_mode():
            slow = model(x)
        assert set(seen) == {torch.float64}, name
        monkeypatch.undo()
        assert torch.equal(fast, slow), name


def test_sums_that_could_pass_float32_stay_in_float64():
    conv = ops.ConvDef(64, 4, (3, 3))
    x = torch.full((1, 64, 4, 4), 255.0)
    w = torch.full((4, 64, 3, 3), 127.0)  # 255 * 127 * 576 > 2^24: float32 would round
    acc = ops._integer_conv(x, w, conv)
    assert acc.dtype == torch.float64 and acc[0, 0, 1, 1].item() == 255 * 127 * 576
    assert ops._integer_conv(x, w.clamp(max=100.0), conv).dtype == torch.float32  # 255 * 100 * 576 < 2^24
