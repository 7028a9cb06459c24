"""The guest side of ``emulation``: run inside the emulated aarch64 CPU, with only the
runtimes, numpy and this package's ``runtimes`` (no PyTorch there).

``python -m qnas_deploy.emulation.guest REQUEST.json``; the request names its folder,
where ``result.json`` (and, for ``run``, ``outputs.npz``) are written.
"""
from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import numpy as np


def _run(req: dict, folder: Path) -> dict:
    from ..runtimes import RUNTIMES, grey_aware

    with np.load(req["inputs"]) as z:
        images = [z[f"i{i}"] for i in range(len(z.files))]
    outputs = {}
    for j, (path, runtime) in enumerate(req["files"]):
        run = grey_aware(RUNTIMES[runtime].image_runner(path, req.get("threads")))
        for i, im in enumerate(images):
            outputs[f"f{j}_i{i}"] = run(im)
    np.savez(folder / "outputs.npz", **outputs)
    return {"outputs": True}


def _time(req: dict, folder: Path) -> dict:
    from ..runtimes.timing import Job, round_robin

    jobs = [Job(p, r, tuple(shape), image) for p, r, shape, image in req["jobs"]]
    rounds = round_robin(jobs, req["threads"], req["runs"], req["warmup"], isolate=False)
    return {"timings": [t.__dict__ for t in rounds.timings], "base_rss_kb": rounds.base_rss_kb,
            "peak_rss_kb": rounds.peak_rss_kb}


def main(argv: list[str]) -> int:
    req = json.loads(Path(argv[0]).read_text())
    assert platform.machine() == "aarch64", platform.machine()
    folder = Path(req["folder"])
    result = {"run": _run, "time": _time}[req["op"]](req, folder)
    (folder / "result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
