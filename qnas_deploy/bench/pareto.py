"""Quality against cost: the Pareto front of trained architectures (QuantNAS Figure 5)."""
from __future__ import annotations

from pathlib import Path


def front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates (cost no higher and quality no lower,
    one of them strictly), in order of increasing cost."""
    keep = []
    for i, (c, q) in enumerate(points):
        dominated = any((c2 <= c and q2 >= q) and (c2 < c or q2 > q) for j, (c2, q2) in enumerate(points) if j != i)
        if not dominated:
            keep.append(i)
    return sorted(keep, key=lambda i: (points[i][0], -points[i][1]))


def plot(entries: list[dict], out: str | Path, quality: str, quality_label: str,
         costs: list[tuple[str, str, float, bool]], baseline: float | None = None, title: str = "") -> None:
    """One panel per cost ``(key, axis label, divisor, log axis)``: every entry, its name, and
    the Pareto front; ``baseline`` (bicubic) as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .._io import atomic_path

    fig, axes = plt.subplots(1, len(costs), figsize=(4.6 * len(costs), 3.8), squeeze=False)
    for ax, (key, label, div, log) in zip(axes[0], costs):
        pts = [(e[key] / div, e[quality]) for e in entries if e.get(key) is not None and e.get(quality) is not None]
        names = [e["name"] for e in entries if e.get(key) is not None and e.get(quality) is not None]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=18, zorder=3)
        for (x, y), n in zip(pts, names):
            ax.annotate(n, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        f = front(pts)
        ax.step([pts[i][0] for i in f], [pts[i][1] for i in f], where="post", color="tab:red", lw=1,
                label="Pareto front")
        if baseline is not None:
            ax.axhline(baseline, ls="--", color="0.5", lw=0.8, label="bicubic")
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel(quality_label)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
