"""Train Int&Int on HMDB51 with Ray Train (docs/method.md §4.2, §6.3), from K400 PoseC3D weights.

    python jobs/train_hmdb51.py --split 1 --shards /data/hmdb51-shards --pretrained /data/k400_posec3d.pth
    python jobs/train_hmdb51.py --split all --shards /data/hmdb51-shards --pretrained /data/k400_posec3d.pth
    ray job submit --working-dir . -- python jobs/train_hmdb51.py --split 2 --shards s3://... --pretrained s3://...
`--split all` trains splits 1-3 (at once where the cluster has room) and writes hmdb51-splits.json and
hmdb51-splits.md (per split and mean) into the storage path. Without `--pretrained` the preset refuses
to start unless `--from-scratch` is given. Any config field can be overridden (`--help` lists them);
`--preset tiny|demo` starts from a small model. `--config RUN/config.json` reruns a recorded run (flags
still override it); `--resume` continues the named run(s), and `--resume --epochs N` extends them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Run from a checkout or a Ray job's working dir without relying on an installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from intint.config import TrainConfig  # noqa: E402
from intint.train import launch, preflight  # noqa: E402
from intint.train.all_splits import run_splits  # noqa: E402
from intint.train.logs import configure_logging  # noqa: E402
from intint.train.run_record import check_claim, parse_run, split_run_options  # noqa: E402
from intint.user_errors import run_job  # noqa: E402

SPLITS = (1, 2, 3)


def split_configs(args: list[str], splits: tuple[int, ...]) -> dict[str, TrainConfig]:
    """One config per split (label `split{K}`), run names made distinct with `-split{K}` where needed."""
    configs = {f"split{k}": parse_run(args, default_preset="hmdb51", split=k, description=__doc__).config
               for k in splits}
    if len({c.name for c in configs.values()}) < len(configs):
        configs = {label: TrainConfig.from_dict({**c.to_dict(), "name": f"{c.name}-{label}"})
                   for label, c in configs.items()}
    return configs


def main(argv: list[str] | None = None) -> None:
    configure_logging()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--split", choices=("1", "2", "3", "all"),
                     help="HMDB51 split: train{K} / test{K}, or all three and their mean")
    known, rest = pre.parse_known_args(argv)
    if known.split is None:
        if not {"-h", "--help"} & set(rest):
            pre.error("--split K is required (1, 2, 3 or all)")
        known.split = "1"
    splits = SPLITS if known.split == "all" else (int(known.split),)
    resume = split_run_options(rest)[0].resume
    configs = split_configs(rest, splits)
    try:
        for label, cfg in configs.items():  # refusals (no shards, no weights, a rerun) before Ray starts
            configs[label] = resolved = preflight.check(cfg)  # also shards, storage, GPUs (use_gpu decided)
            check_claim(resolved, launch.run_folder(resolved), resume=resume)
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
    if known.split == "all":
        run_splits(configs, prefix="hmdb51", resume=resume)
    else:
        launch.run(next(iter(configs.values())), resume=resume)


if __name__ == "__main__":
    run_job(main)  # bad input: one line "error: ...", exit code 1
