"""Keypoint transforms and pipelines: hand-computed cases and the reference's golden vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from reference.staged_pipeline import flip, random_crop_box, random_resized_crop, staged_train_pipeline

from intint import config
from intint.pose import skeleton
from intint.pose.keypoint_ops import pose_compact, rescale_size, resize
from intint.pose.sampling import uniform_indices
from intint.pose.transforms import PipelineConfig, train_pipeline
from intint.pose.transforms import test_pipeline as make_test_pipeline

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden.npz"


@pytest.fixture(scope="module")
def golden() -> np.lib.npyio.NpzFile:
    return np.load(GOLDEN)


def preset_pipeline(dataset: str, **overrides: object) -> PipelineConfig:
    """The pipeline sizes of a training preset of ``intint.config`` (docs/method.md §4.1-4.2)."""
    data = config.preset(dataset).data
    sizes = {"train_hw": (data.train_size,) * 2, "test_hw": (data.test_size,) * 2,
             "train_short_side": data.train_short_side}
    return PipelineConfig(**{**sizes, **overrides})  # type: ignore[arg-type]


def _clip(
    m: int = 1, t: int = 4, seed: int = 0, lo: float = 20, hi: float = 80
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    kp = rng.uniform(lo, hi, size=(m, t, 17, 2)).astype(np.float32)
    return kp, rng.uniform(0.3, 1.0, size=(m, t, 17)).astype(np.float32)


# --------------------------------------------------------------------------------------------- flip


def test_flip_mirrors_nonzero_x_as_w_minus_x_and_swaps_joints() -> None:
    kp = np.zeros((1, 1, 17, 2), np.float32)
    score = np.zeros((1, 1, 17), np.float32)
    kp[0, 0, 1] = (3.0, 5.0)  # left eye
    score[0, 0, 1] = 0.9
    kp[0, 0, 0] = (0.0, 7.0)  # nose with x exactly 0: stays 0
    out, out_score = flip(kp, score, (10, 10))
    assert tuple(out[0, 0, 2]) == (7.0, 5.0) and out_score[0, 0, 2] == pytest.approx(0.9)  # now the right eye
    assert tuple(out[0, 0, 1]) == (0.0, 0.0) and out_score[0, 0, 1] == 0
    assert tuple(out[0, 0, 0]) == (0.0, 7.0)
    assert kp[0, 0, 1, 0] == 3.0  # input untouched


def test_flip_matches_reference(golden: np.lib.npyio.NpzFile) -> None:
    for c in ("c03", "c04", "c05"):
        kp, score = flip(golden[f"{c}/flip/in_keypoint"], golden[f"{c}/flip/in_keypoint_score"],
                         tuple(golden[f"{c}/flip/img_shape"]))
        np.testing.assert_allclose(kp, golden[f"{c}/flip/out_keypoint"], atol=1e-4, rtol=0)
        np.testing.assert_array_equal(score, golden[f"{c}/flip/out_keypoint_score"])


def test_flip_twice_is_identity() -> None:
    kp, score = _clip()
    back, back_score = flip(*flip(kp, score, (100, 100)), (100, 100))
    np.testing.assert_allclose(back, kp, atol=1e-5)
    np.testing.assert_array_equal(back_score, score)


# ------------------------------------------------------------------------------------------- resize


def test_resize_keep_ratio_puts_short_side_at_target() -> None:
    assert rescale_size((100, 200), (-1, 64)) == (64, 128)
    # f = 64/75: w = int(101 * f + 0.5) = int(86.68) = 86
    assert rescale_size((75, 101), (-1, 64)) == (64, 86)
    assert rescale_size((300, 100), (-1, 64)) == (192, 64)  # portrait: width is the short side
    kp = np.full((1, 1, 17, 2), 10.0, np.float32)
    out, shape = resize(kp, (75, 101), (-1, 64), keep_ratio=True)
    assert shape == (64, 86)
    np.testing.assert_allclose(out[0, 0, 0], (10 * 86 / 101, 10 * 64 / 75), rtol=1e-6)


def test_resize_fixed_scales_each_axis() -> None:
    kp = np.zeros((1, 1, 17, 2), np.float32)
    kp[0, 0, 0] = (100.0, 50.0)
    out, shape = resize(kp, (100, 200), (56, 56), keep_ratio=False)
    assert shape == (56, 56)
    np.testing.assert_allclose(out[0, 0, 0], (28.0, 28.0), rtol=1e-6)
    assert out.dtype == np.float32 and tuple(out[0, 0, 1]) == (0.0, 0.0)


# ------------------------------------------------------------------------------------------ compact


def test_compact_matches_reference(golden: np.lib.npyio.NpzFile) -> None:
    for c in ("c01", "c05", "c06"):
        kp, shape, quad = pose_compact(golden[f"{c}/keypoint"], tuple(golden[f"{c}/img_shape"]))
        np.testing.assert_allclose(kp, golden[f"{c}/compact/keypoint"], atol=2e-4, rtol=0)
        assert shape == tuple(golden[f"{c}/compact/img_shape"])
        np.testing.assert_allclose(quad, golden[f"{c}/compact/crop_quadruple"], rtol=1e-12)


def test_compact_truncates_toward_zero_and_keeps_zeros() -> None:
    kp = np.zeros((1, 2, 17, 2), np.float32)
    kp[0, 0, :2] = [(10.0, -5.3), (30.0, 14.7)]  # box x 10..30, y -5.3..14.7 (20 × 20)
    out, shape, _ = pose_compact(kp, (100, 100))
    # half sizes 12.5: x 7.5..32.5 → int 7, 32; y -7.8..17.2 → int -7 (not floor's -8), 17
    assert shape == (24, 25)
    np.testing.assert_allclose(out[0, 0, 0], (3.0, 1.7), rtol=1e-6)
    assert np.all(out[0, 0, 2:] == 0) and np.all(out[0, 1] == 0)


def test_compact_box_ignores_zeros_when_every_coordinate_is_negative() -> None:
    kp = np.zeros((2, 2, 17, 2), np.float32)  # absent joints (0, 0) must not count as the maximum
    kp[0, 1, :2] = [(-30.0, -40.0), (-10.0, -15.0)]
    out, shape, _ = pose_compact(kp, (100, 100))
    # centre (-20, -27.5), half sizes 12.5 / 15.625 → both 15.625: x -35.625..-4.375, y -43.125..-11.875
    assert shape == (-11 - -43, -4 - -35)
    np.testing.assert_allclose(out[0, 1, 0], (-30.0 + 35, -40.0 + 43), rtol=1e-6)
    assert np.all(out[1] == 0) and np.all(out[0, 0] == 0)


def test_compact_skips_small_boxes() -> None:
    kp = np.zeros((1, 1, 17, 2), np.float32)
    kp[0, 0, :2] = [(50.0, 50.0), (55.0, 80.0)]  # 5 px wide < threshold 10
    out, shape, quad = pose_compact(kp, (100, 120))
    np.testing.assert_array_equal(out, kp)
    assert shape == (100, 120) and quad == (0.0, 0.0, 1.0, 1.0)


# ------------------------------------------------------------------------------------------ crop


def test_random_resized_crop_stays_inside_and_shifts_by_origin() -> None:
    kp, _ = _clip()
    for seed in range(50):
        box = random_crop_box((64, 90), np.random.default_rng(seed))
        x1, y1, x2, y2 = box
        assert 0 <= x1 < x2 <= 90 and 0 <= y1 < y2 <= 64
        area = (x2 - x1) * (y2 - y1) / (64 * 90)
        assert 0.5 <= area <= 1.0
        out, shape = random_resized_crop(kp, (64, 90), np.random.default_rng(seed))
        assert shape == (y2 - y1, x2 - x1)
        np.testing.assert_allclose(out, kp - np.array([x1, y1], np.float32))


def test_random_crop_falls_back_to_centred_square() -> None:
    # a 10:1 frame: no candidate with aspect in [3/4, 4/3] and >= 90 % of the area fits
    box = random_crop_box((10, 100), np.random.default_rng(0), area_range=(0.9, 1.0))
    assert box == (45, 0, 55, 10)


# ---------------------------------------------------------------------------------------- pipelines


def test_test_pipeline_reproduces_reference_chain(golden: np.lib.npyio.NpzFile) -> None:
    pipe = make_test_pipeline(preset_pipeline("finegym"))
    for c in ("c02", "c03", "c04", "c05"):
        kp, score = golden[f"{c}/keypoint"], golden[f"{c}/keypoint_score"]
        inds = uniform_indices(kp.shape[1], 48, test_mode=True)
        _, compact_shape, _ = pose_compact(kp[:, inds], tuple(golden[f"{c}/img_shape"]))
        assert compact_shape == tuple(golden[f"{c}/pipe/compact_img_shape"])
        out, out_score, shape = pipe(kp[:, inds], score[:, inds], tuple(golden[f"{c}/img_shape"]))
        np.testing.assert_allclose(out, golden[f"{c}/pipe/keypoint"], atol=1e-4, rtol=0)
        np.testing.assert_array_equal(out_score, golden[f"{c}/pipe/keypoint_score"])
        assert shape == tuple(golden[f"{c}/pipe/img_shape"])


@pytest.mark.parametrize(("dataset", "train_hw", "test_hw"), [("finegym", (56, 56), (64, 64)),
                                                               ("hmdb51", (48, 48), (56, 56))])
def test_pipelines_produce_configured_sizes(dataset: str, train_hw: tuple, test_hw: tuple) -> None:
    kp, score = _clip(m=2, t=8, lo=100, hi=400)
    cfg = preset_pipeline(dataset)
    for seed in range(5):
        out, out_score, shape = train_pipeline(cfg)(kp, score, (480, 640), np.random.default_rng(seed))
        assert shape == train_hw and out.shape == kp.shape and out.dtype == np.float32
        assert out_score.shape == score.shape
    out, _, shape = make_test_pipeline(cfg)(kp, score, (480, 640))
    assert shape == test_hw and out.min() >= 0 and out.max() <= max(test_hw)
    custom = preset_pipeline(dataset, train_hw=(32, 40))
    assert train_pipeline(custom)(kp, score, (480, 640), np.random.default_rng(0))[2] == (32, 40)


def test_train_pipeline_reproducible_and_flips_about_half_the_time() -> None:
    kp, score = _clip(t=2, lo=100, hi=400)
    pipe = train_pipeline(PipelineConfig())
    a = pipe(kp, score, (480, 640), np.random.default_rng(5))
    b = pipe(kp, score, (480, 640), np.random.default_rng(5))
    np.testing.assert_array_equal(a[0], b[0])
    flips = sum(not np.array_equal(pipe(kp, score, (480, 640), np.random.default_rng(s))[1], score)
                for s in range(200))
    assert 60 < flips < 140
    never = train_pipeline(PipelineConfig(flip_ratio=0.0))
    for s in range(20):
        assert np.array_equal(never(kp, score, (480, 640), np.random.default_rng(s))[1], score)


def test_flip_index_default_swaps_left_and_right() -> None:
    assert all(skeleton.FLIP_INDEX[left] == right for left, right in zip(skeleton.LEFT_KP, skeleton.RIGHT_KP,
                                                                         strict=True))


def test_bad_shapes_name_the_field() -> None:
    kp, score = _clip()
    with pytest.raises(ValueError, match="keypoint_score"):
        flip(kp, score[:, :2], (100, 100))
    with pytest.raises(ValueError, match="'keypoint'"):
        resize(kp[0], (100, 100), (56, 56), keep_ratio=False)


def test_fused_train_pipeline_equals_the_staged_chain() -> None:
    """The fused affine map must give the staged reference chain's coordinates (same draws), with absent
    joints (exact zeros) handled as the staged chain does, flipped or not, including non-finite input."""
    kp, score = _clip(m=3, t=6, lo=100, hi=400)
    kp[0, 1, 3] = 0.0  # absent joint
    kp[1, 2, 5, 0] = 0.0  # x only absent
    kp[2, 0, 7] = (np.nan, np.inf)  # treated as absent
    for dataset in ("finegym", "hmdb51"):
        cfg = preset_pipeline(dataset)
        fused, staged = train_pipeline(cfg), staged_train_pipeline(cfg)
        flipped = 0
        for seed in range(40):
            got = fused(kp, score, (480, 640), np.random.default_rng(seed))
            want = staged(kp, score, (480, 640), np.random.default_rng(seed))
            np.testing.assert_allclose(got[0], want[0], atol=2e-4, rtol=0)
            np.testing.assert_array_equal(got[1], want[1])
            assert got[2] == want[2] == cfg.train_hw
            flipped += not np.array_equal(got[1], score)
        assert 5 < flipped < 35
    assert np.isnan(kp[2, 0, 7, 0])  # input untouched


def test_fused_train_pipeline_keeps_first_persons_but_frames_everyone() -> None:
    kp, score = _clip(m=3, t=4, lo=100, hi=200)
    kp[2] += 200  # the third person widens the compact box
    cfg = PipelineConfig(flip_ratio=0.0)
    full = train_pipeline(cfg)(kp, score, (480, 640), np.random.default_rng(1))
    two = train_pipeline(cfg)(kp, score, (480, 640), np.random.default_rng(1), persons=2)
    assert two[0].shape == (2, 4, 17, 2) and two[1].shape == (2, 4, 17)
    np.testing.assert_array_equal(two[0], full[0][:2])
    staged = staged_train_pipeline(cfg)(kp, score, (480, 640), np.random.default_rng(1), persons=2)
    np.testing.assert_allclose(staged[0], two[0], atol=2e-4, rtol=0)


def test_fused_train_pipeline_never_writes_its_input() -> None:
    """The loader passes views of the decoded video (a frame window): they must come back untouched."""
    kp, score = _clip(m=2, t=10, lo=100, hi=400)
    before = kp.copy()
    pipe = train_pipeline(PipelineConfig())
    for seed in range(6):
        window = kp[:, 2:8]
        out, _, _ = pipe(window, score[:, 2:8], (480, 640), np.random.default_rng(seed))
        assert not np.shares_memory(out, kp)
        pipe(kp, score, (480, 640), np.random.default_rng(seed))
    np.testing.assert_array_equal(kp, before)


def _video(rng: np.random.Generator, key: str, persons: int, frames: int, hw: tuple[int, int]):
    from intint.store.shardstream import Video

    kp = (rng.random((persons, frames, 17, 2)) * np.array([hw[1], hw[0]]) * 0.6 + 20).astype(np.float16)
    kp[rng.random(kp.shape[:3]) < 0.05] = 0  # absent joints
    if persons > 1 and rng.random() < 0.5:
        kp[1, rng.integers(frames)] = np.nan  # a corrupt frame of the second person
    score = rng.random(kp.shape[:3]).astype(np.float16)
    return Video(key, key, 0, kp, score, hw, int(rng.integers(frames)), "shard-0.tar")


@pytest.mark.parametrize(("definition", "jitter"), [("J", 0), ("J", 5), ("random", 0)])
def test_batched_train_clips_equal_the_per_clip_path_bit_for_bit(definition: str, jitter: int) -> None:
    """The loader's batched hot path (ClipMaker.train_batch) must give every clip exactly what the
    per-clip path gives: same draws, same box, same flip, persons truncated after framing, padding 0."""
    from intint.loader.clip_maker import ClipMaker
    from intint.loader.device import apply_maps

    rng = np.random.default_rng(3)
    videos = [_video(rng, f"v{i}", persons=int(rng.integers(1, 4)), frames=int(rng.integers(20, 150)),
                     hw=((480, 640), (1080, 1920))[i % 2]) for i in range(24)]
    videos.append(_video(rng, "empty", 1, 60, (480, 640)))
    videos[-1].keypoint[:] = 0  # nothing to frame: the compact box is skipped
    pipeline = PipelineConfig(train_hw=(56, 56))
    maker = ClipMaker(("integrity", "intensity"), 48, definition, jitter, pipeline, 2, 7)
    keys = [v.key if i % 3 else f"{v.key}#topup1" for i, v in enumerate(videos)]
    batch = maker.train_batch(videos, 5, keys)
    mapped = {pathway: clips.mapped() for pathway, clips in batch.items()}
    for pathway, clips in batch.items():  # the device's torch path gives the workers' bits
        on_device = apply_maps(clips.keypoint, clips.score, clips.coef, clips.flipped, clips.persons,
                               clips.flip_index)
        assert clips.mapped() is mapped[pathway]  # cached: mapping consumed the planar copy
        np.testing.assert_array_equal(on_device[0].numpy(), mapped[pathway][0])
        np.testing.assert_array_equal(on_device[1].numpy(), mapped[pathway][1])
    for i, (video, key) in enumerate(zip(videos, keys, strict=True)):
        single = maker.train(video, 5, key)
        for pathway in ("integrity", "intensity"):
            clip, got = single[pathway], batch[pathway]
            kp, score = mapped[pathway]
            m = clip.keypoint.shape[0]
            assert got.persons[i] == m and got.size == clip.size == (56, 56)
            np.testing.assert_array_equal(kp[i, :m], clip.keypoint)
            np.testing.assert_array_equal(score[i, :m], clip.score)
            assert not kp[i, m:].any() and not score[i, m:].any()
            assert not got.keypoint[i, m:].any()  # as shipped to the device: padded slots absent too
    assert batch["integrity"].keypoint.shape == (25, 2, 48, 17, 2)
    assert batch["integrity"].keypoint.dtype == np.float16  # shipped as stored; mapped on the device
    assert mapped["integrity"][0].dtype == np.float32


def test_batched_train_pipeline_checks_its_arguments() -> None:
    from intint.loader.device import apply_maps

    pipe = train_pipeline(PipelineConfig())
    rows = np.zeros((2, 2, 1, 4, 17), np.float32)
    with pytest.raises(ValueError, match="disagree"):
        pipe.maps(rows, [1], [(10, 10), (10, 10)], np.zeros((2, 23)))
    with pytest.raises(ValueError, match="B×2×M×T×V"):
        pipe.maps(rows[0], [1, 1], [(10, 10), (10, 10)], np.zeros((2, 23)))
    coef, flipped = pipe.maps(rows, [1, 1], [(10, 10), (10, 10)], np.zeros((2, 23)))
    kp, score = np.zeros((2, 1, 4, 17, 2), np.float16), np.zeros((2, 1, 4, 17), np.float16)
    with pytest.raises(ValueError, match="B×K×L×V×2"):
        apply_maps(kp, score[:, :, :3], coef, flipped, [1, 1], skeleton.FLIP_INDEX)
    with pytest.raises(ValueError, match="flip_index"):
        apply_maps(kp[..., :5, :], score[..., :5], coef, flipped, [1, 1], skeleton.FLIP_INDEX)


def test_nonzero_bounds_of_every_kind_of_clip() -> None:
    """The per-clip bounds of non-zero coordinates (PoseCompact's box) from the bit-pattern fast path
    (all values >= 0) and the masked path (negatives, -0.0, non-finite) equal a plain masked reference."""
    from intint.pose.keypoint_maps import nonzero_bounds

    rng = np.random.default_rng(5)
    flat = (rng.random((9, 2, 60)) * 500).astype(np.float32)
    flat[rng.random(flat.shape) < 0.3] = 0
    flat[1, 0] = 0  # no non-zero x
    flat[2] = 0  # nothing at all
    flat[3, 1, :3] = [1e-40, 3.4e38, 7.0]  # a denormal and the largest float32
    cases = {"non-negative": flat}
    negative = flat.copy()
    negative[4, 0, 5] = -12.5
    negative[5, 1, 7] = -0.0
    cases["negative"] = negative
    odd = flat.copy()
    odd[6, 0, 9], odd[7, 1, 3], odd[8, 0, 1] = np.nan, np.inf, -np.inf
    cases["non-finite"] = odd
    for name, data in cases.items():
        clean = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
        want = []
        for clip in clean:
            xs, ys = clip[0][clip[0] != 0], clip[1][clip[1] != 0]
            want.append(None if not (xs.size and ys.size) else
                        (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())))
        assert nonzero_bounds(data.copy()) == want, name


def test_float16_bounds_read_the_stored_clip_or_decline() -> None:
    """Bounds straight from float16 (x, y) pairs equal the float32 planar path's; a negative or
    non-finite value makes the fast path decline (None) instead of answering wrongly."""
    from intint.pose.keypoint_maps import float16_bounds, nonzero_bounds

    rng = np.random.default_rng(9)
    kp = (rng.random((6, 2, 8, 17, 2)) * 900).astype(np.float16)
    kp[rng.random(kp.shape) < 0.2] = 0
    kp[1, ..., 0] = 0  # no x at all
    kp[2] = 0  # nothing
    kp[3, 0, 0, 0] = (65504, np.float16(6e-8))  # the largest and a subnormal float16
    planar = np.ascontiguousarray(kp.astype(np.float32).transpose(0, 4, 1, 2, 3)).reshape(6, 2, -1)
    assert float16_bounds(kp) == nonzero_bounds(planar)
    for bad in (-3.0, np.inf, np.nan):
        odd = kp.copy()
        odd[4, 1, 2, 3, 1] = bad
        assert float16_bounds(odd) is None
    assert float16_bounds(kp.astype(np.float32)) is None
