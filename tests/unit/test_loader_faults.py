"""The loaders on broken shard sets, and a loader worker process killed mid-epoch.

What a user relies on: a sample that cannot be used is skipped and counted under its own name, whichever
loader reads it and wherever it sits in a batch; a skip count never goes missing; a shard the manifest
does not describe, or (``verify_checksums``, on by default) whose bytes changed without any sample showing
it, stops the loader with an error naming the shard. Each loader test fails on the loader before these
checks (noted per test).

Faults beyond exceptions: a worker killed by a signal (the kernel's out-of-memory killer, ``kill -9``)
raises nothing itself; the training (or evaluation) loop must then fail within seconds with a message that
says a loader worker died and how, never hang and never end in a bare socket error
(``ConnectionResetError`` when the dead worker had queued a batch). Each such case runs in a child Python
process with a hard timeout, so a hang fails the test instead of hanging the suite, and killing a worker
cannot disturb this process' own children.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from intint.loader import epoch_plan
from intint.loader.config import LoaderConfig
from intint.loader.streams import eval_loader, train_loader
from intint.pose.transforms import PipelineConfig
from intint.store import build, shardio
from intint.store.shardstream import ChecksumMismatch, ShardMismatch, ShardRef, raw_samples
from intint.testing import synthetic

NUM_CLASSES = 4
PIPE = PipelineConfig(train_hw=(32, 32), test_hw=(24, 24), train_short_side=36)
HARD_TIMEOUT_S = 120  # the child's whole life: imports, worker start-up, the kill and the failure
SURFACE_WITHIN_S = 15.0  # from the kill to the error in the loop (torch checks its workers every 5 s)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """As the loader's processes: one torch thread (a shared 2-core machine slows small ops ~10×)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def shard_set() -> Iterator[Path]:
    """train and val: 16 videos each, 2 shards of 8; videos of 6-30 frames, 1-2 persons."""
    with tempfile.TemporaryDirectory(prefix="intint-hostile-") as tmp:
        out = Path(tmp) / "set"
        raw = synthetic.make_annotations(32, NUM_CLASSES, splits={"train": 16, "val": 16}, seed=5,
                                         frames=(6, 30), max_persons=2)
        build.build(build.BuildConfig(input="synthetic", output=str(out), shard_size=8, workers=1,
                                      progress=False, modes=("reference",)), raw=raw)
        yield out


def _copy(shard_set: Path) -> Path:
    """A private copy of the set to damage, beside the original (removed with it)."""
    dst = Path(tempfile.mkdtemp(dir=shard_set.parent)) / "copy"
    shutil.copytree(shard_set, dst)
    return dst


def _cfg(root: Path, **kw: object) -> LoaderConfig:
    base = dict(shards=str(root), batch_size=4, num_workers=0, clip_len=8, pipeline=PIPE, shuffle_buffer=1,
                heatmaps_on="device", persistent_workers=False, prefetch_factor=2)
    base.update(kw)
    return LoaderConfig(**base)  # type: ignore[arg-type]


def _tar_path(root: Path, split: str, index: int) -> Path:
    return root / shardio.shard_names(split, index)[0]


def _members(tar: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(tar) as t:
        return [(m.name, t.extractfile(m).read()) for m in t.getmembers()]  # type: ignore[union-attr]


def _write_members(tar: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(tar, "w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


def _edit_manifest(root: Path, split: str, index: int, *, sha: bool = True, count: int | None = None) -> None:
    """Make the manifest agree with the tar's new bytes (``sha``), or list another ``count`` for it."""
    path = root / shardio.MANIFEST_NAME
    manifest = json.loads(path.read_text())
    entry = manifest["splits"][split]["shards"][index]
    if sha:
        entry["sha256"]["tar"] = hashlib.sha256(_tar_path(root, split, index).read_bytes()).hexdigest()
    if count is not None:
        manifest["splits"][split]["num_samples"] += count - entry["num_samples"]
        entry["num_samples"] = count
    path.write_text(json.dumps(manifest))


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _keys(batches: list[dict]) -> list[str]:
    return [k for b in batches for k in b["key"]]


def _skip_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]


# ------------------------------------------------------------------------------------ decoded shapes


def _drop_a_joint(root: Path, split: str, index: int, sample: int) -> str:
    """Rewrite sample ``sample`` of a shard with 16 joints in both arrays (the manifest's SHA-256 updated,
    so only the shape check can catch it); returns its key."""
    tar = _tar_path(root, split, index)
    members = _members(tar)
    key = members[3 * sample][0].split(".")[0]
    for i, (name, data) in enumerate(members):
        if name.startswith(key + ".") and name.endswith(".npy"):
            arr = np.load(io.BytesIO(data))
            members[i] = (name, _npy(np.ascontiguousarray(arr[:, :, :16])))
    _write_members(tar, members)
    _edit_manifest(root, split, index)
    return key


@pytest.mark.parametrize("which", ["train", "eval"])
def test_wrong_joint_count_is_skipped_and_names_its_own_video(shard_set: Path, which: str,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """A video of V = 16 joints is a corrupt sample of its own, first in its batch or not: the epoch
    goes on, and the message names it (once the batch was built, a check blamed its neighbours and the
    eval loader died with a broadcast error)."""
    root = _copy(shard_set)
    bad = {_drop_a_joint(root, "train", 0, 0), _drop_a_joint(root, "train", 1, 5)}
    cfg = _cfg(root)
    with caplog.at_level(logging.WARNING):
        loader = train_loader(cfg, 0, 1) if which == "train" else eval_loader(cfg, 0, 1, num_clips=1)
        batches = list(loader)
    keys = _keys(batches)
    assert not bad & set(keys) and len(set(keys)) == 14
    assert sum(b["skipped"] for b in batches) == loader.skips.total == 2
    messages = _skip_messages(caplog)
    for key in bad:
        assert any(key in m and re.search(r"'keypoint'.*got shape \(\d+, \d+, 16, 2\)", m) for m in messages)
    assert all(any(key in m for key in bad) for m in messages)  # no good video is blamed


# ------------------------------------------------------------------------------------ skip counts


def _garble_npy(root: Path, split: str, index: int, samples: range, fix_sha: bool = True) -> None:
    """Replace the keypoint member of ``samples`` with garbage; ``fix_sha``: the manifest follows."""
    tar = _tar_path(root, split, index)
    members = _members(tar)
    for sample in samples:
        name, _ = members[3 * sample]
        members[3 * sample] = (name, b"\x93NUMPY garbage, not an array")
    _write_members(tar, members)
    if fix_sha:
        _edit_manifest(root, split, index)


@pytest.mark.parametrize("corrupt", [range(6, 8), range(8)])
def test_eval_loader_counts_the_skips_after_its_last_full_batch(shard_set: Path, corrupt: range) -> None:
    """The last samples of the last shard (or all of it) are corrupt and the good ones fill whole batches
    of 2: the skips still reach a batch (they used to be dropped with the worker's empty last builder:
    14 of 16 videos yielded, skipped 0)."""
    root = _copy(shard_set)
    _garble_npy(root, "val", 1, corrupt)
    for workers in (0, 1):
        loader = eval_loader(_cfg(root, split="val", batch_size=2, num_workers=workers), 0, 1, num_clips=1)
        batches = list(loader)
        assert len(_keys(batches)) == 16 - len(corrupt) and len(batches) == (16 - len(corrupt)) // 2
        assert sum(b["skipped"] for b in batches) == loader.skips.total == len(corrupt)


def test_eval_skips_of_a_worker_without_any_readable_video_reach_a_batch(shard_set: Path) -> None:
    root = _copy(shard_set)
    _garble_npy(root, "val", 1, range(8))  # worker 1 reads only this shard: it has no batch to carry them
    loader = eval_loader(_cfg(root, split="val", batch_size=2, num_workers=2), 0, 1, num_clips=1)
    batches = list(loader)
    assert len(_keys(batches)) == 8 and all(b["key"] for b in batches)
    assert sum(b["skipped"] for b in batches) == loader.skips.total == 8


# ------------------------------------------------------------------------------------ broken tars


def _header_offsets(data: bytes) -> list[int]:
    offsets, pos = [], 0
    while data[pos:pos + 512] != bytes(512):
        offsets.append(pos)
        size = int(data[pos + 124:pos + 136].split(b"\0")[0].strip() or b"0", 8)
        pos += 512 + -(-size // 512) * 512
    return offsets


def test_bad_header_at_a_shards_second_sample_loses_only_what_follows(shard_set: Path) -> None:
    """Damage in the second sample's first header costs the samples from there on, counted, as a break
    further down does; the first sample is delivered (the whole shard used to be unavailable)."""
    root = _copy(shard_set)
    tar = _tar_path(root, "train", 1)
    data = bytearray(tar.read_bytes())
    data[_header_offsets(bytes(data))[3] + 20] ^= 0x5A  # a byte of the name field: the checksum fails
    tar.write_bytes(bytes(data))
    ref = ShardRef(1, str(tar), "unused", 8)
    lost: list[int] = []
    got = [s["__key__"] for s in raw_samples(ref, lambda n, message: lost.append(n))]
    assert len(got) == 1 and lost == [7]

    for verify in (False, True):  # with verify the mismatch is explained by the counted damage
        loader = train_loader(_cfg(root, verify_checksums=verify), 0, 1)
        keys = _keys(list(loader))
        assert len(loader) == 4 and len(keys) == 16 and len(set(keys)) == 9
        assert loader.skips.total == 7


@pytest.mark.parametrize("count", [5, 10])
@pytest.mark.parametrize("which", ["train", "eval"])
def test_a_count_that_disagrees_with_the_tar_is_an_error_naming_the_shard(shard_set: Path, count: int,
                                                                          which: str) -> None:
    """The manifest lists 5 (or 10) samples for a tar that holds 8: the loader refuses the shard while
    streaming, whatever the checksum option (it used to deliver 5 and silently drop the rest, or count
    2 phantom samples as skipped)."""
    root = _copy(shard_set)
    _edit_manifest(root, "train", 0, sha=False, count=count)
    tar_name = shardio.shard_names("train", 0)[0]
    cfg = _cfg(root, verify_checksums=False)
    with pytest.raises(ShardMismatch, match=tar_name):
        loader = train_loader(cfg, 0, 1) if which == "train" else eval_loader(cfg, 0, 1, num_clips=1)
        list(loader)


# ------------------------------------------------------------------------------------ checksums


def _change_a_coordinate(root: Path, split: str, index: int) -> str:
    """Change one keypoint value of the third sample in place: same sizes, decodes cleanly."""
    tar = _tar_path(root, split, index)
    members = _members(tar)
    name, data = members[6]
    assert name.endswith(".keypoint.npy")
    arr = np.load(io.BytesIO(data)).copy()
    arr[0, 0, 0, 0] += 7
    members[6] = (name, _npy(arr))
    _write_members(tar, members)  # the manifest keeps the build's SHA-256
    return name.split(".")[0]


@pytest.mark.parametrize("which", ["train", "eval"])
def test_a_shard_changed_without_visible_damage_stops_the_loader_when_verifying(shard_set: Path,
                                                                              which: str) -> None:
    """One coordinate changed in the shard the loader reads last: verified, the loader raises naming it
    once the shard ends, also when the epoch's quota is met by its very last video (the check runs before
    that video is handed on); unverified, the change goes through. Verified by default where it is cheap:
    with heatmaps rendered in the workers (the default), not for keypoint-only workers."""
    assert LoaderConfig(shards="x").verifies_checksums
    assert not LoaderConfig(shards="x", heatmaps_on="device").verifies_checksums
    root = _copy(shard_set)
    last = int(epoch_plan.epoch_shard_order(2, 0, 0)[-1]) if which == "train" else 1
    changed = _change_a_coordinate(root, "train", last)
    tar_name = shardio.shard_names("train", last)[0]

    def run(cfg: LoaderConfig) -> list[dict]:
        loader = train_loader(cfg, 0, 1) if which == "train" else eval_loader(cfg, 0, 1, num_clips=1)
        return list(loader)

    for verified in (_cfg(root, heatmaps_on="workers"), _cfg(root, verify_checksums=True)):
        with pytest.raises(ChecksumMismatch, match=f"{tar_name}.*SHA-256.*restore the shard or rebuild"):
            run(verified)
    for unverified in (_cfg(root), _cfg(root, heatmaps_on="workers", verify_checksums=False)):
        assert changed in _keys(run(unverified))  # the changed video goes through


def test_a_checksum_mismatch_explained_by_skipped_samples_is_counted_not_fatal(shard_set: Path) -> None:
    root = _copy(shard_set)
    _garble_npy(root, "train", 0, range(2, 3), fix_sha=False)  # the manifest keeps the build's SHA-256
    shard = json.loads((shard_set / shardio.MANIFEST_NAME).read_text())["splits"]["train"]["shards"][0]
    assert hashlib.sha256(_tar_path(root, "train", 0).read_bytes()).hexdigest() != shard["sha256"]["tar"]
    loader = train_loader(_cfg(root, verify_checksums=True), 0, 1)
    keys = _keys(list(loader))
    assert len(keys) == 16 and len(set(keys)) == 15 and loader.skips.total == 1



# ------------------------------------------------------------------------------------ killed workers


CHILD = textwrap.dedent("""
    import multiprocessing, os, signal, sys, time

    import torch

    from intint.loader.config import LoaderConfig
    from intint.loader.streams import eval_loader, train_loader
    from intint.pose.transforms import PipelineConfig

    torch.set_num_threads(1)
    shards, which, heatmaps_on, persistent = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
    cfg = LoaderConfig(shards=shards, batch_size=2, num_workers=2, clip_len=8, heatmaps_on=heatmaps_on,
                       persistent_workers=persistent, prefetch_factor=2, shuffle_buffer=4,
                       pipeline=PipelineConfig(train_hw=(32, 32), test_hw=(24, 24), train_short_side=36),
                       split="train")
    loader = train_loader(cfg, 0, 1) if which == "train" else eval_loader(cfg, 0, 1, num_clips=1)
    batches = iter(loader)
    next(batches)
    workers = multiprocessing.active_children()
    assert len(workers) == 2, workers
    killed, received, where = time.monotonic(), 0, "loop"
    try:
        os.kill(workers[0].pid, signal.SIGKILL)
        while True:
            where = "loader"
            try:
                next(batches)
            except StopIteration:
                break
            where = "loop"
            received += 1
    except Exception as exn:
        print(f"RAISED in the {where}: {type(exn).__name__} after {time.monotonic() - killed:.2f} s, "
              f"{received} batch(es): {exn}", flush=True)
        sys.exit(0)
    print(f"NO ERROR: {received} more batch(es)", flush=True)
    sys.exit(3)
""")


@pytest.mark.parametrize(("which", "heatmaps_on", "persistent"), [
    ("train", "workers", True),  # rendering workers with recycled shared-memory batch buffers
    ("train", "device", False),
    ("eval", "workers", False),
])
def test_a_killed_loader_worker_fails_the_loop_within_seconds(shard_set: Path, which: str, heatmaps_on: str,
                                                              persistent: bool) -> None:
    args = [str(shard_set), which, heatmaps_on, str(int(persistent))]
    run = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True,
                         timeout=HARD_TIMEOUT_S)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    line = next(ln for ln in run.stdout.splitlines() if ln.startswith("RAISED"))
    if ": LoaderWorkerDied after" in line:  # through the loader: our error, naming it, the worker and how
        assert f"rank 0 {'training' if which == 'train' else 'eval'} loader" in line
        assert "SIGKILL" in line and "out-of-memory" in line
    else:  # torch's SIGCHLD handler raised in whatever code ran at that moment: torch's own message
        assert ": RuntimeError after" in line and "DataLoader worker (pid" in line
        assert "killed by signal" in line
    seconds = float(line.split(" after ", 1)[1].split(" s,", 1)[0])
    assert seconds < SURFACE_WITHIN_S, line
