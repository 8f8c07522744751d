"""Write a build's shards as Ray tasks (``intint build-shards --ray``), one task per shard.

The store stage knows nothing of Ray: ``intint.store.build.build`` takes the executor that runs its
shard-writing tasks as an argument, and this module is the Ray one (``build(cfg, run_tasks=run_ray)``).
The tasks write straight to the output URL, so a Ray cluster can build a shard set on object storage;
the plan is fixed before any task runs, so the bytes equal those of a local build.
"""

from __future__ import annotations

import os
from pathlib import Path

from intint.store.shard_writer import ShardResult, ShardTask, progress_bar, write_shard_task


def init_ray_for_build(workers: int) -> bool:
    """Attach to RAY_ADDRESS when set, else start a private local instance of ``workers`` CPUs; True
    if this call started Ray (the caller then shuts it down)."""
    import ray

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
    else:
        # Local Ray workers inherit this process's environment; put intint's folder on their
        # PYTHONPATH so they import it even when it is not installed. (A runtime_env would do the
        # same but costs seconds of runtime-env-agent start-up.)
        pkg_parent = str(Path(__file__).resolve().parents[2])
        previous = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, previous) if p)
        try:
            ray.init(address="local", num_cpus=workers, include_dashboard=False)
        finally:
            if previous is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = previous
    return True


def run_ray(tasks: list[ShardTask], workers: int, progress: bool) -> list[ShardResult]:
    """One Ray task per shard (1 CPU each); tasks write straight to the output URL. A failed task
    cancels the others and raises naming its shard."""
    import ray

    started = init_ray_for_build(workers)
    try:
        remote = ray.remote(num_cpus=1)(write_shard_task)
        refs = {remote.remote(t): t for t in tasks}
        results: list[ShardResult] = []
        with progress_bar(len(tasks), progress) as bar:
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        results.append(ray.get(ref))
                    except ray.exceptions.RayTaskError as e:
                        t = refs[ref]
                        for other in pending:
                            ray.cancel(other)
                        raise RuntimeError(f"Ray task for shard {t.split}-{t.index:06d} failed: {e}") from e
                    bar.update(1)
        return results
    finally:
        if started:
            ray.shutdown()
