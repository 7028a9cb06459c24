"""Text tables a person reads (the JSON carries the same numbers)."""
from __future__ import annotations


def _si(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def info_table(arch, report, flops_256: int) -> str:
    """Per-layer cost table of an architecture, with totals."""
    total = report.bitops or 1
    h, w = report.size
    from .spaces import get_space

    title = arch.name or "(unnamed)"
    out_ch = {s.name: s.c_out for s in get_space(arch.space).slots_of(arch)}
    lines = [f"{title}: {arch.space} space, x{arch.scale}, {arch.channels} channels, "
             f"{arch.blocks} block(s), ADQ {arch.adq_mode if arch.adq else 'off'}",
             f"{'layer':18s} {'op':22s} {'out ch':>6s} {'w/a bits':>8s} {'MACs':>9s} {'BitOps':>9s} {'share':>6s}"]
    for l in report.layers:
        op = l.op if l.searchable else "(fixed)"
        lines.append(f"{l.name:18s} {op:22s} {out_ch.get(l.name, ''):>6} {f'{l.w_bits}/{l.a_bits}':>8s} {_si(l.macs):>9s} "
                     f"{_si(l.bitops):>9s} {100 * l.bitops / total:5.1f}%")
    lines.append(f"total at {h}x{w}: {_si(report.macs)} MACs, {_si(report.bitops)} BitOps; "
                 f"FLOPs at 256x256: {_si(flops_256)}")
    return "\n".join(lines)
