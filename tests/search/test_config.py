"""SearchConfig: frozen, checked on construction with one-line errors, and SearchConfig.quick."""
import dataclasses
import json

import pytest

from qnas_deploy.errors import BadInput
from qnas_deploy.search import SearchConfig


@pytest.mark.parametrize("kw, needle", [
    (dict(mode="x"), "--mode must be one of san, shared, independent, got 'x'"),
    (dict(space="espcn_big"), "--space must be one of"),
    (dict(anchor="lanczos"), "--anchor must be one of none, nearest, bicubic"),
    (dict(scale=8), "scale must be one of 2, 3, 4"),
    (dict(bits=(3, 8)), "--bits must be a subset of 2,4,8,32, got 3,8"),
    (dict(bits=()), "--bits must be a subset"),
    (dict(bits=(4, 4)), "--bits must be a subset of 2,4,8,32, got 4,4"),
    (dict(bits=8), "--bits must be a tuple of bit widths"),
    (dict(epochs=0), "--epochs must be an integer >= 1, got 0"),
    (dict(iters=0), "--iters must be an integer >= 1"),
    (dict(batch=-2), "--batch must be an integer >= 1"),
    (dict(patch=0), "--patch must be an integer >= 1"),
    (dict(epochs=2.5), "--epochs must be an integer"),
    (dict(channels=0), "--channels must be an integer >= 1"),
    (dict(blocks=0), "blocks must be an integer >= 1"),
    (dict(penalty=-1e-3), "--penalty must be a finite number >= 0"),
    (dict(entropy=float("nan")), "--entropy must be a finite number >= 0"),
    (dict(lr=0.0), "lr must be a finite number > 0"),
    (dict(alpha_lr=float("inf")), "alpha_lr must be a finite number > 0"),
    (dict(momentum=1.0), "momentum must be below 1"),
    (dict(weight_decay=-1.0), "weight_decay must be a finite number >= 0"),
    (dict(latency_backend=""), "--latency-backend must name a backend"),
])
def test_bad_settings_are_one_line_errors(kw, needle):
    with pytest.raises(BadInput, match=needle.replace("(", r"\(")) as e:
        SearchConfig(**kw)
    assert "\n" not in str(e.value)


def test_defaults_and_edge_values_are_accepted():
    SearchConfig()
    SearchConfig(epochs=1, iters=1, batch=1, patch=1, channels=1, blocks=1, penalty=0, entropy=0.0, momentum=0.0,
                 bits=(32,), mode="independent", anchor="bicubic", space="rfdn")


def test_frozen_and_replace_checks_again():
    cfg = SearchConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 2
    assert dataclasses.replace(cfg, epochs=2).epochs == 2 and cfg.epochs == 20
    with pytest.raises(BadInput, match="--epochs"):
        dataclasses.replace(cfg, epochs=0)


def test_bits_become_a_tuple_of_ints_in_the_order_given():
    import numpy as np

    cfg = SearchConfig(bits=[np.int64(8), 4])
    assert cfg.bits == (8, 4) and all(type(b) is int for b in cfg.bits)
    assert json.loads(json.dumps(dataclasses.asdict(cfg)))["bits"] == [8, 4]
    assert hash(cfg) == hash(SearchConfig(bits=(8, 4)))


def test_quick_overrides_its_defaults_and_ignores_none():
    q = SearchConfig.quick(iters=3, epochs=None, anchor="nearest")
    assert (q.epochs, q.iters, q.batch, q.patch, q.channels, q.blocks, q.anchor) == (6, 3, 4, 16, 12, 2, "nearest")
    assert (q.lr, q.alpha_lr, q.entropy) == (2e-2, 3e-2, 1e-2) and q.penalty == SearchConfig().penalty
    with pytest.raises(BadInput, match="--batch"):
        SearchConfig.quick(batch=0)


def test_a_latency_table_is_checked_against_the_space_and_its_own_backends(latency_table, tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(latency_table(backends=("onnxruntime", "litert-xnnpack"))))
    # whatever the table calls its backends is what the search accepts
    assert SearchConfig(latency_table=str(path), latency_backend="litert-xnnpack").latency_backend == "litert-xnnpack"
    cases = [(dict(latency_backend="litert_xnnpack"),
              "latency table has no litert_xnnpack timings \\(it has onnxruntime, litert-xnnpack\\)"),
             (dict(space="rfdn"), "a latency table for the 'basic' space, the search is over 'rfdn'")]
    for kw, needle in cases:
        with pytest.raises(BadInput, match=needle) as e:
            SearchConfig(latency_table=str(path), **kw)
        assert "\n" not in str(e.value) and str(path) in str(e.value)
    with pytest.raises(BadInput, match="cannot read a latency table"):
        SearchConfig(latency_table=str(tmp_path / "missing.json"))
    # without a table the backend is not used, so no table's names constrain it
    assert SearchConfig(latency_backend="litert-builtin").latency_table is None
