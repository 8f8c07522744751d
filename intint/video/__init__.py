"""From videos to PYSKL poses: pose estimators (``estimators``), frame decoding (``frames``), one video's
poses (``video_poses``), the folder / list layout (``sources``), the split (``splits``), the resumable
cache (``cache``) and the extraction driver (``extract``, ``intint extract-poses``); docs/video.md."""
