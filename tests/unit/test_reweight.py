"""Custom JBA weights recomputed from stored curves (intint.store.reweighted_peaks): the peaks must be
exactly those that `intensity.compute` gives for the same weights, in both modes, on a shard set the
test builds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from intint.pose import intensity
from intint.store import build, reweighted_peaks, shardio
from intint.testing import synthetic

CUSTOM = {"J": 0.2, "B": 0.1, "A": 0.7}


@pytest.fixture(scope="module")
def shard_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    raw = synthetic.make_annotations(16, 3, seed=3, frames=(12, 60), dtype=np.float32)
    out = tmp_path_factory.mktemp("reweight") / "shards"
    build.build(build.BuildConfig(input="synthetic", output=str(out), num_classes=3, num_shards=2, workers=1,
                                  progress=False), raw=raw)
    return out, {a["frame_dir"]: a for a in raw["annotations"]}


def _tables(root: Path) -> list[str]:
    return [arrow for split in ("train", "val") for _, arrow, _ in shardio.shard_urls(str(root), split)]


@pytest.mark.parametrize("mode", intensity.MODES)
def test_builder_weights_reproduce_the_stored_peaks(shard_set: tuple[Path, dict], mode: str) -> None:
    root, _ = shard_set
    for arrow in _tables(str(root)):
        table = shardio.read_intensity(arrow)
        stored = table.column(shardio.peak_column(mode, "JBA_weighted")).to_numpy()
        got = reweighted_peaks.weighted_peaks(table, mode, {"J": 6.928, "B": 6.869, "A": 7.026}, source=arrow)
        np.testing.assert_array_equal(got, stored)


@pytest.mark.parametrize("mode", intensity.MODES)
def test_custom_weights_match_intensity_compute(shard_set: tuple[Path, dict], mode: str) -> None:
    root, videos = shard_set
    moved = 0
    for arrow in _tables(str(root)):
        peaks = reweighted_peaks.read_weighted_peaks(arrow, mode, CUSTOM)
        table = shardio.read_intensity(arrow, ["key", "frame_dir", shardio.peak_column(mode, "JBA_weighted")])
        for key, frame_dir, default_peak in zip(*(table.column(c).to_pylist() for c in table.column_names),
                                                strict=True):
            v = videos[frame_dir]
            want = intensity.compute(v["keypoint"], v["keypoint_score"], mode, CUSTOM, frame_dir=frame_dir)
            assert peaks[key] == intensity.peak(want["JBA_weighted"]), frame_dir
            moved += peaks[key] != default_peak
    assert moved > 0  # the weights really change where some windows go


def test_errors_name_the_table_and_field(shard_set: tuple[Path, dict]) -> None:
    root, _ = shard_set
    arrow = _tables(str(root))[0]
    table = shardio.read_intensity(arrow)
    with pytest.raises(ValueError, match="jba_weights"):
        reweighted_peaks.weighted_peaks(table, "reference", {"J": 1.0, "B": 1.0}, source=arrow)
    with pytest.raises(KeyError, match="reference/angC_avr"):
        reweighted_peaks.weighted_peaks(table.drop_columns(["reference/angC_avr"]), "reference", CUSTOM,
                                        source=arrow)
    bad = table.set_column(table.column_names.index("reference/jnt_avr"), "reference/jnt_avr",
                           pa.array([[1.0]] * table.num_rows, pa.list_(pa.float32())))
    first = table.column("frame_dir")[0].as_py()
    with pytest.raises(ValueError, match=f"{first}.*reference/jnt_avr"):
        reweighted_peaks.weighted_peaks(bad, "reference", CUSTOM, source=arrow)


@pytest.mark.parametrize("weights", [None, CUSTOM])
def test_loader_places_the_intensity_clip_at_the_reweighted_peak(shard_set: tuple[Path, dict], weights,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from intint.loader import streams
    from intint.loader.config import LoaderConfig
    from intint.pose import sampling

    root, _ = shard_set
    placed: list[int] = []
    original = sampling.intensity_indices

    def spy(total_frames: int, peak: int, *args, **kwargs):
        placed.append(int(peak))
        return original(total_frames, peak, *args, **kwargs)

    monkeypatch.setattr(sampling, "intensity_indices", spy)
    cfg = LoaderConfig(shards=str(root), split="val", batch_size=4, num_workers=0,
                               pathways="intensity",
                            heatmaps_on="device", clip_len=8, intensity_definition="JBA_weighted",
                            jba_weights=weights)
    keys = [k for batch in streams.eval_loader(cfg, 0, 1, flip_double=False) for k in batch["key"]]
    want: dict[str, int] = {}
    for arrow in _tables(str(root)):
        if "/val-" in arrow:
            if weights is None:
                t = shardio.read_intensity(arrow, ["key", "peak/reference/JBA_weighted"])
                want.update(zip(*(t.column(c).to_pylist() for c in t.column_names), strict=True))
            else:
                want.update(reweighted_peaks.read_weighted_peaks(arrow, "reference", weights))
    assert placed == [want[k] for k in keys] and len(keys) == len(want)
    with pytest.raises(ValueError, match="jba_weights only applies"):
        LoaderConfig(shards=str(root), intensity_definition="J", jba_weights=CUSTOM)
