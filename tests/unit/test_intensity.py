"""Motion intensity: reference mode against the authors' golden vectors, paper mode against hand-computed
cases and a plain-loop restatement of its definitions, plus the API's shapes, dtypes and errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from reference.paper_intensity_loops import loop_paper

from intint.pose import intensity
from intint.pose.sampling import intensity_indices

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden.npz"
GOLDEN_NAME = {**{d: d for d in intensity.SINGLE_DEFINITIONS}, "J": "J", "B": "B", "A": "A",
               "JBA_weighted": "all"}

# A COCO-17 standing person (x, y pixels), joints at distinct positions.
TEMPLATE = np.array(
    [[100, 40], [95, 35], [105, 35], [90, 38], [110, 38], [85, 60], [115, 60], [80, 85], [120, 85],
     [78, 110], [122, 110], [90, 115], [110, 115], [88, 150], [112, 150], [87, 185], [113, 185]],
    dtype=np.float32,
)


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    assert GOLDEN.exists(), f"golden vectors not found at {GOLDEN} (they are part of the repository)"
    wanted = ("/keypoint", "/keypoint_score", "/real_num_person", "/sv/", "/inds/")
    with np.load(GOLDEN) as data:  # only the intensity keys: the heatmap volumes are slow to inflate
        return {k: data[k] for k in data.files if k.startswith("c") and any(w in k for w in wanted)}


def video(frames: int, persons: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Every slot holds the static template with score 1; tests then move or remove joints."""
    kp = np.broadcast_to(TEMPLATE, (persons, frames, 17, 2)).copy()
    kp += (np.arange(persons, dtype=np.float32) * 200)[:, None, None, None] * np.array([1, 0], np.float32)
    return kp, np.ones((persons, frames, 17), dtype=np.float32)


def only_joints(kp: np.ndarray, score: np.ndarray, joints: list[int]) -> None:
    """Make every other joint absent: (0, 0) with score 0."""
    others = [j for j in range(17) if j not in joints]
    kp[:, :, others] = 0
    score[:, :, others] = 0


def n(curve: np.ndarray) -> np.ndarray:
    return curve.astype(np.float64) / max(1e-8, float(curve.max()))


# ----------------------------------------------------------------------------- reference mode: golden


@pytest.mark.parametrize("case", range(12))
def test_reference_mode_reproduces_golden_curves_counts_and_windows(golden, case):
    p = f"c{case:02d}/"
    kp, score = golden[p + "keypoint"], golden[p + "keypoint_score"]
    total_frames = kp.shape[1]
    np.testing.assert_array_equal(intensity.real_num_person(kp), golden[p + "real_num_person"])
    out = intensity.compute(kp, score, mode="reference")
    for mine, theirs in GOLDEN_NAME.items():
        gold = golden[p + "sv/" + theirs]
        err = np.abs(out[mine].astype(np.float64) - gold).max()
        assert err <= 1e-4 * gold.max(), f"c{case:02d} {mine}: max |Δ| {err:.3g} vs max {gold.max():.3g}"
        inds = intensity_indices(total_frames, intensity.peak(out[mine]), clip_len=48)
        np.testing.assert_array_equal(inds, golden[p + "inds/" + theirs], err_msg=f"c{case:02d} {mine}")
    # JBA_arithmetic has no golden key: it is the ten normalised golden sub-curves with θ all 1.
    expected = sum(n(golden[p + "sv/" + d]) for d in intensity.SINGLE_DEFINITIONS) / 10
    np.testing.assert_allclose(out["JBA_arithmetic"], expected, atol=1e-5)


def test_reference_weights_default_to_theta_and_all_ones_give_the_arithmetic_ensemble(golden):
    kp, score = golden["c04/keypoint"], golden["c04/keypoint_score"]
    default = intensity.compute(kp, score)
    explicit = intensity.compute(kp, score, weights=intensity.REFERENCE_THETA)
    np.testing.assert_array_equal(default["JBA_weighted"], explicit["JBA_weighted"])
    ones = intensity.compute(kp, score, weights={d: 1.0 for d in intensity.SINGLE_DEFINITIONS})
    np.testing.assert_allclose(ones["JBA_weighted"], default["JBA_arithmetic"], atol=1e-6)
    only_joint = intensity.compute(kp, score, weights={"J": 1.0, "B": 0.0, "A": 0.0})
    np.testing.assert_allclose(only_joint["JBA_weighted"], default["J"] * 10 / 2, atol=1e-6)


def test_float16_input_is_widened_not_rejected(golden):
    kp16 = golden["c05/keypoint"].astype(np.float16)
    score16 = golden["c05/keypoint_score"].astype(np.float16)
    for mode in intensity.MODES:
        out = intensity.compute(kp16, score16, mode=mode)
        same = intensity.compute(kp16.astype(np.float32), score16.astype(np.float32), mode=mode)
        for name in intensity.DEFINITIONS:
            assert out[name].dtype == np.float32
            np.testing.assert_array_equal(out[name], same[name], err_msg=f"{mode}/{name}")


@pytest.mark.parametrize("mode", intensity.MODES)
@pytest.mark.parametrize("persons", [0, 1, 3])
def test_every_definition_is_a_finite_float32_curve_of_length_t(mode, persons):
    kp, score = video(7, persons)
    kp[..., 9, :] += np.arange(7, dtype=np.float32)[None, :, None] * 3  # some motion
    out = intensity.compute(kp, score, mode=mode)
    assert tuple(out) == intensity.DEFINITIONS
    for name, curve in out.items():
        assert curve.dtype == np.float32 and curve.shape == (7,), name
        assert np.isfinite(curve).all() and (curve >= 0).all(), name
    for name in intensity.SINGLE_DEFINITIONS:
        if name.endswith("_next"):
            assert out[name][-1] == 0, f"{name}: the last frame has no successor"


def test_definition_tables():
    assert intensity.DEFINITIONS == intensity.SINGLE_DEFINITIONS + intensity.ENSEMBLES
    assert set(intensity.REFERENCE_THETA) == set(intensity.SINGLE_DEFINITIONS)
    assert sum(intensity.REFERENCE_THETA.values()) == pytest.approx(69.436)
    assert intensity.MODES == ("reference", "paper")


def test_single_frame_video_gives_zero_curves():
    kp, score = video(1, 2)
    for mode in intensity.MODES:
        out = intensity.compute(kp, score, mode=mode)
        assert all(curve.shape == (1,) for curve in out.values())
        assert out["jnt_next"][0] == 0


# ----------------------------------------------------------------------------- the two modes differ


def test_appearing_person_spikes_reference_but_not_paper():
    # Slot 0 walks 1 px/frame to the right (17 joints × 1 px per frame); slot 1 stands still and
    # appears at frame 5.
    kp, score = video(10, 2)
    kp[0] += (np.arange(10, dtype=np.float32)[:, None] * np.array([1, 0], np.float32))[:, None, :]
    kp[1, :5], score[1, :5] = 0, 0
    paper = intensity.compute(kp, score, mode="paper")["jnt_next"]
    # Pair (4, 5) counts only slot 0 (slot 1 is not present in both frames); afterwards two persons
    # share the frame and the per-person normalisation halves the sum.
    np.testing.assert_allclose(paper, [17, 17, 17, 17, 17, 8.5, 8.5, 8.5, 8.5, 0], rtol=1e-6)
    reference = intensity.compute(kp, score, mode="reference")["jnt_next"]
    assert intensity.peak(reference) == 4, "the reference treats the appearance as a jump from (0, 0)"
    assert reference[4] > 10 * np.delete(reference, 4).max()


def test_absent_joints_do_not_count_in_paper_mode():
    kp, score = video(6)
    kp[0, 2, 9], score[0, 2, 9] = 0, 0  # left wrist undetected in frame 2
    kp[0, 3, 10] += 500  # right wrist far away in frame 3, but with score 0: absent
    score[0, 3, 10] = 0
    paper = intensity.compute(kp, score, mode="paper")
    for name in intensity.SINGLE_DEFINITIONS:
        np.testing.assert_allclose(paper[name], 0, atol=1e-4, err_msg=name)
    reference = intensity.compute(kp, score, mode="reference")
    # The reference counts the wrist's jump to (0, 0) and back, |(78, 110)| / 100 / 10, and ignores
    # scores, so the zero-score joint's 707 px jump counts too.
    np.testing.assert_allclose(reference["jnt_next"][:3], [0, 0.1348, 0.1348 + 0.7071], atol=1e-3)


def test_frames_without_any_person_score_zero_in_paper_mode():
    kp, score = video(6)
    kp[0] += (np.arange(6, dtype=np.float32)[:, None] * np.array([1, 0], np.float32))[:, None, :]
    kp[0, 3], score[0, 3] = 0, 0
    out = intensity.compute(kp, score, mode="paper")
    np.testing.assert_allclose(out["jnt_next"], [17, 17, 0, 0, 17, 0], rtol=1e-6)
    for name in intensity.SINGLE_DEFINITIONS:
        assert out[name][3] == 0, name
        if name.endswith("_next"):
            assert out[name][2] == 0, name


# ----------------------------------------------------------------------------- paper mode, by hand


def test_paper_joint_curves_move_one_joint_a_known_distance():
    kp, score = video(5)
    kp[0, 3:, 9] += np.array([3, 4], np.float32)  # the left wrist jumps 5 px between frames 2 and 3
    out = intensity.compute(kp, score, mode="paper")
    np.testing.assert_allclose(out["jnt_next"], [0, 0, 5, 0, 0], atol=1e-5)
    # mean wrist = p + (3, 4)·2/5, so the deviation is 2 px before the jump and 3 px after it
    np.testing.assert_allclose(out["jnt_avr"], [2, 2, 2, 3, 3], atol=1e-5)


def test_paper_local_angles_at_a_right_angle_elbow():
    # Only the left arm is detected: shoulder S, elbow E, wrist W.
    kp, score = video(2)
    only_joints(kp, score, [5, 7, 9])
    kp[0, :, 5], kp[0, :, 7] = (100, 50), (100, 100)
    kp[0, 0, 9] = (150, 100)  # frame 0: elbow 90° (A = 1), wrist 45° (A = 1 - √2/2)
    kp[0, 1, 9] = (100, 150)  # frame 1: arm straight, elbow 180° (A = 2), wrist 0° (A = 0)
    out = intensity.compute(kp, score, mode="paper")
    a_wrist = 1 - math.sqrt(2) / 2
    np.testing.assert_allclose(out["angL_next"], [(2 - 1) + a_wrist, 0], atol=1e-6)
    np.testing.assert_allclose(out["angL_avr"], [0.5 + a_wrist / 2] * 2, atol=1e-6)


def test_paper_centre_angles_between_joint_and_trunk():
    kp, score = video(2)
    only_joints(kp, score, [5, 6, 9, 11, 12])
    kp[0, :, 5], kp[0, :, 6] = (90, 100), (110, 100)  # shoulder midpoint (100, 100)
    kp[0, :, 11], kp[0, :, 12] = (90, 200), (110, 200)  # hip midpoint (100, 200); trunk points up
    kp[0, 0, 9] = (200, 200)  # wrist out to the side: 90° from the trunk, A = 1
    kp[0, 1, 9] = (100, 300)  # wrist straight below the hips: 180°, A = 2
    out = intensity.compute(kp, score, mode="paper")
    np.testing.assert_allclose(out["angC_next"], [1, 0], atol=1e-6)
    np.testing.assert_allclose(out["angC_avr"], [0.5, 0.5], atol=1e-6)


def test_paper_nose_bone_ends_at_the_shoulder_midpoint():
    kp, score = video(2)
    only_joints(kp, score, [0, 5, 6])
    kp[0, :, 5], kp[0, :, 6] = (85, 60), (115, 60)
    kp[0, 0, 0], kp[0, 1, 0] = (100, 40), (80, 40)
    out = intensity.compute(kp, score, mode="paper")

    def one_minus_cos(a, b):
        a, b = np.asarray(a, float), np.asarray(b, float)
        return 1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b))

    nose = one_minus_cos((0, 20), (20, 20))  # shoulder midpoint (100, 60) minus the nose
    shoulders = one_minus_cos((15, -20), (-5, -20)) + one_minus_cos((-15, -20), (-35, -20))  # 5→0, 6→0
    np.testing.assert_allclose(out["boneL_next"], [nose + shoulders, 0], atol=1e-6)


def test_paper_masks_zero_length_bones_instead_of_propagating_nan():
    kp, score = video(3)
    kp[0, 1, 9] = kp[0, 1, 7]  # wrist exactly on the elbow in frame 1: bone 9→7 has no direction
    out = intensity.compute(kp, score, mode="paper")
    np.testing.assert_allclose(out["boneL_next"], 0, atol=1e-6)
    np.testing.assert_allclose(out["boneL_avr"], 0, atol=1e-6)
    # Control: a short bone with a direction does count.
    kp[0, 1, 9] = kp[0, 1, 7] + np.array([0, -5], np.float32)
    assert intensity.compute(kp, score, mode="paper")["boneL_next"][0] > 0.5


def test_paper_ensembles_average_normalised_curves():
    kp, score = video(8, 2)
    rng = np.random.default_rng(3)
    kp += rng.normal(0, 3, kp.shape).astype(np.float32)
    out = intensity.compute(kp, score, mode="paper")
    groups = {g: np.mean([n(out[d]) for d in members], axis=0) for g, members in intensity.GROUPS.items()}
    for g, expected in groups.items():
        np.testing.assert_allclose(out[g], expected, atol=1e-6, err_msg=g)
    np.testing.assert_allclose(out["JBA_arithmetic"], np.mean([n(out[g]) for g in "JBA"], axis=0), atol=1e-6)
    w = intensity.weights_from_accuracies(intensity.REFERENCE_THETA, "paper")
    np.testing.assert_allclose(out["JBA_weighted"], sum(w[g] * n(out[g]) for g in "JBA"), atol=1e-6)
    angle_only = intensity.compute(kp, score, mode="paper", weights={"J": 0, "B": 0, "A": 70.3})
    np.testing.assert_allclose(angle_only["JBA_weighted"], n(out["A"]), atol=1e-6)


# ----------------------------------------------------------------------------- paper mode, loop restatement


def test_paper_mode_matches_a_plain_loop_restatement_on_messy_data():
    rng = np.random.default_rng(7)
    kp, score = video(12, 2)
    kp += rng.normal(0, 4, kp.shape).astype(np.float32)
    score *= rng.uniform(0.1, 1, score.shape).astype(np.float32)
    kp[1, :4], score[1, :4] = 0, 0  # slot 1 appears at frame 4
    kp[0, 5:7, 3], score[0, 5:7, 3] = 0, 0  # an undetected ear
    score[0, 8, 10] = 0  # a joint with coordinates but score 0
    kp[0, 9, 4] = np.nan  # a non-finite joint
    kp[0, 7, 9] = kp[0, 7, 7]  # zero-length forearm
    kp[1, 9, 12] = kp[1, 9, 11]  # hips on top of each other
    kp[:, 10], score[:, 10] = 0, 0  # nobody in frame 10
    mine = intensity.compute(kp, score, mode="paper")
    expected = loop_paper(kp, score)
    for name in intensity.SINGLE_DEFINITIONS:
        np.testing.assert_allclose(mine[name], expected[name], rtol=1e-4, atol=1e-5 * expected[name].max(),
                                   err_msg=name)


# ----------------------------------------------------------------------------- helpers and errors


def test_weights_from_accuracies_per_group_and_per_definition():
    ref = intensity.weights_from_accuracies({"J": 69.3, "B": 68.7, "A": 70.3}, "reference")
    total = 2 * 69.3 + 4 * 68.7 + 4 * 70.3
    assert ref["jnt_avr"] == pytest.approx(69.3 / total) and ref["angC_next"] == pytest.approx(70.3 / total)
    assert sum(ref.values()) == pytest.approx(1)
    theta = intensity.weights_from_accuracies(intensity.REFERENCE_THETA, "reference")
    assert theta["boneL_avr"] == pytest.approx(6.869 / 69.436)
    paper = intensity.weights_from_accuracies(intensity.REFERENCE_THETA, "paper")
    s = 6.928 + 6.869 + 7.026
    assert paper == pytest.approx({"J": 6.928 / s, "B": 6.869 / s, "A": 7.026 / s})
    with pytest.raises(ValueError, match="exactly the keys"):
        intensity.weights_from_accuracies({"J": 1, "B": 1, "jnt_next": 1})
    with pytest.raises(ValueError, match="finite and >= 0"):
        intensity.weights_from_accuracies({"J": 1, "B": -1, "A": 1})
    with pytest.raises(ValueError, match="all 0"):
        intensity.weights_from_accuracies({"J": 0, "B": 0, "A": 0}, "paper")


def test_peak_is_the_first_maximum():
    assert intensity.peak(np.array([0, 3, 1, 3], np.float32)) == 1
    assert intensity.peak(np.zeros(5)) == 0
    with pytest.raises(ValueError, match="NaN"):
        intensity.peak(np.array([1, np.nan, 0]))
    with pytest.raises(ValueError, match="1-D"):
        intensity.peak(np.zeros((2, 2)))


def test_errors_name_the_sample_and_the_field():
    kp, score = video(4)
    with pytest.raises(ValueError, match=r"frame_dir='vid/7'.*'keypoint' must be M×T×17×2"):
        intensity.compute(kp[:, :, :16], score[:, :, :16], frame_dir="vid/7")
    with pytest.raises(ValueError, match="'keypoint_score' must have shape"):
        intensity.compute(kp, score[:, :3], frame_dir="vid/7")
    with pytest.raises(TypeError, match="'keypoint' must be float16/32/64"):
        intensity.compute(kp.astype(np.int32), score)
    with pytest.raises(ValueError, match="mode must be one of"):
        intensity.compute(kp, score, mode="slides")
    with pytest.raises(ValueError, match="'weights'"):
        intensity.compute(kp, score, weights={"J": 1})
    with pytest.raises(ValueError, match="0 frames"):
        intensity.compute(kp[:, :0], score[:, :0])
