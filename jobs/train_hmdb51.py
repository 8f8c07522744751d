"""Train Int&Int on HMDB51 with Ray Train (docs/method.md §4.2, §6.3), from K400 PoseC3D weights.

    python jobs/train_hmdb51.py --split 1 --shards /data/hmdb51-shards --pretrained /data/k400_posec3d.pth
    python jobs/train_hmdb51.py --split all --shards /data/hmdb51-shards --pretrained /data/k400_posec3d.pth
    ray job submit --working-dir . -- python jobs/train_hmdb51.py --split 2 --shards s3://... --pretrained s3://...
`--split all` trains splits 1-3 (at once where the cluster has room) and writes hmdb51-splits.json and
hmdb51-splits.md (per split and mean) into the storage path. Without `--pretrained` the preset refuses
to start unless `--from-scratch` is given. Any config field can be overridden (`--help` lists them);
`--preset tiny|demo` starts from a small model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Run from a checkout or a Ray job's working dir without relying on an installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from intint.cli import run_job  # noqa: E402
from intint.config import TrainConfig  # noqa: E402
from intint.presets import parse_args  # noqa: E402
from intint.train import launch  # noqa: E402
from intint.train.all_splits import run_splits  # noqa: E402
from intint.train.logs import configure_logging  # noqa: E402

SPLITS = (1, 2, 3)


def split_configs(args: list[str], splits: tuple[int, ...]) -> dict[str, TrainConfig]:
    """One config per split (label `split{K}`), run names made distinct with `-split{K}` where needed."""
    configs = {f"split{k}": parse_args(args, default_preset="hmdb51", split=k, description=__doc__)
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
    configs = split_configs(rest, splits)
    try:
        for cfg in configs.values():
            launch.resolve(cfg)  # refusals (no shards, HMDB51 without weights) before Ray starts
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
    if known.split == "all":
        run_splits(configs, prefix="hmdb51")
    else:
        launch.run(next(iter(configs.values())))


if __name__ == "__main__":
    run_job(main)  # bad input: one line "error: ...", exit code 1
