"""What a loader is asked for (``LoaderConfig``) and where a training loader stands (``LoaderState``).

The fields are those of docs/architecture.md "Loader contract". Plain data with its checks, so every other
loader module can depend on it without depending on each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from intint.loader.epoch_plan import REMAINDERS, Layout, Segment
from intint.loader.holdout import Holdout
from intint.pose import intensity
from intint.pose.sampling import PATHWAYS
from intint.pose.transforms import PipelineConfig
from intint.store import shardio

__all__ = ["LoaderConfig", "LoaderState"]


@dataclass
class LoaderConfig:
    """Everything the loader needs; the fields of docs/architecture.md "Loader contract"."""

    shards: str  # shard-set URL (local path or fsspec URL)
    split: str = "train"
    batch_size: int = 16  # per rank
    num_workers: int = 2  # DataLoader worker processes per rank (0 = read in the main process)
    pathways: str = "both"  # "both" | "integrity" | "intensity"
    heatmaps_on: str = "workers"  # "workers" (render in loader processes) | "device" (ship keypoint clips)
    clip_len: int = 48
    intensity_mode: str = "reference"  # which precomputed columns to read
    intensity_definition: str = "J"  # any name in intensity.DEFINITIONS, or "random" (docs/method.md §2.6)
    jba_weights: dict[str, float] | None = None  # JBA_weighted peaks for these weights (reweighted_peaks)
    jitter: int = 0  # temporal jitter of the peak in training (0 = reference)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    sigma: float = 0.6
    max_persons: int | None = None  # None: every person is rendered; else a cap (dropped persons are counted)
    seed: int = 0
    shuffle_buffer: int = 256
    # What an epoch does with the samples an even split over ranks × workers leaves (loader.epoch_plan):
    # "repeat" re-reads the fewest samples that give every rank the same batches, "drop" leaves them out.
    remainder: str = "repeat"
    allow_missing_shards: bool = False
    verify_checksums: bool | None = None  # SHA-256 of each shard as it streams; None: where cheap
    pin_memory: bool = False
    prefetch_factor: int = 4
    persistent_workers: bool = True
    holdout: Holdout | None = None  # read the split without / only its held-out validation videos (holdout)

    def __post_init__(self) -> None:
        if self.pathways not in ("both", *PATHWAYS):
            raise ValueError(f"LoaderConfig.pathways must be 'both', 'integrity' or 'intensity', "
                             f"got {self.pathways!r}")
        if self.heatmaps_on not in ("workers", "device"):
            raise ValueError(f"LoaderConfig.heatmaps_on must be 'workers' or 'device', "
                             f"got {self.heatmaps_on!r}")
        if self.intensity_definition != "random" and self.intensity_definition not in intensity.DEFINITIONS:
            raise ValueError(f"LoaderConfig.intensity_definition must be 'random' or one of "
                             f"{intensity.DEFINITIONS}, got {self.intensity_definition!r}")
        for name in ("batch_size", "clip_len", "max_persons", "prefetch_factor"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"LoaderConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_workers", "jitter", "seed", "shuffle_buffer"):
            if getattr(self, name) < 0:
                raise ValueError(f"LoaderConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.remainder not in REMAINDERS:
            raise ValueError(f"LoaderConfig.remainder must be one of {REMAINDERS}, got {self.remainder!r}")
        if self.sigma <= 0:
            raise ValueError(f"LoaderConfig.sigma must be positive, got {self.sigma}")
        if self.jba_weights is not None and self.intensity_definition != "JBA_weighted":
            raise ValueError("LoaderConfig.jba_weights only applies to intensity_definition 'JBA_weighted', "
                             f"got {self.intensity_definition!r}")

    @property
    def active_pathways(self) -> tuple[str, ...]:
        return PATHWAYS if self.pathways == "both" else (self.pathways,)

    @property
    def verifies_checksums(self) -> bool:
        """Whether each shard's tar is hashed as it streams and checked against the manifest (the rule on a
        mismatch: ``shardstream.shard_videos``): ``verify_checksums``, or by default where the hash costs
        under 5 % of loader throughput (benchmarks/bench_checksum.py): with heatmaps_on="workers", whose
        rendering dwarfs it, and not with "device", where a keypoint-only worker does little else per byte
        it reads."""
        return self.heatmaps_on == "workers" if self.verify_checksums is None else self.verify_checksums

    @property
    def needs_peaks(self) -> bool:
        return "intensity" in self.active_pathways and self.intensity_definition != "random"

    @property
    def peak_column(self) -> str:
        return shardio.peak_column(self.intensity_mode, self.intensity_definition)


@dataclass
class LoaderState:
    """Where a training loader is: its epoch, the seed and sample count of that epoch's order, and the
    epoch's segments so far (``loader.epoch_plan``): the layouts it was read under before (``prior``, each
    with the batches every rank consumed) and the current one with ``batches_consumed``.

    Together they say which samples of the epoch were delivered, on any number of ranks and workers, so
    another layout can take the rest. ``seed is None``: a state of the old format (no layout recorded),
    which only places the start of an epoch.
    """

    epoch: int = 0
    batches_consumed: int = 0  # every rank's batches in the current segment
    seed: int | None = None
    samples: int | None = None  # samples of the epoch's order (the split, without held-out videos)
    layout: Layout | None = None  # the current segment's
    prior: tuple[Segment, ...] = ()

    FORMAT = 2

    def to_dict(self) -> dict[str, Any]:
        if self.layout is None:
            return {"epoch": self.epoch, "batches_consumed": self.batches_consumed}
        segments = [*self.prior, Segment(self.layout, self.batches_consumed)]
        return {"format": self.FORMAT, "epoch": self.epoch, "seed": self.seed, "samples": self.samples,
                "segments": [s.to_dict() for s in segments]}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> LoaderState:
        """Parse a ``to_dict``; an old-format state (``{"epoch", "batches_consumed"}``) loads at an epoch's
        start only: its mid-epoch position belongs to the shard-level plan, whose order is gone."""
        if not isinstance(state, dict):
            raise ValueError(f"loader state must be a dict, got {state!r}")
        if "format" not in state:
            try:
                epoch, consumed = int(state["epoch"]), int(state["batches_consumed"])
            except (KeyError, TypeError, ValueError) as exn:
                raise ValueError(f"loader state must be a loader's state_dict(), got {state!r}") from exn
            if consumed != 0 or epoch < 0:
                raise ValueError(f"loader state {state!r} is of the old format with {consumed} batches "
                                 "consumed mid-epoch under the shard-level plan, which this loader cannot "
                                 "place; resume from a checkpoint at an epoch's start")
            return cls(epoch, 0)
        try:
            if int(state["format"]) != cls.FORMAT:
                raise ValueError(f"format {state['format']}, this loader reads {cls.FORMAT}")
            segments = tuple(Segment.from_dict(s) for s in state["segments"])
            epoch, seed, samples = int(state["epoch"]), int(state["seed"]), int(state["samples"])
            if not segments or epoch < 0 or samples < 0 or any(s.batches < 0 for s in segments):
                raise ValueError("negative counts or no segment")
        except (KeyError, TypeError, ValueError) as exn:
            raise ValueError(f"loader state {state!r} is not a loader's state_dict(): {exn}") from exn
        return cls(epoch, segments[-1].batches, seed, samples, segments[-1].layout, segments[:-1])
