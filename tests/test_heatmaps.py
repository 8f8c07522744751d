"""Heatmap volumes: the reference's golden volumes, hand cases of the rendering rules, batch = per clip."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from intint import skeleton
from intint.heatmaps import limb_flip_index, render, render_batch
from intint.sampling import uniform_indices
from intint.transforms import preset_pipeline
from intint.transforms import test_pipeline as make_test_pipeline

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "spec" / "golden" / "golden.npz"
SIGMA = 0.6
NEXT = math.exp(-1 / (2 * SIGMA**2))  # value one pixel from a joint, relative to its score


@pytest.fixture(scope="module")
def golden() -> np.lib.npyio.NpzFile:
    return np.load(GOLDEN)


def _assert_matches(mine: torch.Tensor, golden: np.lib.npyio.NpzFile, prefix: str) -> None:
    gold = golden[f"{prefix}/heatmap"].astype(np.float32).reshape(mine.shape)
    out = mine.numpy()
    assert out.dtype == np.float32
    assert np.abs(out - gold).max() <= 5e-4, prefix
    assert out.sum(dtype=np.float64) == pytest.approx(float(golden[f"{prefix}/heatmap_sum"]), rel=1e-6)
    assert int(np.count_nonzero(out)) == int(golden[f"{prefix}/heatmap_nnz"]), prefix
    assert out.max() == pytest.approx(float(golden[f"{prefix}/heatmap_max"]), rel=1e-6)


def _single(x: float, y: float, score: float, v: int = 17) -> tuple[np.ndarray, np.ndarray]:
    kp = np.zeros((1, 1, v, 2), np.float32)
    sc = np.zeros((1, 1, v), np.float32)
    kp[0, 0, 0] = (x, y)
    sc[0, 0, 0] = score
    return kp, sc


# ------------------------------------------------------------------------------------------- golden


@pytest.mark.parametrize("case", ["c02", "c03", "c04", "c05"])
def test_joint_flip_double_matches_reference(golden: np.lib.npyio.NpzFile, case: str) -> None:
    out = render(golden[f"{case}/pipe/keypoint"], golden[f"{case}/pipe/keypoint_score"], 64, 64,
                 sigma=SIGMA, flip_double=True)
    assert out.shape == (34, 48, 64, 64)
    _assert_matches(out, golden, f"{case}/pipe")


@pytest.mark.parametrize("case", ["c02", "c04"])
def test_limb_maps_match_reference(golden: np.lib.npyio.NpzFile, case: str) -> None:
    out = render(golden[f"{case}/pipe/keypoint"], golden[f"{case}/pipe/keypoint_score"], 64, 64,
                 sigma=SIGMA, limbs=True)
    assert out.shape == (17, 48, 64, 64)
    _assert_matches(out, golden, f"{case}/limb")


@pytest.mark.parametrize("case", ["c03", "c05"])
def test_whole_test_chain_from_raw_inputs(golden: np.lib.npyio.NpzFile, case: str) -> None:
    kp, score = golden[f"{case}/keypoint"], golden[f"{case}/keypoint_score"]
    inds = uniform_indices(kp.shape[1], 48, test_mode=True)
    pipe = make_test_pipeline(preset_pipeline("finegym"))
    kp, score, (h, w) = pipe(kp[:, inds], score[:, inds], tuple(golden[f"{case}/img_shape"]))
    _assert_matches(render(kp, score, h, w, sigma=SIGMA, flip_double=True), golden, f"{case}/pipe")


# --------------------------------------------------------------------------------------- hand cases


def test_joint_at_integer_pixel() -> None:
    out = render(*_single(10.0, 20.0, 0.8), 32, 40)
    assert out.shape == (17, 1, 32, 40)
    frame = out[0, 0]
    assert frame[20, 10] == pytest.approx(0.8, rel=1e-6)
    for y, x in ((20, 11), (20, 9), (21, 10), (19, 10)):
        assert frame[y, x] == pytest.approx(0.8 * NEXT, rel=1e-6)
    assert frame[20, 8] > 0 and frame[20, 12] == 0  # int() window: columns 8..11 only, as the reference
    assert int((frame > 0).sum()) == 16 and float(out[1:].abs().sum()) == 0


def test_joint_just_left_of_the_frame_lights_column_zero() -> None:
    # int(-1 + 1.8) + 1 = 1: the reference's truncation keeps column 0 in the window
    frame = render(*_single(-1.0, 5.0, 1.0), 10, 10)[0, 0]
    assert frame[5, 0] == pytest.approx(NEXT, rel=1e-6) and int((frame > 0).sum()) == 4


def test_score_below_floor_draws_nothing() -> None:
    assert float(render(*_single(5.0, 5.0, 9e-4), 10, 10).abs().sum()) == 0
    assert float(render(*_single(5.0, 5.0, 1e-3), 10, 10)[0, 0, 5, 5]) == pytest.approx(1e-3)


def test_persons_combine_by_max_not_sum() -> None:
    kp = np.zeros((2, 1, 17, 2), np.float32)
    kp[:, 0, 3] = (6.0, 6.0)
    score = np.zeros((2, 1, 17), np.float32)
    score[:, 0, 3] = (0.5, 0.7)
    frame = render(kp, score, 12, 12)[3, 0]
    assert frame[6, 6] == pytest.approx(0.7) and frame[6, 7] == pytest.approx(0.7 * NEXT)


def test_non_finite_coordinates_draw_nothing() -> None:
    kp, score = _single(float("nan"), 5.0, 1.0)
    assert float(render(kp, score, 10, 10).abs().sum()) == 0


def test_flip_double_mirrors_pixels_and_swaps_channels() -> None:
    rng = np.random.default_rng(0)
    kp = rng.uniform(0, 20, size=(2, 3, 17, 2)).astype(np.float32)
    score = rng.uniform(0, 1, size=(2, 3, 17)).astype(np.float32)
    out = render(kp, score, 16, 20, flip_double=True)
    view0, view1 = out[:17], out[17:]
    assert torch.equal(view0, render(kp, score, 16, 20))
    assert torch.equal(view1, view0.flip(-1)[list(skeleton.FLIP_INDEX)])
    # a joint at x = 3 shows up at column W - 1 - 3 = 16 in the mirrored view
    single = render(*_single(3.0, 4.0, 1.0), 10, 20, flip_double=True)
    assert single[17, 0, 4, 16] == pytest.approx(1.0)


def test_limb_is_a_segment_with_min_score() -> None:
    kp = np.zeros((1, 1, 17, 2), np.float32)
    score = np.zeros((1, 1, 17), np.float32)
    kp[0, 0, 5], kp[0, 0, 7] = (10.0, 8.0), (20.0, 8.0)  # limb 5: left shoulder → left elbow
    score[0, 0, 5], score[0, 0, 7] = 0.9, 0.6
    frame = render(kp, score, 16, 32, limbs=True)[5, 0]
    assert frame[8, 15] == pytest.approx(0.6) and frame[9, 15] == pytest.approx(0.6 * NEXT, rel=1e-5)
    assert frame[8, 21] == pytest.approx(0.6 * NEXT, rel=1e-5)  # past the end: distance to the end point
    assert frame[8, 8] == pytest.approx(0.6 * math.exp(-4 / (2 * SIGMA**2)), rel=1e-5)
    assert frame[8, 22] == 0 and frame[11, 15] == 0  # outside the int()-truncated ±3σ box


def test_short_limb_falls_back_to_joint_map_of_its_start() -> None:
    kp = np.zeros((1, 1, 17, 2), np.float32)
    score = np.zeros((1, 1, 17), np.float32)
    kp[0, 0, 5], kp[0, 0, 7] = (10.0, 8.0), (10.5, 8.0)  # |ab|² = 0.25 < 1
    score[0, 0, 5], score[0, 0, 7] = 0.9, 0.6
    frame = render(kp, score, 16, 32, limbs=True)[5, 0]
    assert frame[8, 10] == pytest.approx(0.9) and frame[8, 11] == pytest.approx(0.9 * NEXT, rel=1e-5)


def test_limb_flip_index_default() -> None:
    assert limb_flip_index(skeleton.LIMBS) == skeleton.LIMB_FLIP_INDEX
    with pytest.raises(ValueError, match="mirror"):
        limb_flip_index([(0, 1)])


# -------------------------------------------------------------------------------------- batch & API


@pytest.mark.parametrize("options", [{}, {"flip_double": True}, {"limbs": True}])
def test_batch_equals_per_clip(options: dict) -> None:
    rng = np.random.default_rng(1)
    kp = rng.uniform(-2, 26, size=(3, 2, 5, 17, 2)).astype(np.float32)
    score = rng.uniform(0, 1, size=(3, 2, 5, 17)).astype(np.float32)
    score[1, 1] = 0  # an absent second person in one clip
    batch = render_batch(kp, score, 24, 24, **options)
    singles = torch.stack([render(kp[i], score[i], 24, 24, **options) for i in range(3)])
    assert torch.equal(batch, singles)


def test_torch_and_numpy_inputs_agree() -> None:
    rng = np.random.default_rng(2)
    kp = rng.uniform(0, 30, size=(1, 4, 17, 2))  # float64 input is computed in float32
    score = rng.uniform(0, 1, size=(1, 4, 17)).astype(np.float32)
    a = render(kp, score, 32, 32)
    b = render(torch.from_numpy(kp.astype(np.float32)), torch.from_numpy(score), 32, 32)
    assert a.dtype == torch.float32 and torch.equal(a, b)


def test_bad_inputs_name_the_field() -> None:
    kp, score = _single(1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="keypoint_score"):
        render(kp, score[:, :, :5], 8, 8)
    with pytest.raises(ValueError, match="flip_double"):
        render(*_single(1.0, 1.0, 1.0, v=5), 8, 8, flip_double=True)
