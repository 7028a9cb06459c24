"""CLI conventions: help for every command, the installed console script, exit codes."""
import shutil
import subprocess
import sys

import pytest

from qnas_deploy.cli import cli, main


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_every_command_documents_its_options(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage:" in out
    for param in cli.commands[command].params:
        if param.param_type_name == "option" and not param.hidden:
            assert param.opts[0] in out


def test_console_script_runs_the_main_job():
    exe = shutil.which("qnas-deploy") or None
    cmd = [exe] if exe else [sys.executable, "-m", "qnas_deploy.cli"]
    r = subprocess.run(cmd + ["info", "basic_mixed"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "BitOps" in r.stdout and "head.0" in r.stdout


def test_unknown_zoo_entry_exits_2(capsys):
    assert main(["info", "no_such_arch"]) == 2
    assert capsys.readouterr().err.startswith("error: no_such_arch: no such file")


def test_zoo_command_lists_entries(capsys):
    assert main(["zoo"]) == 0
    assert "basic_mixed" in capsys.readouterr().out


@pytest.mark.parametrize("args, needle", [
    (["bench", "bitops", "--threads", "0"], "--threads"),
    (["upscale", "m.onnx", "x.png", "--threads", "0"], "--threads"),
    (["info", "basic_mixed", "--size", "0x0"], "--size"),
    (["no-such-command"], "no-such-command"),
    (["bench", "no-such-command"], "no-such-command"),
    (["info"], "SPEC"),
    (["info", "basic_mixed", "--no-such-option"], "--no-such-option"),
    (["upscale", "m.onnx", "x.png", "--tile", "-5"], "--tile"),
    (["upscale", "m.onnx", "x.png", "--overlap", "-1"], "--overlap"),
    (["bench", "bitops", "--no-table", "--table-json", "t.json"], "qnas-deploy bench bitops --help"),
])
def test_usage_errors_are_one_line(args, needle, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0] and "--help" in err[0], err


def test_zoo_columns_line_up_for_every_name(capsys):
    assert main(["zoo"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert max(len(line.split()[0]) for line in lines) > 14  # basic_mixed_bicubic: past the old fixed width
    for column in ("x4", "GBitOps"):
        assert len({line.index(column) for line in lines}) == 1, column


def test_latency_size_is_height_by_width():
    from qnas_deploy.cli import bench

    size = next(p for p in bench.commands["latency"].params if p.name == "size")
    assert size.default == "180x320" and "height x width" in size.help  # as the README writes it


def _work_ran(*_, **__):
    raise AssertionError("the work started before the outputs were checked")


@pytest.fixture
def bad(tmp_path):
    return str(tmp_path / "nodir" / "out.x")


@pytest.mark.parametrize("case", ["info", "eval", "train", "upscale -o", "upscale --compare", "export", "search",
                                  "demo", "bench parity", "bench latency", "bench bitops"])
def test_every_output_is_checked_before_the_work(case, tmp_path, bad, capsys, monkeypatch, sr_folder,
                                                 zoo_checkpoint, espcn_files):
    folder = str(sr_folder(tmp_path / "set", n=1, size=32))
    img = tmp_path / "lr.png"
    from PIL import Image
    import numpy as np

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    ck, onnx = str(zoo_checkpoint("espcn_w8a8")), espcn_files[".onnx"]
    (tmp_path / "afile").write_text("x")
    work, args = {
        "info": ("qnas_deploy.cost.bitops.layer_costs", ["info", "basic_mixed", "--json", bad]),
        "eval": ("qnas_deploy.evaluate.evaluate_sets", ["eval", "--bicubic", "--data", folder, "--json", bad]),
        "train": ("qnas_deploy.train.train", ["train", "espcn_w8a8", "--data", folder, "-o", bad]),
        "upscale -o": ("qnas_deploy.runtimes.open_model", ["upscale", ck, str(img), "-o", bad]),
        "upscale --compare": ("qnas_deploy.runtimes.open_model",
                              ["upscale", ck, str(img), "-o", str(tmp_path / "ok.png"), "--compare", bad]),
        "export": ("qnas_deploy.exporters.export.export", ["export", "espcn_w8a8", "-o", bad]),
        "search": ("qnas_deploy.search.search", ["search", "--quick", "-o", bad]),
        "demo": ("qnas_deploy.demo.run_demo", ["demo", "-o", str(tmp_path / "afile" / "run")]),
        "bench parity": ("qnas_deploy.bench.parity.parity",
                         ["bench", "parity", ck, onnx, "--data", folder, "--md", str(tmp_path / "p.md"),
                          "--diff-png", bad]),
        "bench latency": ("qnas_deploy.bench.latency.latency", ["bench", "latency", onnx, "--json", bad]),
        "bench bitops": ("qnas_deploy.bench.bitops.bitops_vs_latency", ["bench", "bitops", "--table-json", bad]),
    }[case]
    monkeypatch.setattr(work, _work_ran)
    before = sorted(tmp_path.iterdir())
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot "), err
    assert (bad if case != "demo" else str(tmp_path / "afile" / "run")) in err[0]
    assert sorted(tmp_path.iterdir()) == before


def test_a_read_only_file_system_is_one_line_with_the_path(tmp_path, capsys, monkeypatch):
    import errno

    run = tmp_path / "run"

    def read_only(out, *args, **kw):
        raise OSError(errno.EROFS, "Read-only file system", str(out))

    monkeypatch.setattr("qnas_deploy.demo.run_demo", read_only)
    assert main(["demo", "-o", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: cannot use {str(run)!r}: Read-only file system"]


TORCH_BLOCKED = "import sys; sys.modules['torch'] = None; from qnas_deploy.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.mark.parametrize("command", [["zoo"], ["upscale", "{onnx}", "{img}"], ["eval", "{onnx}"]])
def test_commands_that_need_pytorch_say_so_without_it(command, tmp_path, espcn_files):
    """The board install (no PyTorch) runs `bench latency`; the others say what they need."""
    from PIL import Image
    import numpy as np

    img = tmp_path / "lr.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    args = [a.format(onnx=espcn_files[".onnx"], img=img) for a in command]
    r = subprocess.run([sys.executable, "-c", TORCH_BLOCKED, *args], capture_output=True, text=True, timeout=120)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1, r.stderr
    assert err[0].startswith(f"error: qnas-deploy {command[0]} needs PyTorch") and "pip install torch" in err[0]
