"""The ``intint`` command: a thin dispatcher from command-line options to library calls.

Each command only parses options into a typed config, calls one library function and shows its
result, so the logic stays importable and testable: build-shards, inspect, train, evaluate, predict,
export, demo and ablate. The jobs/ scripts are thin wrappers over the same library functions (for `ray job
submit`). Library code logs through the "intint" logger, which the command sends to stdout; what is
meant for the person at the terminal (tables, summaries) is echoed here. `train`, `evaluate` and
`ablate` hand their options to the typed configs (tyro), so `intint train --help` lists every field.

Bad input (a missing, empty, truncated, compressed or hostile annotation file, a folder given as a file, a
broken shard set or checkpoint, an invalid option value) ends every command the same way, in one place
(`intint.user_errors`): one line ``error: <file or sample>: <what>`` on stderr and exit code 1, never a
traceback. Exceptions of other types are bugs and keep their traceback.
"""

from __future__ import annotations

from typing import Annotated

import typer

from intint.user_errors import fail as _fail
from intint.user_errors import user_errors

app = typer.Typer(help="Int&Int two-pathway skeleton action recognition.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
# Commands whose options are a typed config parsed by tyro: every flag (--help too) goes to the config.
PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


@app.callback()
def _setup() -> None:
    from intint.train.logs import configure_logging

    configure_logging()


def _names(values: list[str] | None) -> tuple[str, ...] | None:
    """Accept both ``--splits a --splits b`` and ``--splits a,b``."""
    if not values:
        return None
    return tuple(n.strip() for v in values for n in v.split(",") if n.strip())


@app.command("build-shards")
@user_errors
def build_shards(
    annotations: Annotated[str | None, typer.Argument(
        help="PYSKL annotation pickle (path or fsspec URL); omit with --synthetic.")] = None,
    output: Annotated[str, typer.Option(
        "--output", "-o", help="Shard-set folder (path or fsspec URL).")] = "",
    classes: Annotated[str | None, typer.Option(help="Class-name file, one name per line.")] = None,
    num_classes: Annotated[int | None, typer.Option(
        help="Class count when there is no class-name file (names class_0..).")] = None,
    dataset: Annotated[str | None, typer.Option(
        help="Dataset name (default: the input file's stem).")] = None,
    splits: Annotated[list[str] | None, typer.Option(
        help="Splits to build, e.g. train1,test1 (default all).")] = None,
    shard_size: Annotated[int, typer.Option(help="Videos per shard.")] = 2000,
    num_shards: Annotated[int | None, typer.Option(help="Shards per split instead of --shard-size.")] = None,
    seed: Annotated[int, typer.Option(help="Shuffle seed (and the synthetic generator's).")] = 0,
    modes: Annotated[list[str] | None, typer.Option(help="Intensity modes (default: all).")] = None,
    jba_accuracies: Annotated[str | None, typer.Option(
        help="Accuracies behind JBA_weighted, e.g. J=69.3,B=68.7,A=70.3 (default: the reference θ).")] = None,
    workers: Annotated[int | None, typer.Option(help="Parallel shard writers (default: all cores).")] = None,
    ray: Annotated[bool, typer.Option(
        "--ray", help="Write shards as Ray tasks (RAY_ADDRESS or local).")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Stop at the first bad sample.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing shard set.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    synthetic: Annotated[int | None, typer.Option(
        help="Build from N generated videos (intint.testing.synthetic) instead of a file.")] = None,
) -> None:
    """Build a shard set (WebDataset tars + Arrow intensity tables + manifest) from PYSKL annotations."""
    from intint.config import parse_key_values
    from intint.pose import intensity
    from intint.store import build
    from intint.testing import synthetic as synth
    from intint.train import shard_tasks

    if not output:
        raise _fail("--output is required")
    if (annotations is None) == (synthetic is None):
        raise _fail("give an annotation file or --synthetic N (exactly one)")
    raw = None
    source = annotations or ""
    if synthetic is not None:
        n_cls = 10 if num_classes is None else num_classes
        raw = synth.make_annotations(synthetic, n_cls, seed=seed)
        source = f"synthetic:num_videos={synthetic},num_classes={n_cls},seed={seed}"
        num_classes = num_classes if classes else n_cls
        dataset = dataset or "synthetic"
    cfg = build.BuildConfig(
        input=source, output=output, classes=classes, num_classes=num_classes, dataset=dataset,
        splits=_names(splits), shard_size=shard_size, num_shards=num_shards, seed=seed,
        modes=_names(modes) or intensity.MODES,
        jba_accuracies=parse_key_values(jba_accuracies, "--jba-accuracies"), workers=workers,
        strict=strict, overwrite=overwrite, progress=progress)
    summary = build.build(cfg, raw=raw, run_tasks=shard_tasks.run_ray if ray else build.run_local)
    typer.echo("\n".join(summary.lines()))


@app.command("inspect")
@user_errors
def inspect(
    shards: Annotated[str, typer.Argument(help="Shard-set folder (path or fsspec URL).")],
    verify: Annotated[bool, typer.Option(
        "--verify",
        help="Re-read every file against its checksum and count samples; exit 1 on mismatch.")] = False,
) -> None:
    """Summarise a shard set's manifest; with --verify, check every file."""
    from intint.store import shard_verify, shardio

    m = shardio.read_manifest(shards)
    shown = ", ".join(m.classes[:10]) + (f", … ({m.num_classes - 10} more)" if m.num_classes > 10 else "")
    lines = [f"shard set {shardio.root_url(shards)}: dataset {m.dataset!r}, format {m.format_version}",
             f"classes ({m.num_classes}): {shown}",
             f"intensity: modes {m.intensity.modes}, {len(m.intensity.definitions)} definitions",
             f"rejects: {m.rejects}"]
    for name, info in m.splits.items():
        sizes = [e.num_samples for e in info.shards]
        span = f", {min(sizes)}-{max(sizes)} per shard" if sizes else ""
        lines.append(f"  {name}: {info.num_samples} videos in {len(info.shards)} shards{span}")
    typer.echo("\n".join(lines))
    if not verify:
        return
    report = shard_verify.verify(shards)
    for problem in report.problems + [p for s in report.shards for p in s.problems]:
        typer.echo(f"MISMATCH {problem}", err=True)
    n_samples = sum(s.tar_samples for s in report.shards)
    status = "OK" if report.ok else "FAILED"
    typer.echo(f"verify: {len(report.shards)} shards, {n_samples} samples read: {status}")
    if not report.ok:
        raise typer.Exit(code=1)


@app.command("demo")
@user_errors
def demo(
    out: Annotated[str, typer.Option(help="Output folder (re-running into it starts afresh).")] = "demo_out",
    videos_per_class: Annotated[int | None, typer.Option(
        help="Training videos per class (val/test scale along; default 32).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs (default: the demo preset's).")] = None,
    seed: Annotated[int, typer.Option(help="Dataset and training seed.")] = 0,
    ray_workers: Annotated[int | None, typer.Option(
        help="Ray Train workers (default: the demo preset's).")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    seeds: Annotated[int | None, typer.Option(
        help="Run the demo N times (seeds --seed, --seed+1, ...) and report mean ± sd (seeds.json).")] = None,
) -> None:
    """Generate the demo dataset, build shards, train both pathways on Ray (CPU), test with fusion, draw."""
    from intint.demo import run as demo_mod
    from intint.demo import seeds as seeds_mod

    opts = demo_mod.DemoOptions(out=out, videos_per_class=videos_per_class, epochs=epochs, seed=seed,
                                ray_workers=ray_workers, progress=progress)
    if seeds is not None:
        many = seeds_mod.run_seeds(opts, seeds, echo=typer.echo)
        _echo_results(seeds_mod.seeds_table(many.summary), f"demo test split, mean ± sd, {seeds} seeds")
        typer.echo(f"seeds: {many.out / seeds_mod.SEEDS_FILE}; seconds per seed: "
                   + ", ".join(f"{k} {v['total']:.0f}" for k, v in many.seconds.items()))
        return
    result = demo_mod.run_demo(opts, echo=typer.echo)
    _echo_results(demo_mod.results_table(result.results),
                  f"demo test split ({result.results['fused']['num_samples']} videos)")
    typer.echo(f"results: {result.out / 'results.json'}; checkpoint: {result.checkpoint}")
    typer.echo("pictures: " + ", ".join(p.name for p in result.pictures))
    typer.echo("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in result.seconds.items()))


@app.command("predict")
@user_errors
def predict(
    checkpoint: Annotated[str, typer.Option(
        help="Checkpoint folder (state.pt + config.json), or a run folder: its tested checkpoint.")],
    annotations: Annotated[str | None, typer.Option(
        help="PYSKL annotation pickle holding the video.")] = None,
    key: Annotated[str | None, typer.Option(
        help="The video's frame_dir (or shard key); default: the file's first video.")] = None,
    classes: Annotated[str | None, typer.Option(
        help="Class-name file (default: the names in the run's shard manifest).")] = None,
    top: Annotated[int, typer.Option(help="How many classes to list.")] = 5,
    device: Annotated[str | None, typer.Option(help="torch device (default: cuda when available).")] = None,
    video: Annotated[str | None, typer.Option(
        help="A video file instead of --annotations: extract its poses, predict, draw NAME.prediction.png.")
    ] = None,
) -> None:
    """Top classes of one video for each pathway and fused."""
    from intint.eval import predict as predict_mod

    if (annotations is None) == (video is None):
        raise _fail("give --annotations FILE or --video FILE (exactly one)")
    if video is not None:
        from intint.eval import video_predict

        result = video_predict.predict_video(video, checkpoint, classes=classes, device=device,
                                             picture=video_predict.default_picture(video))
        typer.echo(predict_mod.format_prediction(result.prediction, top) + f"\npicture: {result.picture}")
        return
    pred = predict_mod.predict_file(checkpoint, annotations, key, classes=classes, device=device)
    typer.echo(predict_mod.format_prediction(pred, top))


@app.command("train", context_settings=PASS_THROUGH, add_help_option=False)
@user_errors
def train(
    ctx: typer.Context,
    preset: Annotated[str, typer.Option(help="Base config: finegym, hmdb51, demo or tiny.")] = "finegym",
    split: Annotated[int | None, typer.Option(help="HMDB51 split K (train{K}/test{K}).")] = None,
) -> None:
    """Train both pathways on Ray Train: --preset, --split K, and any config field (--shards, --epochs,
    --optim.lr, --wandb disabled, ...; `intint train --help` lists them all); --config RUN/config.json
    reruns a recorded run, --resume continues the run --name names (a larger --epochs extends it)."""
    from intint.train import launch, run_record

    description = "Train both pathways on Ray Train. --split K (HMDB51) picks train{K}/test{K}."
    request = run_record.parse_run(["--preset", preset, *ctx.args], default_preset=preset, split=split,
                                   description=description, prog="intint train")
    if request.resume:
        launch.run(request.config, resume=True)
    else:
        launch.run(request.config)


@app.command("evaluate", context_settings=PASS_THROUGH, add_help_option=False)
@user_errors
def evaluate(ctx: typer.Context) -> None:
    """Test a checkpoint with test views and fusion: --checkpoint DIR [--shards URL --split S --out PATH];
    writes eval-<split>-<weights>.json and its per-video .probs.parquet into the checkpoint folder."""
    import json

    from intint.config import parse_evaluate
    from intint.eval.distributed import evaluate_checkpoint, flat_metrics
    from intint.eval.outputs import probabilities_url
    from intint.train import preflight

    description = ("Test a checkpoint (or a run folder: its tested checkpoint) with test views and late "
                   "fusion. Writes eval-<split>-<weights>.json into the checkpoint folder (never the "
                   "results.json training wrote) and the per-video probabilities beside it "
                   "(eval-<split>-<weights>.probs.parquet).")
    args = preflight.check(parse_evaluate(ctx.args, description, prog="intint evaluate"))
    url, results = evaluate_checkpoint(args, weights=args.weights)
    typer.echo(json.dumps(flat_metrics(results, ""), indent=1) + f"\nresults written to {url}"
               f"\nper-video probabilities: {probabilities_url(url)}")


@app.command("export")
@user_errors
def export(
    source: Annotated[str, typer.Argument(
        metavar="RUN_OR_CHECKPOINT",
        help="Run folder (its tested checkpoint) or checkpoint folder (state.pt + config.json).")],
    out: Annotated[str, typer.Option("--out", "-o", help="Export folder (path or fsspec URL).")],
    weights: Annotated[str, typer.Option(
        help="'last' (the checkpoint's own epoch) or 'best' (the best epoch it holds).")] = "last",
    overwrite: Annotated[bool, typer.Option(help="Replace an export already in --out.")] = False,
) -> None:
    """Write a trained model for use elsewhere: model.pt (plain state dict), config.json, classes.txt and a
    PYSKL-format checkpoint per pathway (pyskl_<pathway>.pth)."""
    from intint.eval.export import export_model

    if weights not in ("last", "best"):
        raise _fail(f"--weights must be 'last' or 'best', got {weights!r}")
    done = export_model(source, out, weights=weights, overwrite=overwrite)
    typer.echo(f"exported {done.record['checkpoint']} (epoch {done.record['epoch']}, {weights} weights) to "
               f"{done.out}: " + ", ".join(done.files))


@app.command("ablate", context_settings=PASS_THROUGH, add_help_option=False)
@user_errors
def ablate(ctx: typer.Context) -> None:
    """The paper's clip-placement ablation: one Integrity run, one Intensity run per placement, fused from
    saved probabilities: --placements, --jba-weights, --concurrency, --cpus, --preset and config fields."""
    from intint.ablation import plan, sweep

    ab = plan.parse_args(ctx.args, "Reproduce the paper's ablation tables (Tables IV-VI).",
                         prog="intint ablate")
    sweep.run(sweep.checked(ab))


def _echo_results(rows: list[list[str]], title: str) -> None:
    """The accuracy table with rich when it is installed (it comes with typer), else plain text."""
    header = ["pathway", "top-1 %", "top-5 %", "mean class %"]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        typer.echo(title)
        for r in [header, *rows]:
            typer.echo("  ".join(f"{c:>13}" for c in r))
        return
    table = Table(title=title)
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*r, style="bold" if r[0] == "Fused" else None)
    Console().print(table)


@app.command("extract-poses")
@user_errors
def extract_poses(
    source: Annotated[str, typer.Argument(
        help="Folder laid out as SOURCE/<class>/<clip>.<ext>, or a list file of '<path> <class>' lines.")],
    output: Annotated[str, typer.Option("--output", "-o", help="PYSKL annotation pickle to write.")] = "",
    classes: Annotated[str | None, typer.Option(
        help="Class-name file fixing the labels (default: the sorted class names found).")] = None,
    split_fractions: Annotated[str, typer.Option(
        help="Stratified split, NAME=FRACTION pairs.")] = "train=0.7,val=0.15,test=0.15",
    seed: Annotated[int, typer.Option(help="Split seed.")] = 0,
    workers: Annotated[int | None, typer.Option(help="Parallel processes (default: all cores).")] = None,
    ray: Annotated[bool, typer.Option("--ray", help="Extract as Ray tasks (RAY_ADDRESS or local).")] = False,
    estimator: Annotated[str, typer.Option(
        help="'blazepose' or your own 'package.module:factory' (docs/video.md).")] = "blazepose",
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Extract COCO-17 poses from videos into a PYSKL pickle (+ classes.txt, rejects); resumable."""
    from intint.config import parse_key_values
    from intint.train import video_tasks
    from intint.video import extract
    from intint.video.estimators import EstimatorSpec

    cfg = extract.ExtractConfig(
        source=source, output=output, classes=classes,
        split_fractions=parse_key_values(split_fractions, "--split-fractions") or {}, seed=seed,
        workers=workers, estimator=EstimatorSpec(estimator), progress=progress)
    summary = extract.extract(cfg, run_videos=video_tasks.run_ray if ray else extract.run_local)
    typer.echo("\n".join(summary.lines()))


if __name__ == "__main__":
    app()
