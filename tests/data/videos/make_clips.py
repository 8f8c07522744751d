"""Cut the committed test clips from the demo videos inside the Sports2D and Pose2Sim wheels (BSD-3-Clause).

How the clips in this folder were made (tests/data/README.md has the sources and licences):

    pip download --no-deps -d /tmp/wheels sports2d==0.8.34 pose2sim==0.10.49
    python tests/data/videos/make_clips.py /tmp/wheels

Needs opencv (``pip install -e '.[video]'``). Each clip is a frame range of one wheel member, downscaled
with area interpolation and re-encoded as MPEG-4 Part 2 (``mp4v``, which every opencv wheel can write).
"""

from __future__ import annotations

import sys
import tempfile
import zipfile
from pathlib import Path

# clip name -> (wheel file prefix, member, first frame, frame count, output width)
CLIPS: dict[str, tuple[str, str, int, int, int]] = {
    "sports2d_jumping_jacks.mp4": ("sports2d-0.8.34", "Sports2D/Demo/demo.mp4", 0, 80, 640),
    "pose2sim_cam01.mp4": ("pose2sim-0.10.49", "Pose2Sim/Demo_SinglePerson/videos/cam01.mp4", 0, 100, 270),
    "pose2sim_cam02.mp4": ("pose2sim-0.10.49", "Pose2Sim/Demo_SinglePerson/videos/cam02.mp4", 0, 100, 270),
}


def cut(source: Path, out: Path, first: int, count: int, width: int) -> int:
    """Frames [first, first + count) of `source`, resized to `width` (even height), written to `out`."""
    import cv2

    cap = cv2.VideoCapture(str(source))
    fps = cap.get(cv2.CAP_PROP_FPS)
    writer = None
    written = 0
    index = 0
    while written < count:
        ok, frame = cap.read()
        if not ok:
            break
        if index >= first:
            h, w = frame.shape[:2]
            height = int(round(h * width / w / 2)) * 2
            small = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
            if writer is None:
                writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
            writer.write(small)
            written += 1
        index += 1
    cap.release()
    if writer is not None:
        writer.release()
    return written


def main(wheels: str) -> None:
    here = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory() as tmp:
        for name, (prefix, member, first, count, width) in CLIPS.items():
            wheel = next(Path(wheels).glob(f"{prefix}-*.whl"))
            source = Path(tmp) / name
            source.write_bytes(zipfile.ZipFile(wheel).read(member))
            n = cut(source, here / name, first, count, width)
            print(f"{name}: {n} frames from {wheel.name}:{member}, {(here / name).stat().st_size} bytes")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/wheels")
