"""The report's PNG plots, drawn with matplotlib's object API on the Agg canvas (no display,
no pyplot state). Each function takes plain data and a path, writes one PNG, and returns
False (writing nothing) when it has nothing to draw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

# Stage colours: kept is always green; rejection reasons cycle through the rest.
KEPT_COLOR = "#2e7d32"
REASON_COLORS = (
    "#c62828",
    "#ef6c00",
    "#f9a825",
    "#6a1b9a",
    "#1565c0",
    "#00838f",
    "#8d6e63",
    "#546e7a",
    "#ad1457",
)


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig, path: Path) -> bool:
    fig.savefig(path, format="png")
    return True


def word_distributions(by_round: Mapping[int, Mapping[str, Sequence[int]]], path: Path) -> bool:
    """Histograms of kept answers' and extensions' word counts, one outline per round.
    `by_round[k]` maps "answers" / "extensions" to word counts (either may be missing)."""
    kinds = ("answers", "extensions")
    if not any(by_round[k].get(kind) for k in by_round for kind in kinds):
        return False
    fig = _figure(11, 4)
    axes = fig.subplots(1, 2, sharex=True)
    every = [w for k in by_round for kind in kinds for w in by_round[k].get(kind) or []]
    low, high = min(every), max(every)
    bins = [low + (high - low) * i / 30 for i in range(31)] if high > low else 10
    for ax, kind in zip(axes, kinds, strict=True):
        for k in sorted(by_round):
            words = by_round[k].get(kind) or []
            if words:
                ax.hist(words, bins=bins, histtype="step", linewidth=1.8, label=f"round {k} (n={len(words)})")
        ax.set_title(f"kept {kind}")
        ax.set_xlabel("words")
        ax.set_ylabel("count")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return _save(fig, path)


def funnel(stages: Sequence[tuple[str, int, int, Mapping[str, int]]], path: Path) -> bool:
    """Stacked horizontal bars, one per (label, made, kept, rejections): kept in green, then
    each rejection reason (reasons count failed attempts, so a bar may be longer than made);
    what made exceeds kept + rejections shows as "unaccounted"."""
    if not stages:
        return False
    reasons: list[str] = []
    for *_, rejections in stages:
        reasons += [r for r in rejections if r not in reasons]
    if any(made > kept + sum(rej.values()) for _, made, kept, rej in stages):
        reasons.append("unaccounted")
    fig = _figure(10, 1.2 + 0.45 * len(stages))
    ax = fig.subplots()
    labels = [label for label, *_ in stages][::-1]
    rows = list(stages)[::-1]
    ax.barh(labels, [kept for _, _, kept, _ in rows], color=KEPT_COLOR, label="kept")
    left = [float(kept) for _, _, kept, _ in rows]
    for i, reason in enumerate(reasons):
        if reason == "unaccounted":
            widths = [max(made - kept - sum(rej.values()), 0) for _, made, kept, rej in rows]
        else:
            widths = [rej.get(reason, 0) for *_, rej in rows]
        ax.barh(labels, widths, left=left, color=REASON_COLORS[i % len(REASON_COLORS)], label=reason)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_xlabel("kept items, then rejections by reason")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def training_loss(curves: Mapping[str, Mapping[int, Sequence[tuple[float, float]]]], path: Path) -> bool:
    """Training loss against step: one panel per role, one line per round.
    `curves[role][round]` is a list of (step, loss)."""
    roles = [role for role in curves if any(curves[role].values())]
    if not roles:
        return False
    fig = _figure(5.5 * len(roles), 3.8)
    axes = fig.subplots(1, len(roles), squeeze=False)[0]
    for ax, role in zip(axes, roles, strict=True):
        for k in sorted(curves[role]):
            points = curves[role][k]
            if points:
                marker = "." if len(points) < 40 else None
                ax.plot([p[0] for p in points], [p[1] for p in points], marker=marker, label=f"round {k}")
        ax.set_title(f"{role} training loss")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend(fontsize=8)
    return _save(fig, path)


def required_vs_produced(points: Sequence[tuple[float, float]], title: str, path: Path) -> bool:
    """Log-log scatter of required against produced words, with the y = x line.
    Zero-word answers sit at 1 so they stay on the log axis."""
    if not points:
        return False
    fig = _figure(5.5, 5)
    ax = fig.subplots()
    required = [max(r, 1.0) for r, _ in points]
    produced = [max(p, 1.0) for _, p in points]
    ax.scatter(required, produced, s=14, alpha=0.6)
    low = min(required + produced)
    high = max(required + produced)
    ax.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1, label="y = x")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("required words")
    ax.set_ylabel("produced words")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)
