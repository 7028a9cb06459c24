"""What the entropy term and the BitOps penalty do to a ``--quick`` search (issue 3).

* Entropy (the paper's Figure 9 claim): on one seed, the mean over layers of the largest
  alpha at the end of the search, with the default entropy coefficient and with none.
* Penalty: the BitOps of the found architecture for penalties 0, 1e-4, 1e-3, 1e-2 on
  three seeds; a higher penalty should not give a costlier architecture on average.

Every run is a real ``--quick`` search on the embedded images (about 100 s each on two
CPU cores). Writes benchmarks/results/search_effects.{json,md}.

    python benchmarks/search_effects.py [--seeds 0,1,2] [--penalties 0,1e-4,1e-3,1e-2] [--work DIR]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from qnas_deploy.search import SearchConfig, embedded_pairs, search

OUT = Path(__file__).parent / "results"


def run(work: Path, pairs, **kw) -> dict:
    cfg = SearchConfig.quick(**kw)
    tag = "_".join(f"{k}{v}" for k, v in sorted(kw.items()))
    r = search(cfg, pairs, work / f"{tag}.json", progress=False, log=lambda m: None)
    last = r.history[-1]["alphas"]
    max_alpha = [float(np.max(a)) for a in last.values()]
    out = {**kw, "bitops_32x32": r.spec.cost["bitops_32x32"], "mean_max_alpha": statistics.fmean(max_alpha),
           "final_entropy": r.history[-1]["entropy"], "seconds": r.seconds,
           "arch": [f"{l.name}={l.op}@w{l.w_bits}a{l.a_bits}" for l in r.spec.layers]}
    print(json.dumps(out), flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--penalties", default="0,1e-4,1e-3,1e-2")
    ap.add_argument("--work", default=None, help="folder for the found.json files (default: a temporary one)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    seeds = [int(s) for s in args.seeds.split(",")]
    penalties = [float(p) for p in args.penalties.split(",")]
    work = Path(args.work or tempfile.mkdtemp(prefix="qnas-effects-"))
    work.mkdir(parents=True, exist_ok=True)
    pairs = embedded_pairs(4)
    default_entropy = SearchConfig.quick().entropy
    entropy_runs = [run(work, pairs, seed=seeds[0], penalty=1e-3, entropy=e) for e in (default_entropy, 0.0)]
    penalty_runs = [run(work, pairs, seed=s, penalty=p) for p in penalties for s in seeds]
    by_penalty = {p: statistics.fmean(r["bitops_32x32"] for r in penalty_runs if r["penalty"] == p)
                  for p in penalties}
    means = [by_penalty[p] for p in penalties]
    monotone = all(b <= a for a, b in zip(means, means[1:]))
    res = {"machine": platform.machine(), "torch": torch.__version__, "quick_config": vars(SearchConfig.quick()),
           "entropy": entropy_runs, "penalty": penalty_runs,
           "mean_bitops_by_penalty": {str(p): v for p, v in by_penalty.items()},
           "penalty_never_costlier_on_average": monotone}
    res["quick_config"]["bits"] = list(res["quick_config"]["bits"])
    OUT.mkdir(exist_ok=True)
    (OUT / "search_effects.json").write_text(json.dumps(res, indent=2) + "\n")
    md = ["# Search: entropy and penalty effects", "",
          f"Command: `python benchmarks/search_effects.py {' '.join(sys.argv[1:])}`  ",
          f"Machine: {res['machine']}, torch {res['torch']}. Every row is one `qnas-deploy search --quick` "
          "(Basic space, bits 4,8, SAN, embedded images).", "",
          "## Entropy regularisation (seed %d, penalty 1e-3)" % seeds[0], "",
          "| entropy coefficient | mean of the largest alpha per layer | final mean entropy | BitOps (32x32) |",
          "|---|---|---|---|"]
    md += [f"| {r['entropy']:g} | {r['mean_max_alpha']:.3f} | {r['final_entropy']:.3f} | {r['bitops_32x32']:.3g} |"
           for r in entropy_runs]
    md += ["", "## BitOps penalty", "", "| penalty | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
           "|---|" + "---|" * (len(seeds) + 1)]
    for p in penalties:
        cells = [f"{r['bitops_32x32']:.3g}" for r in penalty_runs if r["penalty"] == p]
        md.append(f"| {p:g} | " + " | ".join(cells) + f" | {by_penalty[p]:.3g} |")
    md += ["", f"Mean BitOps never rises with the penalty: **{monotone}**."]
    (OUT / "search_effects.md").write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
