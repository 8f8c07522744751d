"""From your own videos (issue 16): BlazePose on real footage, `intint extract-poses` on a folder with bad
files in it, and video → poses → shards → Ray training → `intint predict --video` end to end.

The clips in tests/data/videos are real people (tests/data/README.md: sources, licences, how they were
cut): a person doing jumping jacks on a roof (Sports2D demo) and a person lunging in a lab, from two
cameras (Pose2Sim demo)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mediapipe", reason="the video extra is not installed (docs/video.md)")
pytest.importorskip("cv2", reason="the video extra is not installed (docs/video.md)")

from job_helpers import load_job, tiny_train_args, unique_name
from typer.testing import CliRunner

from intint.cli import app
from intint.pose import annotations
from intint.pose.skeleton import JOINT_NAMES
from intint.video import estimators, extract
from intint.video.cache import cache_folder
from intint.video.estimators import BlazePose, EstimatorSpec, FramePoses
from intint.video.frames import import_cv2, iter_rgb_frames
from intint.video.splits import stratified_split
from intint.video.video_poses import VideoPoses, estimate_video

VIDEOS = Path(__file__).resolve().parents[1] / "data" / "videos"
CLIPS = ("sports2d_jumping_jacks.mp4", "pose2sim_cam01.mp4", "pose2sim_cam02.mp4")
NOSE, L_SHOULDER, R_SHOULDER, L_WRIST, R_WRIST, L_HIP, R_HIP = 0, 5, 6, 9, 10, 11, 12
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def real_poses() -> dict[str, VideoPoses]:
    """BlazePose on every committed clip, once."""
    estimator = BlazePose()
    try:
        return {clip: estimate_video(str(VIDEOS / clip), estimator) for clip in CLIPS}
    finally:
        estimator.close()


def cut_clip(source: Path, out: Path, first: int, count: int) -> Path:
    """Frames [first, first + count) of a real clip as a new video file."""
    cv2 = import_cv2()
    writer = None
    for _, rgb in iter_rgb_frames(str(source), set(range(first, first + count))):
        if writer is None:
            writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), 30, rgb.shape[1::-1])
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return out


def video_folder(root: Path, frames: int = 16) -> Path:
    """Two classes of short real clips: jumping jacks (Sports2D) and lunges (Pose2Sim, two cameras)."""
    for k, first in enumerate((4, 36, 44, 60)):  # BlazePose's detector misses this person with raised arms
        (root / "jumping_jacks").mkdir(parents=True, exist_ok=True)
        cut_clip(VIDEOS / CLIPS[0], root / "jumping_jacks" / f"jj{k}.mp4", first, frames)
    for cam in ("cam01", "cam02"):
        for first in (10, 60):
            (root / "lunge").mkdir(parents=True, exist_ok=True)
            cut_clip(VIDEOS / f"pose2sim_{cam}.mp4", root / "lunge" / f"{cam}_{first}.mp4", first, frames)
    return root


def add_bad_files(root: Path) -> dict[str, str]:
    """The files of a real folder that are not usable videos, and a word each reject reason must hold."""
    (root / "lunge" / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    (root / "lunge" / "empty.mp4").write_bytes(b"")
    cv2 = import_cv2()
    cv2.VideoWriter(str(root / "jumping_jacks" / "no_frames.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 30,
                    (64, 48)).release()
    (root / "lunge" / "notes.txt").write_text("not a video")
    (root / "stray.mp4").write_bytes((VIDEOS / CLIPS[1]).read_bytes())
    return {"lunge/corrupt.mp4": "not a readable video", "lunge/empty.mp4": "empty file",
            "jumping_jacks/no_frames.avi": "no frame could be decoded",
            "lunge/notes.txt": "unknown extension", "stray.mp4": "not inside a class folder"}


def read_rejects(path: Path) -> dict[str, str]:
    return {r["frame_dir"]: r["reason"] for r in map(json.loads, path.read_text().splitlines())}


# --- the estimator on real footage -------------------------------------------------------------------


def test_blazepose_landmarks_map_to_coco17_by_name() -> None:
    """BlazePose's 33 landmarks → COCO-17: each COCO joint takes the landmark of the same body part."""
    blaze_names = {0: "nose", 2: "left_eye", 5: "right_eye", 7: "left_ear", 8: "right_ear",
                   11: "left_shoulder", 12: "right_shoulder", 13: "left_elbow", 14: "right_elbow",
                   15: "left_wrist", 16: "right_wrist", 23: "left_hip", 24: "right_hip", 25: "left_knee",
                   26: "right_knee", 27: "left_ankle", 28: "right_ankle"}
    assert [blaze_names[i] for i in estimators.COCO17_FROM_BLAZEPOSE] == list(JOINT_NAMES)
    marks = np.stack([np.arange(33) / 40, np.full(33, 0.5), np.zeros(33), np.linspace(0, 1, 33)], axis=1)
    marks[5, :2] = (1.3, -0.2)  # a landmark beyond the frame
    xy, score = estimators.landmarks_to_coco(marks, 200, 100)
    assert xy.shape == (17, 2) and score.shape == (17,)
    assert xy[9] == pytest.approx((15 / 40 * 200, 50)) and score[9] == pytest.approx(15 / 32)
    assert tuple(xy[2]) == (199, 0)  # right eye, clipped into the frame


@pytest.mark.parametrize("clip", CLIPS)
def test_a_person_is_found_in_most_frames_inside_the_frame(real_poses, clip: str) -> None:
    poses = real_poses[clip]
    h, w = poses.img_shape
    found = poses.keypoint_score[0].max(axis=1) > 0
    assert poses.keypoint.shape[0] == 1  # BlazePose tracks one person
    assert found.mean() >= 0.9, f"{clip}: a person in {found.mean():.0%} of frames"
    kp = poses.keypoint[0, found]
    assert (kp[..., 0] >= 0).all() and (kp[..., 0] <= w - 1).all()
    assert (kp[..., 1] >= 0).all() and (kp[..., 1] <= h - 1).all()
    assert ((poses.keypoint_score >= 0) & (poses.keypoint_score <= 1)).all()
    height = kp[..., 1].max(axis=1) - kp[..., 1].min(axis=1)
    assert (height > 0.1 * h).all()  # a whole person, not a collapsed point


def test_wrists_go_above_the_head_when_the_arms_are_raised(real_poses) -> None:
    """Jumping jacks: the arms are up around frames 20-28 and 55-63, down around 5-8, 39-43 and 75-79
    (image y grows downwards)."""
    kp, score = real_poses[CLIPS[0]].keypoint[0], real_poses[CLIPS[0]].keypoint_score[0]
    wrists_y = kp[:, [L_WRIST, R_WRIST], 1]
    for t in [*range(20, 29), *range(55, 64)]:
        assert score[t].max() > 0 and (wrists_y[t] < kp[t, NOSE, 1]).all(), f"frame {t}: arms not up"
    for t in [*range(5, 9), *range(39, 44), *range(75, 80)]:
        shoulders, hips = kp[t, [L_SHOULDER, R_SHOULDER], 1].mean(), kp[t, [L_HIP, R_HIP], 1].mean()
        assert score[t].max() > 0 and (wrists_y[t] > (shoulders + hips) / 2).all(), f"frame {t}: arms up"


def moving_share_inside(frames: np.ndarray, keypoint: np.ndarray) -> float:
    """Mean share, over frames with motion, of the moving pixels (|frame t - frame t-2| > 25 grey levels)
    that lie in the keypoints' bounding box padded by 10 %."""
    shares = []
    for t in range(2, len(frames)):
        ys, xs = np.nonzero(np.abs(frames[t] - frames[t - 2]) > 25)
        if xs.size < 50:
            continue
        (x0, y0), (x1, y1) = keypoint[t].min(axis=0), keypoint[t].max(axis=0)
        px, py = 0.1 * (x1 - x0), 0.1 * (y1 - y0)
        shares.append(((xs >= x0 - px) & (xs <= x1 + px) & (ys >= y0 - py) & (ys <= y1 + py)).mean())
    return float(np.mean(shares))


@pytest.mark.parametrize("clip", CLIPS[1:])
def test_keypoints_move_with_the_person(real_poses, clip: str) -> None:
    """In the static-camera lab clips the moving pixels are the person's: the skeleton's box holds most of
    them in every frame, far more than the first frame's skeleton held still would."""
    poses = real_poses[clip]
    frames = np.stack([rgb.mean(axis=2) for _, rgb in iter_rgb_frames(str(VIDEOS / clip))])
    assert len(frames) == poses.total_frames
    own = moving_share_inside(frames, poses.keypoint[0])
    frozen = moving_share_inside(frames, np.repeat(poses.keypoint[0, :1], poses.total_frames, axis=0))
    assert own >= 0.85 and own - frozen >= 0.3, (own, frozen)


# --- extract-poses -------------------------------------------------------------------------------------


def test_extract_poses_folder_with_bad_files(tmp_path: Path) -> None:
    """Two workers over a real folder holding a corrupt file, an empty file, a video without frames, a
    text file and a video outside any class folder: the good videos become a valid PYSKL file that
    build-shards accepts, each bad one a reject line with its reason, never a traceback; a re-run takes
    every video from the cache and writes the same file."""
    root = video_folder(tmp_path / "videos", frames=12)
    bad = add_bad_files(root)
    out = tmp_path / "out" / "poses.pkl"
    args = ["extract-poses", str(root), "-o", str(out), "--workers", "2", "--no-progress",
            "--split-fractions", "train=0.5,val=0.25,test=0.25"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output and "8 extracted + 5 rejected" in res.output
    rejects = read_rejects(out.parent / "poses.rejects.jsonl")
    assert set(rejects) == set(bad)
    for name, word in bad.items():
        assert word in rejects[name], (name, rejects[name])
    assert (out.parent / "classes.txt").read_text() == "jumping_jacks\nlunge\n"

    written = out.read_bytes()
    raw = pickle.loads(written)
    checked = annotations.validate(raw, num_classes=2)
    assert not checked.rejects and len(checked.samples) == 8
    sample = checked.samples["lunge/cam01_10.mp4"]
    assert sample.label == 1 and sample.keypoint.shape == (1, 12, 17, 2) and sample.img_shape == (480, 270)
    assert {k: len(v) for k, v in raw["split"].items()} == {"train": 4, "val": 2, "test": 2}
    for split in raw["split"].values():  # stratified: each split holds both classes equally
        assert sorted(fd.split("/")[0] for fd in split).count("lunge") == len(split) // 2

    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "(11 taken from the cache)" in again.output, again.output
    assert out.read_bytes() == written
    shards = CliRunner().invoke(app, ["build-shards", str(out), "-o", str(tmp_path / "shards"), "--classes",
                                      str(out.parent / "classes.txt"), "--workers", "1", "--no-progress"])
    assert shards.exit_code == 0 and "8 written + 0 rejected" in shards.output, shards.output


def test_extraction_resumes_where_it_stopped(tmp_path: Path) -> None:
    """Videos already in the cache are skipped: with one entry gone only that video is decoded again."""
    root = tmp_path / "videos" / "jumping_jacks"
    root.mkdir(parents=True)
    for k, first in enumerate((4, 44, 58)):
        cut_clip(VIDEOS / CLIPS[0], root / f"jj{k}.mp4", first, 10)
    cfg = extract.ExtractConfig(str(tmp_path / "videos"), str(tmp_path / "poses.pkl"), workers=1,
                                progress=False)
    first = extract.extract(cfg)
    assert (first.extracted, first.resumed) == (3, 0)
    entries = sorted(Path(cache_folder(cfg.output)).glob("*.npz"))
    assert len(entries) == 3
    entries[0].unlink()
    second = extract.extract(cfg)
    assert (second.extracted, second.resumed) == (3, 2)
    assert len(list(Path(cache_folder(cfg.output)).glob("*.npz"))) == 3


def test_extract_poses_from_a_list_file(tmp_path: Path) -> None:
    clips = tmp_path / "clips"
    clips.mkdir()
    cut_clip(VIDEOS / CLIPS[1], clips / "a.mp4", 0, 8)
    cut_clip(VIDEOS / CLIPS[2], clips / "b.mp4", 0, 8)
    listing = tmp_path / "videos.txt"
    listing.write_text("# path class\nclips/a.mp4 lunge\nclips/b.mp4\twide view\nclips/a.mp4 lunge\n"
                       "just-a-path\nclips/c.gif lunge\n")
    out = tmp_path / "poses.pkl"
    res = CliRunner().invoke(app, ["extract-poses", str(listing), "-o", str(out), "--workers", "1",
                                   "--no-progress", "--split-fractions", "train=1"])
    assert res.exit_code == 0, res.output
    raw = pickle.loads(out.read_bytes())
    assert {a["frame_dir"]: a["label"] for a in raw["annotations"]} == {"clips/a.mp4": 0, "clips/b.mp4": 1}
    assert (tmp_path / "classes.txt").read_text() == "lunge\nwide view\n"
    rejects = read_rejects(tmp_path / "poses.rejects.jsonl")
    assert "listed more than once" in rejects["clips/a.mp4"] and "unknown extension" in rejects["clips/c.gif"]
    assert any("expected '<path> <class>'" in r for r in rejects.values())


@pytest.mark.parametrize("case", ["no videos", "missing", "all bad", "bad fractions", "video missing",
                                  "empty video", "neither"])
def test_bad_input_is_one_error_line(tmp_path: Path, case: str) -> None:
    folder = tmp_path / "videos"
    (folder / "walk").mkdir(parents=True)
    (folder / "walk" / "readme.txt").write_text("no videos here")
    if case == "all bad":
        (folder / "walk" / "broken.mp4").write_bytes(b"\x00" * 100)
    (tmp_path / "empty.mp4").write_bytes(b"")
    extract_args = ["extract-poses", str(folder), "-o", str(tmp_path / "p.pkl"), "--workers", "1",
                    "--no-progress"]
    args = {"no videos": extract_args, "all bad": extract_args,
            "missing": ["extract-poses", str(tmp_path / "nowhere"), "-o", str(tmp_path / "p.pkl")],
            "bad fractions": [*extract_args, "--split-fractions", "train=x"],
            "video missing": ["predict", "--checkpoint", str(tmp_path), "--video", str(tmp_path / "no.mp4")],
            "empty video": ["predict", "--checkpoint", str(tmp_path), "--video", str(tmp_path / "empty.mp4")],
            "neither": ["predict", "--checkpoint", str(tmp_path)]}[case]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip() and not ln.startswith("[intint]")]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    expected = {"no videos": "no videos found", "missing": "nowhere", "all bad": "none of its 1 videos",
                "bad fractions": "--split-fractions", "video missing": "no such file",
                "empty video": "empty file", "neither": "exactly one"}[case]
    assert expected in lines[0]


def test_stratified_split_is_deterministic_and_per_class() -> None:
    videos = {"a": [f"a/{i}" for i in range(10)], "b": [f"b/{i}" for i in range(7)]}
    split = stratified_split(videos, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=3)
    assert sorted(sum(split.values(), [])) == sorted(videos["a"] + videos["b"])
    per_class = {s: [v.split("/")[0] for v in names] for s, names in split.items()}
    assert [per_class[s].count("a") for s in split] == [6, 2, 2]
    assert [per_class[s].count("b") for s in split] == [4, 2, 1]  # 4.2, 1.4, 1.4: one leftover to val
    shuffled = {"b": videos["b"][::-1], "a": videos["a"][::-1]}
    assert stratified_split(shuffled, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=3) == split
    more = stratified_split({**videos, "c": ["c/0", "c/1"]}, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=3)
    assert {s: [v for v in n if not v.startswith("c/")] for s, n in more.items()} == split


class TwoPeople:
    """A user's multi-person estimator behind the interface: a fixed pose per frame, a second person in
    even frames only."""

    def reset(self) -> None:
        self.frame = 0

    def estimate(self, rgb: np.ndarray) -> FramePoses:
        h, w = rgb.shape[:2]
        one = np.stack([np.linspace(0.2, 0.4, 17) * w, np.linspace(0.1, 0.9, 17) * h], axis=1)
        people = [one, one + [0.3 * w, 0]] if self.frame % 2 == 0 else [one]
        self.frame += 1
        return FramePoses(np.stack(people), np.full((len(people), 17), 0.9))

    def close(self) -> None:
        pass


def two_people() -> TwoPeople:
    return TwoPeople()


def test_a_plugged_in_estimator_fills_several_person_slots(tmp_path: Path) -> None:
    (tmp_path / "videos" / "lunge").mkdir(parents=True)
    cut_clip(VIDEOS / CLIPS[1], tmp_path / "videos" / "lunge" / "a.mp4", 0, 6)
    cfg = extract.ExtractConfig(str(tmp_path / "videos"), str(tmp_path / "poses.pkl"), workers=1,
                                progress=False, estimator=EstimatorSpec(f"{__name__}:two_people"))
    assert extract.extract(cfg).extracted == 1
    ann = pickle.loads((tmp_path / "poses.pkl").read_bytes())["annotations"][0]
    assert ann["keypoint"].shape == (2, 6, 17, 2)
    assert (ann["keypoint_score"][1, 1::2] == 0).all() and (ann["keypoint_score"][1, 0::2] > 0).all()
    bad = extract.ExtractConfig(str(tmp_path / "videos"), str(tmp_path / "x.pkl"), workers=1,
                                estimator=EstimatorSpec("no_such_module:make"))
    with pytest.raises(ValueError, match="cannot import 'no_such_module'"):
        extract.extract(bad)


# --- end to end ----------------------------------------------------------------------------------------


@pytest.mark.ray
def test_videos_to_trained_model_to_predict_video(ray_session, tmp_path: Path, monkeypatch) -> None:
    """extract-poses --ray → build-shards → train (tiny preset, 2 Ray workers) → predict --video."""
    root = video_folder(tmp_path / "videos")
    poses = tmp_path / "poses.pkl"
    res = CliRunner().invoke(app, ["extract-poses", str(root), "-o", str(poses), "--ray", "--no-progress",
                                   "--split-fractions", "train=0.5,val=0.5"])
    assert res.exit_code == 0 and "8 extracted + 0 rejected" in res.output, res.output
    classes = tmp_path / "classes.txt"
    shards = tmp_path / "shards"
    res = CliRunner().invoke(app, ["build-shards", str(poses), "-o", str(shards), "--classes", str(classes),
                                   "--num-shards", "2", "--workers", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    name = unique_name("video")
    load_job("train_finegym").main(tiny_train_args(shards, tmp_path, name, "--epochs", "1", "--wandb",
                                                   "disabled"))

    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["predict", "--checkpoint", str(tmp_path / name), "--video",
                                   str(VIDEOS / CLIPS[1]), "--classes", str(classes)])
    assert res.exit_code == 0, res.output
    assert "label: unknown" in res.output and "intensity peak at frame" in res.output
    rows = [ln.split() for ln in res.output.splitlines() if ln[:2] in ("1 ", "2 ")]
    assert [len(r) for r in rows] == [7, 7] and {rows[0][1], rows[1][1]} == {"jumping_jacks", "lunge"}
    assert (tmp_path / "pose2sim_cam01.prediction.png").read_bytes()[:8] == PNG_MAGIC

    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 1000)
    res = CliRunner().invoke(app, ["predict", "--checkpoint", str(tmp_path / name), "--video",
                                   str(tmp_path / "broken.mp4")])
    assert res.exit_code == 1 and res.output.strip().splitlines()[-1].startswith("error: "), res.output
    assert "not a readable video" in res.output
