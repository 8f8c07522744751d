"""Train Int&Int on FineGYM with Ray Train (docs/method.md §4.1, §6.3): both pathways in one job, late fusion.

Locally (starts a private Ray):   python jobs/train_finegym.py --shards /data/finegym-shards --no-use-gpu ...
On a cluster:                      ray job submit --working-dir . -- python jobs/train_finegym.py --shards s3://...
The preset tests the last epoch in fp32, as the reference does; `--select best --data.val-fraction 0.1`
picks the best epoch on 10 % of train held out instead, `--precision bf16` trains and tests with bf16
autocast on GPU. Any config field can be overridden (`--help` lists them);
`--preset tiny|demo` starts from a small model.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run from a checkout or a Ray job's working dir without relying on an installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from intint.cli import run_job  # noqa: E402
from intint.presets import parse_args  # noqa: E402
from intint.train import launch  # noqa: E402
from intint.train.logs import configure_logging  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    configure_logging()
    cfg = parse_args(argv, default_preset="finegym", description=__doc__)
    try:
        launch.resolve(cfg)  # refusals (no shards, HMDB51 without weights) before Ray starts
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
    launch.run(cfg)


if __name__ == "__main__":
    run_job(main)  # bad input: one line "error: ...", exit code 1
