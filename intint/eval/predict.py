"""Predict the class of single videos from a PYSKL annotation file with a trained two-pathway checkpoint.

Why a separate path from the shard loader: a user with one new video has a pose pickle, not a shard
set. This module does per video what the build + eval loader do per shard — intensity curve and peak
(`intint.pose.intensity`), the test clips of both pathways (`intint.loader.clip_maker.ClipMaker.test`), the
test views (`intint.loader.clip_maker.render_views`) — with the run's own config read from the checkpoint,
so the numbers equal what `intint evaluate` computes for the same video. The annotation file is read with
the restricted unpickler and the sample is validated like any other (errors name the frame_dir and field).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from intint.config import TrainConfig, loader_config
from intint.eval import metrics, outputs
from intint.eval.models import Weights, load_model
from intint.loader.clip_maker import ClipMaker, render_views
from intint.pose import annotations, intensity
from intint.store import shardio
from intint.store.annotation_file import read_annotations
from intint.store.shardstream import Video

ROW_ORDER: tuple[str, ...] = ("integrity", "intensity", "fused")


@dataclass
class VideoPrediction:
    """Class scores of one video per pathway and fused.

    `fused` is the unnormalised weighted sum of the pathways' probabilities (docs/method.md §7).
    """

    frame_dir: str
    label: int | None
    class_names: list[str]
    scores: dict[str, np.ndarray]  # pathway name / "fused" → C scores
    peak: int | None  # the intensity peak the Intensity clip is centred on (None for "random")

    def top(self, k: int = 5) -> dict[str, list[tuple[str, float]]]:
        """The k best (class name, score) pairs per row, best first; ties go to the lower class id."""
        out = {}
        for name in ROW_ORDER:
            if name in self.scores:
                s = self.scores[name]
                order = np.lexsort((np.arange(s.size), -s))[:k]
                out[name] = [(self.class_names[i], float(s[i])) for i in order]
        return out

    def predicted(self, name: str) -> str:
        """The top-1 class name of row `name` ("integrity", "intensity" or "fused")."""
        return self.top(1)[name][0][0]


def find_sample(raw: Mapping, key: str | None, num_classes: int | None = None) -> annotations.Sample:
    """The validated annotation whose frame_dir (or shard key `k<sha1…>`) is `key`; the first one if None."""
    anns = raw["annotations"]
    if not anns:
        raise ValueError("the annotation file holds no videos")
    for i, ann in enumerate(anns):
        frame_dir = annotations.sample_id(ann, i)
        if frame_dir is None:
            continue
        if key is None or key in (frame_dir, shardio.sample_key(frame_dir)):
            sample, _ = annotations.check_sample(ann, frame_dir, num_classes)
            return sample
    shown = [annotations.sample_id(a, i) for i, a in enumerate(anns[:5])]
    raise KeyError(f"no video with frame_dir or key {key!r} in the annotation file ({len(anns)} videos, "
                   f"e.g. {shown})")


def _class_names(cfg: TrainConfig, num_classes: int, classes: str | None) -> list[str]:
    """Names from a class file, else the run's (`outputs.class_names`: the shard manifest's, else
    class_0..; the manifest may be gone)."""
    if classes:
        from intint.store.build import read_class_names

        names = read_class_names(classes)
    else:
        names = outputs.class_names(cfg.shards, num_classes).names
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for a checkpoint with {num_classes} classes")
    return names


def _jba_accuracies(cfg: TrainConfig) -> dict[str, float] | None:
    """The accuracies behind JBA_weighted the run's shards were built with (None: the reference θ)."""
    try:
        weights = shardio.read_manifest(cfg.shards).intensity.jba_weights
    except (FileNotFoundError, shardio.ShardFormatError, ValueError):
        return None
    return weights.get("accuracies")


class Predictor:
    """A checkpoint loaded once, predicting any number of videos with the run's test views.

    `checkpoint_dir` is a checkpoint folder or a run folder (its tested checkpoint). `weights` picks the
    checkpoint's own epoch ("last") or the best epoch so far ("best").
    """

    def __init__(self, checkpoint_dir: str, *, classes: str | None = None, device: str | None = None,
                 weights: Weights = "last") -> None:
        trained = load_model(checkpoint_dir, weights, device)
        self.cfg, self.num_classes, self.device, self.model = (trained.cfg, trained.num_classes,
                                                               trained.device, trained.model)
        self.class_names = _class_names(self.cfg, self.num_classes, classes)
        self.loader_cfg = loader_config(self.cfg, self.cfg.data.test_split, train=False)
        self.jba = _jba_accuracies(self.cfg)
        lc = self.loader_cfg
        self.maker = ClipMaker(lc.active_pathways, lc.clip_len, lc.intensity_definition, 0, lc.pipeline,
                               lc.max_persons, lc.seed)

    def peak(self, sample: annotations.Sample) -> int | None:
        """The run's intensity peak for this video (mode and definition from the run config)."""
        if self.loader_cfg.intensity_definition == "random" or "intensity" not in self.model.pathways:
            return None
        curves = intensity.compute(sample.keypoint, sample.keypoint_score, self.cfg.intensity_mode, self.jba,
                                   frame_dir=sample.frame_dir)
        return intensity.peak(curves[self.loader_cfg.intensity_definition])

    def views(self, sample: annotations.Sample) -> tuple[dict[str, torch.Tensor], int | None]:
        """The test views of each pathway, `1×N×K×T×H×W` (N = clips × 2 with flip), and the peak used."""
        peak = self.peak(sample)
        video = Video(key=shardio.sample_key(sample.frame_dir), frame_dir=sample.frame_dir,
                      label=sample.label, keypoint=sample.keypoint, keypoint_score=sample.keypoint_score,
                      img_shape=sample.img_shape, peak=peak, shard="<annotations>")
        clips = self.maker.test(video, self.cfg.eval_num_clips)
        return ({name: render_views(clip.keypoint[None], clip.score[None], clip.size, self.loader_cfg.sigma,
                                    self.cfg.eval_flip)
                 for name, clip in clips.items()}, peak)

    def predict(self, sample: annotations.Sample) -> VideoPrediction:
        views, peak = self.views(sample)
        with torch.inference_mode():
            probs = self.model.predict({k: v.to(self.device) for k, v in views.items()})
        scores = {name: p[0].float().cpu().numpy() for name, p in probs.items()}
        if len(scores) == 2:
            scores["fused"] = metrics.fuse(scores["integrity"][None], scores["intensity"][None],
                                            tuple(self.cfg.fusion_weights))[0]
        return VideoPrediction(sample.frame_dir, sample.label, self.class_names, scores, peak)


def predict_file(checkpoint_dir: str, annotation_file: str, key: str | None = None, *,
                 classes: str | None = None, device: str | None = None,
                 weights: Weights = "last") -> VideoPrediction:
    """Load the checkpoint's `weights` and the annotation file, then predict the video `key` (default: the
    first)."""
    predictor = Predictor(checkpoint_dir, classes=classes, device=device, weights=weights)
    raw = read_annotations(annotation_file)
    return predictor.predict(find_sample(raw, key, predictor.num_classes))


def format_prediction(pred: VideoPrediction, k: int = 5, rows: Sequence[str] = ROW_ORDER) -> str:
    """Plain-text top-k table: one column per pathway and fused, rank by rank."""
    top = pred.top(k)
    names = [r for r in rows if r in top]
    truth = pred.class_names[pred.label] if pred.label is not None else "unknown"
    lines = [f"video {pred.frame_dir} (label: {truth})"
             + (f", intensity peak at frame {pred.peak}" if pred.peak is not None else "")]
    width = max(len(c) for c in pred.class_names) + 8
    lines.append("rank  " + "".join(f"{n:<{width}}" for n in names))
    for rank in range(min(k, len(pred.class_names))):
        cells = [f"{top[n][rank][0]} {top[n][rank][1]:.3f}" for n in names]
        lines.append(f"{rank + 1:<6}" + "".join(f"{c:<{width}}" for c in cells))
    if "fused" in names:
        lines.append("(fused score = weighted sum of the two pathways' probabilities, docs/method.md §7)")
    return "\n".join(lines)
