"""Test a training checkpoint with the test views and late fusion; writes results JSON beside it.

    python jobs/evaluate.py --checkpoint runs/finegym/checkpoint_2026-... --shards /data/finegym-shards
The checkpoint's stored config decides the model and views; `--split`, `--num-clips`, `--flip` override.
Same as `intint evaluate`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# Run from a checkout or a Ray job's working dir without relying on an installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from intint.config import parse_evaluate  # noqa: E402
from intint.eval.distributed import evaluate_checkpoint, flat_metrics  # noqa: E402
from intint.train.logs import configure_logging  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    configure_logging()
    url, results = evaluate_checkpoint(parse_evaluate(argv, description=__doc__))
    print(json.dumps(flat_metrics(results, ""), indent=1))
    print(f"results written to {url}")


if __name__ == "__main__":
    main()
