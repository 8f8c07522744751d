"""One-line errors (issue 13): every command given a bad input file ends with one line
``error: <file>: <what>`` on stderr and exit code 1, never a traceback (nor click's bare ``Aborted.``).
"""

from __future__ import annotations

import gzip
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from intint import config
from intint.cli import app
from intint.eval.models import build_model
from intint.model import checkpoint
from intint.testing import synthetic

REPO = Path(__file__).resolve().parents[2]
GOOD = pickle.dumps(synthetic.make_annotations(4, 2, seed=0), protocol=4)
# A dtype whose state declares an object field while its flags claim none (the memory corruption).
FORGED = (b"\x80\x02cnumpy\ndtype\n(X\x01\x00\x00\x00O\x89\x88tR(K\x03X\x01\x00\x00\x00|NNNJ\xff\xff\xff\xff"
          b"J\xff\xff\xff\xffK?tbq\x00cnumpy\ndtype\n(X\x02\x00\x00\x00V8\x89\x88tR(K\x03X\x01\x00\x00\x00|N"
          b"(X\x02\x00\x00\x00f0t}(X\x02\x00\x00\x00f0h\x00K\x00tuK\x08K\x01K\x00tb.")
BAD_FILES: dict[str, tuple[Callable[[], bytes], str]] = {  # kind: (bytes, what the line says)
    "truncated pickle": (lambda: GOOD[: len(GOOD) // 2], "truncated pickle"),
    "text file": (lambda: b"frame_dir,label\nvideo_0,3\n", "not a pickle: the file looks like text"),
    "gzip file": (lambda: gzip.compress(GOOD), "gzip-compressed"),
    "empty file": (lambda: b"", "empty file"),
    "_codecs misuse (LookupError before)": (
        lambda: b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x03\x00\x00\x00zzz\x86R.", "_codecs.encode"),
    "_codecs misuse (TypeError before)": (
        lambda: b"\x80\x02c_codecs\nencode\nK\x01X\x06\x00\x00\x00latin1\x86R.", "_codecs.encode"),
    "_reconstruct misuse (TypeError before)": (
        lambda: b"\x80\x02cnumpy.core.multiarray\n_reconstruct\nK\x01K\x02K\x03\x87R.", "_reconstruct"),
    "forged dtype": (lambda: FORGED, "is refused: only plain numeric"),
    "a list, not a dict": (lambda: pickle.dumps([1, 2]), "not a PYSKL annotation file"),
}


def bad_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / "annotations.pkl"
    path.write_bytes(BAD_FILES[kind][0]())
    return path


def assert_one_line_error(res: Result, starts: str, says: str = "") -> None:
    """Exit code 1 from the command's own handling (not an escaped exception), one `error:` line."""
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), (res.output, res.exception)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(starts), res.stderr
    assert says in lines[0], res.stderr
    assert "Traceback" not in res.output and "Aborted" not in res.output


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_build_shards_names_the_file_in_one_line(tmp_path: Path, kind: str) -> None:
    path = bad_file(tmp_path, kind)
    res = CliRunner().invoke(app, ["build-shards", str(path), "-o", str(tmp_path / "out"), "--num-classes",
                                   "2", "--workers", "1", "--no-progress"])
    assert_one_line_error(res, f"error: {path}: ", BAD_FILES[kind][1])
    assert not (tmp_path / "out" / "manifest.json").exists()


@pytest.mark.parametrize("kind", ["folder", "missing"])
def test_build_shards_given_a_folder_or_nothing(tmp_path: Path, kind: str) -> None:
    path = tmp_path / kind
    if kind == "folder":
        path.mkdir()
    res = CliRunner().invoke(app, ["build-shards", str(path), "-o", str(tmp_path / "out"), "--no-progress"])
    assert_one_line_error(res, f"error: {path}: ", "directory" if kind == "folder" else "No such file")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ckpt")
    cfg = config.tiny()
    checkpoint.save(str(folder), {"model": build_model(cfg, 3).state_dict(), "epoch": 0, "num_classes": 3},
                    cfg.to_dict())
    return folder


@pytest.mark.parametrize("kind", ["truncated pickle", "gzip file", "forged dtype", "empty file"])
def test_predict_names_the_annotation_file_in_one_line(tmp_path: Path, tiny_checkpoint: Path,
                                                       kind: str) -> None:
    path = bad_file(tmp_path, kind)
    res = CliRunner().invoke(app, ["predict", "--checkpoint", str(tiny_checkpoint), "--annotations",
                                   str(path), "--device", "cpu"])
    assert_one_line_error(res, f"error: {path}: ", BAD_FILES[kind][1])


def test_predict_inspect_train_evaluate_on_missing_inputs(tmp_path: Path, tiny_checkpoint: Path) -> None:
    missing = str(tmp_path / "missing")
    good = tmp_path / "good.pkl"
    good.write_bytes(GOOD)
    runner = CliRunner()
    predict = ["predict", "--checkpoint", missing, "--annotations", str(good)]
    assert_one_line_error(runner.invoke(app, predict), "error: ", missing)
    assert_one_line_error(runner.invoke(app, ["inspect", missing]), "error: ", missing)
    assert_one_line_error(runner.invoke(app, ["inspect", str(good)]), f"error: {good}")  # a file, not a set
    # train checks the shard set before it starts Ray
    assert_one_line_error(runner.invoke(app, ["train", "--preset", "tiny", "--shards", missing]), "error: ",
                          missing)
    assert_one_line_error(runner.invoke(app, ["evaluate", "--checkpoint", missing]), "error: ", missing)
    assert_one_line_error(runner.invoke(app, ["evaluate", "--checkpoint", str(tiny_checkpoint), "--shards",
                                              missing, "--device", "cpu"]), "error: ", missing)


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=env)


def test_the_entry_points_print_one_line_not_aborted_or_a_traceback(tmp_path: Path) -> None:
    """`python -m intint`, shards/build.py and a jobs/ script, as a user runs them."""
    empty, text = tmp_path / "empty.pkl", tmp_path / "text.pkl"
    empty.write_bytes(b"")
    text.write_bytes(BAD_FILES["text file"][0]())
    none = tmp_path / "none"
    runs = {
        f"error: {empty}: empty file": _run(tmp_path, "-m", "intint", "build-shards", str(empty), "-o", "o"),
        f"error: {text}: not a pickle": _run(tmp_path, str(REPO / "shards/build.py"), str(text), "-o", "o"),
        f"error: no shard set at '{none}'": _run(tmp_path, str(REPO / "jobs/train_finegym.py"), "--preset",
                                                 "tiny", "--shards", str(none)),
    }
    for starts, proc in runs.items():
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert lines and lines[-1].startswith(starts), proc.stderr
        assert "Traceback" not in proc.stderr and "Aborted" not in proc.stderr
