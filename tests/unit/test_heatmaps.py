"""Heatmap volumes: the reference's golden volumes, hand cases of the rendering rules, batch = per clip."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from intint.pose import skeleton
from intint.pose.sampling import uniform_indices
from intint.pose.transforms import PipelineConfig
from intint.pose.transforms import test_pipeline as make_test_pipeline
from intint.render import heatmaps, scatter_layout
from intint.render.heatmaps import limb_flip_index, render, render_batch

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden.npz"
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
    pipe = make_test_pipeline(PipelineConfig(train_hw=(56, 56), test_hw=(64, 64)))
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


# ------------------------------------------------------------------------------------- dtype & out=

LOW_PRECISION = [torch.float16, torch.bfloat16, torch.float64]
OPTIONS = [{}, {"flip_double": True}, {"limbs": True}, {"limbs": True, "flip_double": True}]


def _crowded_clips(batch: int = 2, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Three persons on a 12×14 frame, joints half a pixel apart on a grid (coincident windows, windows
    cut by every edge), some joints off-frame, non-finite or below the score floor."""
    rng = np.random.default_rng(seed)
    kp = (np.round(rng.uniform(-3, 16, size=(batch, 3, 4, 17, 2)) * 2) / 2).astype(np.float32)
    kp[:, 1, :, :5] = kp[:, 0, :, :5] + 0.5  # person 1 overlaps person 0 on five joints
    score = rng.uniform(0, 1, size=(batch, 3, 4, 17)).astype(np.float32)
    kp[0, 2, 1, 3] = (np.nan, 4.0)
    kp[0, 2, 2, 4] = (np.inf, 4.0)
    score[0, 2, 3, 5] = np.inf
    score[1, 2, 0, :3] = 5e-4
    return kp, score


def _loop_joint_maps(kp: np.ndarray, score: np.ndarray, height: int, width: int) -> np.ndarray:
    """The reference's GeneratePoseTarget joint loop (M×T×V → V×T×H×W), skipping non-finite entries."""
    _, t, v, _ = kp.shape
    out = np.zeros((v, t, height, width), np.float32)
    for (f, k), target in zip(np.ndindex(t, v), (out[k, f] for f, k in np.ndindex(t, v)), strict=True):
        for (mu_x, mu_y), value in zip(kp[:, f, k], score[:, f, k], strict=True):
            if not (np.isfinite(mu_x) and np.isfinite(mu_y) and np.isfinite(value)) or value < 1e-3:
                continue
            x0, x1 = max(int(mu_x - 3 * SIGMA), 0), min(int(mu_x + 3 * SIGMA) + 1, width)
            y0, y1 = max(int(mu_y - 3 * SIGMA), 0), min(int(mu_y + 3 * SIGMA) + 1, height)
            xs = np.arange(x0, x1, dtype=np.float32)
            ys = np.arange(y0, y1, dtype=np.float32)[:, None]
            if xs.size and ys.size:
                patch = np.exp(-((xs - mu_x) ** 2 + (ys - mu_y) ** 2) / 2 / SIGMA**2) * value
                np.maximum(target[y0:y1, x0:x1], patch, out=target[y0:y1, x0:x1])
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_crowded_persons_match_a_per_joint_loop(dtype: torch.dtype) -> None:
    # overlapping persons in every order, windows cut by the frame edges: max per pixel, as the reference
    kp, score = _crowded_clips()
    for i in range(kp.shape[0]):
        expected = torch.from_numpy(_loop_joint_maps(kp[i], score[i], 12, 14))
        out = render(kp[i], score[i], 12, 14, dtype=dtype)
        if dtype == torch.float32:
            assert torch.equal(out > 0, expected > 0)
            # separable exp(-dx²/2σ²)·exp(-dy²/2σ²): a few float32 ulps from exp(-(dx²+dy²)/2σ²)
            torch.testing.assert_close(out, expected, rtol=3e-6, atol=0)
        else:
            torch.testing.assert_close(out.float(), expected, rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("options", OPTIONS)
def test_dtype_is_the_float32_volume_rounded(options: dict) -> None:
    kp, score = _crowded_clips()
    ref = render_batch(kp, score, 12, 14, **options)
    for dtype in LOW_PRECISION:
        out = render_batch(kp, score, 12, 14, dtype=dtype, **options)
        assert out.dtype == dtype and torch.equal(out, ref.to(dtype)), dtype
        single = render(kp[1], score[1], 12, 14, dtype=dtype, **options)
        assert torch.equal(single, ref[1].to(dtype)), dtype


@pytest.mark.parametrize("options", OPTIONS)
def test_out_is_overwritten_in_place_and_returned(options: dict) -> None:
    kp, score = _crowded_clips()
    ref32 = render_batch(kp, score, 12, 14, **options)
    for dtype in (torch.float32, torch.float16):
        ref = ref32.to(dtype)
        buffer = torch.full(ref.shape, float("nan"), dtype=dtype)  # stale contents must not survive
        assert render_batch(kp, score, 12, 14, out=buffer, **options) is buffer
        assert torch.equal(buffer, ref), dtype
        clip = torch.full(ref.shape[1:], 7.0, dtype=dtype)
        assert render(kp[0], score[0], 12, 14, out=clip, **options) is clip
        assert torch.equal(clip, ref[0]), dtype


def test_out_may_be_any_strided_view() -> None:
    kp, score = _crowded_clips()
    ref = render_batch(kp, score, 12, 14, flip_double=True).half()
    # a batch slice of a bigger buffer, and a channel slice of a tensor whose T axis comes first in memory
    batch = torch.full((5, *ref.shape[1:]), 3.0, dtype=torch.float16)
    render(kp[1], score[1], 12, 14, flip_double=True, out=batch[2])
    assert torch.equal(batch[2], ref[1])
    assert bool((batch[[0, 1, 3, 4]] == 3).all())  # neighbours untouched
    wide = torch.full((2, 4, 40, 12, 14), 3.0, dtype=torch.float16)  # B×T×K'×H×W in memory
    view = wide.transpose(1, 2)[:, 3:37]  # B×34×T×H×W, not contiguous
    assert render_batch(kp, score, 12, 14, flip_double=True, out=view) is view
    assert torch.equal(view, ref)
    assert bool((wide[:, :, :3] == 3).all()) and bool((wide[:, :, 37:] == 3).all())


def test_float_scatter_path_matches_integer_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # devices other than the CPU scatter the float values themselves; both must give the same volume
    kp, score = _crowded_clips()
    results = []
    for devices in (("cpu",), ()):
        monkeypatch.setattr(scatter_layout, "INTEGER_SCATTER_DEVICES", devices)
        results.append([render_batch(kp, score, 12, 14, dtype=dtype, **options)
                        for dtype in (torch.float32, torch.float16) for options in OPTIONS])
    for on_bits, on_floats in zip(*results, strict=True):
        assert torch.equal(on_bits, on_floats)


def test_float16_output_matches_reference(golden: np.lib.npyio.NpzFile) -> None:
    out = render(golden["c04/pipe/keypoint"], golden["c04/pipe/keypoint_score"], 64, 64,
                 sigma=SIGMA, flip_double=True, dtype=torch.float16)
    gold = golden["c04/pipe/heatmap"].astype(np.float32).reshape(out.shape)
    assert np.abs(out.float().numpy() - gold).max() <= 5e-4


def test_far_limb_endpoints_draw_no_nan() -> None:
    # float32 distances to an endpoint at 1e30 px overflow; the limb must not poison the volume with NaN
    kp = np.zeros((1, 1, 17, 2), np.float32)
    score = np.zeros((1, 1, 17), np.float32)
    kp[0, 0, 5], kp[0, 0, 7], kp[0, 0, 9] = (10.0, 8.0), (1e30, 8.0), (20.0, 8.0)  # elbow far away
    kp[0, 0, 11], kp[0, 0, 13] = (10.0, 4.0), (20.0, 4.0)
    score[0, 0, [5, 7, 9, 11, 13]] = 0.9
    out = render(kp, score, 16, 32, limbs=True)
    assert bool(torch.isfinite(out).all())
    assert float(out[11, 0, 4, 15]) == pytest.approx(0.9)  # limb 11 (hip → knee) is drawn as usual


def test_bad_out_and_dtype_are_named() -> None:
    kp, score = _single(1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="'out'"):
        render(kp, score, 8, 8, out=torch.empty(17, 1, 8, 9))
    with pytest.raises(ValueError, match="'out'"):
        render(kp, score, 8, 8, out=torch.empty(17, 1, 8, 8), dtype=torch.float16)
    with pytest.raises(ValueError, match="'out'"):
        render(kp, score, 8, 8, out=torch.empty(1, 1, 8, 8).expand(17, 1, 8, 8))
    with pytest.raises(ValueError, match="dtype"):
        render(kp, score, 8, 8, dtype=torch.int32)


@pytest.mark.parametrize("options", [{}, {"flip_double": True}])
def test_single_person_plain_stores_equal_the_max(options: dict) -> None:
    """One person per clip takes plain stores instead of the max reduction; joints at, on and beyond
    the frame edges (where patch pixels clamp onto the same pixel) and non-finite ones must come out
    exactly as through the general path, here forced by an absent second person."""
    rng = np.random.default_rng(7)
    kp = rng.uniform(-3, 27, size=(4, 1, 6, 17, 2)).astype(np.float32)
    kp[0, 0, 0, :4] = [[0, 0], [23, 23], [23.9, 0.2], [-0.4, 24.5]]  # corners and edges of 24×24
    kp[1, 0, 2, 5] = np.nan
    score = rng.uniform(0, 1, size=(4, 1, 6, 17)).astype(np.float32)
    score[0, 0, 0, :4] = 1.0
    single = render_batch(kp, score, 24, 24, **options)
    padded_kp = np.concatenate([kp, np.zeros_like(kp)], axis=1)
    padded_score = np.concatenate([score, np.zeros_like(score)], axis=1)
    assert torch.equal(single, render_batch(padded_kp, padded_score, 24, 24, **options))
    assert single[0, :4, 0].amax() > 0.9  # the edge joints drew


@pytest.mark.parametrize("options", [{}, {"flip_double": True}])
@pytest.mark.parametrize("persons", [2, 3])
def test_persons_combine_by_max_wherever_their_patches_meet(options: dict, persons: int) -> None:
    """Several persons render as the pixelwise max of each one rendered alone, bit for bit: with persons
    crowded into a small region (most patches meet, many pixels are shared), at and beyond the frame
    edges (clamped patch pixels of an off-frame joint land on the other person's edge pixels with the
    value 0), non-finite and below the score floor; in float32 and float16, into a recycled buffer."""
    rng = np.random.default_rng(11)
    kp = rng.uniform(-3, 9, size=(3, persons, 5, 17, 2)).astype(np.float32)  # 3 clips on a 20×24 frame
    kp[0, 0, 0, 0] = (0.3, 0.2)  # a corner joint, and on the same map, one wholly left of the frame whose
    kp[0, 1, 0, 0] = (-3.2, 0.4)  # patch clamps onto column 0 with the value 0
    kp[0, -1, 1, 3] = (23.6, 19.9)
    kp[1, 1, 2, 4] = np.nan
    score = rng.uniform(0, 1, size=(3, persons, 5, 17)).astype(np.float32)
    score[2, 0, :, :6] = 5e-4  # below the floor: draws nothing, meets nobody's values
    for dtype in (torch.float32, torch.float16):
        alone = [render_batch(kp[:, p : p + 1], score[:, p : p + 1], 20, 24, dtype=dtype, **options)
                 for p in range(persons)]
        expected = torch.stack(alone).amax(dim=0)
        assert torch.equal(render_batch(kp, score, 20, 24, dtype=dtype, **options), expected)
        buffer = torch.zeros_like(expected)
        written: list = []
        render_batch(kp[:, ::-1].copy(), score[:, ::-1].copy(), 20, 24, out=buffer, clear=False,
                     written=written, **options)
        heatmaps.clear_written(buffer, written)
        assert not buffer.any()
        render_batch(kp, score, 20, 24, out=buffer, clear=False, written=written, **options)
        assert torch.equal(buffer, expected)


def test_leading_clip_axes_render_like_one_clip_each() -> None:
    """Pathways × clips in one call, into a strided slice of a larger pathway-major buffer (as loader
    workers render a few samples of a batch at once), equal rendering each clip alone."""
    rng = np.random.default_rng(5)
    kp = rng.uniform(-2, 18, size=(2, 3, 2, 4, 17, 2)).astype(np.float32)
    score = rng.uniform(0, 1, size=(2, 3, 2, 4, 17)).astype(np.float32)
    buffer = torch.zeros((2, 5, 17, 4, 16, 20), dtype=torch.float16)
    written: list = []
    out = render_batch(kp, score, 16, 20, out=buffer[:, 1:4], clear=False, written=written)
    assert out.shape == (2, 3, 17, 4, 16, 20)
    for p in range(2):
        for c in range(3):
            assert torch.equal(buffer[p, 1 + c], render(kp[p, c], score[p, c], 16, 20, dtype=torch.float16))
    assert not buffer[:, 0].any() and not buffer[:, 4].any()
    heatmaps.clear_written(buffer, written)
    assert not buffer.any()


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("options", [{}, {"flip_double": True}])
def test_clear_written_resets_whole_rows_up_to_the_storage_edges(dtype: torch.dtype, options: dict) -> None:
    """Renders recorded as patch rows of whole words are reset completely, also for joints in the first
    and the last pixels of the storage (a row's words clamped to the storage), mirrored views included."""
    corners = [(0.0, 0.0), (19.0, 15.0), (0.0, 15.0)]  # (0, 15) mirrors onto the last pixel
    kp = np.array([[[[c] * 17] for c in corners]], dtype=np.float32)  # 1 clip, 3 persons, 1 frame
    score = np.ones((1, 3, 1, 17), dtype=np.float32)
    buffer = torch.zeros((1, 34 if options else 17, 1, 16, 20), dtype=dtype)
    written: list = []
    render_batch(kp, score, 16, 20, out=buffer, clear=False, written=written, **options)
    assert buffer.view(-1)[0] > 0.9 and buffer.view(-1)[-1] > 0.9
    assert written and all(record.words for record in written)
    heatmaps.clear_written(buffer, written)
    assert not buffer.any() and written == []
