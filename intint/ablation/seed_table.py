"""The ablation table over several seeds: mean ± sd per cell, and intensity-vs-random differences with
paired standard errors over videos × seeds.

`intint ablate --seeds N` runs the whole sweep once per seed (`intint.ablation.sweep.run`), each into
`<sweep>/seed-<k>/` with its own `table.json`. One seed's table says little about a placement's effect
when the effect is a few points and the seed-to-seed spread is as large, so this module combines them:

- every cell (Int&Int 1:1, Int&Int tuned on validation, Intensity, Integrity top-1) as the mean and
  sample standard deviation over the seeds;
- for every intensity placement, its difference to the Random row per seed, and the pooled difference
  with its paired standard error: the per-video differences of the two rows (1 − 0, 0 − 1 or 0) of all
  seeds pooled, std / √(videos × seeds). Pairing by video removes the videos both rows get right or
  wrong; pooling seeds adds the training noise of each seed's pair of runs to the per-video differences.

A shard URL holding `{seed}` gives each seed its own data set (e.g. the demo dataset generated with that
seed); without it every seed trains on the same shards and only the training seed changes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from intint.ablation import results_table
from intint.ablation.plan import PREDICTIONS_FILE, ROLES
from intint.ablation.results_table import RANDOM, SplitPredictions
from intint.eval import fusion_tuning, metrics
from intint.store import fsio

SEEDS_JSON, SEEDS_MD, SEEDS_PNG = "seeds_table.json", "seeds_table.md", "seeds_table.png"
SEED_PLACEHOLDER = "{seed}"
# Table columns: key in a seed's row → title. "fused_tuned" is the row's validation-tuned fusion.
COLUMNS: dict[str, str] = {"fused": "Int&Int (1:1)", "fused_tuned": "Int&Int tuned", "intensity": "Intensity",
                           "integrity": "Integrity"}
COMPARED: tuple[str, ...] = ("fused", "fused_tuned", "intensity")  # columns compared with the Random row


def seed_folder_name(name: str, seed: int) -> str:
    """The per-seed sweep's name: `<name>/seed-<k>` (its folder sits inside the sweep folder)."""
    return f"{name}/seed-{seed}"


def seed_shards(shards: str, seed: int) -> str:
    """The shard URL of one seed: `{seed}` replaced by the seed; a URL without it is shared by all seeds."""
    return shards.replace(SEED_PLACEHOLDER, str(seed))


def per_seed_base(base: Any, seed: int) -> Any:
    """The TrainConfig of one seed's sweep: the seed, its shards and its folder `<name>/seed-<k>`."""
    return dataclasses.replace(base, seed=seed, shards=seed_shards(base.shards, seed),
                               name=seed_folder_name(base.name, seed))


def row_hits(integrity: Mapping[str, SplitPredictions], intensity_p: Mapping[str, SplitPredictions],
             splits: Mapping[str, str], fusion_weights: Sequence[float]) -> dict[str, np.ndarray]:
    """Per test video (sorted by key), whether each compared column's prediction is right; the tuned
    fusion's weight is chosen on the `val` predictions only (absent when validation is the test split)."""
    test_i, test_n = integrity["test"], intensity_p["test"]
    hits = results_table.hits_on_test(test_i, test_n, fusion_weights)
    if fusion_tuning.absent_reason(splits.get("val"), splits["test"], ("integrity", "intensity")) is None:
        val = fusion_tuning.ValidationScores(integrity["val"].probs, intensity_p["val"].probs,
                                             integrity["val"].labels, splits["val"])
        fused, _ = fusion_tuning.fuse_test(val, test_i.probs, test_n.probs)
        hits["fused_tuned"] = metrics.as_scores(fused, "tuned fusion").argmax(axis=1) == test_i.labels
    return hits


def table_hits(table: Mapping[str, Any], fusion_weights: Sequence[float]) -> dict[str, dict[str, np.ndarray]]:
    """Placement → `row_hits` for every row of one seed's table, from the runs' saved predictions."""
    def predictions(run: str) -> dict[str, SplitPredictions]:
        url = fsio.join(fsio.join(table["folder"], run), PREDICTIONS_FILE)
        return results_table.load_predictions(url, ROLES)

    integrity = predictions(table["integrity_run"])
    return {row["placement"]: row_hits(integrity, predictions(row["run"]), table["splits"], fusion_weights)
            for row in table["rows"]}


def spread(values: Sequence[float]) -> dict[str, Any]:
    """`mean`, `sd` (sample; None for one value) and the per-seed `values`."""
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "sd": float(arr.std(ddof=1)) if arr.size > 1 else None,
            "values": [float(v) for v in arr]}


def _cell_value(row: Mapping[str, Any], column: str) -> float | None:
    if column == "fused_tuned":
        tuned = row.get("fused_tuned") or {}
        return tuned["test"]["top1"] if "test" in tuned else None
    return row["test"][column]["top1"]


Hits = Mapping[int, Mapping[str, Mapping[str, np.ndarray]]]  # seed → placement → column → per-video hit


def combine(tables: Mapping[int, Mapping[str, Any]], hits: Hits) -> dict[str, Any]:
    """The seeds table from each seed's `table.json` content and its per-placement test hits.

    Only placements every seed has are combined. `random_vs_intensity` per placement and compared column:
    `deltas` per seed, `delta` (pooled over videos × seeds) and `se` (its paired standard error).
    """
    seeds = sorted(tables)
    if not seeds:
        raise ValueError("seeds table: no seed's table")
    common = [r["placement"] for r in tables[seeds[0]]["rows"]
              if all(any(o["placement"] == r["placement"] for o in tables[s]["rows"]) for s in seeds)]
    by_seed = {s: {r["placement"]: r for r in tables[s]["rows"]} for s in seeds}
    rows = []
    for placement in common:
        cells = {}
        for column in COLUMNS:
            values = [_cell_value(by_seed[s][placement], column) for s in seeds]
            if all(v is not None for v in values):
                cells[column] = spread(values)
        rows.append({"placement": placement, "label": results_table.row_label(placement), "top1": cells})
    first = tables[seeds[0]]
    count = f"{len(seeds)} seed{'s' * (len(seeds) > 1)}"
    return {
        "title": first["title"].replace("ablation", f"ablation, {count}", 1),
        "dataset": first["dataset"], "seeds": seeds, "splits": first["splits"], "epochs": first["epochs"],
        "num_test": {str(s): tables[s]["num_test"] for s in seeds}, "rows": rows,
        "random_vs_intensity": _versus_random(common, seeds, hits),
        "jba_weights": {str(s): tables[s].get("jba_weights") for s in seeds},
        "wall_s": {str(s): tables[s]["wall_s"] for s in seeds},
    }


def _versus_random(placements: Sequence[str], seeds: Sequence[int], hits: Hits) -> dict[str, Any] | None:
    if RANDOM not in placements:
        return None
    out: dict[str, Any] = {}
    for placement in (p for p in placements if p != RANDOM):
        compared = {}
        for column in COMPARED:
            if not all(column in hits[s][placement] and column in hits[s][RANDOM] for s in seeds):
                continue
            diffs = [hits[s][placement][column].astype(np.float64)
                     - hits[s][RANDOM][column].astype(np.float64) for s in seeds]
            pooled = np.concatenate(diffs)
            se = float(pooled.std(ddof=1) / math.sqrt(pooled.size)) if pooled.size > 1 else float("nan")
            compared[column] = {"delta": float(pooled.mean()), "se": se,
                                "deltas": [float(d.mean()) for d in diffs]}
        out[placement] = compared
    return out


# ---------------------------------------------------------------------------------------------- output


def _mean_sd(cell: Mapping[str, Any] | None) -> str:
    if cell is None:
        return "–"
    sd = cell["sd"]
    return f"{100 * cell['mean']:.1f}" + ("" if sd is None else f" ± {100 * sd:.1f}")


def _delta(entry: Mapping[str, Any] | None) -> str:
    """`+3.0 ± 2.1 (+1.5, +4.0, +3.5)`: pooled difference ± 1.96 paired SE, then each seed's."""
    if entry is None:
        return "–"
    per_seed = ", ".join(f"{100 * d:+.1f}" for d in entry["deltas"])
    return f"{100 * entry['delta']:+.1f} ± {196 * entry['se']:.1f} ({per_seed})"


def to_markdown(table: Mapping[str, Any]) -> str:
    """Title, the mean ± sd table, the intensity-vs-random table, and what the numbers are."""
    seeds = table["seeds"]
    lines = [f"### {table['title']}", "",
             "| placement | " + " | ".join(f"{t} top-1" for t in COLUMNS.values()) + " |",
             "|---|" + "---:|" * len(COLUMNS)]
    for row in table["rows"]:
        cells = " | ".join(_mean_sd(row["top1"].get(c)) for c in COLUMNS)
        lines.append(f"| {row['label']} | {cells} |")
    lines += ["", f"Test top-1 in %, mean ± sd over seeds {', '.join(map(str, seeds))} (test split "
              f"`{table['splits']['test']}`; tuned weights and JBA weights from `{table['splits']['val']}`)."]
    versus = table.get("random_vs_intensity")
    if versus:
        lines += ["", "| placement | " + " | ".join(f"{COLUMNS[c]} vs Random" for c in COMPARED) + " |",
                  "|---|" + "---:|" * len(COMPARED)]
        for placement, compared in versus.items():
            lines.append(f"| {results_table.row_label(placement)} | "
                         + " | ".join(_delta(compared.get(c)) for c in COMPARED) + " |")
        lines += ["", "Difference to the Random row in top-1 points, pooled over test videos × seeds, ± 1.96 "
                  "paired standard errors (per-video differences of the two rows); in brackets each seed's "
                  "difference."]
    return "\n".join(lines) + "\n"


def plot(table: Mapping[str, Any], path: str) -> str:
    """Grouped bars (mean test top-1 per placement, error bars = sd over seeds) as a PNG, atomically."""
    from matplotlib.figure import Figure

    from intint.eval.plots import DPI, PATHWAY_COLOURS, save_png

    rows = table["rows"]
    if not rows:
        raise ValueError("seeds table: no rows to plot")
    colours = {"fused": PATHWAY_COLOURS["fused"], "fused_tuned": "0.45",
               "intensity": PATHWAY_COLOURS["intensity"], "integrity": PATHWAY_COLOURS["integrity"]}
    x = np.arange(len(rows))
    width = 0.2
    fig = Figure(figsize=(max(6.0, 1.3 * len(rows) + 2.0), 4.3), layout="constrained")
    ax = fig.add_subplot()
    for i, (column, title) in enumerate(COLUMNS.items()):
        cells = [r["top1"].get(column) for r in rows]
        means = [c["mean"] if c else 0.0 for c in cells]
        sds = [(c["sd"] or 0.0) if c else 0.0 for c in cells]
        ax.bar(x + (i - 1.5) * width, means, width, yerr=sds, capsize=2, color=colours[column],
               label=f"{title} top-1")
    ax.set_xticks(x, labels=[r["label"] for r in rows], fontsize=8)
    ax.set_ylim(0.0, 1.05)
    ax.set_ylabel(f"top-1 on {table['splits']['test']} (mean ± sd)")
    ax.set_title(table["title"], fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=4, fontsize=7, frameon=False)
    return save_png(fig, path, DPI)


def write_outputs(table: Mapping[str, Any], folder: str, write_json: Any) -> dict[str, str]:
    """seeds_table.json / .md / .png in the sweep folder; returns their URLs."""
    urls = {"json": fsio.join(folder, SEEDS_JSON), "markdown": fsio.join(folder, SEEDS_MD),
            "png": fsio.join(folder, SEEDS_PNG)}
    write_json(urls["json"], table)
    fsio.atomic_write(urls["markdown"], to_markdown(table).encode())
    if table["rows"]:
        plot(table, urls["png"])
    return urls
