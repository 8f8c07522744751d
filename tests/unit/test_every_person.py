"""Every person of a video is rendered, as the reference does; a cap drops persons only where asked, and
says how many.

The shard set holds videos of 1-3 persons (most of them 3), built by the real builder. The all-person
render of a clip is ``heatmaps.render`` on that clip's keypoints of every person, cut by ``ClipMaker``
with a cap above any video's count (the clip's frames, crop and flip are those the loader draws for
the same video, epoch and key).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from intint.config import DataConfig
from intint.loader.clip_maker import ClipMaker
from intint.loader.config import LoaderConfig
from intint.loader.device import to_device
from intint.loader.streams import eval_loader, train_loader
from intint.pose.transforms import PipelineConfig
from intint.render import heatmaps
from intint.store import build, shardio
from intint.store.shardstream import Video, decode, raw_samples, read_peaks, shard_refs
from intint.testing import synthetic

NUM_CLASSES = 3
PIPE = PipelineConfig(train_hw=(32, 32), test_hw=(24, 24), train_short_side=36)
CLIP_LEN = 8
NUM_CLIPS = 2
ALL = 10  # a cap above every video's person count: the reference clips keep everyone


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Loader processes run torch single-threaded; make the in-process runs match (a shared 2-core
    machine slows small tensors down with OpenMP threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _three_person_annotations() -> dict:
    """24 train and 12 val videos, most with 3 persons, the rest 1-2 (padding must not disturb them)."""
    raw = synthetic.make_annotations(90, NUM_CLASSES, splits={"train": 60, "val": 30}, seed=5,
                                     frames=(12, 40), max_persons=3)
    three = [a for a in raw["annotations"] if a["keypoint"].shape[0] == 3]
    fewer = [a for a in raw["annotations"] if a["keypoint"].shape[0] < 3]
    chosen = three[:30] + fewer[:6]
    assert len(chosen) == 36, "the synthetic generator drew too few 3-person videos"
    names = [a["frame_dir"] for a in chosen]
    train = names[:20] + names[30:34]
    return {"annotations": chosen, "split": {"train": train, "val": [n for n in names if n not in train]}}


@pytest.fixture(scope="module")
def shard_set() -> Iterator[Path]:
    """A private temporary folder, not pytest's rotating basetemp, which concurrent sessions prune."""
    with tempfile.TemporaryDirectory(prefix="intint-persons-") as tmp:
        out = Path(tmp) / "set"
        build.build(build.BuildConfig(input="synthetic", output=str(out), shard_size=6, workers=1,
                                      progress=False, modes=("reference",)), raw=_three_person_annotations())
        yield out


def _cfg(url: Path, **kw: object) -> LoaderConfig:
    base = dict(shards=str(url), batch_size=4, num_workers=0, clip_len=CLIP_LEN, pipeline=PIPE,
                shuffle_buffer=8, persistent_workers=False, prefetch_factor=2)
    base.update(kw)
    return LoaderConfig(**base)  # type: ignore[arg-type]


def _videos(cfg: LoaderConfig) -> dict[str, Video]:
    """Every video of ``cfg.split`` decoded straight from its shard, with its intensity peak."""
    manifest = shardio.read_manifest(cfg.shards)
    out = {}
    for shard in shard_refs(cfg.shards, cfg.split, manifest):
        peaks = read_peaks(shard, cfg.peak_column)
        for raw in raw_samples(shard, lambda n, message: pytest.fail(message)):
            video = decode(raw, shard.tar, manifest.num_classes, peaks)
            out[video.key] = video
    return out


def _maker(cfg: LoaderConfig, persons: int) -> ClipMaker:
    return ClipMaker(cfg.active_pathways, cfg.clip_len, cfg.intensity_definition, 0, cfg.pipeline, persons,
                     cfg.seed)


def _train_reference(cfg: LoaderConfig, video: Video, persons: int = ALL,
                     epoch: int = 0) -> dict[str, torch.Tensor]:
    """The training volume of each pathway in ``epoch``, rendered from the first ``persons`` of the clip."""
    clips = _maker(cfg, persons).train(video, epoch, video.key)
    return {p: heatmaps.render(c.keypoint, c.score, *c.size, sigma=cfg.sigma) for p, c in clips.items()}


def _eval_reference(cfg: LoaderConfig, video: Video, persons: int = ALL) -> dict[str, torch.Tensor]:
    """The test views of each pathway (N = 2C view-major, as the loader's), from the first ``persons``."""
    out = {}
    for pathway, clip in _maker(cfg, persons).test(video, NUM_CLIPS).items():
        per_clip = [heatmaps.render(clip.keypoint[c], clip.score[c], *clip.size, sigma=cfg.sigma,
                                    flip_double=True) for c in range(NUM_CLIPS)]
        k = per_clip[0].shape[0] // 2
        views = [per_clip[c][v * k:(v + 1) * k] for v in range(2) for c in range(NUM_CLIPS)]
        out[pathway] = torch.stack(views)
    return out


def _volumes(batch: dict, cfg: LoaderConfig) -> dict[str, torch.Tensor]:
    """The batch's heatmaps of each pathway as float32 (device batches rendered here, on the CPU)."""
    ready = to_device(batch, "cpu", cfg)
    return {p: ready[p] for p in cfg.active_pathways}


def _same_mass(got: torch.Tensor, want: torch.Tensor) -> None:
    """Equal volumes (float16 rounding of values in [0, 1] at most) and equal heatmap mass."""
    assert got.shape == want.shape, (got.shape, want.shape)
    assert float((got.float() - want).abs().max()) <= 1e-3
    assert float(got.double().sum()) == pytest.approx(float(want.double().sum()), rel=1e-3)


def _third_person_share(refs: dict[str, dict[str, torch.Tensor]],
                        capped: dict[str, dict[str, torch.Tensor]]) -> float:
    """The share of the all-person heatmap mass that persons beyond two add (the data is worth testing)."""
    full = sum(float(v.double().sum()) for r in refs.values() for v in r.values())
    two = sum(float(v.double().sum()) for r in capped.values() for v in r.values())
    return (full - two) / full


@pytest.mark.parametrize(("heatmaps_on", "num_workers"), [("workers", 1), ("device", 0)])
def test_train_heatmap_mass_matches_the_all_person_render(shard_set: Path, heatmaps_on: str,
                                                          num_workers: int) -> None:
    cfg = _cfg(shard_set, heatmaps_on=heatmaps_on, num_workers=num_workers)
    videos = _videos(cfg)
    refs = {key: _train_reference(cfg, video) for key, video in videos.items()}
    assert _third_person_share(refs, {k: _train_reference(cfg, v, 2) for k, v in videos.items()}) > 0.05
    loader = train_loader(cfg, 0, 1)
    seen = []
    for batch in loader:
        if heatmaps_on == "device":  # padded to the batch's own largest person count, no further
            largest = max(videos[key].keypoint.shape[0] for key in batch["key"])
            assert batch["integrity_kp"].shape[1] == largest
        for pathway, volume in _volumes(batch, cfg).items():
            for i, key in enumerate(batch["key"]):
                _same_mass(volume[i], refs[key][pathway])
        assert batch["truncated"] == 0
        seen += batch["key"]
    assert sorted(seen) == sorted(videos) and loader.truncated.total == 0


@pytest.mark.parametrize("heatmaps_on", ["workers", "device"])
def test_eval_heatmap_mass_matches_the_all_person_render(shard_set: Path, heatmaps_on: str) -> None:
    cfg = _cfg(shard_set, heatmaps_on=heatmaps_on, split="val")
    videos = _videos(cfg)
    refs = {key: _eval_reference(cfg, video) for key, video in videos.items()}
    assert _third_person_share(refs, {k: _eval_reference(cfg, v, 2) for k, v in videos.items()}) > 0.05
    loader = eval_loader(cfg, 0, 1, num_clips=NUM_CLIPS, flip_double=True)
    seen = []
    for batch in loader:
        if heatmaps_on == "device":
            largest = max(videos[key].keypoint.shape[0] for key in batch["key"])
            assert batch["integrity_kp"].shape[2] == largest  # B×C×M×L×V×2
        for pathway, volume in _volumes(batch, cfg).items():
            for i, key in enumerate(batch["key"]):
                _same_mass(volume[i], refs[key][pathway])
        seen += batch["key"]
    assert sorted(seen) == sorted(videos) and loader.truncated.total == 0


@pytest.mark.parametrize("heatmaps_on", ["workers", "device"])
def test_a_cap_below_the_person_count_truncates_and_counts_once_per_epoch(
        shard_set: Path, heatmaps_on: str, caplog: pytest.LogCaptureFixture) -> None:
    cfg = _cfg(shard_set, heatmaps_on=heatmaps_on, max_persons=2)
    videos = _videos(cfg)
    beyond = sum(max(0, v.keypoint.shape[0] - 2) for v in videos.values())
    assert beyond >= 20
    loader = train_loader(cfg, 0, 1)
    for epoch in range(2):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="intint"):
            batches = list(loader)
        for batch in batches:
            kept = {key: _train_reference(cfg, videos[key], 2, epoch) for key in batch["key"]}
            for pathway, volume in _volumes(batch, cfg).items():
                for i, key in enumerate(batch["key"]):
                    _same_mass(volume[i], kept[key][pathway])
        assert sum(b["truncated"] for b in batches) == beyond
        assert loader.truncated.by_epoch[epoch] == beyond
        said = [r.getMessage() for r in caplog.records if "max_persons" in r.getMessage()]
        assert len(said) == 1 and f"{beyond} person(s)" in said[0] and f"epoch {epoch}" in said[0]
    assert loader.truncated.total == 2 * beyond

    evaluation = eval_loader(_cfg(shard_set, heatmaps_on=heatmaps_on, max_persons=2, split="val"), 0, 1,
                             num_clips=NUM_CLIPS, flip_double=True)
    val_beyond = sum(max(0, v.keypoint.shape[0] - 2) for v in _videos(evaluation.cfg).values())
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="intint"):
        assert sum(b["truncated"] for b in evaluation) == val_beyond > 0
    said = [r.getMessage() for r in caplog.records if "max_persons" in r.getMessage()]
    assert len(said) == 1 and f"{val_beyond} person(s)" in said[0]
    assert evaluation.truncated.total == val_beyond


def test_no_cap_is_the_default() -> None:
    assert LoaderConfig(shards="unused").max_persons is None
    assert DataConfig().max_persons is None
