"""Train Int&Int on FineGYM with Ray Train (docs/method.md §4.1, §6.3): both pathways in one job, late fusion.

Locally (starts a private Ray):   python jobs/train_finegym.py --shards /data/finegym-shards --use-gpu false
On a cluster:                      ray job submit --working-dir . -- python jobs/train_finegym.py --shards s3://...
The preset tests the last epoch in fp32, as the reference does; `--select best --data.val-fraction 0.1`
picks the best epoch on 10 % of train held out instead, `--precision bf16` trains and tests with bf16
autocast on GPU. Any config field can be overridden (`--help` lists them);
`--preset tiny|demo` starts from a small model. `--config RUN/config.json` reruns a recorded run (flags
still override it); `--resume` continues the run `--name` names, and `--resume --epochs N` extends it.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run from a checkout or a Ray job's working dir without relying on an installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from intint.train import launch, preflight  # noqa: E402
from intint.train.logs import configure_logging  # noqa: E402
from intint.train.run_record import parse_run  # noqa: E402
from intint.user_errors import run_job  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    configure_logging()
    request = parse_run(argv, default_preset="finegym", description=__doc__)
    config = preflight.check(request.config)  # shards, storage, GPUs: one error line before Ray starts
    launch.run(config, resume=request.resume)


if __name__ == "__main__":
    run_job(main)  # bad input: one line "error: ...", exit code 1
