"""Training (issue 4) without Ray: config presets and CLI overrides, LR scaling and schedules, per-pathway
optimisation, checkpoint files, failure injection, progress figures, W&B mode choice, evaluation merging.
The Ray Train runs are in tests/integration (test_train_job.py, test_ray_faults.py)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from intint.config import (
    INJECT_FAILURE_ENV,
    OptimConfig,
    TrainConfig,
    finegym,
    hmdb51,
    parse,
    parse_args,
    tiny,
    with_env_overrides,
)
from intint.eval.distributed import Predictions, merge, score, selection_score
from intint.model import checkpoint
from intint.model.slowonly import SlowOnlyConfig, TwoPathwayModel
from intint.train import launch, tracking
from intint.train.loop import FAILURE_MARKER, InjectedFailure, maybe_inject_failure, train_step
from intint.train.optim import build_optimizer, build_scheduler, cosine_lr, step_lr

# ---------------------------------------------------------------------------------------------- config


def test_finegym_preset_is_spec_6_3() -> None:
    cfg = finegym()
    o = cfg.optim
    assert (o.lr, o.momentum, o.weight_decay, o.nesterov, o.grad_clip, o.schedule, o.min_lr) == (
        0.4, 0.9, 3e-4, False, 40.0, "cosine", 0.0)
    assert (cfg.epochs, cfg.repeat, cfg.batch_size, cfg.num_workers) == (80, 10, 16, 4)
    assert cfg.global_batch == 64 and cfg.lr_used == pytest.approx(0.4)  # the reference's own layout
    assert cfg.model.stage_blocks == (4, 6, 3) and cfg.pretrained is None
    assert (cfg.data.clip_len, cfg.data.train_size, cfg.data.test_size) == (48, 56, 64)
    assert cfg.intensity_definition == "JBA_weighted" and cfg.intensity_mode == "reference"
    assert (cfg.eval_num_clips, cfg.eval_flip, cfg.fusion_weights) == (1, True, (1.0, 1.0))


def test_hmdb51_preset_is_spec_6_3_per_split() -> None:
    cfg = hmdb51(2)
    o = cfg.optim
    assert (o.lr, o.weight_decay, o.schedule, o.steps, o.gamma, o.grad_clip) == (0.01, 1e-4, "step", (9, 11),
                                                                               0.1, 40.0)
    assert (cfg.epochs, cfg.model.stage_blocks, cfg.intensity_definition) == (12, (3, 4, 6), "J")
    assert (cfg.data.train_size, cfg.data.test_size) == (48, 56)
    # no per-epoch validation on the test split: the last epoch is tested (issue 14)
    assert (cfg.data.train_split, cfg.data.val_split, cfg.data.test_split) == ("train2", None, "test2")
    with pytest.raises(ValueError, match="splits 1, 2 and 3"):
        hmdb51(4)


def test_cli_overrides_any_field_of_a_preset() -> None:
    cfg = parse(finegym(), ["--shards", "s3://b/gym", "--epochs", "3", "--optim.lr", "0.2",
                            "--wandb", "disabled", "--model.stage-blocks", "1", "1", "1",
                            "--inject-failure-at-epoch", "1", "--precision", "bf16",
                            "--pathways", "intensity", "--fusion-weights", "1", "2"])
    assert (cfg.shards, cfg.epochs, cfg.optim.lr, cfg.wandb) == ("s3://b/gym", 3, 0.2, "disabled")
    assert cfg.model.stage_blocks == (1, 1, 1) and cfg.inject_failure_at_epoch == 1
    assert (cfg.bf16, cfg.active_pathways, cfg.fusion_weights) == (True, ("intensity",), (1.0, 2.0))
    assert cfg.optim.weight_decay == 3e-4  # untouched fields keep the preset's values
    with pytest.raises(SystemExit):
        parse(finegym(), ["--pathways", "neither"])


def test_entry_point_parsing_picks_preset_and_hmdb_split() -> None:
    small = parse_args(["--preset", "tiny", "--shards", "/x"], default_preset="finegym")
    assert small.model.stage_blocks == tiny().model.stage_blocks and small.shards == "/x"
    gym = parse_args(["--shards", "/x"], default_preset="finegym")
    assert gym.optim.lr == 0.4
    hm = parse_args(["--shards", "/x", "--pretrained", "/k400.pth"], default_preset="hmdb51", split=3)
    assert (hm.data.train_split, hm.pretrained, hm.optim.schedule) == ("train3", "/k400.pth", "step")
    renamed = parse_args(["--preset", "tiny", "--shards", "/x"], default_preset="hmdb51", split=2)
    assert (renamed.data.train_split, renamed.data.test_split) == ("train2", "test2")


def test_cli_train_passes_overrides_to_the_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from intint.cli import app

    seen: list[TrainConfig] = []
    monkeypatch.setattr(launch, "run", seen.append)
    out = CliRunner().invoke(app, ["train", "--preset", "hmdb51", "--split", "2", "--shards", "/s",
                                   "--epochs", "3", "--optim.lr", "0.02"])
    assert out.exit_code == 0, out.output
    (cfg,) = seen
    assert (cfg.shards, cfg.epochs, cfg.optim.lr, cfg.data.train_split) == ("/s", 3, 0.02, "train2")
    assert cfg.optim.steps == (9, 11)  # the rest is the hmdb51 preset


def test_config_round_trips_through_json_and_rejects_unknown_fields() -> None:
    cfg = dataclasses.replace(hmdb51(1), shards="/s", fusion_weights=(0.5, 1.5))
    back = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    bad = cfg.to_dict()
    bad["optim"]["lrr"] = 1.0
    with pytest.raises(ValueError, match=r"config\.optim: unknown field\(s\) \['lrr'\]"):
        TrainConfig.from_dict(bad)
    with pytest.raises(ValueError, match="pathways"):
        dataclasses.replace(cfg, pathways="all")


def test_failure_injection_env_applies_only_without_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(INJECT_FAILURE_ENV, "2")
    assert with_env_overrides(tiny()).inject_failure_at_epoch == 2
    given = dataclasses.replace(tiny(), inject_failure_at_epoch=0)
    assert with_env_overrides(given).inject_failure_at_epoch == 0
    monkeypatch.setenv(INJECT_FAILURE_ENV, "soon")
    with pytest.raises(ValueError, match=INJECT_FAILURE_ENV):
        with_env_overrides(tiny())


# ---------------------------------------------------------------------------------------------- LR


def test_lr_scaling_rule_sets_the_optimizer_rate() -> None:
    optim = OptimConfig(lr=0.4, base_batch=64)
    assert optim.scaled_lr(64) == pytest.approx(0.4)
    assert optim.scaled_lr(16) == pytest.approx(0.1)
    cfg = dataclasses.replace(finegym(), num_workers=2, batch_size=8)  # global batch 16
    assert cfg.lr_used == pytest.approx(0.1)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([param], cfg.optim, cfg.lr_used)
    build_scheduler(opt, cfg.optim, cfg.lr_used, iterations_per_epoch=5, epochs=2)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    defaults = opt.defaults
    assert (defaults["momentum"], defaults["weight_decay"], defaults["nesterov"]) == (0.9, 3e-4, False)


def _lrs(optim: OptimConfig, lr: float, per_epoch: int, epochs: int) -> list[float]:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([param], optim, lr)
    sched = build_scheduler(opt, optim, lr, per_epoch, epochs)
    out = []
    for _ in range(per_epoch * epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_schedule_is_per_iteration_annealing_to_min_lr() -> None:
    optim = OptimConfig(lr=0.4, schedule="cosine", min_lr=0.0)
    lrs = _lrs(optim, 0.4, per_epoch=7, epochs=3)
    total = 21
    expected = [0.5 * 0.4 * (1 + math.cos(math.pi * i / total)) for i in range(total)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-12, atol=1e-15)
    assert lrs[0] == pytest.approx(0.4)
    assert cosine_lr(0.4, 0.01, total, total) == pytest.approx(0.01)  # ends at min_lr
    assert cosine_lr(0.4, 0.0, 10, 20) == pytest.approx(0.2)  # half-way: half the rate


def test_step_schedule_multiplies_by_gamma_at_listed_epochs() -> None:
    optim = OptimConfig(lr=0.01, schedule="step", steps=(9, 11), gamma=0.1)
    lrs = _lrs(optim, 0.01, per_epoch=3, epochs=12)
    per_epoch = [lrs[3 * e] for e in range(12)]
    assert all(lrs[3 * e + i] == per_epoch[e] for e in range(12) for i in range(3))  # constant in an epoch
    np.testing.assert_allclose(per_epoch, [0.01] * 9 + [0.001] * 2 + [0.0001], rtol=1e-12)
    assert step_lr(1.0, 8, (9, 11), 0.1) == 1.0 and step_lr(1.0, 11, (9, 11), 0.5) == 0.25


def test_scheduler_resumes_from_a_weights_only_checkpoint(tmp_path: Path) -> None:
    optim = OptimConfig(lr=0.2, schedule="cosine")
    param = torch.nn.Parameter(torch.ones(3))
    opt = build_optimizer([param], optim, 0.2)
    sched = build_scheduler(opt, optim, 0.2, 4, 3)
    for _ in range(5):
        param.grad = torch.ones(3)
        opt.step()
        sched.step()
    checkpoint.save(str(tmp_path), {"epoch": 1, "model": {"w": param.detach()}, "opt": opt.state_dict(),
                                    "sched": sched.state_dict()}, {"name": "x"})
    state = checkpoint.load_state(str(tmp_path))
    param2 = torch.nn.Parameter(state["model"]["w"].clone())
    opt2 = build_optimizer([param2], optim, 0.2)
    sched2 = build_scheduler(opt2, optim, 0.2, 4, 3)
    opt2.load_state_dict(state["opt"])
    sched2.load_state_dict(state["sched"])
    for o, s, p in ((opt, sched, param), (opt2, sched2, param2)):
        p.grad = torch.ones(3)
        o.step()
        s.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
    torch.testing.assert_close(param2, param)
    assert checkpoint.load_config(str(tmp_path)) == {"name": "x"}


def test_checkpoint_refuses_pickled_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (tmp_path / checkpoint.STATE_FILE).write_bytes(pickle.dumps({"model": Evil(), "epoch": 0}))
    with pytest.raises(ValueError, match="weights-only"):
        checkpoint.load_state(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="config.json"):
        checkpoint.load_config(str(tmp_path))


def test_checkpoint_resolve_picks_the_tested_checkpoint_of_a_run_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for stamp in ("2026-01-01_10-00-00", "2026-01-01_11-00-00", "2026-01-01_12-00-00"):
        checkpoint.save(str(run / f"checkpoint_{stamp}"), {"epoch": 0, "model": {}}, {"name": stamp})
    (run / "checkpoint_manager_snapshot.json").write_text("{}")
    assert checkpoint.resolve(str(run)).endswith("checkpoint_2026-01-01_12-00-00")  # latest
    (run / "checkpoint_2026-01-01_11-00-00" / checkpoint.RESULTS_FILE).write_text("{}")
    assert checkpoint.resolve(str(run)).endswith("checkpoint_2026-01-01_11-00-00")  # the tested one
    single = str(run / "checkpoint_2026-01-01_10-00-00")
    assert checkpoint.resolve(single) == single
    with pytest.raises(FileNotFoundError, match="nor a run folder"):
        checkpoint.resolve(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no such folder"):
        checkpoint.resolve(str(tmp_path / "missing"))

# ---------------------------------------------------------------------------------------------- training step


def test_joint_step_equals_two_separate_runs_with_per_pathway_clipping() -> None:
    """Separate optimizers and per-pathway clipping (a tight clip makes it matter) = two independent runs."""
    net = SlowOnlyConfig(num_classes=3, base_channels=4, stage_blocks=(1, 1, 1), dropout=0.0)
    cfg = dataclasses.replace(tiny(), optim=OptimConfig(lr=0.5, grad_clip=0.05, base_batch=4))
    torch.manual_seed(0)
    joint = TwoPathwayModel.from_config(net, "both")
    alone = {p: TwoPathwayModel.from_config(net, p) for p in ("integrity", "intensity")}
    for p, m in alone.items():
        m.recognizer(p).load_state_dict(joint.recognizer(p).state_dict())
    gen = torch.Generator().manual_seed(1)
    batches = [{"integrity": torch.rand(2, 17, 4, 16, 16, generator=gen),
                "intensity": 3 * torch.rand(2, 17, 4, 16, 16, generator=gen),
                "label": torch.tensor([0, 2])} for _ in range(3)]

    def fit(model: TwoPathwayModel) -> None:
        opts = {p: build_optimizer(model.recognizer(p).parameters(), cfg.optim, 0.5) for p in model.pathways}
        scheds = {p: build_scheduler(opts[p], cfg.optim, 0.5, 3, 1) for p in model.pathways}
        for batch in batches:
            train_step(model, model, batch, opts, scheds, cfg, torch.device("cpu"))

    fit(joint)
    for p, m in alone.items():
        fit(m)
        separate = m.recognizer(p).state_dict()
        for name, value in joint.recognizer(p).state_dict().items():
            torch.testing.assert_close(value, separate[name], msg=f"{p}.{name}")
    before = TwoPathwayModel.from_config(net, "both").recognizer("integrity").head.fc.weight
    assert not torch.allclose(before, joint.recognizer("integrity").head.fc.weight)  # it did train


def test_failure_injection_fires_once_on_the_last_rank(tmp_path: Path) -> None:
    cfg = dataclasses.replace(tiny(), storage_path=str(tmp_path), name="run", inject_failure_at_epoch=1)
    steps = 6
    for rank, epoch, step in ((0, 1, 2), (1, 0, 2), (1, 1, 0)):
        maybe_inject_failure(cfg, epoch, 0, step, steps, rank, 2)  # wrong rank / epoch / step: nothing
    with pytest.raises(InjectedFailure, match="epoch 1, step 3/6 on rank 1"):
        maybe_inject_failure(cfg, 1, 0, 2, steps, 1, 2)
    assert json.loads((tmp_path / "run" / FAILURE_MARKER).read_text()) == {"epoch": 1, "step": 2, "rank": 1}
    maybe_inject_failure(cfg, 1, 0, 2, steps, 1, 2)  # the restarted group trains through


# ---------------------------------------------------------------------------------------------- tracking


def test_progress_meter_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([0.0,  # start_epoch
                  1.0, 2.0,  # wait 1 s, step 1 s
                  2.5, 4.0])  # wait 0.5 s, step 1.5 s → window ends at 4.0 (read twice: step end, report)
    now = {"t": 0.0}

    def fake() -> float:
        try:
            now["t"] = next(clock)
        except StopIteration:
            pass
        return now["t"]

    monkeypatch.setattr(tracking.time, "perf_counter", fake)
    meter = tracking.ProgressMeter(log_every=2, world_size=2)
    meter.start_epoch()
    meter.batch_arrived()
    assert meter.step_done(4, {"integrity": torch.tensor(2.0), "intensity": torch.tensor(1.0)}) is None
    meter.batch_arrived()
    fig = meter.step_done(4, {"integrity": torch.tensor(4.0), "intensity": torch.tensor(3.0)})
    assert fig == pytest.approx({"train/loss_integrity": 3.0, "train/loss_intensity": 2.0,
                                 "train/samples_per_s": 8 * 2 / 4.0, "train/data_wait_share": 1.5 / 4.0})
    line = tracking.format_progress(0, 2, 10, fig, 0.1)
    assert "loss_integrity=3.0000" in line and "4.0 samples/s" in line and "data_wait=38%" in line


def test_wandb_mode_offline_without_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    assert tracking.resolve_wandb_mode("auto") == "offline"
    assert tracking.resolve_wandb_mode("disabled") == "disabled"
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert tracking.resolve_wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert tracking.resolve_wandb_mode("auto") == "disabled"
    assert tracking.Tracker.start(rank=1, requested_mode="offline", project="p", name="n",
                                  local_dir=str(tmp_path), config={}).run is None  # only rank 0 tracks


# ---------------------------------------------------------------------------------------------- evaluation


def test_merge_aligns_ranks_by_key_and_rejects_duplicates() -> None:
    eye = np.eye(3, dtype=np.float32)
    r0 = Predictions({"integrity": eye[[2, 0]], "intensity": eye[[2, 1]]}, np.array([2, 0]), ["k3", "k1"], 1)
    r1 = Predictions({"integrity": eye[[1]], "intensity": eye[[1]]}, np.array([1]), ["k2"], 0)
    nothing = np.zeros((0, 0))
    empty = Predictions({"integrity": nothing, "intensity": nothing}, np.zeros(0, np.int64), [])
    merged = merge([r0, empty, r1], "val")
    assert merged.keys == ["k1", "k2", "k3"] and merged.labels.tolist() == [0, 1, 2] and merged.skipped == 1
    results = score(merged, 3, (1.0, 1.0))
    assert results["integrity"]["top1"] == 1.0 and results["intensity"]["top1"] == pytest.approx(2 / 3)
    assert results["fused"]["top1"] == 1.0 and selection_score(results) == 1.0
    assert results["meta"] == {"num_samples": 3, "skipped": 1}
    with pytest.raises(ValueError, match="more than once, e.g. key 'k2'"):
        merge([r0, r1, r1], "val")
    one = score(Predictions({"intensity": eye[[2, 1]]}, np.array([2, 0]), ["a", "b"]), 3, (1.0, 1.0))
    assert "fused" not in one and selection_score(one) == 0.5  # one-pathway runs rank by that pathway
