"""`intint demo`: the whole method end to end on the embedded demo dataset, on a laptop's CPUs.

One command shows every part of the system working together and the method's claim holding:
generate the demo videos (`intint.demo_data`) → build a shard set (`intint.build`) → train both
pathways on Ray Train (`intint.train`, the `demo` preset, local CPU workers, W&B offline) → test the
best epoch on the test split with late fusion → print and write the accuracies, and draw what the
pathways see (`intint.plots`). The demo dataset is built so that the Intensity pathway wins the fine
burst pairs and the Integrity pathway the repetition-count pairs, so the fused accuracy beats both.

Output folder layout (`--out`, default ./demo_out):
  demo.pkl         the PYSKL annotations (`intint predict --annotations`), classes.txt, bursts.json (the
                   true burst intervals, which the PYSKL format has no field for)
  shards/          the shard set
  run/             the Ray run: checkpoints, results.json, history.jsonl, wandb/ (offline, `wandb sync`)
  checkpoint/      a copy of the tested (best) checkpoint (`intint predict --checkpoint`)
  results.json     integrity / intensity / fused: top1, top5, mean_class (+ confusion, num_samples)
  intensity_*.png, heatmaps_*.png, training_curves.png, confusion_fused.png

Re-running into the same folder starts afresh (Ray Train would otherwise resume the finished run as a
no-op); a non-empty folder that is not a demo folder is refused rather than overwritten.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from intint import config
from intint.demo.dataset import DEMO_CLASSES, DemoConfig, DemoSet, generate_demo
from intint.eval import metrics
from intint.model import checkpoint
from intint.pose import sampling
from intint.store import build, fsio, shardio

MARKER = "intint-demo.json"  # marks a folder the demo owns (and may clear on the next run)
# What a re-run removes besides the pictures.
OWNED = ("demo.pkl", "classes.txt", "bursts.json", "shards", "run", "checkpoint", "results.json")
# A burst class, a count class and the fine wave (its oscillation is only seen densely) for the pictures.
EXAMPLE_CLASSES: tuple[str, ...] = ("punch", "jump_three_times", "wave")
RUN_NAME = "run"
HISTORY_FILE = "history.jsonl"
CURVES_SHOWN: tuple[str, ...] = ("J", "B", "A")


@dataclass
class DemoOptions:
    """What `intint demo` may be told; everything else comes from the `demo` preset and `DemoConfig`."""

    out: str = "demo_out"
    videos_per_class: int | None = None  # training videos per class (val/test scale along); None = default
    epochs: int | None = None  # None: the demo preset's
    seed: int = 0
    ray_workers: int | None = None  # None: the demo preset's
    progress: bool = True

    def __post_init__(self) -> None:
        if self.videos_per_class is not None and self.videos_per_class < 2:
            raise ValueError(f"--videos-per-class must be >= 2, got {self.videos_per_class}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {self.epochs}")
        if self.ray_workers is not None and self.ray_workers < 1:
            raise ValueError(f"--ray-workers must be >= 1, got {self.ray_workers}")


@dataclass
class DemoResult:
    """Where everything went, and the test metrics (the `results.json` content)."""

    out: Path
    results: dict[str, Any]
    pictures: list[Path]
    checkpoint: str
    seconds: dict[str, float]


# ------------------------------------------------------------------------------------------------ steps


def dataset_config(opts: DemoOptions) -> DemoConfig:
    """The dataset size: the defaults, or `videos_per_class` train videos with val/test scaled alike."""
    base = DemoConfig(seed=opts.seed)
    if opts.videos_per_class is None:
        return base
    v = opts.videos_per_class
    scale = v / base.num_per_class_train
    return dataclasses.replace(base, num_per_class_train=v,
                               num_per_class_val=max(2, math.ceil(base.num_per_class_val * scale)),
                               num_per_class_test=max(2, math.ceil(base.num_per_class_test * scale)))


def train_config(opts: DemoOptions, shards: str, out: Path) -> config.TrainConfig:
    """The `demo` preset (train / val / test splits) pointed at this demo's shards and folder, W&B offline."""
    cfg = config.demo()
    return dataclasses.replace(cfg, shards=shards, storage_path=str(out), name=RUN_NAME, wandb="offline",
                               seed=opts.seed, epochs=opts.epochs or cfg.epochs,
                               num_workers=opts.ray_workers or cfg.num_workers)


def prepare_folder(out: Path) -> None:
    """Create `out`, or clear a previous demo in it; refuse a non-empty folder the demo does not own."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise FileExistsError(f"--out {out} is not empty and holds no {MARKER}: not a demo folder; "
                                  "choose an empty or new folder")
        for name in OWNED:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        for png in out.glob("*.png"):
            png.unlink()
    out.mkdir(parents=True, exist_ok=True)


def write_dataset(demo: DemoSet, folder: Path) -> tuple[Path, Path]:
    """The annotation pickle (readable by `intint.annotations.safe_load`), class names and true bursts."""
    folder.mkdir(parents=True, exist_ok=True)
    pkl = folder / "demo.pkl"
    fsio.atomic_write(str(pkl), pickle.dumps(demo.annotations, protocol=4))
    classes = folder / "classes.txt"
    fsio.atomic_write(str(classes), ("\n".join(DEMO_CLASSES) + "\n").encode())
    bursts = {k: [list(b) for b in v] for k, v in demo.bursts.items()}
    fsio.atomic_write(str(folder / "bursts.json"), json.dumps(bursts, indent=0, sort_keys=True).encode())
    return pkl, classes


def build_shards(demo: DemoSet, pkl: Path, classes: Path, out: Path, cfg: config.TrainConfig,
                 progress: bool) -> str:
    """Shard set with 2 shards per (rank × loader worker), so every reader of every split gets data;
    only the intensity mode the run reads is computed."""
    shards = str(out / "shards")
    readers = cfg.num_workers * max(1, cfg.loader_workers)
    bcfg = build.BuildConfig(input=str(pkl), output=shards, classes=str(classes), dataset="demo",
                             num_shards=2 * readers, seed=cfg.seed, modes=(cfg.intensity_mode,),
                             workers=min(os.cpu_count() or 1, 4), overwrite=True, progress=progress)
    build.build(bcfg, raw=demo.annotations, input_sha256=fsio.sha256_bytes(pkl.read_bytes()))
    return shards


def _history_callback(path: str):
    """A Ray Train callback (runs in the controller) keeping every epoch's reported metrics in `path`.

    Ray's `Result` only holds the metrics of retained checkpoints; the training curves need all epochs.
    A restarted worker group re-reports epochs after its checkpoint: the later report of an epoch wins.
    """
    from ray.train import UserCallback

    class HistoryCallback(UserCallback):
        def __init__(self) -> None:
            self.rows: dict[int, dict[str, Any]] = {}

        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            row = {k: v for k, v in metrics[0].items() if isinstance(v, (int, float, str, bool))}
            self.rows[int(row.get("epoch", len(self.rows)))] = row
            text = "".join(json.dumps(self.rows[e], sort_keys=True) + "\n" for e in sorted(self.rows))
            fsio.atomic_write(path, text.encode())

    return HistoryCallback()


def start_local_ray(cfg: config.TrainConfig) -> bool:
    """Start the demo's private local Ray with Ray's own log records at ERROR and above; False if Ray was
    already up or a cluster is given (RAY_ADDRESS: `intint.train.init_ray` connects to it instead).

    Why not just `loop.init_ray`: without a dashboard Ray's State API is unavailable, and Ray Train's
    placement-group cleaner then warns about it every second, which buries the demo's progress lines (the
    `[intint]` prints of the workers, which are not log records and still show).
    """
    from intint.train import loop

    loop.ray_env_defaults()
    import ray

    if ray.is_initialized() or os.environ.get("RAY_ADDRESS"):
        return False
    env = loop.worker_env()
    ray.init(address="local", num_cpus=max(os.cpu_count() or 1, cfg.num_workers * cfg.cpus_per_worker),
             include_dashboard=False, runtime_env={"env_vars": env} if env else None,
             logging_config=ray.LoggingConfig(log_level="ERROR"))
    return True


def fit(cfg: config.TrainConfig, history_path: str) -> str:
    """Train with `intint.train.run` plus the per-epoch history callback; returns the folder of the
    checkpoint the test results belong to (the best epoch's)."""
    from intint.train import loop

    loop.run(cfg, callbacks=[_history_callback(history_path)])
    return best_checkpoint(loop.run_folder(loop.resolve(cfg)))


def best_checkpoint(run_folder: str) -> str:
    """The checkpoint folder holding a copy of the run's results.json (the tested, best epoch)."""
    found = sorted(p for p in Path(run_folder).glob("checkpoint_*")
                   if (p / checkpoint.RESULTS_FILE).is_file())
    if not found:
        raise FileNotFoundError(f"{run_folder}: no checkpoint holds {checkpoint.RESULTS_FILE}; "
                                "did training finish?")
    return str(found[-1])


def read_history(path: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------- pictures


def example_videos(demo: DemoSet, peaks: Mapping[str, int], split: str = "test") -> list[str]:
    """One test video per class of `EXAMPLE_CLASSES`: the first whose intensity peak lies in a true burst.

    That is the typical case (`jobs/demo_check.py`: ~95% of the demo's videos); the pictures explain what
    the pathways see, so they should not open with the rare video whose peak a detector dropout moved.
    """
    label = {a["frame_dir"]: DEMO_CLASSES[a["label"]] for a in demo.annotations["annotations"]}
    out = []
    for name in EXAMPLE_CLASSES:
        mine = [fd for fd in demo.annotations["split"][split] if label[fd] == name]
        typical = [fd for fd in mine if fd in peaks and any(s <= peaks[fd] < e for s, e in demo.bursts[fd])]
        out.extend((typical or mine)[:1])
    return out


def _intensity_rows(shards: str, split: str, mode: str, definitions: Sequence[str],
                    wanted: set[str]) -> dict[str, dict[str, np.ndarray]]:
    """The stored intensity curves of the wanted videos (what the loader centred the clips on)."""
    cols = ["frame_dir", *(shardio.curve_column(mode, d) for d in definitions)]
    rows: dict[str, dict[str, Any]] = {}
    for _, arrow, _ in shardio.shard_urls(shards, split):
        table = shardio.read_intensity(arrow, cols).to_pydict()
        for i, fd in enumerate(table["frame_dir"]):
            if fd in wanted:
                rows[fd] = {d: np.asarray(table[shardio.curve_column(mode, d)][i], np.float32)
                            for d in definitions}
    missing = wanted - set(rows)
    if missing:
        raise KeyError(f"{shards}: split {split!r} has no intensity rows for {sorted(missing)}")
    return rows


def _loader_heatmaps(cfg: config.TrainConfig, split: str, wanted: set[str]) -> dict[str, dict[str, Any]]:
    """Both pathways' first test view of the wanted videos, straight from the eval loader."""
    from intint.loader import streams

    lcfg = dataclasses.replace(config.loader_config(cfg, split, train=False), num_workers=0, batch_size=4,
                               persistent_workers=False)
    keys = {shardio.sample_key(fd): fd for fd in wanted}
    found: dict[str, dict[str, Any]] = {}
    for batch in streams.eval_loader(lcfg, 0, 1, num_clips=1, flip_double=False):
        for i, key in enumerate(batch["key"]):
            if key in keys:
                found[keys[key]] = {p: batch[p][i, 0].float() for p in ("integrity", "intensity")}
        if len(found) == len(keys):
            break
    return found


def draw_pictures(out: Path, demo: DemoSet, cfg: config.TrainConfig, ckpt: str, results: Mapping[str, Any],
                  history: Sequence[Mapping[str, Any]]) -> list[Path]:
    """Intensity curves and heatmap montages of the example test videos, training curves, fused confusion."""
    from intint.demo import plots
    from intint.eval.predict import Predictor, find_sample

    pictures: list[Path] = []
    split = cfg.data.test_split
    # The run's definition centres the Intensity clip ("random" centres it anywhere: J stands in).
    definition = "J" if cfg.intensity_definition == "random" else cfg.intensity_definition
    shown = tuple(dict.fromkeys((*CURVES_SHOWN, definition)))
    candidates = {a["frame_dir"] for a in demo.annotations["annotations"]
                  if DEMO_CLASSES[a["label"]] in EXAMPLE_CLASSES} & set(demo.annotations["split"][split])
    curves = _intensity_rows(cfg.shards, split, cfg.intensity_mode, shown, candidates)
    examples = example_videos(demo, {fd: int(np.argmax(c[definition])) for fd, c in curves.items()}, split)
    volumes = _loader_heatmaps(cfg, split, set(examples))
    predictor = Predictor(ckpt, device="cpu")
    for fd in examples:
        sample = find_sample(demo.annotations, fd, len(DEMO_CLASSES))
        pred = predictor.predict(sample)
        t = sample.total_frames
        if cfg.intensity_definition == "random":
            window = sampling.random_centre_indices(t, cfg.data.clip_len, 1, test_mode=True)
        else:  # the stored peak, as the loader read it
            window = sampling.intensity_indices(t, int(np.argmax(curves[fd][definition])), cfg.data.clip_len)
        uniform = sampling.uniform_indices(t, cfg.data.clip_len, 1, test_mode=True)
        truth = DEMO_CLASSES[sample.label]
        guesses = ", ".join(f"{n} → {pred.predicted(n)}" for n in ("integrity", "intensity", "fused"))
        title = f"{fd} (true class: {truth})\npredicted: {guesses}"
        pictures.append(Path(plots.plot_intensity(curves[fd], window, uniform, title,
                                                  out / f"intensity_{truth}.png", bursts=demo.bursts[fd])))
        if fd in volumes:
            v = volumes[fd]
            pictures.append(Path(plots.plot_heatmap_montage(
                v["integrity"], v["intensity"], out / f"heatmaps_{truth}.png",
                title=f"{fd} (true class: {truth}): the eval loader's test view, max over joints")))
    if history:
        pictures.append(Path(plots.plot_training_curves(
            history, out / "training_curves.png",
            title=f"demo run: {len(history)} epochs, validation on the val split")))
    pictures.append(Path(plots.plot_confusion(results["fused"]["confusion"], list(DEMO_CLASSES),
                                              out / "confusion_fused.png", title=f"fused, {split} split")))
    return pictures


# ------------------------------------------------------------------------------------------------ output


def results_table(results: Mapping[str, Any]) -> list[list[str]]:
    """Rows [pathway, top-1, top-5, mean class] as percentages, in the order integrity, intensity, fused."""
    rows = []
    for name, label in (("integrity", "Integrity"), ("intensity", "Intensity"), ("fused", "Fused")):
        if name in results:
            r = results[name]
            rows.append([label, *(f"{100 * r[m]:.1f}" for m in ("top1", "top5", "mean_class"))])
    return rows


def print_table(results: Mapping[str, Any], title: str, echo: Callable[[str], None] = print) -> None:
    """The accuracy table with rich when it is installed (it comes with typer), else plain text."""
    header = ["pathway", "top-1 %", "top-5 %", "mean class %"]
    rows = results_table(results)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        echo(title)
        echo("  ".join(f"{h:>13}" for h in header))
        for r in rows:
            echo("  ".join(f"{c:>13}" for c in r))
        return
    table = Table(title=title)
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*r, style="bold" if r[0] == "Fused" else None)
    Console(file=sys.stdout).print(table)


def _step(echo: Callable[[str], None], n: int, text: str) -> float:
    echo(f"[demo {n}/5] {text}")
    return time.perf_counter()


def run_demo(opts: DemoOptions, echo: Callable[[str], None] = print) -> DemoResult:
    """Generate, build, train, test, draw; returns the results (also written to `out/results.json`)."""
    os.environ.setdefault("WANDB_SILENT", "true")
    out = Path(opts.out).expanduser().resolve()
    prepare_folder(out)
    fsio.atomic_write(str(out / MARKER), json.dumps(dataclasses.asdict(opts), sort_keys=True).encode())
    seconds: dict[str, float] = {}

    dcfg = dataset_config(opts)
    t = _step(echo, 1, f"generating the demo dataset: {len(DEMO_CLASSES)} classes, "
                       f"{dcfg.num_per_class_train}/{dcfg.num_per_class_val}/{dcfg.num_per_class_test} "
                       "train/val/test videos per class")
    demo = generate_demo(dcfg)
    pkl, classes = write_dataset(demo, out)
    seconds["generate"] = time.perf_counter() - t

    cfg = train_config(opts, str(out / "shards"), out)
    t = _step(echo, 2, f"building shards in {out / 'shards'}")
    shards = build_shards(demo, pkl, classes, out, cfg, opts.progress)
    seconds["build"] = time.perf_counter() - t

    t = _step(echo, 3, f"training both pathways on Ray Train: {cfg.num_workers} CPU workers, "
                       f"{cfg.epochs} epochs, clip {cfg.data.clip_len} frames at "
                       f"{cfg.data.train_size}x{cfg.data.train_size}; "
                       f"W&B offline in {out / RUN_NAME / 'wandb'}")
    history_path = str(out / RUN_NAME / HISTORY_FILE)
    (out / RUN_NAME).mkdir(parents=True, exist_ok=True)
    started_ray = start_local_ray(cfg)  # a Ray the caller started (e.g. a test session) is left up
    try:
        ckpt = fit(cfg, history_path)
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    seconds["train"] = time.perf_counter() - t

    t = _step(echo, 4, f"test split results of the best epoch (checkpoint {ckpt})")
    results = json.loads((out / RUN_NAME / checkpoint.RESULTS_FILE).read_text())
    metrics.write_results(results, str(out / "results.json"))
    ckpt = str(shutil.copytree(ckpt, out / "checkpoint"))
    seconds["test"] = time.perf_counter() - t

    t = _step(echo, 5, f"drawing pictures into {out}")
    cfg = dataclasses.replace(cfg, shards=shards)
    pictures = draw_pictures(out, demo, cfg, ckpt, results, read_history(history_path))
    seconds["pictures"] = time.perf_counter() - t
    return DemoResult(out, results, pictures, ckpt, seconds)
