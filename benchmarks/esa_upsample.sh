#!/usr/bin/env bash
# ESA's integer x6 upsampling (this commit) against RFDN's float bilinear resize (the commit
# before it, cf5b90c): the same training of rfdn_mixed from the same seed, scored on Set5
# and Set14. Results: benchmarks/results/esa_upsample.md.
# The recipe is benchmarks/exact_matrix.py's (Adam 1e-3, batch 4, 24-pixel patches, 150
# steps), so its rfdn_mixed checkpoint can stand in for "new" (copy it to $ESA_WORK/new.pt).
#   bash benchmarks/esa_upsample.sh [ITERS_PER_EPOCH] [EPOCHS]
#   SPEC=benchmarks/esa_rfdn_small.json bash benchmarks/esa_upsample.sh 50 2   # what was run
set -euo pipefail
iters=${1:-50}; epochs=${2:-3}; spec=$(realpath "${SPEC:-rfdn_mixed}" 2>/dev/null || echo "${SPEC:-rfdn_mixed}")
work=${ESA_WORK:-/tmp/esa-upsample}
here=$(cd "$(dirname "$0")/.." && pwd)
export QNAS_DATASETS=${QNAS_DATASETS:-$here/../shared/datasets}
mkdir -p "$work"
[ -d "$work/old" ] || git -C "$here" worktree add -f "$work/old" cf5b90c >/dev/null
args=(train "$spec" --data BSD100 --epochs "$epochs" --iters "$iters" --batch 4 --patch 24
      --optimizer adam --lr 1e-3 --seed 0 --no-progress)
for v in old new; do
  src=$([ $v = old ] && echo "$work/old" || echo "$here")
  [ -f "$work/$v.pt" ] || (cd "$work" && PYTHONPATH="$src" python -m qnas_deploy.cli "${args[@]}" -o "$work/$v.pt")
  (cd "$work" && PYTHONPATH="$src" python -m qnas_deploy.cli eval "$work/$v.pt" --data Set5,Set14 --json "$work/$v.json")
done
python - "$work" <<'PY'
import json, sys
w = sys.argv[1]
for v in ("old", "new"):
    r = json.load(open(f"{w}/{v}.json"))
    print(v, {s: round(d["mean"]["psnr_db"], 3) for s, d in r["sets"].items()})
PY
