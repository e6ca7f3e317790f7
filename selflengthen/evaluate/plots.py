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


def _integer_axis(axis) -> None:
    """Counts and steps are whole numbers: no 2.5 ticks."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _stacked(ax, labels, parts: Sequence[Mapping[str, int]], colors: Mapping[str, str]) -> None:
    left = [0.0] * len(labels)
    for name, color in colors.items():
        widths = [part.get(name, 0) for part in parts]
        if any(widths):
            ax.barh(labels, widths, left=left, color=color, label=name)
            left = [a + b for a, b in zip(left, widths, strict=True)]


def funnel(stages: Sequence[tuple[str, int, Mapping[str, int], Mapping[str, int]]], path: Path) -> bool:
    """Two panels of stacked horizontal bars, one bar per (label, kept, verdicts, attempts):
    the items by final verdict (kept in green, then each reason: the bar is as long as the
    items made), and below them the failed attempts by reason (retries included), apart, so
    that a retried item never makes a bar longer than the items made. The legend sits to the
    right of the bars, never on them."""
    if not stages:
        return False
    reasons: list[str] = []
    for _, _, verdicts, attempts in stages:
        reasons += [r for r in [*verdicts, *attempts] if r not in reasons]
    colors = {"kept": KEPT_COLOR} | {r: REASON_COLORS[i % len(REASON_COLORS)] for i, r in enumerate(reasons)}
    has_attempts = any(attempts for *_, attempts in stages)
    rows = list(stages)[::-1]
    labels = [label for label, *_ in rows]
    height = 0.45 * len(stages) + 1.0
    fig = _figure(10, height * (2 if has_attempts else 1) + 0.4)
    axes = fig.subplots(2 if has_attempts else 1, 1, squeeze=False)[:, 0]
    _stacked(axes[0], labels, [{"kept": kept, **verdicts} for _, kept, verdicts, _ in rows], colors)
    axes[0].set_title("items by final verdict (bar = items made)", fontsize=10)
    if has_attempts:
        _stacked(axes[1], labels, [attempts for *_, attempts in rows], colors)
        axes[1].set_title("failed attempts by reason (every retry counts)", fontsize=10)
    for ax in axes:
        _integer_axis(ax.xaxis)
    axes[-1].set_xlabel("count")
    handles: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=8)
    return _save(fig, path)


SERIES_COLORS = ("#1565c0", KEPT_COLOR, "#ef6c00", "#6a1b9a", "#00838f", "#ad1457", "#8d6e63")


def growth(
    series: Mapping[str, Mapping[str, Sequence[int]]],
    groups: Sequence[str],
    scores: Mapping[str, Mapping[str, float]],
    path: Path,
) -> bool:
    """The headline: word-count distributions per round, one box per series side by side
    (series[name][group] = word counts; groups in order, e.g. "round 0" .. "round 3", "final"),
    the mean as a dot; with `scores` (scores[name][group] = score) a second panel of benchmark
    scores per round."""
    names = [n for n in series if any(series[n].get(g) for g in groups)]
    if not names:
        return False
    fig = _figure(11, 4.6 if not scores else 7.6)
    axes = fig.subplots(2 if scores else 1, 1, squeeze=False)[:, 0]
    ax = axes[0]
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        color = SERIES_COLORS[i % len(SERIES_COLORS)]
        lists = [(g, list(series[name].get(g) or [])) for g in groups]
        present = [(groups.index(g), w) for g, w in lists if w]
        positions = [x - 0.4 + width * (i + 0.5) for x, _ in present]
        data = [w for _, w in present]
        parts = ax.boxplot(
            data,
            positions=positions,
            widths=width * 0.85,
            patch_artist=True,
            showfliers=True,
            flierprops={"markersize": 3, "markeredgecolor": color},
            manage_ticks=False,
        )
        for box in parts["boxes"]:
            box.set(facecolor=color, alpha=0.35, edgecolor=color)
        for key in ("whiskers", "caps", "medians"):
            for line in parts[key]:
                line.set(color=color)
        ax.plot(
            positions,
            [sum(w) / len(w) for w in data],
            "o",
            color=color,
            markersize=4,
            label=f"{name} (n={sum(len(w) for w in data)})",
        )
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylim(bottom=0)  # from zero: a few dozen words must not look like a trend
    ax.set_ylabel("words (box: quartiles; dot: mean)")
    ax.set_title("length per round")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if scores:
        sx = axes[1]
        for i, (name, by_group) in enumerate(scores.items()):
            xs = [(groups.index(g), v) for g, v in by_group.items() if g in groups]
            xs.sort()
            color = SERIES_COLORS[(i + 2) % len(SERIES_COLORS)]
            sx.plot([x for x, _ in xs], [v for _, v in xs], "o-", color=color, label=name)
        sx.set_xticks(range(len(groups)), list(groups))
        sx.set_xlim(-0.6, len(groups) - 0.4)
        sx.set_ylabel("score (0-100)")
        sx.set_title("benchmark scores per round")
        sx.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def lengths_by_type(by_type: Mapping[str, Sequence[int]], path: Path) -> bool:
    """The final set's response lengths, one stacked histogram layer per constraint type."""
    kinds = [k for k in by_type if by_type[k]]
    if not kinds:
        return False
    fig = _figure(8, 3.6)
    ax = fig.subplots()
    ax.hist(
        [list(by_type[k]) for k in kinds],
        bins=20,
        stacked=True,
        label=[f"{k} (n={len(by_type[k])})" for k in kinds],
        color=[SERIES_COLORS[i % len(SERIES_COLORS)] for i in range(len(kinds))],
    )
    ax.set_xlabel("words")
    ax.set_ylabel("responses")
    _integer_axis(ax.yaxis)
    ax.set_title("final SFT set: lengths by constraint type")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
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
        _integer_axis(ax.xaxis)
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
