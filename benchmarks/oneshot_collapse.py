"""Why the one-shot supernet ranks nothing on the mobile space: its paths switch the residual off.

    python benchmarks/oneshot_collapse.py [--iters 600] [--lr 5e-4] [--variants alone,largest,sandwich,all-hr,ps,no-bias]
    python benchmarks/oneshot_collapse.py --inspect runs/oneshot_rules/sandwich_3282_2_0.02_0.002.pt

The supernet of ``oneshot_rules.py`` (mobile, 32 channels, 4 blocks, bits 4/8, widths, bicubic
anchor, batch 8, LR patch 24, one thread), trained ``--iters`` steps per variant from the
same initialisation; every ``iters / 6`` steps four fixed paths (the largest, the smallest and
two random ones) are probed on 64 held-out patches: L1 against HR (the anchor alone scores
about 0.0422 there) and the share of positive inputs to the upsample conv (its ReLU; 0: the
residual is a constant and nothing upstream gets a gradient).

Variants: ``alone`` the first random path only; ``largest`` the largest path only;
``sandwich`` the one-shot trainer's rule (``search/oneshot.py``); ``all-hr`` the sandwich's four
paths all on the HR patches (no distillation); ``ps`` the largest path alone for 40% of the
steps, then the sandwich (once-for-all's progressive shrinking); ``no-bias`` the sandwich with
the searchable layers' biases frozen at 0 (but the upsample's).

``--inspect CKPT``: a trained one-shot checkpoint's share of positive upsample inputs and
residual size per path, and its searchable layers' bias means. Results:
``results/oneshot_collapse.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results"
VARIANTS = ("alone", "largest", "sandwich", "all-hr", "ps", "no-bias")


def _setup(iters: int, lr: float):
    import numpy as np
    import torch

    from qnas_deploy.data import PatchDataset, cached_training_store, patch_loader
    from qnas_deploy.search.oneshot import OneShotConfig, build_supernet, extreme_path, sample_path
    from qnas_deploy.spaces import get_space

    torch.set_num_threads(1)
    oc = OneShotConfig(space="mobile", bits=(4, 8), anchor="bicubic", widths=tuple(get_space("mobile").width_choices),
                       iters=iters, batch=8, patch=24, lr=lr, channels=32, blocks=4)
    net = build_supernet(oc)
    store = cached_training_store("BSD100", 4, None)
    probe = next(iter(patch_loader(PatchDataset(store, 4, 24, 99, 64), 64)))
    paths = {}
    for name, largest in (("largest", True), ("smallest", False)):
        extreme_path(net, largest)
        paths[name] = [m.path for m in net.mixed.values()]
    rng = np.random.default_rng(123)
    for k in range(2):
        sample_path(net, rng)
        paths[f"random {k}"] = [m.path for m in net.mixed.values()]
    return oc, net, store, probe, paths


def _set(net, path) -> None:
    for m, p in zip(net.mixed.values(), path):
        m.path = p


def _upsample_alive(net) -> dict:
    seen = {}
    net.net.layers["upsample"].register_forward_pre_hook(
        lambda m, i: seen.__setitem__("alive", float((i[0] > 0).float().mean())))
    return seen


def run_variant(variant: str, iters: int, lr: float) -> list[dict]:
    import numpy as np
    import torch
    from torch import nn

    from qnas_deploy.data import PatchDataset, patch_loader
    from qnas_deploy.search.oneshot import extreme_path, lr_factor, sample_path, train_step
    from qnas_deploy.search.supernet import MixedConv

    oc, net, store, probe, paths = _setup(iters, lr)
    if variant == "no-bias":
        for n, m in net.named_modules():
            if isinstance(m, MixedConv) and "upsample" not in n:
                m.bias.requires_grad_(False)
    seen = _upsample_alive(net)
    opt = torch.optim.Adam([p for p in net.weight_parameters() if p.requires_grad], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: lr_factor(oc, i))
    l1 = nn.functional.l1_loss

    def probe_paths(step: int) -> dict:
        net.eval()
        row = {"step": step}
        with torch.no_grad():
            for name, p in paths.items():
                _set(net, p)
                row[name] = {"l1": round(float(l1(net(probe[0]), probe[1])), 5), "alive": round(seen["alive"], 3)}
        net.train()
        return row

    rows = []
    net.train()
    for it, (lr_b, hr_b) in zip(range(iters), patch_loader(PatchDataset(store, 4, 24, 0, iters * 8), 8)):
        opt.zero_grad(set_to_none=True)
        if variant == "alone":
            _set(net, paths["random 0"])
            l1(net(lr_b), hr_b).backward()
        elif variant == "largest" or (variant == "ps" and it < 0.4 * iters):
            extreme_path(net, True)
            l1(net(lr_b), hr_b).backward()
        elif variant == "all-hr":
            rng = np.random.default_rng([oc.seed, it])
            for k in range(2 + oc.random_paths):  # the sandwich's paths, each on the HR patches
                if k < 2:
                    extreme_path(net, k == 0)
                else:
                    sample_path(net, rng)
                l1(net(lr_b), hr_b).backward()
        else:  # sandwich, ps after its first 40%, no-bias
            train_step(net, oc, lr_b, hr_b, np.random.default_rng([oc.seed, it]))
        opt.step()
        sched.step()
        if (it + 1) % max(1, iters // 6) == 0 or it + 1 == iters:
            rows.append(probe_paths(it + 1))
            print(variant, rows[-1], file=sys.stderr, flush=True)
    return rows


def inspect(ckpt: str) -> dict:
    import numpy as np
    import torch

    from qnas_deploy.data import PatchDataset, cached_training_store, patch_loader
    from qnas_deploy.search.oneshot import OneShotConfig, build_supernet, extreme_path, sample_path

    st = torch.load(ckpt, map_location="cpu", weights_only=True)
    c = dict(st["config"])
    c["bits"], c["widths"] = tuple(c["bits"]), tuple(c.get("widths", ()))
    net = build_supernet(OneShotConfig(**c))
    net.load_state_dict(st["model"])
    net.eval()
    seen = _upsample_alive(net)
    res = {}
    net.net.layers["upsample"].register_forward_hook(lambda m, i, o: seen.__setitem__("residual", o))
    x = next(iter(patch_loader(PatchDataset(cached_training_store("BSD100", 4, None), 4, 24, 99, 64), 64)))[0]
    rng = np.random.default_rng(3)
    with torch.no_grad():
        for name in ("largest", "smallest", "random 0", "random 1", "random 2"):
            if name.startswith("random"):
                sample_path(net, rng)
            else:
                extreme_path(net, name == "largest")
            net(x)
            r = seen["residual"]
            res[name] = {"alive": round(seen["alive"], 4), "residual_abs_mean": round(float(r.abs().mean()), 5),
                         "residual_abs_max": round(float(r.abs().max()), 4)}
    biases = {k: round(float(v.mean()), 4) for k, v in st["model"].items() if k.endswith(".bias") and "layers" in k}
    return {"checkpoint": ckpt, "config": st["config"], "iter": int(st["iter"]), "paths": res, "bias_means": biases}


def write_md(res: dict) -> str:
    lines = ["# One-shot supernet collapse (mobile space)", "",
             "Commands: " + "; ".join(f"`{c}`" for c in res["commands"]), "",
             "Per variant and probe step: L1 against HR on 64 held-out patches of four fixed paths, and the share "
             "of positive inputs to the upsample conv (0: the residual is switched off). The anchor alone: L1 about "
             "0.0422.", "", "| variant | step | largest | smallest | random 0 | random 1 |", "|---|---|---|---|---|---|"]
    for v, rows in res.get("variants", {}).items():
        for r in rows:
            cells = [f"{r[p]['l1']:.4f} ({100 * r[p]['alive']:.0f}%)" for p in ("largest", "smallest", "random 0",
                                                                                 "random 1")]
            lines.append(f"| {v} | {r['step']} | " + " | ".join(cells) + " |")
    for ck in res.get("inspected", {}).values():
        lines += ["", f"Trained checkpoint `{ck['checkpoint']}` (step {ck['iter']}): per path, positive upsample "
                  "inputs, mean and largest |residual| (one output step is 1/255 = 0.0039):", ""]
        lines += [f"- {p}: {100 * v['alive']:.1f}% positive, |residual| mean {v['residual_abs_mean']:.4f}, "
                  f"max {v['residual_abs_max']:.4f}" for p, v in ck["paths"].items()]
        body3 = {k: v for k, v in ck["bias_means"].items() if "body_3" in k}
        lines.append(f"- body_3 bias means: {', '.join(f'{v:+.3f}' for v in body3.values())}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=600)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--inspect", default=None, help="a trained one-shot checkpoint to inspect instead")
    args = ap.parse_args(argv)
    path = OUT / "oneshot_collapse.json"
    res = json.loads(path.read_text()) if path.is_file() else {}
    cmd = "python benchmarks/oneshot_collapse.py " + " ".join(argv if argv is not None else sys.argv[1:])
    res["commands"] = list(dict.fromkeys(res.get("commands", []) + [cmd.strip()]))
    if args.inspect:
        res.setdefault("inspected", {})[args.inspect] = inspect(args.inspect)
    else:
        for v in args.variants.split(","):
            if v not in VARIANTS:
                raise SystemExit(f"--variants: {v!r} is not one of {', '.join(VARIANTS)}")
            t = time.perf_counter()
            res.setdefault("variants", {})[v] = run_variant(v, args.iters, args.lr)
            res["settings"] = {"iters": args.iters, "lr": args.lr}
            print(f"{v}: {time.perf_counter() - t:.0f} s", file=sys.stderr)
            _write(path, res)  # each variant as it finishes
    _write(path, res)
    return 0


def _write(path: Path, res: dict) -> None:
    OUT.mkdir(exist_ok=True)
    path.write_text(json.dumps(res, indent=1) + "\n")
    (OUT / "oneshot_collapse.md").write_text(write_md(res))


if __name__ == "__main__":
    sys.exit(main())
