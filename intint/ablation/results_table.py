"""The ablation table of the paper (Table IV layout) from saved per-video probabilities.

Every pathway run of a sweep saves its view-averaged class probabilities for the validation and test
splits (``SplitPredictions``). Late fusion is a sum of probabilities (docs/method.md §7), so the two-pathway
numbers of every (Integrity, Intensity) pair are computed here from those files, without running any
model again; this is what lets one Integrity run serve every row, as in the paper ("the Integrity
column is identical across rows", docs/method.md §8.1).

Rows are the Intensity pathway's clip placements (Random, Joint, Bone, Angle, JBA arithmetic,
JBA weighted, and any single definition); columns the two-pathway (Int&Int), Intensity-only and
Integrity-only top-1, plus mean-class accuracy; beside the paper's 1:1 fusion, the fusion with its weight
chosen on the validation split (`intint.eval.fusion_tuning`, "Int&Int tuned"). The JBA-weighted weights
are the *validation* two-pathway accuracies of J, B and A, normalised (docs/method.md §2.7: "normalised
two-pathway accuracy of each definition"); the test split never feeds back into training.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from intint.eval import fusion_tuning, metrics
from intint.eval.plots import DPI, PATHWAY_COLOURS, save_png
from intint.pose import intensity
from intint.store import fsio

RANDOM = "random"
PLACEMENTS: tuple[str, ...] = (RANDOM, *intensity.DEFINITIONS)
# The paper's row order (Table IV), then the ten single definitions.
ROW_ORDER: tuple[str, ...] = (RANDOM, "J", "B", "A", "JBA_arithmetic", "JBA_weighted",
                              *intensity.SINGLE_DEFINITIONS)
ROW_LABELS: dict[str, str] = {RANDOM: "Random", "J": "Joint", "B": "Bone", "A": "Angle",
                              "JBA_arithmetic": "JBA (arith.)", "JBA_weighted": "JBA (weighted)"}
JBA_SOURCES: tuple[str, ...] = ("J", "B", "A")
TABLE_PATHWAYS: tuple[str, ...] = ("fused", "intensity", "integrity")
COLUMN_TITLES: dict[str, str] = {"fused": "Int&Int", "intensity": "Intensity", "integrity": "Integrity"}
TUNED = "fused_tuned"  # a row's validation-tuned fusion
TUNED_TITLE = "Int&Int tuned"
METRICS: tuple[str, ...] = ("top1", "top5", "mean_class")


def row_label(placement: str) -> str:
    return ROW_LABELS.get(placement, placement)


def row_sort_key(placement: str) -> int:
    return ROW_ORDER.index(placement)


@dataclass
class SplitPredictions:
    """One pathway's view-averaged probabilities on one split, rows sorted by sample key."""

    probs: np.ndarray  # N×C float32
    labels: np.ndarray  # N int64
    keys: np.ndarray  # N unicode sample keys

    def __post_init__(self) -> None:
        n = len(self.keys)
        if self.probs.ndim != 2 or self.probs.shape[0] != n or self.labels.shape != (n,):
            raise ValueError(f"predictions: probs {self.probs.shape}, labels {self.labels.shape} and "
                             f"{n} keys disagree")


def save_predictions(url: str, splits: Mapping[str, SplitPredictions]) -> None:
    """Write ``{role}_probs``, ``{role}_labels``, ``{role}_keys`` per split role (``val``/``test``) as one
    .npz, atomically (keys as a unicode array, so reading needs no pickle)."""
    arrays: dict[str, np.ndarray] = {}
    for role, p in splits.items():
        arrays[f"{role}_probs"] = np.asarray(p.probs, np.float32)
        arrays[f"{role}_labels"] = np.asarray(p.labels, np.int64)
        arrays[f"{role}_keys"] = np.asarray(p.keys, dtype=np.str_)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    fsio.atomic_write(url, buffer.getvalue())


def load_predictions(url: str, roles: Sequence[str] = ("val", "test")) -> dict[str, SplitPredictions]:
    """The splits ``roles`` of a predictions .npz written by ``save_predictions`` (no pickle allowed)."""
    with np.load(io.BytesIO(fsio.read_bytes(url)), allow_pickle=False) as npz:
        missing = [f"{r}_{f}" for r in roles for f in ("probs", "labels", "keys") if f"{r}_{f}" not in npz]
        if missing:
            raise KeyError(f"{url}: no array(s) {missing}; it has {sorted(npz.files)}")
        return {r: SplitPredictions(npz[f"{r}_probs"], npz[f"{r}_labels"], npz[f"{r}_keys"]) for r in roles}


def _summary(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {m: float(metrics[m]) for m in (*METRICS, "num_samples")}


def pathway_summary(p: SplitPredictions, num_classes: int) -> dict[str, float]:
    """top-1, top-5, mean-class and the sample count of one pathway's predictions."""
    return _summary(metrics.pathway_metrics(p.probs, p.labels, num_classes))


def pair_metrics(integrity: SplitPredictions, intensity_p: SplitPredictions, num_classes: int,
                 fusion_weights: Sequence[float] = (1.0, 1.0), where: str = "",
                 ) -> dict[str, dict[str, float]]:
    """Metrics of both pathways and their late fusion on the same videos (rows matched by key)."""
    if not np.array_equal(integrity.keys, intensity_p.keys):
        a, b = set(integrity.keys.tolist()), set(intensity_p.keys.tolist())
        only_a, only_b = sorted(a - b), sorted(b - a)
        raise ValueError(f"{where}: the Integrity and Intensity runs scored different videos ({len(a)} vs "
                         f"{len(b)}; only Integrity: {only_a[:3]}, only Intensity: {only_b[:3]}"
                         f"{'' if only_a or only_b else ', same keys in another order'})")
    if not np.array_equal(integrity.labels, intensity_p.labels):
        row = int(np.flatnonzero(integrity.labels != intensity_p.labels)[0])
        raise ValueError(f"{where}: sample {integrity.keys[row]!r} has label {integrity.labels[row]} in the "
                         f"Integrity run and {intensity_p.labels[row]} in the Intensity run")
    results = metrics.evaluate_scores(integrity.probs, intensity_p.probs, integrity.labels, num_classes,
                                       fusion_weights)
    return {name: _summary(results[name]) for name in TABLE_PATHWAYS}


def tuned_pair(integrity: Mapping[str, SplitPredictions], intensity_p: Mapping[str, SplitPredictions],
               num_classes: int, splits: Mapping[str, str]) -> dict[str, Any]:
    """A row's tuned fusion: the weight chosen on the `val` predictions (`fusion_tuning.fuse_test`), its
    `test` metrics and the choice; `{"absent": reason}` when validation is the test split.

    The rows of each role must be matched by key, as `pair_metrics` checks.
    """
    reason = fusion_tuning.absent_reason(splits.get("val"), splits["test"], ("integrity", "intensity"))
    if reason is not None:
        return {"absent": reason}
    val = fusion_tuning.ValidationScores(integrity["val"].probs, intensity_p["val"].probs,
                                         integrity["val"].labels, splits["val"])
    tuned = fusion_tuning.tuned_metrics(val, integrity["test"].probs, intensity_p["test"].probs,
                                        integrity["test"].labels, num_classes)
    return {"test": _summary(tuned), **{k: tuned[k] for k in fusion_tuning.CHOICE_FIELDS}}


def jba_weights_from_validation(fused_val_top1: Mapping[str, float]) -> dict[str, float]:
    """The paper's JBA weights: the J, B and A runs' two-pathway validation top-1, normalised to sum 1."""
    missing = [g for g in JBA_SOURCES if g not in fused_val_top1]
    if missing:
        raise ValueError(f"JBA weights need the validation accuracies of J, B and A; missing {missing}")
    acc = {g: float(fused_val_top1[g]) for g in JBA_SOURCES}
    bad = {g: v for g, v in acc.items() if not (math.isfinite(v) and v >= 0)}
    if bad:
        raise ValueError(f"JBA weights: accuracies must be finite and >= 0, got {bad}")
    total = sum(acc.values())
    if total <= 0:
        raise ValueError("JBA weights: the J, B and A runs all have validation accuracy 0; no weighting is "
                         "defined (train longer, or pass fixed weights)")
    return {g: v / total for g, v in acc.items()}


def normalised_fixed_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """User-given J/B/A weights (any positive scale) normalised to sum 1, checked like the learnt ones."""
    if set(weights) != set(JBA_SOURCES):
        raise ValueError(f"jba_weights must give exactly J, B and A, got {sorted(weights)}")
    return jba_weights_from_validation(weights)


def hits_on_test(integrity: SplitPredictions, intensity_p: SplitPredictions,
              fusion_weights: Sequence[float] = (1.0, 1.0)) -> dict[str, np.ndarray]:
    """Per test video, whether the fused and the Intensity-only prediction is right (rows matched by key,
    as `pair_metrics` checked): what the paired uncertainty of a difference between two rows needs."""
    fused = metrics.fuse(integrity.probs, intensity_p.probs, fusion_weights)
    return {"fused": fused.argmax(axis=1) == integrity.labels,
            "intensity": intensity_p.probs.argmax(axis=1) == intensity_p.labels}


def paired_se(hits_a: np.ndarray, hits_b: np.ndarray) -> float:
    """Standard error of top1(a) − top1(b) over the same videos: std of the per-video difference / √n.

    Paired, so a video both rows get right (or wrong) adds no noise; ±1.96·se is a rough 95 % interval.
    """
    diff = hits_a.astype(np.float64) - hits_b.astype(np.float64)
    return float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else float("nan")


def random_vs_intensity(rows: Sequence[Mapping[str, Any]],
                        hits: Mapping[str, Mapping[str, np.ndarray]] | None = None) -> dict[str, Any] | None:
    """Table V's question: does placing the Intensity clip by motion intensity beat a random centre?

    Reported three ways, because the paper's own "Intensity" column takes the best definition *on the
    test split* per column (optimistic): (a) that best-on-test placement, (b) the placement with the
    best *validation* two-pathway accuracy (an honest choice), (c) the mean over all intensity rows.
    Differences are in top-1 points (fractions), for the two-pathway and the Intensity-only numbers;
    with `hits` (placement → `hits_on_test`) each difference also gets its paired standard error (`*_se`).
    """
    by = {r["placement"]: r for r in rows}
    if RANDOM not in by or len(by) < 2:
        return None
    others = [r for r in rows if r["placement"] != RANDOM]
    rnd = by[RANDOM]

    def delta(row: Mapping[str, Any], pathway: str) -> float:
        return row["test"][pathway]["top1"] - rnd["test"][pathway]["top1"]

    def se(row: Mapping[str, Any], pathway: str) -> float | None:
        if hits is None:
            return None
        return paired_se(hits[row["placement"]][pathway], hits[RANDOM][pathway])

    def compared(row: Mapping[str, Any]) -> dict[str, Any]:
        return {"fused_delta": delta(row, "fused"), "fused_se": se(row, "fused"),
                "intensity_delta": delta(row, "intensity"), "intensity_se": se(row, "intensity")}

    def chosen(row: Mapping[str, Any]) -> dict[str, Any]:
        return {"placement": row["placement"], "fused_top1": row["test"]["fused"]["top1"], **compared(row)}

    return {
        "random_fused_top1": rnd["test"]["fused"]["top1"],
        "random_intensity_top1": rnd["test"]["intensity"]["top1"],
        "best_on_test": chosen(max(others, key=lambda r: r["test"]["fused"]["top1"])),
        "best_on_val": chosen(max(others, key=lambda r: r["val"]["fused"]["top1"])),
        "mean_fused_delta": float(np.mean([delta(r, "fused") for r in others])),
        "mean_intensity_delta": float(np.mean([delta(r, "intensity") for r in others])),
        "per_placement": {r["placement"]: compared(r) for r in others},
    }


# ---------------------------------------------------------------------------------------------- output


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _signed(value: float, se: float | None = None) -> str:
    """`+2.0`, or `+2.0 ± 3.1` (1.96 standard errors, points) when a standard error is known."""
    text = f"{100 * value:+.1f}"
    return text if se is None or not math.isfinite(se) else f"{text} ± {196 * se:.1f}"


def _tuned_cell(row: Mapping[str, Any]) -> str:
    """`72.5 (w 0.35)`: the tuned fusion's test top-1 and its weight on Integrity; `–` without one."""
    tuned = row.get(TUNED) or {}
    if "test" not in tuned:
        return "–"
    return f"{_pct(tuned['test']['top1'])} (w {tuned['weight']:.2f})"


def table_cells(table: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and body cells (percent, one decimal) in the paper's layout: top-1 then mean-class, with the
    tuned fusion's top-1 beside the 1:1 fusion's."""
    top1 = [f"{COLUMN_TITLES[p]} top-1" for p in TABLE_PATHWAYS]
    header = ["placement", top1[0], f"{TUNED_TITLE} top-1", *top1[1:],
              *(f"{COLUMN_TITLES[p]} mean-class" for p in TABLE_PATHWAYS)]
    body = []
    for row in table["rows"]:
        cells = [_pct(row["test"][p]["top1"]) for p in TABLE_PATHWAYS]
        body.append([row["label"], cells[0], _tuned_cell(row), *cells[1:],
                     *(_pct(row["test"][p]["mean_class"]) for p in TABLE_PATHWAYS)])
    return header, body


def tuned_note(table: Mapping[str, Any]) -> str | None:
    """The line explaining the tuned column: where its weights were chosen, or why there are none."""
    tuned = [row[TUNED] for row in table["rows"] if TUNED in row]
    if not tuned:
        return None
    chosen = [t for t in tuned if "test" in t]
    if not chosen:
        return f"{TUNED_TITLE}: none ({tuned[0]['absent']})."
    first = chosen[0]
    return (f"{TUNED_TITLE} = w·Integrity + (1−w)·Intensity, w chosen per row on split "
            f"`{first['chosen_on']}` by validation top-1 ({first['grid_points']} weights over [0, 1], ties "
            "to 0.5); the test split never chose it. Int&Int is the paper's 1:1 sum.")


def notes(table: Mapping[str, Any]) -> list[str]:
    """The lines under the table: splits, JBA weights and where they came from, random vs intensity."""
    out = [f"Test split `{table['splits']['test']}` ({table['num_test']} videos); JBA weights and the "
           f"best-on-validation choice from split `{table['splits']['val']}`; one Integrity run "
           f"(`{table['integrity_run']}`) fused with every row."]
    if table["splits"]["val"] == table["splits"]["test"]:
        out.append("Warning: validation and test are the same split, so the JBA weights saw the test videos.")
    tuned = tuned_note(table)
    if tuned:
        out.append(tuned)
    jba = table.get("jba_weights")
    if jba:
        w = ", ".join(f"{g} {jba['weights'][g]:.4f}" for g in JBA_SOURCES)
        if jba["source"] == "validation":
            acc = ", ".join(f"{g} {_pct(jba['accuracies'][g])}" for g in JBA_SOURCES)
            out.append(f"JBA (weighted) weights = normalised two-pathway validation top-1 ({acc}): {w}.")
        else:
            out.append(f"JBA (weighted) weights given fixed: {w}.")
    rvi = table.get("random_vs_intensity")
    if rvi:
        bt, bv = rvi["best_on_test"], rvi["best_on_val"]
        out.append(
            "Intensity vs random placement (Int&Int top-1, points): best on test "
            f"{row_label(bt['placement'])} {_signed(bt['fused_delta'], bt.get('fused_se'))}; best on "
            f"validation {row_label(bv['placement'])} {_signed(bv['fused_delta'], bv.get('fused_se'))}; "
            "mean over intensity rows "
            f"{_signed(rvi['mean_fused_delta'])} "
            f"(Intensity-only: {_signed(bt['intensity_delta'])} / {_signed(bv['intensity_delta'])} / "
            f"{_signed(rvi['mean_intensity_delta'])}); ± = 1.96 paired standard errors.")
    return out


def to_markdown(table: Mapping[str, Any]) -> str:
    """A Markdown document: title line, the table (top-1 and mean-class in %), notes."""
    header, body = table_cells(table)
    lines = [f"### {table['title']}", "",
             "| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    lines.append("")
    lines += [f"- {line}" for line in notes(table)]
    return "\n".join(lines) + "\n"


def render_text(table: Mapping[str, Any], use_rich: bool = True) -> str:
    """The table as terminal text (a rich table when rich is installed, else aligned plain text)."""
    header, body = table_cells(table)
    if use_rich:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            use_rich = False
    if use_rich:
        t = Table(title=table["title"])
        for i, h in enumerate(header):
            t.add_column(h, justify="left" if i == 0 else "right")
        for cells in body:
            t.add_row(*cells)
        console = Console(file=io.StringIO(), width=160, force_terminal=False)
        console.print(t)
        for line in notes(table):
            console.print(line, soft_wrap=True)
        return console.file.getvalue()  # type: ignore[attr-defined]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    rows = [header, ["-" * w for w in widths], *body]
    text = [table["title"]]
    for r in rows:
        text.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                              for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    return "\n".join([*text, *notes(table)]) + "\n"


def plot_table(table: Mapping[str, Any], path: str | os.PathLike, *, dpi: int = DPI) -> str:
    """Grouped bars per placement: Int&Int, Intensity-only and Integrity-only test top-1 (PNG, atomic).

    A dashed line marks the Random row's Int&Int accuracy, the bar every intensity placement must beat.
    """
    from matplotlib.figure import Figure

    rows = table["rows"]
    if not rows:
        raise ValueError("plot_table: the table has no rows")
    x = np.arange(len(rows))
    width = 0.26
    fig = Figure(figsize=(max(6.0, 1.1 * len(rows) + 2.0), 4.3), layout="constrained")
    ax = fig.add_subplot()
    for i, pathway in enumerate(TABLE_PATHWAYS):
        values = [r["test"][pathway]["top1"] for r in rows]
        bars = ax.bar(x + (i - 1) * width, values, width, color=PATHWAY_COLOURS[pathway],
                      label=f"{COLUMN_TITLES[pathway]} top-1")
        ax.bar_label(bars, labels=[_pct(v) for v in values], fontsize=6, padding=1)
    random_row = next((r for r in rows if r["placement"] == RANDOM), None)
    if random_row is not None:
        ax.axhline(random_row["test"]["fused"]["top1"], color=PATHWAY_COLOURS["fused"], ls="--", lw=1,
                   label="Random Int&Int")
    ax.set_xticks(x, labels=[r["label"] for r in rows], rotation=20 if len(rows) > 6 else 0, fontsize=8)
    ax.set_ylim(0.0, 1.08)
    ax.set_ylabel(f"top-1 on {table['splits']['test']}")
    ax.set_title(table["title"], fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=4, fontsize=7, frameon=False)
    return save_png(fig, path, dpi)
