"""`intint demo`: the whole method end to end on the embedded demo dataset, on a laptop's CPUs.

One command shows every part of the system working together and the method's claim holding:
generate the demo videos (`intint.demo.dataset`) → build a shard set (`intint.store.build`) → train
both pathways on Ray Train (`intint.train.launch`, the `demo` preset, local CPU workers, W&B offline)
→ test the last epoch on the test split with late fusion → write the accuracies, and draw what the
pathways see (`intint.demo.pictures`). The demo dataset is built so that the Intensity pathway wins the fine
burst pairs and the Integrity pathway the repetition-count pairs, so the fused accuracy beats both.

Output folder layout (`--out`, default ./demo_out):
  demo.pkl         the PYSKL annotations (`intint predict --annotations`), classes.txt, bursts.json (the
                   true burst intervals, which the PYSKL format has no field for)
  shards/          the shard set
  run/             the Ray run: checkpoints, results.json, history.jsonl, wandb/ (offline, `wandb sync`)
  checkpoint/      a copy of the tested (last epoch's) checkpoint (`intint predict --checkpoint`)
  results.json     integrity / intensity / fused (1:1) / fused_tuned (weight chosen on val): top1, top5,
                   mean_class (+ confusion, num_samples)
  intensity_*.png, heatmaps_*.png, training_curves.png, confusion_fused.png

`intint demo --seeds N` (`intint.demo.seeds`) runs it N times into `seed-<k>/` subfolders and writes the
mean ± sd over seeds to `seeds.json`.

Re-running into the same folder starts afresh (Ray Train would otherwise resume the finished run as a
no-op); a non-empty folder that is not a demo folder is refused rather than overwritten.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pickle
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from intint import config
from intint.demo.dataset import DEMO_CLASSES, DemoConfig, DemoSet, generate_demo
from intint.demo.pictures import draw_pictures
from intint.eval import metrics
from intint.model import checkpoint
from intint.store import build, fsio

log = logging.getLogger(__name__)

MARKER = "intint-demo.json"  # marks a folder the demo owns (and may clear on the next run)
# What a re-run removes (besides OWNED_GLOBS).
OWNED = ("demo.pkl", "classes.txt", "bursts.json", "shards", "run", "checkpoint", "results.json",
         "seeds.json", "seconds.json")
OWNED_GLOBS = ("*.png", "seed-*")  # pictures; the per-seed demo folders of `--seeds`
RUN_NAME = "run"
HISTORY_FILE = "history.jsonl"


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
        for p in (p for pattern in OWNED_GLOBS for p in out.glob(pattern)):
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def write_dataset(demo: DemoSet, folder: Path) -> tuple[Path, Path]:
    """The annotation pickle (read by `store.annotation_file.read_annotations`), class names, true bursts."""
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


def fit(cfg: config.TrainConfig, history_path: str) -> str:
    """Train on the demo's private local Ray (Ray's own log records at ERROR and above, so its warnings do
    not bury the progress lines; a Ray the caller started, e.g. a test session's, is used and left up)
    with the per-epoch history callback; returns the folder of the checkpoint the test results belong to
    (the tested epoch's)."""
    from intint.train import launch

    started = launch.start_ray(num_cpus=launch.local_cpus(cfg), env=launch.worker_env(), quiet=True)
    try:
        launch.run(cfg, callbacks=[launch.history_callback(history_path)])
    finally:
        if started:
            launch.stop_ray()
    return best_checkpoint(launch.run_folder(launch.resolve(cfg)))


def best_checkpoint(run_folder: str) -> str:
    """The checkpoint folder holding a copy of the run's results.json (the tested epoch)."""
    found = sorted(p for p in Path(run_folder).glob("checkpoint_*")
                   if (p / checkpoint.RESULTS_FILE).is_file())
    if not found:
        raise FileNotFoundError(f"{run_folder}: no checkpoint holds {checkpoint.RESULTS_FILE}; "
                                "did training finish?")
    return str(found[-1])


def read_history(path: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------------ output


ROWS = (("integrity", "Integrity"), ("intensity", "Intensity"), ("fused", "Fused"),
        ("fused_tuned", "Fused (tuned)"))  # results.json key → row label, in table order
METRICS = ("top1", "top5", "mean_class")


def row_label(results: Mapping[str, Any], name: str, label: str) -> str:
    """The row's label; the tuned fusion's names its weight on Integrity (`Fused (tuned, w 0.45)`)."""
    if name == "fused_tuned":
        return f"Fused (tuned, w {results[name]['weight']:.2f})"
    return label


def results_table(results: Mapping[str, Any]) -> list[list[str]]:
    """Rows [pathway, top-1, top-5, mean class] as percentages, in the order integrity, intensity, fused
    (the 1:1 sum), fused tuned (its weight chosen on validation, when the run has one)."""
    rows = []
    for name, label in ROWS:
        if name in results:
            r = results[name]
            rows.append([row_label(results, name, label), *(f"{100 * r[m]:.1f}" for m in METRICS)])
    return rows


def _step(echo: Callable[[str], None], n: int, text: str) -> float:
    echo(f"[demo {n}/5] {text}")
    return time.perf_counter()


def run_demo(opts: DemoOptions, echo: Callable[[str], None] = log.info) -> DemoResult:
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
    ckpt = fit(cfg, history_path)
    seconds["train"] = time.perf_counter() - t

    t = _step(echo, 4, f"test split results of the tested epoch (checkpoint {ckpt})")
    results = json.loads((out / RUN_NAME / checkpoint.RESULTS_FILE).read_text())
    metrics.write_results(results, str(out / "results.json"))
    ckpt = str(shutil.copytree(ckpt, out / "checkpoint"))
    seconds["test"] = time.perf_counter() - t

    t = _step(echo, 5, f"drawing pictures into {out}")
    cfg = dataclasses.replace(cfg, shards=shards)
    pictures = draw_pictures(out, demo, cfg, ckpt, results, read_history(history_path))
    seconds["pictures"] = time.perf_counter() - t
    return DemoResult(out, results, pictures, ckpt, seconds)
