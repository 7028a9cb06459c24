"""Beyond one machine, measured on this one: a local Ray sweep against the same searches one
after the other, a killed trial, and torchrun data-parallel training against one process.

    python benchmarks/cluster.py [--work DIR]

* Sweep: 4 quick searches (penalties 1e-4, 1e-3 x seeds 0, 1; no training; ONNX export)
  with ``--parallel 2`` and with ``--parallel 1``, each in a fresh run folder; wall time of
  each, and whether every found.json exported (the file's embedded found.json is the trial's).
* Kill: the same sweep of one trial with the trial's worker killed (SIGKILL) once its search
  has written its first checkpoint; whether the sweep finishes, in how many attempts.
* torchrun: ``train mobile_w8a8`` on BSD100 for 2 x 40 iterations, global batch 16, one
  torch thread per process, as 1 process and as 2 (gloo): patches/s of each, and the
  largest weight difference between the two runs with SGD (``--recipe paper``) and Adam.

Results: ``results/cluster.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results"
CLI = [sys.executable, "-m", "qnas_deploy.cli"]
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1"}


def sweep_run(out: Path, parallel: int, extra=()) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    r = subprocess.run(CLI + ["sweep", "-o", str(out), "--penalties", "1e-4,1e-3", "--seeds", "0,1",
                              "--train-epochs", "0", "--parallel", str(parallel), "--no-progress", *extra],
                       capture_output=True, text=True, env=ENV)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(r.stderr[-3000:])
    from qnas_deploy.runtimes import file_options

    s = json.loads((out / "sweep.json").read_text())
    exported = all(file_options(t["files"][0])["found"]["name"] == t["name"] for t in s["trials"])
    return {"parallel": parallel, "wall_s": wall, "trials": len(s["trials"]), "all_exported": exported,
            "trial_s": [round(t["seconds"], 1) for t in s["trials"]]}


def kill_run(out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    p = subprocess.Popen(CLI + ["sweep", "-o", str(out), "--penalties", "1e-3", "--train-epochs", "0", "--parallel",
                                "1", "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    trial = out / "b4-8_p0.001_s0"
    while not (trial / "found.search.pt").is_file():
        time.sleep(0.2)
    pid = int((trial / "attempts.log").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    _, err = p.communicate()
    t = json.loads((trial / "trial.json").read_text())
    return {"returncode": p.returncode, "attempts": t["attempts"],
            "resumed": "search (resumed)" in (trial / "trial.log").read_text()}


def train_run(work: Path, name: str, procs: int, extra=()) -> dict:
    out = work / f"{name}.pt"
    args = ["train", "mobile_w8a8", "--data", "BSD100", "-o", str(out), "--epochs", "2", "--iters", "40",
            "--batch", "16", "--no-progress", *extra]
    cmd = CLI + args if procs == 1 else [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                                        str(procs), shutil.which("qnas-deploy"), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    if r.returncode != 0:
        raise SystemExit(r.stderr[-3000:])
    import torch

    st = torch.load(out, weights_only=True)
    return {"patches_per_s": st["record"]["history"][-1]["patches_per_s"], "model": st["model"]}


def worst(a: dict, b: dict) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a
               if a[k].is_floating_point() and "absmax" not in k and "sigma" not in k and "running" not in k
               and "static_scale" not in k)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/qnas_cluster")
    args = ap.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(Path(__file__).parent))
    from train_zoo import machine

    res = {"command": "python benchmarks/cluster.py", "machine": machine().replace("1 thread(s), ", "")}
    res["sweep_parallel"] = sweep_run(work / "par", 2)
    res["sweep_serial"] = sweep_run(work / "ser", 1)
    res["kill"] = kill_run(work / "kill")
    t = {}
    for name, procs, extra in (("adam1", 1, ()), ("adam2", 2, ()), ("sgd1", 1, ("--recipe", "paper")),
                               ("sgd2", 2, ("--recipe", "paper"))):
        t[name] = train_run(work, name, procs, extra)
    res["torchrun"] = {"patches_per_s_1": t["adam1"]["patches_per_s"], "patches_per_s_2": t["adam2"]["patches_per_s"],
                       "max_weight_diff_adam": worst(t["adam1"]["model"], t["adam2"]["model"]),
                       "max_weight_diff_sgd": worst(t["sgd1"]["model"], t["sgd2"]["model"])}
    (OUT / "cluster.json").write_text(json.dumps(res, indent=1) + "\n")
    p, s, k, d = res["sweep_parallel"], res["sweep_serial"], res["kill"], res["torchrun"]
    md = ["# Sweeps on Ray and training on torchrun, on this machine", "", f"Command: `{res['command']}`  ",
          f"Machine: {res['machine']}.", "",
          "| measure | result |", "|---|---|",
          f"| 4 quick searches, local Ray, 2 at once | {p['wall_s']:.0f} s (trials {', '.join(map(str, p['trial_s']))} s) |",
          f"| the same, one after the other (1 at once) | {s['wall_s']:.0f} s; speed-up {s['wall_s'] / p['wall_s']:.2f}x |",
          f"| every found.json exported (ONNX, its own architecture) | {p['all_exported'] and s['all_exported']} |",
          f"| trial worker killed mid-search | sweep exit {k['returncode']}, {k['attempts']} attempts, search resumed "
          f"from its checkpoint: {k['resumed']} |",
          f"| torchrun train mobile_w8a8, 1 process | {d['patches_per_s_1']:.0f} patches/s |",
          f"| torchrun train mobile_w8a8, 2 processes (gloo) | {d['patches_per_s_2']:.0f} patches/s "
          f"({d['patches_per_s_2'] / d['patches_per_s_1']:.2f}x) |",
          f"| largest weight difference 2 vs 1 process, 80 SGD steps | {d['max_weight_diff_sgd']:.2e} |",
          f"| largest weight difference 2 vs 1 process, 80 Adam steps | {d['max_weight_diff_adam']:.2e} |"]
    (OUT / "cluster.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
