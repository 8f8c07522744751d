"""Train Int&Int on HMDB51 split K with Ray Train (docs/method.md §4.2, §6.3), from K400 PoseC3D weights.

    python jobs/train_hmdb51.py --split 1 --shards /data/hmdb51-shards --pretrained /data/k400_posec3d.pth
    ray job submit --working-dir . -- python jobs/train_hmdb51.py --split 2 --shards s3://... --pretrained s3://...
Any config field can be overridden (`--help` lists them); `--preset tiny|demo` starts from a small model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Run from a checkout or a Ray job's working dir without relying on an installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from intint.config import parse_args  # noqa: E402
from intint.train.launch import run  # noqa: E402
from intint.train.logs import configure_logging  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    configure_logging()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--split", type=int, choices=(1, 2, 3), help="HMDB51 split: train{K} / test{K}")
    known, rest = pre.parse_known_args(argv)
    if known.split is None:
        if not {"-h", "--help"} & set(rest):
            pre.error("--split K is required (1, 2 or 3)")
        known.split = 1
    run(parse_args(rest, default_preset="hmdb51", split=known.split, description=__doc__))


if __name__ == "__main__":
    main()
