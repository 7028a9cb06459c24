"""Sweeps on a local Ray: tiny trials, a resumed sweep, and a trial whose worker is killed."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("ray")

TINY = ["--search-epochs", "2", "--search-iters", "2", "--search-batch", "2", "--search-patch", "12",
        "--channels", "6", "--blocks", "1", "--train-iters", "2", "--train-batch", "2", "--train-patch", "12",
        "--no-progress"]


def _sweep(out, *extra, wait=True):
    cmd = [sys.executable, "-m", "qnas_deploy.cli", "sweep", "-o", str(out), *TINY, *extra]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    if wait:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_a_local_sweep_runs_every_trial_and_exports(tmp_path):
    from qnas_deploy.runtimes import file_options

    out = tmp_path / "sweep"
    r = _sweep(out, "--penalties", "1e-4,1e-2", "--parallel", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((out / "sweep.json").read_text())
    assert len(s["trials"]) == 2 and not s["failed"]
    for t in s["trials"]:
        assert file_options(t["files"][0])["found"]["name"] == t["name"]  # exported from its own search
        assert t["attempts"] == 1
    assert (out / "sweep.md").read_text().count("| b4-8_p") == 2
    again = _sweep(out, "--penalties", "1e-4,1e-2", "--parallel", "2")  # resumed: nothing left to run
    assert again.returncode == 0 and "2 already finished, 0 to run" in again.stderr
    other = _sweep(out, "--penalties", "1e-3")
    assert other.returncode == 2 and "other settings" in other.stderr


@pytest.mark.slow  # ~20 s: a trial killed and retried; the local sweep itself runs by default
def test_a_killed_trial_is_retried_from_its_checkpoint(tmp_path):
    out = tmp_path / "sweep"
    p = _sweep(out, "--penalties", "1e-3", "--parallel", "1", "--search-epochs", "3", wait=False)
    trial = out / "b4-8_p0.001_s0"
    deadline = time.time() + 300
    while not (trial / "found.search.pt").is_file():  # the search's first epoch is checkpointed
        assert p.poll() is None and time.time() < deadline, p.communicate()[1][-3000:]
        time.sleep(0.2)
    pid = int((trial / "attempts.log").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
    t = json.loads((trial / "trial.json").read_text())
    log = (trial / "trial.log").read_text()
    if "search (resumed)" not in log:  # the search finished before the kill landed: nothing to test
        pytest.skip("the trial finished before it was killed")
    assert t["attempts"] == 2 and "2 attempts" in err
