"""What an ablation sweep trains: its config, its runs and their folders, the records that make it
resumable, and its command line (`intint ablate` and jobs/ablate.py).

A sweep is one Integrity run plus one Intensity run per clip placement, each restricted to one pathway
and trained in its own folder `storage_path/name/<run id>`. `run.json` records a run's config before it
starts and `done.json` its metrics once finished, so a rerun with a different config fails instead of
mixing two (`check_same`), while the fields that do not change what a run learns (paths, tracking,
loader processes) may differ (`VOLATILE_FIELDS`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from intint import config
from intint.ablation import results_table
from intint.ablation.results_table import JBA_SOURCES, RANDOM
from intint.config import TrainConfig
from intint.pose import intensity
from intint.store import fsio

INTEGRITY_RUN = "integrity"
DONE_FILE = "done.json"
PLAN_FILE = "run.json"
PREDICTIONS_FILE = "predictions.npz"
TABLE_JSON, TABLE_MD, TABLE_PNG = "table.json", "table.md", "table.png"
DEFAULT_PLACEMENTS: tuple[str, ...] = (RANDOM, "J", "B", "A", "JBA_arithmetic", "JBA_weighted")
ROLES: tuple[str, ...] = ("val", "test")

# Config fields that do not change what a run learns: a rerun may change them freely (other machine,
# other paths, other tracking). Every other field must match the recorded run.json / done.json.
VOLATILE_FIELDS = frozenset({
    "shards", "storage_path", "name", "wandb", "wandb_project", "wandb_group", "log_every", "loader_workers",
    "cpus_per_worker", "max_failures", "inject_failure_at_epoch", "compile", "heatmaps_on",
})
# Fields the Integrity run ignores (it never reads intensity).
INTENSITY_FIELDS = frozenset({"intensity_mode", "intensity_definition", "jba_weights"})


@dataclass
class AblationConfig:
    """A sweep: the preset every run starts from, which placements to train, and how to schedule them.

    The sweep folder is `base.storage_path/base.name`; `base.name` is also the W&B group of its runs.
    `jba_weights` (J, B, A, any positive scale) fixes the JBA_weighted weights; None computes them from
    the J, B and A runs' validation accuracies (then J, B and A must be among the placements).
    """

    base: TrainConfig
    placements: tuple[str, ...] = DEFAULT_PLACEMENTS
    jba_weights: dict[str, float] | None = None
    concurrency: int | None = None  # at most this many runs at once; None = as many as resources hold
    cpus: int | None = None  # CPUs of a private local Ray; default max(this machine's, one run's needs)
    # > 1: the whole sweep once per seed base.seed, base.seed + 1, ... into `<sweep>/seed-<k>/`, then the
    # table over seeds (`intint.ablation.seed_table`); `{seed}` in base.shards picks each seed's shards.
    seeds: int = 1

    def __post_init__(self) -> None:
        self.placements = tuple(self.placements)
        unknown = [p for p in self.placements if p not in results_table.PLACEMENTS]
        if unknown or not self.placements:
            raise ValueError(f"placements must be a non-empty subset of {results_table.PLACEMENTS}, got "
                             f"{list(self.placements)}")
        if len(set(self.placements)) != len(self.placements):
            raise ValueError(f"placements are listed twice: {list(self.placements)}")
        if self.jba_weights is not None:
            results_table.normalised_fixed_weights(self.jba_weights)
        elif "JBA_weighted" in self.placements:
            missing = [g for g in JBA_SOURCES if g not in self.placements]
            if missing:
                raise ValueError("JBA_weighted takes its weights from the J, B and A runs' validation "
                                 f"accuracies; add {missing} to the placements or give fixed --jba-weights")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")

    @property
    def sweep_folder(self) -> str:
        return fsio.join(self.base.storage_path, self.base.name)

    @property
    def splits(self) -> dict[str, str]:
        """Split role → split name: `val` picks the JBA weights, `test` is what the table reports."""
        return {"val": self.base.data.validation_split, "test": self.base.data.test_split}


def run_id(placement: str | None) -> str:
    """Folder / Ray run / W&B name of a run: `integrity` or `intensity-<placement>`."""
    return INTEGRITY_RUN if placement is None else f"intensity-{placement}"


def run_config(ab: AblationConfig, placement: str | None, jba_weights: Mapping[str, float] | None = None
               ) -> TrainConfig:
    """The config of one run: the base preset restricted to one pathway, in its own folder of the sweep."""
    changes: dict[str, Any] = dict(storage_path=ab.sweep_folder, name=run_id(placement),
                                   wandb_group=ab.base.name, jba_weights=None)
    if placement is None:
        changes["pathways"] = "integrity"
    else:
        changes.update(pathways="intensity", intensity_definition=placement)
        if placement == "JBA_weighted":
            if jba_weights is None:
                raise ValueError("the JBA_weighted run needs its weights")
            changes["jba_weights"] = {g: float(jba_weights[g]) for g in JBA_SOURCES}
    return dataclasses.replace(ab.base, **changes)


def fingerprint(cfg: TrainConfig) -> dict[str, Any]:
    """The fields that decide what a run learns (JSON-normalised), for comparing a rerun with the record."""
    values = {k: v for k, v in cfg.to_dict().items() if k not in VOLATILE_FIELDS}
    if cfg.pathways == "integrity":
        values = {k: v for k, v in values.items() if k not in INTENSITY_FIELDS}
    return json.loads(json.dumps(values, sort_keys=True))


def check_same(recorded: Mapping[str, Any], cfg: TrainConfig, where: str) -> None:
    """Refuse to continue a run recorded (in `where`) with a config that learns something else."""
    was = fingerprint(TrainConfig.from_dict(dict(recorded)))
    now = fingerprint(cfg)
    if was != now:
        diff = sorted(k for k in set(was) | set(now) if was.get(k) != now.get(k))
        raise ValueError(f"{where} was made with another config (fields {diff} differ: "
                         f"{ {k: was.get(k) for k in diff} } then, { {k: now.get(k) for k in diff} } now); "
                         "use another sweep name (--name) or delete that run folder")


def read_json(url: str) -> dict[str, Any] | None:
    """A run record, or None when it does not exist."""
    if not fsio.exists(url):
        return None
    try:
        return json.loads(fsio.read_bytes(url))
    except json.JSONDecodeError as err:
        raise ValueError(f"{url} is not valid JSON ({err}); delete it to redo that run") from err


def write_json(url: str, obj: Any) -> None:
    fsio.atomic_write(url, (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode())


# ---------------------------------------------------------------------------------------- command line


def parse_placements(values: Sequence[str]) -> tuple[str, ...]:
    """`--placements` values: names, comma lists, `paper` (the Table IV rows), `singles`, `all`."""
    out: list[str] = []
    for value in values:
        for name in (v.strip() for v in value.split(",")):
            if not name:
                continue
            expanded = {"paper": DEFAULT_PLACEMENTS, "singles": intensity.SINGLE_DEFINITIONS,
                        "all": results_table.PLACEMENTS}.get(name, (name,))
            out.extend(p for p in expanded if p not in out)
    return tuple(out)


def parse_weights(text: str | None) -> dict[str, float] | None:
    """`--jba-weights J=0.3,B=0.3,A=0.4` → {"J": 0.3, ...}; None/empty → None."""
    weights = config.parse_key_values(text, "--jba-weights")
    if weights is not None:
        results_table.normalised_fixed_weights(weights)
    return weights


def sweep_parser() -> argparse.ArgumentParser:
    """The sweep's own options; every other flag overrides a field of the preset's TrainConfig."""
    # No abbreviations: `--seed K` is the TrainConfig field, not `--seeds`.
    p = argparse.ArgumentParser(add_help=False, usage=argparse.SUPPRESS, allow_abbrev=False)
    p.add_argument("--placements", nargs="+", default=["paper"],
                   help="Intensity clip placements to train: names, comma lists, `paper` (default: "
                        f"{' '.join(DEFAULT_PLACEMENTS)}), `singles` or `all`")
    p.add_argument("--jba-weights", default=None, help="fixed JBA weights J=..,B=..,A=.. (default: from "
                                                       "the J, B, A runs' validation accuracies)")
    p.add_argument("--concurrency", type=int, default=None, help="at most N runs at once (default: as "
                                                                 "many as the cluster's resources hold)")
    p.add_argument("--cpus", type=int, default=None, help="CPUs of the private local Ray (default: all)")
    p.add_argument("--seeds", type=int, default=1, help="run the sweep for N consecutive seeds (from --seed) "
                                                        "into <sweep>/seed-<k>/ and tabulate mean ± sd; "
                                                        "{seed} in --shards picks each seed's shard set")
    return p


def parse_args(argv: Sequence[str], description: str | None = None, prog: str | None = None
               ) -> AblationConfig:
    """The sweep of a command line: the sweep options above, `--preset NAME` (default demo) and any
    TrainConfig override (`--epochs 2`, `--wandb disabled`, ...). `--help` lists both."""
    parser = sweep_parser()
    known, rest = parser.parse_known_args(list(argv))
    sweep_help = parser.format_help().replace("options:\n", "", 1).rstrip()
    text = f"{description or 'Ablation sweep'}\n\nSweep options:\n{sweep_help}\n\nTrainConfig overrides:"
    base = config.parse_args(rest, default_preset="demo", description=text, prog=prog)
    return AblationConfig(base=base, placements=parse_placements(known.placements),
                          jba_weights=parse_weights(known.jba_weights), concurrency=known.concurrency,
                          cpus=known.cpus, seeds=known.seeds)
