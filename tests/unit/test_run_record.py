"""Runs that mean what they say (issue 15): a run folder records its config, a rerun with another config
is refused before Ray starts (the differing fields listed), `--resume` continues a run as recorded (its
resources may change, its epochs grow, with the LR schedule recomputed for the new total), `--config`
reproduces a recorded run with flags still overriding, and W&B keeps one run id, its files in the run's
storage. No Ray starts here."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import fsspec
import pytest
import torch
from typer.testing import CliRunner

from intint.cli import app
from intint.config import OptimConfig, TrainConfig
from intint.model import checkpoint
from intint.presets import tiny
from intint.train import run_record, tracking
from intint.train.optim import build_optimizer, build_scheduler, cosine_lr, restore_scheduler
from intint.train.run_record import Change, RunConflict, claim, parse_run

STAMP = "checkpoint_2026-01-01_10-00-00"


def recorded_run(tmp_path: Path, **fields) -> tuple[TrainConfig, str]:
    """A run folder holding the record of a tiny config (with `fields`) and one checkpoint of it."""
    cfg = dataclasses.replace(tiny(), shards=str(tmp_path / "shards"), storage_path=str(tmp_path / "runs"),
                              name="x", **fields)
    run_url = str(tmp_path / "runs" / "x")
    claim(cfg, run_url, resume=False)
    checkpoint.save(f"{run_url}/{STAMP}", {"epoch": 0, "model": {}}, cfg.to_dict())
    return cfg, run_url


def with_lr(cfg: TrainConfig, lr: float) -> TrainConfig:
    return dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=lr))


# ---------------------------------------------------------------------------------------------- refusal


def test_a_rerun_with_another_config_is_refused_listing_the_fields(tmp_path: Path) -> None:
    cfg, run_url = recorded_run(tmp_path, epochs=8, optim=dataclasses.replace(tiny().optim, lr=0.1))
    assert json.loads(Path(run_url, "config.json").read_text()) == json.loads(json.dumps(cfg.to_dict()))
    claim(cfg, run_url, resume=False)  # the same config continues the run
    changed = with_lr(dataclasses.replace(cfg, epochs=9), 0.2)
    with pytest.raises(RunConflict) as refused:
        claim(changed, run_url, resume=False)
    assert str(refused.value) == ("run 'x' exists with a different config: epochs 8 → 9, optim.lr 0.1 → 0.2; "
                                  "pass --resume to continue it as recorded, or use a new --name")
    assert TrainConfig.from_dict(json.loads(Path(run_url, "config.json").read_text())) == cfg  # unchanged


def test_a_run_without_a_checkpoint_takes_the_new_config(tmp_path: Path) -> None:
    cfg = dataclasses.replace(tiny(), shards="s", name="x")
    run_url = str(tmp_path / "x")
    claim(cfg, run_url, resume=False)  # recorded, but it failed before its first checkpoint
    claim(with_lr(cfg, 0.2), run_url, resume=False)
    assert run_record.read_record(run_url)["optim"]["lr"] == 0.2


def test_an_injected_failure_is_not_part_of_the_record(tmp_path: Path) -> None:
    cfg, run_url = recorded_run(tmp_path, inject_failure_at_epoch=1)  # the fault test's first attempt
    assert run_record.read_record(run_url)["inject_failure_at_epoch"] is None  # a resume must not inherit it
    claim(dataclasses.replace(cfg, inject_failure_at_epoch=None), run_url, resume=False)


def test_the_cli_refuses_a_changed_rerun_in_one_line_before_ray(tmp_path: Path, tiny_shards: Path) -> None:
    args = ["train", "--preset", "tiny", "--shards", str(tiny_shards), "--storage-path", str(tmp_path),
            "--name", "x", "--num-workers", "2", "--loader-workers", "1"]
    cfg = parse_run(args[3:], default_preset="tiny").config
    claim(cfg, str(tmp_path / "x"), resume=False)  # the record of the first run ...
    checkpoint.save(str(tmp_path / "x" / STAMP), {"epoch": 0, "model": {}}, cfg.to_dict())  # ... trained
    res = CliRunner().invoke(app, [*args, "--optim.lr", "0.2", "--epochs", "3"])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    assert res.stderr.strip().splitlines() == [
        "error: run 'x' exists with a different config: epochs 2 → 3, optim.lr 0.05 → 0.2; pass --resume to "
        "continue it as recorded, or use a new --name"]


# ---------------------------------------------------------------------------------------------- --resume


def test_resume_may_change_resources_and_extend_epochs_only(tmp_path: Path) -> None:
    cfg, run_url = recorded_run(tmp_path)
    moved = dataclasses.replace(cfg, num_workers=3, loader_workers=0, cpus_per_worker=2, use_gpu=True)
    with pytest.raises(RunConflict, match="num_workers 2 → 3"):
        claim(moved, run_url, resume=False)  # without --resume even resources must match
    claim(moved, run_url, resume=True)
    assert run_record.read_record(run_url)["num_workers"] == 3  # the record follows the run
    longer = dataclasses.replace(moved, epochs=5)
    claim(longer, run_url, resume=True)
    assert run_record.read_record(run_url)["epochs"] == 5
    with pytest.raises(RunConflict) as refused:
        claim(with_lr(dataclasses.replace(longer, epochs=4), 0.2), run_url, resume=True)
    message = str(refused.value)
    assert "epochs 5 → 4, optim.lr 0.05 → 0.2" in message and "num_workers" in message  # what may change
    assert "--resume continues it as recorded" in message
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        claim(dataclasses.replace(cfg, name="y"), str(tmp_path / "runs" / "y"), resume=True)


def test_resume_starts_from_the_record_and_flags_override_it(tmp_path: Path) -> None:
    _, run_url = recorded_run(tmp_path, epochs=1, optim=dataclasses.replace(tiny().optim, lr=0.3))
    base = ["--preset", "tiny", "--storage-path", str(tmp_path / "runs"), "--name", "x"]
    request = parse_run([*base, "--resume", "--epochs", "4", "--num-workers", "3"], default_preset="finegym")
    assert request.resume
    assert (request.config.epochs, request.config.num_workers, request.config.optim.lr) == (4, 3, 0.3)
    assert request.config.shards == str(tmp_path / "shards")  # from the record, not given again
    changes = run_record.config_changes(run_record.read_record(run_url), request.config.to_dict())
    assert changes == [Change("epochs", 1, 4), Change("num_workers", 2, 3)]
    assert parse_run([*base, "--epochs", "4"], default_preset="finegym").config.optim.lr == 0.05  # preset's


def test_a_copied_run_folder_resumes_where_it_is_found(tmp_path: Path) -> None:
    _, run_url = recorded_run(tmp_path)
    moved = tmp_path / "elsewhere" / "x"
    moved.parent.mkdir()
    Path(run_url).rename(moved)  # the record still names tmp_path/runs
    request = parse_run(["--storage-path", str(tmp_path / "elsewhere"), "--name", "x", "--resume"],
                        default_preset="tiny")
    assert request.config.storage_path == str(tmp_path / "elsewhere")
    claim(request.config, str(moved), resume=True)  # the location is not part of the config
    claim(request.config, str(moved), resume=False)
    assert run_record.read_record(str(moved))["storage_path"] == str(tmp_path / "elsewhere")


def test_extending_a_finished_cosine_run_trains_at_the_new_schedule(tmp_path: Path) -> None:
    """A cosine run of 2 epochs ends at lr 0; resumed for 3 epochs, its third epoch follows the cosine
    over 3 epochs (restored through a checkpoint folder, as the worker loop restores it)."""
    per_epoch, lr, optim = 5, 0.1, OptimConfig(lr=0.1, schedule="cosine", min_lr=0.0)
    weight = torch.nn.Parameter(torch.ones(3))
    opt = build_optimizer([weight], optim, lr)
    sched = build_scheduler(opt, optim, lr, per_epoch, epochs=2)
    for _ in range(2 * per_epoch):
        weight.grad = torch.ones(3)
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0)  # the finished run
    checkpoint.save(str(tmp_path), {"epoch": 1, "model": {}, "optimizers": {"p": opt.state_dict()},
                                    "schedulers": {"p": sched.state_dict()}}, {})
    saved = checkpoint.load_state(str(tmp_path))

    opt3 = build_optimizer([weight], optim, lr)
    sched3 = build_scheduler(opt3, optim, lr, per_epoch, epochs=3)
    opt3.load_state_dict(saved["optimizers"]["p"])
    restore_scheduler(sched3, saved["schedulers"]["p"])
    rates = []
    for _ in range(per_epoch):  # the extended epoch
        rates.append(opt3.param_groups[0]["lr"])
        weight.grad = torch.ones(3)
        opt3.step()
        sched3.step()
    expected = [cosine_lr(lr, 0.0, 2 * per_epoch + i, 3 * per_epoch) for i in range(per_epoch)]
    assert rates == pytest.approx(expected) and min(rates) > 0
    assert opt3.param_groups[0]["lr"] == pytest.approx(0.0)  # the new end


def test_the_worker_loop_restores_the_new_schedule(tmp_path: Path) -> None:
    """`intint.train.loop.resume` (what a resumed Ray worker runs) restores the position, not the total."""
    from ray.train import Checkpoint

    from intint.eval.models import build_model
    from intint.train import loop

    cfg = dataclasses.replace(tiny(), shards="unused", epochs=1)
    model = build_model(cfg, 4)

    def sgd() -> dict[str, torch.optim.SGD]:
        return {p: build_optimizer(model.recognizer(p).parameters(), cfg.optim, 0.1) for p in model.pathways}

    optimizers = sgd()
    schedulers = {p: build_scheduler(o, cfg.optim, 0.1, 4, cfg.epochs) for p, o in optimizers.items()}
    for s in schedulers.values():
        for _ in range(4):
            s.optimizer.step()
            s.step()
    state = {"epoch": 0, "model": model.state_dict(), "optimizers": {p: o.state_dict() for p, o in
                                                                      optimizers.items()},
             "schedulers": {p: s.state_dict() for p, s in schedulers.items()},
             "progress": {"next_epoch": 1, "global_step": 4}}
    checkpoint.save(str(tmp_path), state, cfg.to_dict())
    longer = dataclasses.replace(cfg, epochs=2)
    optimizers = sgd()
    schedulers = {p: build_scheduler(o, cfg.optim, 0.1, 4, longer.epochs) for p, o in optimizers.items()}
    w = loop.Worker(longer, 0, 1, torch.device("cpu"), 4, model, 0.1, None, None, 4, optimizers, schedulers)
    loop.resume(w, Checkpoint.from_directory(str(tmp_path)))
    assert cosine_lr(0.1, 0.0, 4, 8) > 0
    for opt in optimizers.values():
        assert opt.param_groups[0]["lr"] == pytest.approx(cosine_lr(0.1, 0.0, 4, 8))


# ---------------------------------------------------------------------------------------------- --config


def test_config_reproduces_a_recorded_run_with_flags_overriding(tmp_path: Path) -> None:
    cfg, run_url = recorded_run(tmp_path, epochs=7, seed=3)
    again = parse_run(["--config", f"{run_url}/config.json", "--optim.lr", "0.3"], default_preset="finegym")
    assert not again.resume
    assert again.config == with_lr(cfg, 0.3)  # the record, not the finegym preset; the flag wins
    assert parse_run(["--config", run_url], default_preset="finegym").config == cfg  # the run folder
    with fsspec.open("memory://records/x/config.json", "wb") as f:  # any fsspec URL
        f.write(Path(run_url, "config.json").read_bytes())
    remote = parse_run(["--config", "memory://records/x/config.json", "--name", "x2"],
                       default_preset="finegym")
    assert remote.config == dataclasses.replace(cfg, name="x2")


def test_config_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.json: no such config file"):
        run_record.read_config(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text('{"epochs": 2, "colour": "red"}')
    with pytest.raises(ValueError, match=r"bad.json: .*unknown field\(s\) \['colour'\]"):
        run_record.read_config(str(tmp_path / "bad.json"))


# ---------------------------------------------------------------------------------------------- W&B


def test_wandb_keeps_one_run_id_and_copies_its_files_into_remote_storage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_url = "memory://bucket/runs/w"
    ids = []
    for attempt in range(2):  # the first start, then a resume
        tracker = tracking.Tracker.start(rank=0, requested_mode="offline", project="intint", name="w",
                                         local_dir=str(tmp_path / "local"), config={"attempt": attempt},
                                         run_url=run_url)
        tracker.log({"loss": 1.0}, attempt)
        tracker.save_files()  # at a checkpoint
        ids.append(tracker.run.id)
        tracker.finish()
    fs = fsspec.filesystem("memory")
    recorded = json.loads(fs.cat(f"{run_url}/{tracking.RUN_ID_FILE}"))["id"]
    assert ids == [recorded, recorded]
    folders = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{run_url}/wandb", detail=False))
    assert len(folders) == 2 and all(f.startswith("offline-run-") and f.endswith(recorded) for f in folders)
    for folder in folders:
        assert fs.exists(f"{run_url}/wandb/{folder}/run-{recorded}.wandb")
    assert tracking.mirror_url(str(tmp_path / "run"), str(tmp_path / "run")) is None  # written there already
