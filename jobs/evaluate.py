"""Test a training checkpoint with the test views and late fusion; writes its own results file beside it.

    python jobs/evaluate.py --checkpoint runs/finegym/checkpoint_2026-... --shards /data/finegym-shards
    python jobs/evaluate.py --checkpoint runs/finegym --weights best
The checkpoint's stored config decides the model and views; `--split`, `--num-clips`, `--flip` override.
`--weights last` (default) tests the checkpoint's own epoch, `--weights best` the best epoch by validation
it holds (a run folder resolves to its tested checkpoint, the last one). The results go to
`eval-<split>-<weights>.json` in the checkpoint folder (or `--out`), never to the results.json training
wrote, and the per-video probabilities beside them (`eval-<split>-<weights>.probs.parquet`). Same as
`intint evaluate`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# Run from a checkout or a Ray job's working dir without relying on an installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from intint.config import parse_evaluate  # noqa: E402
from intint.eval.distributed import evaluate_checkpoint, flat_metrics  # noqa: E402
from intint.eval.outputs import probabilities_url  # noqa: E402
from intint.train import preflight  # noqa: E402
from intint.train.logs import configure_logging  # noqa: E402
from intint.user_errors import run_job  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    configure_logging()
    args = preflight.check(parse_evaluate(argv, description=__doc__))  # checkpoint, shards, output, device
    try:
        url, results = evaluate_checkpoint(args, weights=args.weights)
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
    print(json.dumps(flat_metrics(results, ""), indent=1))
    print(f"results written to {url}")
    print(f"per-video probabilities: {probabilities_url(url)}")


if __name__ == "__main__":
    run_job(main)  # bad input: one line "error: ...", exit code 1
