"""Reproduce the paper's ablation tables (spec §8.1, Tables IV-VI): one Integrity run, one Intensity run
per clip placement, late fusion from saved probabilities, JBA weights from validation accuracies.

Locally (starts a private Ray):
    python jobs/ablate.py --preset demo --shards /data/demo-shards --storage-path runs --name demo-ablation \\
        --placements J B A JBA_weighted random --data.test-split test
On a cluster:
    ray job submit --working-dir . -- python jobs/ablate.py --preset finegym --shards s3://bucket/finegym ...

Sweep options: --placements (names, comma lists, or `paper` = the Table IV rows, `singles`, `all`),
--jba-weights J=..,B=..,A=.. (fixed weights instead of validation accuracies), --concurrency N,
--cpus N. Every other flag overrides a field of the preset's TrainConfig (`--epochs 2`, `--wandb disabled`,
`--intensity-mode paper`, ...). The sweep folder is <storage-path>/<name>; rerunning the same command
skips finished runs and resumes unfinished ones. Outputs: table.json, table.md, table.png there.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Run from a checkout or a Ray job's working dir without relying on an installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from intint import ablate  # noqa: E402
from intint.config import parse_args  # noqa: E402


def sweep_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--placements", nargs="+", default=["paper"],
                   help="Intensity clip placements to train (default: paper = "
                        f"{' '.join(ablate.DEFAULT_PLACEMENTS)})")
    p.add_argument("--jba-weights", default=None, help="fixed JBA weights J=..,B=..,A=.. (default: from "
                                                       "the J, B, A runs' validation accuracies)")
    p.add_argument("--concurrency", type=int, default=None, help="at most N runs at once (default: as "
                                                                 "many as the cluster's resources hold)")
    p.add_argument("--cpus", type=int, default=None, help="CPUs of the private local Ray (default: all)")
    return p


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = sweep_parser()
    if "-h" in argv or "--help" in argv:
        parser.print_help()
        print("\nTrainConfig overrides (of the chosen --preset):\n")
    known, rest = parser.parse_known_args(argv)
    base = parse_args(rest, default_preset="demo", description="Ablation sweep: preset overrides")
    config = ablate.AblationConfig(base=base, placements=ablate.parse_placements(known.placements),
                                   jba_weights=ablate.parse_weights(known.jba_weights),
                                   concurrency=known.concurrency, cpus=known.cpus)
    return ablate.run(config)


if __name__ == "__main__":
    main()
