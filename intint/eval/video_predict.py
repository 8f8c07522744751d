"""``intint predict --video``: one video file → its poses → the class by each pathway and fused, and a
picture of what the Intensity pathway looked at (docs/video.md).

Why it goes through the same path as a pose pickle: the poses are extracted exactly as
``intint extract-poses`` does it (``intint.video.video_poses``, the same estimator), then validated and
predicted by :class:`intint.eval.predict.Predictor` with the run's own config, so a video gets the
scores it would get inside an extracted dataset. The picture shows the run's intensity curve with the
Intensity clip's window and a few frames of that window with the extracted skeleton drawn on them: the
quickest check that the estimator found the person and that the window sits on the action.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from intint.eval.models import Weights
from intint.eval.plots import DPI, PATHWAY_COLOURS, save_png
from intint.eval.predict import Predictor, VideoPrediction
from intint.model.checkpoint import resolve
from intint.pose import annotations, intensity, sampling
from intint.pose.skeleton import LIMBS
from intint.video.estimators import EstimatorSpec, check_available
from intint.video.extract import run_local
from intint.video.frames import VideoReadError, check_file, iter_rgb_frames
from intint.video.video_poses import VideoPoses

SHOWN_FRAMES = 4  # frames drawn with their skeleton
DRAWN_SCORE = 0.3  # joints (and limbs) below this score are not drawn


@dataclass
class VideoPredictResult:
    """The prediction, the extracted poses, the Intensity curve and window (None when the run has no
    Intensity pathway or samples it at random) and the picture written (None if none was asked for)."""

    prediction: VideoPrediction
    poses: VideoPoses
    curve: np.ndarray | None
    window: np.ndarray | None
    picture: str | None


def default_picture(video: str) -> str:
    """``clip.mp4`` → ``clip.prediction.png`` in the current folder."""
    return os.path.splitext(os.path.basename(video))[0] + ".prediction.png"


def predict_video(video: str, checkpoint: str, *, classes: str | None = None, device: str | None = None,
                  picture: str | None = None, estimator: EstimatorSpec | None = None,
                  weights: Weights = "last") -> VideoPredictResult:
    """Extract ``video``'s poses, predict them with ``checkpoint`` (a checkpoint folder, or a run folder:
    its tested checkpoint) and draw ``picture`` (a PNG path; None draws nothing)."""
    spec = estimator or EstimatorSpec()
    check_available(spec)
    check_file(video)
    predictor = Predictor(resolve(checkpoint), classes=classes, device=device, weights=weights)
    (_, outcome), = run_local([video], spec, 1)  # in a worker process, as extract-poses does it
    if outcome.poses is None:
        raise VideoReadError(video, outcome.reason or "rejected")
    poses = outcome.poses
    frame_dir = os.path.basename(video)
    sample, _ = annotations.check_sample(poses.annotation(frame_dir, 0), frame_dir, None)
    prediction = predictor.predict(sample)
    prediction.label = None  # a new video has no label
    curve = window = None
    if prediction.peak is not None:
        curves = intensity.compute(sample.keypoint, sample.keypoint_score, predictor.cfg.intensity_mode,
                                   predictor.jba, frame_dir=frame_dir)
        curve = curves[predictor.loader_cfg.intensity_definition]
        clip_len = predictor.loader_cfg.clip_len
        window = sampling.intensity_indices(sample.total_frames, prediction.peak, clip_len)
    result = VideoPredictResult(prediction, poses, curve, window, None)
    if picture is not None:
        result.picture = draw_prediction(video, result, predictor.loader_cfg.intensity_definition, picture)
    return result


def shown_frames(total_frames: int, window: np.ndarray | None, count: int = SHOWN_FRAMES) -> list[int]:
    """``count`` frames spread evenly over the Intensity window (its centre, the peak, among them when
    ``count`` is odd), or over the whole video without a window."""
    frames = np.unique(window) if window is not None and window.size else np.arange(total_frames)
    picks = np.linspace(0, frames.size - 1, min(count, frames.size)).round().astype(np.int64)
    return sorted({int(frames[i]) for i in picks})


def _draw_curve(ax, curve: np.ndarray | None, window: np.ndarray | None, peak: int | None, total: int,
                definition: str, shown: list[int]) -> None:
    if curve is None:
        ax.text(0.5, 0.5, "this run has no peak-centred Intensity clip", ha="center", va="center",
                transform=ax.transAxes)
    else:
        top = float(np.max(curve)) if np.max(curve) > 0 else 1.0
        ax.plot(np.arange(total), curve / top, color="black", lw=1.2, label=f"intensity {definition} (÷ max)")
        lo, hi = int(window.min()), int(window.max())
        ax.axvspan(lo - 0.5, hi + 0.5, color=PATHWAY_COLOURS["intensity"], alpha=0.2,
                   label=f"Intensity clip ({window.size} frames)")
        ax.axvline(peak, color=PATHWAY_COLOURS["intensity"], lw=1.5, ls="--", label=f"peak, frame {peak}")
    for t in shown:
        ax.axvline(t, color="tab:gray", lw=0.8, ls=":")
    ax.set_xlim(-0.5, total - 0.5)
    ax.set_xlabel("frame")
    ax.legend(loc="upper right", fontsize=8)


def _draw_skeleton(ax, rgb: np.ndarray, keypoint: np.ndarray, score: np.ndarray) -> None:
    """The frame with each person's limbs and joints whose scores reach :data:`DRAWN_SCORE`."""
    ax.imshow(rgb)
    for person_xy, person_score in zip(keypoint, score, strict=True):
        for a, b in LIMBS:
            if person_score[a] >= DRAWN_SCORE and person_score[b] >= DRAWN_SCORE:
                ax.plot(person_xy[[a, b], 0], person_xy[[a, b], 1], color="lime", lw=1.5)
        seen = person_score >= DRAWN_SCORE
        ax.scatter(person_xy[seen, 0], person_xy[seen, 1], s=8, color="red", zorder=3)
    ax.set_axis_off()


def draw_prediction(video: str, result: VideoPredictResult, definition: str, path: str) -> str:
    """The picture: the top classes as the title, the intensity curve with the Intensity window, and
    :data:`SHOWN_FRAMES` frames of the window with the skeleton; written atomically as PNG."""
    pred, poses = result.prediction, result.poses
    shown = shown_frames(poses.total_frames, result.window)
    frames = dict(iter_rgb_frames(video, set(shown)))
    fig = Figure(figsize=(11, 6.8), layout="constrained")
    grid = fig.add_gridspec(2, max(len(shown), 1), height_ratios=(1, 1.5))
    _draw_curve(fig.add_subplot(grid[0, :]), result.curve, result.window, pred.peak, poses.total_frames,
                definition, shown)
    for col, t in enumerate(shown):
        ax = fig.add_subplot(grid[1, col])
        if t in frames:
            _draw_skeleton(ax, frames[t], poses.keypoint[:, t], poses.keypoint_score[:, t])
        ax.set_title(f"frame {t}" + (" (peak)" if t == pred.peak else ""), fontsize=9)
    best = {name: rows[0] for name, rows in pred.top(1).items()}
    title = ", ".join(f"{name} {cls} ({score:.2f})" for name, (cls, score) in best.items())
    fig.suptitle(f"{os.path.basename(video)}: {title}", fontsize=11)
    return save_png(fig, path, dpi=DPI)
