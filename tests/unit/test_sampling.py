"""Clip placement: uniform (Integrity), intensity window, random centre, and the per-sample RNG."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from intint.pose.sampling import (
    clip_rng,
    intensity_indices,
    new_clip_generator,
    random_centre_indices,
    uniform_indices,
)

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden.npz"
L = 48


@pytest.fixture(scope="module")
def golden() -> np.lib.npyio.NpzFile:
    return np.load(GOLDEN)


# ---------------------------------------------------------------------------------------------- RNG


def test_clip_rng_reproducible_by_seed_epoch_key() -> None:
    a = clip_rng(3, 1, "gym/v1", "integrity").random(8)
    assert np.array_equal(a, clip_rng(3, 1, "gym/v1", "integrity").random(8))
    assert not np.array_equal(a, clip_rng(3, 2, "gym/v1", "integrity").random(8))  # another epoch
    assert not np.array_equal(a, clip_rng(3, 1, "gym/v2", "integrity").random(8))  # another video
    assert not np.array_equal(a, clip_rng(4, 1, "gym/v1", "integrity").random(8))  # another run seed


def test_clip_rng_is_the_same_in_another_process() -> None:
    """Workers are separate processes with their own hash salt; the draws must not depend on it."""
    code = ("from intint.pose.sampling import clip_rng; "
            "print(clip_rng(7, 3, 'k/a.b', 'intensity').integers(0, 10**9))")
    outs = set()
    for salt in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": salt, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                              check=True)
        outs.add(done.stdout.strip())
    assert outs == {str(clip_rng(7, 3, "k/a.b", "intensity").integers(0, 10**9))}


def test_clip_rng_streams_differ_per_pathway() -> None:
    a = clip_rng(0, 0, "v", "integrity").random(4)
    assert np.array_equal(a, clip_rng(0, 0, "v", "integrity").random(4))
    assert not np.array_equal(a, clip_rng(0, 0, "v", "intensity").random(4))
    with pytest.raises(ValueError, match="pathway"):
        clip_rng(0, 0, "v", "rgb")


def test_clip_rng_reseeding_a_held_generator_gives_the_fresh_stream() -> None:
    """The loader re-seeds one Generator per pathway: the draws must equal a freshly made one's,
    whatever that Generator drew before, and depend on seed, epoch and key."""
    held = new_clip_generator()
    held.random(7)  # leftover state from a previous clip
    fresh = clip_rng(2, 5, "gym/v9", "intensity").random(6)
    assert clip_rng(2, 5, "gym/v9", "intensity", out=held) is held
    assert np.array_equal(held.random(6), fresh)
    for other in ((3, 5, "gym/v9"), (2, 6, "gym/v9"), (2, 5, "gym/v8")):
        assert not np.array_equal(clip_rng(*other, "intensity", out=held).random(6), fresh)
    with pytest.raises(ValueError, match="PCG64"):
        clip_rng(0, 0, "v", "integrity", out=np.random.Generator(np.random.MT19937(0)))


def test_uniform_test_mode_cache_hands_out_independent_copies() -> None:
    a = uniform_indices(130, L, 2, test_mode=True)
    a[:] = -1
    b = uniform_indices(130, L, 2, test_mode=True)
    assert b.min() >= 0 and b.flags.writeable


# ------------------------------------------------------------------------------------------ uniform


def test_uniform_test_mode_matches_reference_exactly(golden: np.lib.npyio.NpzFile) -> None:
    for case in range(int(golden["meta/num_cases"])):
        c = f"c{case:02d}"
        t = golden[f"{c}/keypoint"].shape[1]
        assert np.array_equal(uniform_indices(t, L, test_mode=True), golden[f"{c}/usf_inds_1clip"]), c
        assert np.array_equal(uniform_indices(t, L, 10, test_mode=True), golden[f"{c}/usf_inds_10clip"]), c
    for i, t in enumerate(golden["usf_extra/T"]):
        assert np.array_equal(uniform_indices(int(t), L, test_mode=True), golden["usf_extra/inds_1clip"][i])
        ten = uniform_indices(int(t), L, 10, test_mode=True)
        assert np.array_equal(ten, golden["usf_extra/inds_10clip"][i])


def test_uniform_test_mode_leaves_global_rng_alone() -> None:
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    uniform_indices(100, L, test_mode=True)
    assert np.random.rand() == expected


@pytest.mark.parametrize("total", [96, 97, 150, 1000])
def test_uniform_train_takes_one_frame_per_segment(total: int) -> None:
    borders = np.arange(L + 1) * total // L
    for seed in range(20):
        inds = uniform_indices(total, L, test_mode=False, rng=np.random.default_rng(seed))
        assert inds.dtype == np.int64 and inds.shape == (L,)
        assert np.all((inds >= borders[:-1]) & (inds < borders[1:]))


@pytest.mark.parametrize("total", [48, 49, 60, 95])
def test_uniform_train_mid_range_is_strictly_increasing_and_spread(total: int) -> None:
    for seed in range(20):
        inds = uniform_indices(total, L, test_mode=False, rng=np.random.default_rng(seed))
        assert np.all(np.diff(inds) >= 1) and inds[0] >= 0 and inds[-1] < total
        # skipping T - L gaps of L + 1 places: each step is 1 or 2, the clip never runs past the video
        assert np.all(np.diff(inds) <= 2) and inds[0] <= 1


def test_uniform_train_short_video_loops_from_a_random_start() -> None:
    starts = set()
    for seed in range(30):
        inds = uniform_indices(20, L, test_mode=False, rng=np.random.default_rng(seed))
        assert np.array_equal(inds, (inds[0] + np.arange(L)) % 20)
        starts.add(int(inds[0]))
    assert len(starts) > 5


def test_uniform_train_reproducible_and_multi_clip() -> None:
    a = uniform_indices(300, L, 3, test_mode=False, rng=clip_rng(0, 0, "v", "integrity"))
    b = uniform_indices(300, L, 3, test_mode=False, rng=clip_rng(0, 0, "v", "integrity"))
    assert np.array_equal(a, b) and a.shape == (3 * L,)
    assert not np.array_equal(a[:L], a[L : 2 * L])  # clips are drawn independently
    with pytest.raises(ValueError, match="rng"):
        uniform_indices(300, L, test_mode=False)


# ---------------------------------------------------------------------------------------- intensity


@pytest.mark.parametrize("peak", [24, 50, 75])
def test_intensity_peak_lands_at_half_clip(peak: int) -> None:
    inds = intensity_indices(100, peak, L)
    assert inds[L // 2] == peak and np.array_equal(inds, np.arange(peak - 24, peak + 24))


def test_intensity_window_is_clamped_to_the_video() -> None:
    assert np.array_equal(intensity_indices(100, 3, L), np.arange(0, L))
    assert np.array_equal(intensity_indices(100, 99, L), np.arange(100 - L, 100))
    assert np.array_equal(intensity_indices(100, 77, L), np.arange(100 - L, 100))  # 77 = 24 + 52 + 1


def test_intensity_short_video_loops_from_frame_zero() -> None:
    assert np.array_equal(intensity_indices(30, 29, L), np.r_[np.arange(30), np.arange(18)])


def test_intensity_num_clips_repeats_the_window() -> None:
    assert np.array_equal(intensity_indices(100, 60, L, 3), np.tile(np.arange(36, 84), 3))


def test_intensity_matches_reference_placement(golden: np.lib.npyio.NpzFile) -> None:
    for case in range(int(golden["meta/num_cases"])):
        c = f"c{case:02d}"
        for d in ("J", "jnt_next", "all"):
            curve = golden[f"{c}/sv/{d}"]
            inds = intensity_indices(len(curve), int(np.argmax(curve)), L)
            assert np.array_equal(inds, golden[f"{c}/inds/{d}"]), (c, d)


def test_intensity_jitter_is_bounded_and_reproducible() -> None:
    seen = set()
    for seed in range(60):
        inds = intensity_indices(200, 100, L, jitter=5, rng=np.random.default_rng(seed))
        shift = int(inds[L // 2]) - 100
        assert -5 <= shift <= 5 and np.array_equal(inds, np.arange(inds[0], inds[0] + L))
        again = intensity_indices(200, 100, L, jitter=5, rng=np.random.default_rng(seed))
        assert np.array_equal(inds, again)
        seen.add(shift)
    assert seen == set(range(-5, 6))
    assert np.array_equal(intensity_indices(200, 100, L), np.arange(76, 124))  # jitter off by default


def test_intensity_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="peak"):
        intensity_indices(50, 50, L)
    with pytest.raises(ValueError, match="rng"):
        intensity_indices(100, 50, L, jitter=2)


# ------------------------------------------------------------------------------------ random centre


def test_random_centre_test_mode_is_the_reference_draw() -> None:
    for total in (30, 48, 97, 400):
        legacy = np.random.RandomState(255)
        centres = [int(legacy.uniform(0, total)) for _ in range(2)]
        got = random_centre_indices(total, L, 2, test_mode=True)
        expected = np.concatenate([intensity_indices(total, c, L) for c in centres])
        assert np.array_equal(got, expected)


def test_random_centre_train_varies_and_stays_in_the_video() -> None:
    starts = set()
    for seed in range(30):
        inds = random_centre_indices(300, L, test_mode=False, rng=np.random.default_rng(seed))
        assert inds.shape == (L,) and inds[0] >= 0 and inds[-1] < 300
        assert np.array_equal(inds, np.arange(inds[0], inds[0] + L))
        starts.add(int(inds[0]))
    assert len(starts) > 20
