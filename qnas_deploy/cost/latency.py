"""The latency cost model: a per-layer latency table and what a search or a benchmark reads from it.

A table (``bench bitops --table-json``; measured by :mod:`qnas_deploy.bench.latency_table`)
holds, per backend, the milliseconds of every searchable layer candidate (operation x
weight bits x activation bits x input and output channels at its slot's input size) timed
alone, and one constant per backend, ``fixed_ms``, for what the layers do not cover (the
fixed ops, the anchor, and the runtime's per-call overhead: fitted on architectures with
the table's ``anchor``, and only used for those). A network's predicted latency is
``fixed_ms + sum of its layers' entries``; in a search, the entries take the place of
eq. 8's BitOps.

Widths (version 2): a table measured with ``widths`` holds every candidate at every
(input, output) channel pair those widths give a slot: a free layer's output is its
``width`` (found.json), and the next layer reads it (``spaces.Slot.free_width``). A
version 1 table has the space's fixed widths only.

No PyTorch at import: a board that only reads a table has none.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import BadInput

FORMAT = "qnas-deploy latency table"
VERSION = 2


def key(op: str, w_bits: int, a_bits: int, c_in: int, c_out: int, height: int, width: int) -> str:
    return f"{op}|w{w_bits}a{a_bits}|{c_in}->{c_out}|{height}x{width}"


def layer_rows(table: dict, spec) -> list[list]:
    """``[name, op, w_bits, a_bits, c_in, c_out]`` of each of ``spec``'s layers, the
    channels from the table's slots and the spec's widths (no PyTorch needed)."""
    rows, prev = [], None
    for l in spec.layers:
        s = table["slots"].get(l.name)
        if s is None:
            raise BadInput(f"latency table for {table['space']!r} has no layer {l.name!r}")
        width = getattr(l, "width", None)
        if width is not None and not s.get("free_width"):
            raise BadInput(f"latency table for {table['space']!r} has no width choice for {l.name} "
                           "(measured without --widths, or an older table)")
        c_in = prev if prev is not None else s["c_in"]
        rows.append([l.name, l.op, l.w_bits, l.a_bits, c_in, width if width is not None else s["c_out"]])
        prev = width
    return rows


def layers_ms(table: dict, layers, backend: str) -> float:
    """The sum of the table's entries for ``layers``: ``(name, op, w_bits, a_bits[, c_in, c_out])``
    each (without channels: the slot's own)."""
    total = 0.0
    for name, op, wb, ab, *channels in layers:
        s = table["slots"].get(name)
        if s is None:
            raise BadInput(f"latency table for {table['space']!r} has no layer {name!r}")
        c_in, c_out = channels or (s["c_in"], s["c_out"])
        k = key(op, wb, ab, c_in, c_out, s["height"], s["width"])
        if k not in table["entries"]:
            raise BadInput(f"latency table has no entry {k} (measured bits: {table['bits']}, "
                           f"widths: {table.get('widths') or 'the space default only'})")
        total += table["entries"][k][f"{backend}_ms"]
    return total


def predict(table: dict, spec, backend: str) -> float:
    """Predicted whole-network latency (ms) of ``spec`` at the table's LR size."""
    if spec.space != table["space"]:
        raise BadInput(f"latency table is for the {table['space']!r} space, the spec is {spec.space!r}")
    anchor = getattr(spec, "anchor", "none")
    if anchor != table.get("anchor", "none"):
        raise BadInput(f"latency table's fixed part was fitted on architectures with anchor "
                       f"{table.get('anchor', 'none')!r}, the spec has {anchor!r} (bench bitops --anchor {anchor})")
    fixed = table["fixed_ms"].get(backend)
    if fixed is None:
        raise BadInput(f"latency table has no fixed part for {backend} (not calibrated)")
    return fixed + layers_ms(table, layer_rows(table, spec), backend)


def fit_fixed(table: dict, rows: list[dict]) -> None:
    """Set ``fixed_ms`` per backend: the median of measured minus summed layers over ``rows``."""
    for b in table["backends"]:
        table["fixed_ms"][b] = float(np.median([r[f"{b}_ms"] - layers_ms(table, r["layers"], b) for r in rows]))


def evaluate(table: dict, rows: list[dict]) -> dict:
    """Kendall tau, Pearson r and mean absolute percentage error of the table's predictions."""
    from scipy import stats

    out = {}
    for b in table["backends"]:
        meas = np.array([r[f"{b}_ms"] for r in rows])
        pred = np.array([table["fixed_ms"][b] + layers_ms(table, r["layers"], b) for r in rows])
        for r, p in zip(rows, pred):
            r[f"{b}_predicted_ms"] = float(p)
        out[b] = {"kendall_tau": float(stats.kendalltau(pred, meas).statistic),
                  "pearson_r": float(stats.pearsonr(pred, meas).statistic),
                  "mape": float(np.mean(np.abs(pred - meas) / meas))}
    return out


def search_costs(table: dict, slots, ops_per_slot, bits, backend: str) -> list:
    """Per searchable layer, the table's milliseconds as a ``[operations, bits]`` tensor:
    the search's hardware cost in place of eq. 8's BitOps."""
    import torch

    if backend not in table["backends"]:
        raise BadInput(f"latency table has no {backend} timings (it has {', '.join(table['backends'])})")
    costs = []
    for slot, ops in zip(slots, ops_per_slot):
        s = table["slots"].get(slot.name)
        if s is None:
            raise BadInput(f"latency table has no layer {slot.name!r} (build it with bench bitops --channels/--blocks "
                           "as the search's)")
        if (s["c_in"], s["c_out"]) != (slot.c_in, slot.c_out):
            raise BadInput(f"latency table was measured for {slot.name} with {s['c_in']}->{s['c_out']} channels, "
                           f"the search has {slot.c_in}->{slot.c_out} (build it with bench bitops --channels/--blocks "
                           "as the search's)")
        row = [[layers_ms(table, [(slot.name, op, b, b)], backend) for b in bits] for op in ops]
        costs.append(torch.tensor(row, dtype=torch.float64))
    return costs


def load(path: str | Path) -> dict:
    """A saved table, checked enough that a wrong file is a clear error."""
    try:
        table = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise BadInput(f"{path}: cannot read a latency table ({e})") from None
    if not isinstance(table, dict) or table.get("format") != FORMAT:
        raise BadInput(f"{path}: not a qnas-deploy latency table")
    if not isinstance(table.get("version"), int) or table["version"] > VERSION:
        raise BadInput(f"{path}: latency table version {table.get('version')!r} is not one this qnas-deploy "
                       f"reads (1 to {VERSION}); upgrade qnas-deploy or rebuild the table")
    return table
