"""Train Int&Int on FineGYM with Ray Train (docs/method.md §4.1, §6.3): both pathways in one job, late fusion.

Locally (starts a private Ray):   python jobs/train_finegym.py --shards /data/finegym-shards --no-use-gpu ...
On a cluster:                      ray job submit --working-dir . -- python jobs/train_finegym.py --shards s3://...
Any config field can be overridden (`--help` lists them); `--preset tiny|demo` starts from a small model.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run from a checkout or a Ray job's working dir without relying on an installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from intint.config import parse_args  # noqa: E402
from intint.train.launch import run  # noqa: E402
from intint.train.logs import configure_logging  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    configure_logging()
    run(parse_args(argv, default_preset="finegym", description=__doc__))


if __name__ == "__main__":
    main()
