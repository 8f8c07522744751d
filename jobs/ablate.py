"""Reproduce the paper's ablation tables (docs/method.md §8.1, Tables IV-VI): one Integrity run, one
Intensity run per clip placement, late fusion from saved probabilities, JBA weights from validation
accuracies.

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
Same as `intint ablate`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

# Run from a checkout or a Ray job's working dir without relying on an installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from intint.ablation import plan, sweep  # noqa: E402
from intint.train.logs import configure_logging  # noqa: E402
from intint.user_errors import run_job  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, Any]:
    configure_logging()
    ab = plan.parse_args(sys.argv[1:] if argv is None else argv, description=__doc__)
    return sweep.run(sweep.checked(ab))  # preflight of every seed's config: one error line before Ray


if __name__ == "__main__":
    run_job(main)  # bad input: one line "error: ...", exit code 1
