"""SHA-256 of every zoo entry's exported ONNX and TFLite files at a fixed seed.

Run it on two commits and diff the JSON: a refactor of the exporter that leaves every
file byte-identical cannot have changed what any runtime computes. Where a file's bytes
do change, ``--keep`` on both commits and ``--run-against`` run the old and the new file
in each of their runtimes on the same images and say whether every output pixel agrees.

    python benchmarks/export_hashes.py -o before.json --keep before/     # on the old commit
    python benchmarks/export_hashes.py --compare before.json --keep after/ --run-against before/
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

# (format, options) exported for every zoo entry; options a zoo entry cannot take are
# recorded as the one-line error it gets, so that the error itself is compared too.
VARIANTS = [
    ("onnx", {}),
    ("onnx", {"io": "float"}),
    ("onnx", {"int4": "packed"}),
    ("onnx", {"adq": "dynamic"}),
    ("tflite", {}),
    ("tflite", {"io": "int8"}),
    ("tflite", {"io": "float"}),
    ("tflite", {"int4": "packed"}),
]


def _stem(key: str) -> str:
    return key.replace("/", "__").replace("=", "-")


def hashes(names: list[str] | None = None, keep: str | None = None) -> dict[str, str]:
    from qnas_deploy.errors import QnasError
    from qnas_deploy.exporters.export import export
    from qnas_deploy.zoo import names as zoo_names

    out = {}
    with tempfile.TemporaryDirectory() as d:
        for name in names or zoo_names():
            for fmt, opts in VARIANTS:
                key = f"{name}/{fmt}" + "".join(f"/{k}={v}" for k, v in opts.items())
                path = Path(d) / f"{name}.{fmt}"
                try:
                    export(name, str(path), fmt=fmt, log=lambda _: None, **opts)
                    out[key] = hashlib.sha256(path.read_bytes()).hexdigest()
                    if keep:
                        Path(keep).mkdir(parents=True, exist_ok=True)
                        (Path(keep) / f"{_stem(key)}.{fmt}").write_bytes(path.read_bytes())
                except QnasError as e:
                    out[key] = f"error: {e}"
                print(f"{key}: {out[key][:16]}", file=sys.stderr)
    return out


def same_outputs(old: Path, new: Path) -> str:
    """Run both files in every runtime of their type on three images: identical or not."""
    import numpy as np

    from qnas_deploy.runtimes import runtimes_for

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((24, 24), (19, 31), (32, 17))]
    verdict = []
    for rt in runtimes_for(new):
        a, b = rt.image_runner(old, threads=1), rt.image_runner(new, threads=1)
        diff = sum(int((a(x) != b(x)).sum()) for x in images)
        verdict.append(f"{rt.name} {'identical' if diff == 0 else f'{diff} pixels differ'}")
    return ", ".join(verdict)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", help="write the hashes as JSON")
    ap.add_argument("--compare", help="a JSON written by -o on another commit: list what differs")
    ap.add_argument("--zoo", help="comma-separated zoo names (default: all)")
    ap.add_argument("--keep", help="also save every exported file in this folder")
    ap.add_argument("--run-against", help="a --keep folder of the other commit: run differing files side by side")
    args = ap.parse_args()
    h = hashes(args.zoo.split(",") if args.zoo else None, args.keep)
    if args.output:
        Path(args.output).write_text(json.dumps(h, indent=1, sort_keys=True) + "\n")
    if args.compare:
        old = json.loads(Path(args.compare).read_text())
        diff = sorted(k for k in set(old) | set(h) if old.get(k) != h.get(k))
        for k in diff:
            print(f"differs: {k}: {old.get(k, '(absent)')[:40]} -> {h.get(k, '(absent)')[:40]}")
            fmt = k.split("/")[1]
            if args.run_against and args.keep and not h.get(k, "").startswith("error"):
                name = f"{_stem(k)}.{fmt}"
                print(f"  outputs: {same_outputs(Path(args.run_against) / name, Path(args.keep) / name)}")
        print(f"{len(h) - len(diff)} of {len(h)} files byte-identical")
        return 1 if diff else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
