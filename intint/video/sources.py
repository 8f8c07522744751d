"""Which videos to extract, with which class: a folder laid out as ``VIDEO_DIR/<class>/<clip>.<ext>``, or
a list file of ``<path> <class>`` lines.

Why labels are fixed here, before any video is decoded: a class keeps its label even when every video of
it turns out unreadable, so re-running after fixing a file never shifts the others' labels. Classes are
the sorted folder (or list) names, or the order of a class-name file when one is given (extracting more
videos for a model already trained). Anything that is not a video of a known class is a reject line with
its reason (a file with another extension, a file outside any class folder, a class the class-name file
lacks), never a stopped listing; hidden files and folders (``.*``) are skipped.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from intint.pose.names import frame_dir_problem
from intint.video.frames import VIDEO_EXTENSIONS, has_video_extension


@dataclass(frozen=True)
class VideoJob:
    """One video to extract: its file, its name in the annotation file (``frame_dir``: the path relative
    to the folder or as the list file writes it) and its class name."""

    path: str
    frame_dir: str
    class_name: str


@dataclass(frozen=True)
class VideoReject:
    """A video (or list line) that gives no sample, and why."""

    frame_dir: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"frame_dir": self.frame_dir, "reason": self.reason}


@dataclass
class VideoSources:
    """The videos to extract (sorted by frame_dir), the class names (label = index) and the rejects."""

    jobs: list[VideoJob]
    classes: list[str]
    rejects: list[VideoReject] = field(default_factory=list)

    def label(self, job: VideoJob) -> int:
        return self.classes.index(job.class_name)


def _unknown_extension(name: str) -> str:
    ext = os.path.splitext(name)[1] or "(none)"
    return f"unknown extension {ext!r}: not one of {' '.join(VIDEO_EXTENSIONS)}"


def _folder_entries(folder: str) -> tuple[list[tuple[str, str, str]], list[VideoReject]]:
    """(path, frame_dir, class) of every video under ``folder``'s class folders, and the rejects."""
    found: list[tuple[str, str, str]] = []
    rejects: list[VideoReject] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(f for f in files if not f.startswith(".")):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, folder).replace(os.sep, "/")
            if "/" not in rel:
                rejects.append(VideoReject(rel, "not inside a class folder (VIDEO_DIR/<class>/<clip>)"))
            elif not has_video_extension(name):
                rejects.append(VideoReject(rel, _unknown_extension(name)))
            else:
                found.append((path, rel, rel.split("/", 1)[0]))
    return found, rejects


def _list_line(line: str) -> tuple[str, str] | None:
    """``<path> <class>`` (a tab, if present, separates them; else the last run of spaces), or None."""
    sep = "\t" if "\t" in line else None
    parts = line.rsplit(sep, 1)
    if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
        return None
    return parts[0].strip(), parts[1].strip()


def _list_entries(list_file: str) -> tuple[list[tuple[str, str, str]], list[VideoReject]]:
    """(path, frame_dir, class) of every line of a list file, and the rejects (bad lines, repeats,
    other extensions). Relative paths are relative to the list file's folder."""
    base = os.path.dirname(os.path.abspath(list_file))
    with open(list_file, encoding="utf-8") as f:
        lines = f.read().splitlines()
    found: list[tuple[str, str, str]] = []
    rejects: list[VideoReject] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        entry = _list_line(line)
        if entry is None:
            rejects.append(VideoReject(f"<{list_file} line {number}>", "expected '<path> <class>'"))
            continue
        name, class_name = entry
        if name in seen:
            rejects.append(VideoReject(name, f"listed more than once (again on line {number})"))
        elif not has_video_extension(name):
            rejects.append(VideoReject(name, _unknown_extension(name)))
        else:
            found.append((os.path.join(base, name), name, class_name))
        seen.add(name)
    return found, rejects


def list_videos(source: str, classes: Sequence[str] | None = None) -> VideoSources:
    """The videos of a folder or list file (see the module docstring). No video at all is an error."""
    if os.path.isdir(source):
        entries, rejects = _folder_entries(source)
        layout = f"{source}/<class>/<clip>.<ext>"
    elif os.path.isfile(source):
        entries, rejects = _list_entries(source)
        layout = "'<path> <class>' lines"
    else:
        raise FileNotFoundError(errno.ENOENT, "no such file or folder", source)
    jobs: list[VideoJob] = []
    for path, frame_dir, class_name in sorted(entries, key=lambda e: e[1]):
        problem = frame_dir_problem(frame_dir) or frame_dir_problem(class_name)
        if problem is not None:
            rejects.append(VideoReject(frame_dir, problem))
        elif classes is not None and class_name not in classes:
            rejects.append(VideoReject(frame_dir, f"class {class_name!r} is not in the class-name file"))
        else:
            jobs.append(VideoJob(path, frame_dir, class_name))
    if not jobs:
        raise ValueError(f"{source}: no videos found (expected {layout}, extensions "
                         f"{' '.join(VIDEO_EXTENSIONS)}; {len(rejects)} other entries)")
    names = list(classes) if classes is not None else sorted({j.class_name for j in jobs})
    return VideoSources(jobs, names, rejects)
