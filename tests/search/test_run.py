"""The search loop: found.json and its side files, resume, Ctrl-C, the CLI and a latency table (tiny settings)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from qnas_deploy.cli import main
from qnas_deploy.errors import BadInput
from qnas_deploy.search import SearchConfig, search
from qnas_deploy.search.run import checkpoint_path
from qnas_deploy.spaces import build_model
from qnas_deploy.spec import load

TINY = dict(epochs=3, iters=2, batch=2, patch=8, channels=6, blocks=1, lr=1e-2, alpha_lr=3e-2, entropy=1e-2)


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 6), size=(48, 48), mode="bilinear")
        arr = (smooth[0].permute(1, 2, 0).numpy() * 200 + rng.integers(0, 40, (48, 48, 3))).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"im{i}.png")
    return folder


def _pairs(folder):
    from qnas_deploy.data import training_pairs

    return training_pairs(folder, 4)


def test_quick_search_writes_valid_found_json(images, tmp_path):
    out = tmp_path / "found.json"
    r = search(SearchConfig(**TINY), _pairs(images), out, progress=False, log=lambda m: None)
    spec = load(out)
    build_model(spec)
    assert spec.search["space"] == "basic" and spec.search["bits"] == [4, 8]
    assert set(spec.search["final_alphas"]) == {l.name.replace(".", "_") for l in spec.layers}
    assert spec.cost["bitops_32x32"] > 0
    assert len(r.history) == 3
    assert (tmp_path / "found.alphas.png").stat().st_size > 1000
    assert len(json.loads((tmp_path / "found.history.json").read_text())["epochs"]) == 3


def test_resume_equals_uninterrupted(images, tmp_path):
    pairs = _pairs(images)
    a = search(SearchConfig(**TINY), pairs, tmp_path / "a.json", progress=False, log=lambda m: None)

    def stop_after_two(msg):
        if msg.startswith("epoch 2/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        search(SearchConfig(**TINY), pairs, tmp_path / "b.json", progress=False, log=stop_after_two)
    assert not (tmp_path / "b.json").exists()
    b = search(SearchConfig(**TINY), pairs, tmp_path / "b.json", resume=True, progress=False, log=lambda m: None)
    assert a.history == b.history
    assert a.spec.layers == b.spec.layers


def test_cli_search_and_bad_input(images, tmp_path, capsys):
    out = tmp_path / "f.json"
    args = ["search", "--data", str(images), "-o", str(out), "--epochs", "1", "--iters", "1", "--patch", "8",
            "--batch", "2", "--channels", "6"]
    assert main(args) == 0
    assert load(out).space == "basic"
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [(["--data", str(empty), "-o", str(tmp_path / "g.json")], "no images"),
             (["--data", str(images), "--bits", "3,8", "-o", str(tmp_path / "g.json")], "--bits"),
             (["--data", str(images), "-o", str(tmp_path / "nope" / "g.json")], "does not exist")]
    for bad, needle in cases:
        capsys.readouterr()
        assert main(["search", *bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0]
    assert not (tmp_path / "g.json").exists()


def test_resume_refuses_a_missing_finished_or_different_run(images, tmp_path):
    pairs = _pairs(images)
    cfg = SearchConfig(**{**TINY, "epochs": 1, "iters": 1})
    quiet = dict(progress=False, log=lambda m: None)
    with pytest.raises(BadInput, match="no search checkpoint at"):
        search(cfg, pairs, tmp_path / "r.json", resume=True, **quiet)
    search(cfg, pairs, tmp_path / "r.json", **quiet)
    assert checkpoint_path(tmp_path / "r.json") == tmp_path / "r.search.pt" and (tmp_path / "r.search.pt").is_file()
    with pytest.raises(BadInput, match="already complete \\(1 epochs\\)"):
        search(cfg, pairs, tmp_path / "r.json", resume=True, **quiet)
    with pytest.raises(BadInput, match="made with other settings"):
        search(SearchConfig(**{**TINY, "epochs": 2, "iters": 1}), pairs, tmp_path / "r.json", resume=True, **quiet)
    with pytest.raises(BadInput, match="at least 2 training images"):
        search(cfg, pairs[:1], tmp_path / "one.json", **quiet)


def test_ctrl_c_inside_an_epoch_saves_and_resumes(images, tmp_path, monkeypatch):
    from qnas_deploy.data import PatchSampler

    pairs = _pairs(images)
    real, calls = PatchSampler.batch, {"n": 0}

    def interrupted(self, n):
        calls["n"] += 1
        if calls["n"] == 3:  # the alpha batch of the second iteration of the first epoch
            raise KeyboardInterrupt
        return real(self, n)

    monkeypatch.setattr(PatchSampler, "batch", interrupted)
    msgs = []
    with pytest.raises(KeyboardInterrupt):
        search(SearchConfig(**TINY), pairs, tmp_path / "c.json", progress=False, log=msgs.append)
    st = torch.load(checkpoint_path(tmp_path / "c.json"), weights_only=True)
    assert st["epoch"] == 0 and st["iter"] == 1 and "--resume" in msgs[-1]
    monkeypatch.setattr(PatchSampler, "batch", real)
    r = search(SearchConfig(**TINY), pairs, tmp_path / "c.json", resume=True, progress=False, log=lambda m: None)
    assert len(r.history) == 3 and (tmp_path / "c.json").is_file()


def test_latency_table_steers_the_search(images, tmp_path, latency_table):
    """With a latency table (bench bitops --table-json) the penalty is its milliseconds:
    a table where every 4-bit layer is 100x slower than its 8-bit twin turns the search
    to 8 bits, the opposite of what BitOps asks."""
    path = tmp_path / "table.json"
    path.write_text(json.dumps(latency_table(ms=lambda op, b, name, backend: 100.0 if b == 4 else 1.0)))
    cfg = SearchConfig(**{**TINY, "penalty": 10.0, "entropy": 0.0}, latency_table=str(path))
    r = search(cfg, _pairs(images), tmp_path / "found.json", progress=False, log=lambda m: None)
    assert {l.w_bits for l in r.spec.layers} == {8}
    # A table for other channels is refused with one clear line.
    with pytest.raises(BadInput, match="build it with bench bitops --channels") as e:
        search(SearchConfig(**{**TINY, "channels": 12}, latency_table=str(path)), _pairs(images),
               tmp_path / "g.json", progress=False, log=lambda m: None)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("content, needle", [
    ("text", "not a search checkpoint (not a PyTorch zip archive)"),
    ("objects", "refused to load: it holds objects other than tensors"),
    ("zip", "not a search checkpoint ([enforce fail at"),
])
def test_resume_from_a_bad_checkpoint_gives_a_whole_message(content, needle, images, tmp_path):
    import io
    import zipfile

    found = tmp_path / "r.json"
    ck = checkpoint_path(found)
    if content == "text":
        ck.write_bytes(b"not a checkpoint " * 20)
    elif content == "objects":
        torch.save({"x": io.BytesIO(b"")}, ck)
    else:
        with zipfile.ZipFile(ck, "w") as z:
            z.writestr("junk.txt", "hello")
    cfg = SearchConfig(**{**TINY, "epochs": 1, "iters": 1})
    with pytest.raises(BadInput) as e:
        search(cfg, _pairs(images), found, resume=True, progress=False, log=lambda m: None)
    msg = str(e.value)
    assert needle in msg and msg.count("(") == msg.count(")") and "\n" not in msg
    assert "weights_only=False" not in msg and "False" not in msg  # never advise running a file's code


def test_long_errors_are_cut_at_a_word_or_not_at_all():
    from qnas_deploy.search.run import _first_line

    long = "Weights only load failed. In PyTorch 2.6, we changed the default value of the `weights_only` " \
           "argument in `torch.load` from `False` to `True`, and more words follow here.\nsecond line"
    cut = _first_line(ValueError(long), limit=120)
    assert cut.endswith(" ...") and long.startswith(cut[:-4]) and long[len(cut) - 4] == " "
    assert _first_line(ValueError("x" * 200), limit=120) == "x" * 200
    assert _first_line(ValueError("\x1b[1mbold\x1b[0m words")) == "bold words"


def test_an_unwritable_output_is_found_before_the_first_epoch(images, read_only_folder, monkeypatch):
    out = read_only_folder

    def epoch_ran(*args, **kw):
        raise AssertionError("an epoch ran before the outputs were checked")

    monkeypatch.setattr("qnas_deploy.search.run._run_epoch", epoch_ran)
    with pytest.raises(BadInput, match="Permission denied"):
        search(SearchConfig(**{**TINY, "epochs": 1, "iters": 1}), _pairs(images), out / "f.json", progress=False,
               log=lambda m: None)


def test_search_names_the_architecture_as_asked(images, tmp_path):
    cfg = SearchConfig(**{**TINY, "epochs": 1, "iters": 1})
    r = search(cfg, _pairs(images), tmp_path / "found.json", progress=False, log=lambda m: None, name="demo_basic")
    assert r.spec.name == load(tmp_path / "found.json").name == "demo_basic"
