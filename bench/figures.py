"""The run's headline figures, flat: each beside its baseline of the same run, its target
(PASS/MISS, never enforced), and its change against the newest earlier result that has it.

A figure's `key` is stable from run to run (`functions.sign-tx.cold_start_median_ms`):
that is what the comparison with earlier results (bench/results/*.json, `figures`)
matches on. Pure, apart from reading earlier results and writing the chart.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Kind = Literal["ratio_at_most", "ratio_at_least", "at_most", "at_least"]
_COMPARE: Mapping[Kind, Callable[[float, float], bool]] = {
    "ratio_at_most": operator.le, "ratio_at_least": operator.ge,
    "at_most": operator.le, "at_least": operator.ge,
}
_SHOWN: Mapping[Kind, str] = {
    "ratio_at_most": "<= {:g}x", "ratio_at_least": ">= {:g}x",
    "at_most": "<= {:g}", "at_least": ">= {:g}",
}


@dataclass(frozen=True)
class Target:
    kind: Kind
    limit: float

    def met(self, figure: Figure) -> bool | None:
        """None when the figure cannot be judged (a ratio without a baseline)."""
        value = figure.ratio if self.kind.startswith("ratio") else figure.value
        return None if value is None else _COMPARE[self.kind](value, self.limit)

    def __str__(self) -> str:
        return _SHOWN[self.kind].format(self.limit)


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    value: float
    unit: str
    baseline: float | None = None   # the same figure of the baseline, in the same run
    target: Target | None = None

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self)

    def document(self) -> dict[str, Any]:
        return {"label": self.label, "value": self.value, "unit": self.unit,
                "baseline": self.baseline, "ratio": self.ratio,
                "target": str(self.target) if self.target else None, "met": self.met}


def verdict(met: bool | None) -> str:
    return {True: "PASS", False: "MISS", None: ""}[met]


# -- earlier results ---------------------------------------------------------------------

def previous(folder: Path, before: str) -> Callable[[str], tuple[float, str] | None]:
    """A lookup: key → (value, file name) in the newest result file named before
    `before` (names are UTC timestamps, so they sort by time) that has that figure."""
    earlier = sorted((p for p in folder.glob("*.json") if p.name < before), reverse=True)
    loaded: dict[Path, Mapping[str, Any]] = {}

    def figures_of(path: Path) -> Mapping[str, Any]:
        if path not in loaded:
            try:
                document = json.loads(path.read_text())
            except (OSError, ValueError):
                document = {}
            found = document.get("figures") if isinstance(document, dict) else None
            loaded[path] = found if isinstance(found, dict) else {}
        return loaded[path]

    def lookup(key: str) -> tuple[float, str] | None:
        for path in earlier:
            figure = figures_of(path).get(key)
            if isinstance(figure, dict) and isinstance(figure.get("value"), int | float):
                return float(figure["value"]), path.name
        return None

    return lookup


def change(value: float, earlier: float | None) -> str:
    if earlier is None:
        return "new"
    if earlier == 0:
        return "n/a"
    return f"{(value - earlier) / earlier * 100:+.1f}%"


# -- the table -----------------------------------------------------------------------------

def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return ""
    shown = f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    return f"{shown} {unit}".rstrip()


def grid(rows: Sequence[Sequence[str]]) -> list[str]:
    """The first column left-aligned, the others right-aligned; a rule under the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join([r[0].ljust(widths[0]),
                        *(c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True))])
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return lines


def table(figures: Iterable[Figure],
          earlier: Callable[[str], tuple[float, str] | None]) -> str:
    rows: list[tuple[str, ...]] = [("figure", "value", "baseline", "ratio", "target",
                                    "result", "vs previous")]
    for f in figures:
        before = earlier(f.key)
        rows.append((f.label, _number(f.value, f.unit), _number(f.baseline, f.unit),
                     f"{f.ratio:.2f}x" if f.ratio is not None else "",
                     str(f.target) if f.target else "", verdict(f.met),
                     change(f.value, before[0] if before else None)))
    return "\n".join(grid(rows))


def documents(figures: Iterable[Figure]) -> dict[str, Any]:
    return {f.key: f.document() for f in figures}


# -- the chart -------------------------------------------------------------------------------

def _is_latency(figure: Figure) -> bool:
    return figure.key.endswith(("_p50_ms", "_p99_ms"))


def chart(figures: Sequence[Figure], path: Path, title: str) -> Path:
    """Up to three panels: the figures with a baseline as their ratio to it (1 = the
    baseline; latency percentiles left out, the table has them), their target marked;
    memory in MiB with its limit; and the times that have no baseline (the broker's added
    latency, the bounty flow) in ms."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    panels = [(shown, is_ratio, label) for shown, is_ratio, label in (
        ([f for f in figures if f.ratio is not None and f.unit != "MiB"
          and not _is_latency(f)], True,
         "figure / its baseline in the same run (log; black bar: target; green PASS, red MISS)"),
        ([f for f in figures if f.unit == "MiB"], False, "MiB (black bar: limit)"),
        ([f for f in figures if f.unit == "ms" and f.baseline is None], False,
         "ms, no baseline (black bar: target)"),
    ) if shown]
    heights = [len(shown) * 0.28 + 1.2 for shown, _, _ in panels] or [1.5]
    fig, axes = plt.subplots(len(panels) or 1, 1, figsize=(11, sum(heights) + 0.8),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    if not panels:
        axes[0][0].text(0.5, 0.5, "no figures", ha="center", va="center")
    for ax, (shown, is_ratio, label) in zip((row[0] for row in axes), panels, strict=False):
        values = [(f.ratio or 0.0) if is_ratio else f.value for f in shown]
        colours = ["#2e7d32" if f.met else "#c62828" if f.met is False else "#607d8b"
                   for f in shown]
        positions = list(range(len(shown)))
        ax.barh(positions, values, color=colours)
        ax.set_yticks(positions, [f.label for f in shown], fontsize=7)
        ax.invert_yaxis()
        for y, f in zip(positions, shown, strict=True):
            if f.target is not None and f.target.kind.startswith("ratio") == is_ratio:
                ax.plot([f.target.limit] * 2, [y - 0.4, y + 0.4], color="black", lw=1.5)
        if is_ratio:
            ax.axvline(1.0, color="grey", ls="--", lw=0.8)
            ax.set_xscale("log")
        ax.set_xlabel(label, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
    return path
