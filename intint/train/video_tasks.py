"""Extract the poses of a folder of videos as Ray tasks (``intint extract-poses --ray``), one task per video.

The video stage knows nothing of Ray: ``intint.video.extract.extract`` takes the executor that runs its
per-video work as an argument, and this module is the Ray one (``extract(cfg, run_videos=run_ray)``),
the counterpart of ``intint.train.shard_tasks`` for shard writing. Each task returns the video's poses
(or its reject reason) to the driver, which keeps the cache and writes the pickle, so the workers need
only read access to the videos (the same paths on every node) and the ``video`` extra installed. Ray
reuses its worker processes, so each keeps one estimator across the videos it is given.
"""

from __future__ import annotations

from collections.abc import Iterator

from intint.train.shard_tasks import init_ray_for_build
from intint.video.estimators import EstimatorSpec, EstimatorUnavailable, silence_native_stderr
from intint.video.video_poses import VideoOutcome, extract_video

IN_FLIGHT_PER_CPU = 4  # tasks submitted ahead per cluster CPU: the driver never holds a huge task list


def run_ray(paths: list[str], spec: EstimatorSpec, workers: int) -> Iterator[tuple[int, VideoOutcome]]:
    """One Ray task per video (1 CPU each), yielded as each finishes. A task whose worker process died
    (a crash in the decoder, out of memory) rejects its video; any other task failure is a bug: the
    remaining tasks are cancelled and the error names the video."""
    import ray

    started = init_ray_for_build(workers)
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(extract_video_quietly)
        limit = max(1, int(ray.cluster_resources().get("CPU", workers)) * IN_FLIGHT_PER_CPU)
        refs: dict[ray.ObjectRef, int] = {}
        next_index = 0
        while next_index < len(paths) or refs:
            while next_index < len(paths) and len(refs) < limit:
                refs[remote.remote(paths[next_index], spec)] = next_index
                next_index += 1
            done, _ = ray.wait(list(refs), num_returns=1)
            for ref in done:
                i = refs.pop(ref)
                yield i, _result(ray, ref, paths[i], refs)
    finally:
        if started:
            ray.shutdown()


def extract_video_quietly(path: str, spec: EstimatorSpec) -> VideoOutcome:
    """The task: one video's outcome, with the estimator's native console chatter silenced in this worker."""
    silence_native_stderr()
    return extract_video(path, spec)


def _result(ray, ref, path: str, pending: dict) -> VideoOutcome:
    """The task's outcome; a dead worker becomes a reject, a failed task cancels the rest and raises."""
    try:
        return ray.get(ref)
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.OutOfMemoryError) as e:
        return VideoOutcome(None, f"the Ray worker extracting it died ({type(e).__name__})", 0.0)
    except ray.exceptions.RayTaskError as e:
        for other in pending:
            ray.cancel(other)
        if isinstance(e.cause, EstimatorUnavailable):  # e.g. a node without the video extra
            raise e.cause from None
        raise RuntimeError(f"Ray task for video {path} failed: {e}") from e
