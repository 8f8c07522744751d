"""Model: reference parameter counts and shapes, init, view averaging, PYSKL import, two-pathway gradients.

The full-size networks are built from the run presets (``intint.config``), the one place that sizes them.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from reference.pyskl_export import to_pyskl_state_dict

from intint import config
from intint.eval.models import slowonly_config
from intint.model.pyskl_checkpoint import (
    from_pyskl_state_dict,
    intint_to_pyskl_key,
    load_pyskl_checkpoint,
    pyskl_to_intint_key,
)
from intint.model.slowonly import (
    Bottleneck3d,
    Recognizer,
    SlowOnlyConfig,
    TwoPathwayModel,
    average_views,
    to_channels_last,
)


def finegym_backbone(num_classes: int = 99) -> SlowOnlyConfig:
    """The FineGYM preset's pathway: stage blocks (4, 6, 3)."""
    return slowonly_config(config.finegym().model, num_classes)


def hmdb51_backbone(num_classes: int = 51) -> SlowOnlyConfig:
    """The HMDB51 preset's pathway: stage blocks (3, 4, 6), the K400 PoseC3D checkpoint's shape."""
    return slowonly_config(config.hmdb51().model, num_classes)


def small_backbone(
    num_classes: int, base_channels: int = 8, stage_blocks: tuple[int, ...] = (1, 1, 1), dropout: float = 0.5
) -> SlowOnlyConfig:
    """A narrow, shallow variant of the same architecture that runs on a CPU in milliseconds."""
    return SlowOnlyConfig(
        num_classes=num_classes, base_channels=base_channels, stage_blocks=stage_blocks, dropout=dropout
    )


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _randomise(model: torch.nn.Module, seed: int) -> None:
    """Give every tensor distinct values, so equality checks cannot pass on identical inits (zeros, ones)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                t.fill_(int(torch.randint(1, 100, (1,), generator=g)))
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)


def _heatmaps(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------- architecture


@pytest.mark.parametrize(
    ("cfg", "backbone_params", "head_params"),
    [(finegym_backbone(99), 1_994_080, 50_787), (hmdb51_backbone(51), 3_003_360, 26_163)],
    ids=["finegym", "hmdb51"],
)
def test_parameter_counts_match_reference(cfg, backbone_params, head_params):
    model = Recognizer(cfg)
    assert _count(model.backbone) == backbone_params
    assert _count(model.head) == head_params


@pytest.mark.parametrize(
    ("cfg", "size", "out"),
    [
        (finegym_backbone(), 56, 7),
        (finegym_backbone(), 64, 8),
        (hmdb51_backbone(), 48, 6),
        (hmdb51_backbone(), 56, 7),
    ],
    ids=["finegym-train", "finegym-test", "hmdb51-train", "hmdb51-test"],
)
def test_full_size_feature_shapes(cfg, size, out):
    # Shape propagation on the meta device: the real architecture, no arithmetic.
    with torch.device("meta"):
        model = Recognizer(cfg)
        feats = model.backbone(torch.empty(1, 17, 48, size, size))
        logits = model(torch.empty(1, 17, 48, size, size))
    assert tuple(feats.shape) == (1, 512, 24, out, out)
    assert tuple(logits.shape) == (1, cfg.num_classes)


def test_real_forward_matches_shape_on_cpu():
    model = Recognizer(finegym_backbone()).eval()
    with torch.no_grad():
        feats = model.backbone(_heatmaps(1, 17, 4, 56, 56))
    assert tuple(feats.shape) == (1, 512, 2, 7, 7)
    assert torch.isfinite(feats).all() and feats.abs().sum() > 0


def test_init_zeroes_last_bn_of_every_bottleneck():
    model = Recognizer(finegym_backbone())
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck3d)]
    assert len(blocks) == 13
    for block in blocks:
        assert torch.count_nonzero(block.bn3.weight) == 0
        assert torch.count_nonzero(block.bn3.bias) == 0
        assert torch.all(block.bn1.weight == 1) and torch.all(block.bn2.weight == 1)
        if block.shortcut is not None:
            assert torch.all(block.shortcut.bn.weight == 1)
    # kaiming fan_out: std = sqrt(2 / (out_channels * kernel volume))
    w = model.backbone.stem.conv.weight
    expected = (2.0 / (32 * 7 * 7)) ** 0.5
    assert abs(w.detach().std().item() - expected) / expected < 0.05
    assert abs(model.head.fc.weight.detach().std().item() - 0.01) < 0.001
    assert torch.count_nonzero(model.head.fc.bias) == 0


def test_shortcut_only_in_first_block_of_each_stage():
    model = Recognizer(hmdb51_backbone())
    for stage in model.backbone.stages:
        assert stage[0].shortcut is not None
        assert all(block.shortcut is None for block in list(stage)[1:])


def test_small_variant_trains_on_cpu():
    torch.manual_seed(0)
    model = Recognizer(small_backbone(5, dropout=0.0)).train()
    x = _heatmaps(4, 17, 8, 24, 24)
    y = torch.tensor([0, 1, 2, 3])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(8):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach().item())
    assert losses[-1] < losses[0] * 0.5


def test_forward_rejects_view_batches():
    model = Recognizer(small_backbone(3))
    with pytest.raises(ValueError, match="predict_views"):
        model(torch.zeros(1, 2, 17, 4, 16, 16))


def test_predict_views_averages_softmax_over_views():
    model = Recognizer(small_backbone(6)).eval()
    _randomise(model, 1)
    x = _heatmaps(2, 3, 17, 8, 16, 16)
    with torch.no_grad():
        probs = model.predict_views(x)
        per_view = torch.stack([model(x[:, v]).softmax(-1) for v in range(3)], dim=1)
    assert probs.shape == (2, 6)
    torch.testing.assert_close(probs, per_view.mean(1), rtol=0, atol=1e-6)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2), rtol=0, atol=1e-6)


def test_average_views_is_mean_of_per_view_softmax():
    # view 0: equal logits → (1/2, 1/2); view 1: logits (ln 3, 0) → (3/4, 1/4); mean → (5/8, 3/8)
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]], dtype=torch.float64)
    torch.testing.assert_close(average_views(logits), torch.tensor([[0.625, 0.375]]), rtol=0, atol=1e-6)
    # not the softmax of the mean logit, which would be softmax(ln3/2, 0) = (0.634, 0.366); no overflow at
    # ±1000 (float32 resolves 1000 + ln 3 to within 3e-5, which moves the probabilities by less than 1e-5)
    shifted = average_views(logits + torch.tensor([[[1000.0], [-1000.0]]], dtype=torch.float64))
    torch.testing.assert_close(shifted, torch.tensor([[0.625, 0.375]]), rtol=0, atol=1e-5)


def test_average_views_in_float32_from_bf16_logits():
    logits = torch.tensor([[[2.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]]], dtype=torch.bfloat16)
    probs = average_views(logits)
    e = math.exp(2.0)
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs, torch.tensor([[e / (e + 2), 1 / (e + 2), 1 / (e + 2)], [1 / 3] * 3]),
                               rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="B×N×C"):
        average_views(logits[0])


def test_channels_last_and_bf16_autocast_keep_results():
    model = Recognizer(small_backbone(4)).eval()
    _randomise(model, 2)
    x = _heatmaps(2, 17, 8, 16, 16)
    with torch.no_grad():
        ref = model(x)
        cl_model = to_channels_last(copy.deepcopy(model))
        cl = cl_model(x.contiguous(memory_format=torch.channels_last_3d))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert cl_model.backbone.stem.conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(cl, ref, rtol=1e-4, atol=1e-4)
    assert torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), ref, rtol=0.1, atol=0.1)


# ---------------------------------------------------------------------------- checkpoint import


def test_key_mapping_both_ways():
    pairs = {
        "backbone.conv1.conv.weight": "backbone.stem.conv.weight",
        "backbone.conv1.bn.running_var": "backbone.stem.bn.running_var",
        "backbone.layer1.0.conv1.conv.weight": "backbone.stages.0.0.conv1.weight",
        "backbone.layer1.0.conv1.bn.weight": "backbone.stages.0.0.bn1.weight",
        "backbone.layer3.5.conv3.bn.num_batches_tracked": "backbone.stages.2.5.bn3.num_batches_tracked",
        "backbone.layer2.0.downsample.conv.weight": "backbone.stages.1.0.shortcut.conv.weight",
        "backbone.layer2.0.downsample.bn.bias": "backbone.stages.1.0.shortcut.bn.bias",
        "cls_head.fc_cls.weight": "head.fc.weight",
        "cls_head.fc_cls.bias": "head.fc.bias",
    }
    for pyskl, ours in pairs.items():
        assert pyskl_to_intint_key(pyskl) == ours
        assert pyskl_to_intint_key("module." + pyskl) == ours
        assert intint_to_pyskl_key(ours) == pyskl
    assert pyskl_to_intint_key("backbone.layer1.0.conv1.conv.bias_extra") is None
    assert pyskl_to_intint_key("neck.fc.weight") is None
    model = Recognizer(hmdb51_backbone())
    renamed, unexpected = from_pyskl_state_dict(to_pyskl_state_dict(model.state_dict()))
    assert unexpected == [] and list(renamed) == list(model.state_dict())


def _save_pyskl(model: Recognizer, path: Path, wrap: bool = True) -> str:
    state = to_pyskl_state_dict(model.state_dict())
    obj = (
        {"meta": {"epoch": 12, "mmcv_version": "1.5.0", "CLASSES": None}, "state_dict": state}
        if wrap
        else state
    )
    torch.save(obj, path)
    return str(path)


@pytest.mark.parametrize("wrap", [True, False], ids=["state_dict_key", "bare_state_dict"])
def test_checkpoint_round_trip_loads_every_tensor(tmp_path, wrap):
    src = Recognizer(hmdb51_backbone())
    _randomise(src, 3)
    url = _save_pyskl(src, tmp_path / "ckpt.pth", wrap=wrap)
    dst = Recognizer(hmdb51_backbone())
    report = load_pyskl_checkpoint(dst, url)
    assert report.missing == [] and report.unexpected == [] and report.skipped == []
    assert report.head_loaded
    dst_state = dst.state_dict()
    for key, value in src.state_dict().items():
        assert torch.equal(dst_state[key], value), key


def test_head_of_other_class_count_is_skipped_with_warning(tmp_path):
    k400 = Recognizer(small_backbone(400, stage_blocks=(1, 2, 1)))
    _randomise(k400, 4)
    url = _save_pyskl(k400, tmp_path / "k400.pth")
    model = Recognizer(small_backbone(51, stage_blocks=(1, 2, 1)))
    fresh_head = copy.deepcopy(model.head.state_dict())
    with pytest.warns(UserWarning, match="head skipped"):
        report = load_pyskl_checkpoint(model, f"file://{url}")
    assert report.skipped == ["head.fc.bias", "head.fc.weight"]
    assert not report.head_loaded and report.missing == []
    for key, value in k400.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key
    for key, value in fresh_head.items():
        assert torch.equal(model.head.state_dict()[key], value)


def test_backbone_mismatch_raises_unless_relaxed(tmp_path):
    url = _save_pyskl(Recognizer(small_backbone(5, stage_blocks=(1, 1, 1))), tmp_path / "c.pth")
    model = Recognizer(small_backbone(5, stage_blocks=(1, 2, 1)))
    with pytest.raises(ValueError, match=r"missing backbone tensors: \['backbone.stages.1.1"):
        load_pyskl_checkpoint(model, url)
    with pytest.warns(UserWarning, match="partial load"):
        report = load_pyskl_checkpoint(model, url, strict_backbone=False)
    assert "backbone.stages.1.1.conv1.weight" in report.missing
    assert "backbone.stages.0.0.conv1.weight" in report.loaded

    wide = _save_pyskl(Recognizer(small_backbone(5, base_channels=16)), tmp_path / "wide.pth")
    with (
        pytest.raises(ValueError, match="shape mismatch: backbone.conv1.conv.weight"),
        pytest.warns(UserWarning),
    ):
        load_pyskl_checkpoint(Recognizer(small_backbone(5)), wide)


@dataclass
class _Payload:
    note: str


def test_checkpoint_with_arbitrary_objects_is_refused(tmp_path):
    model = Recognizer(small_backbone(3))
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": to_pyskl_state_dict(model.state_dict()), "meta": _Payload("x")}, path)
    with pytest.raises(ValueError, match="weights-only"):
        load_pyskl_checkpoint(Recognizer(small_backbone(3)), str(path))


# ---------------------------------------------------------------------------- two pathways


def test_summed_loss_gives_each_pathway_its_separate_run_gradients():
    cfg = small_backbone(7, stage_blocks=(1, 2, 1), dropout=0.0)
    integrity, intensity = Recognizer(cfg), Recognizer(cfg)
    _randomise(integrity, 10)
    _randomise(intensity, 11)
    joint = TwoPathwayModel(copy.deepcopy(integrity), copy.deepcopy(intensity)).train()
    batch = {
        "integrity": _heatmaps(3, 17, 8, 24, 24, seed=5),
        "intensity": _heatmaps(3, 17, 8, 24, 24, seed=6),
    }
    labels = torch.tensor([1, 4, 6])

    for name, separate in (("integrity", integrity), ("intensity", intensity)):
        separate.train()
        F.cross_entropy(separate(batch[name]), labels).backward()
    losses = joint.losses(joint(batch), labels)
    assert set(losses) == {"integrity", "intensity"}
    sum(losses.values()).backward()

    for name, separate in (("integrity", integrity), ("intensity", intensity)):
        joint_params = dict(joint.recognizer(name).named_parameters())
        for pname, p in separate.named_parameters():
            assert p.grad is not None and torch.count_nonzero(p.grad) > 0, pname
            torch.testing.assert_close(joint_params[pname].grad, p.grad, rtol=0, atol=1e-7)


def test_one_pathway_model_uses_only_its_input():
    model = TwoPathwayModel.from_config(small_backbone(3), pathways="intensity").eval()
    assert model.pathways == ("intensity",) and model.integrity is None
    x = _heatmaps(2, 17, 4, 16, 16)
    with torch.no_grad():
        out = model({"integrity": x, "intensity": x, "label": torch.zeros(2)})
        probs = model.predict({"intensity": x[:, None].expand(2, 2, *x.shape[1:])})
    assert set(out) == {"intensity"} and out["intensity"].shape == (2, 3)
    assert set(probs) == {"intensity"} and probs["intensity"].shape == (2, 3)
    with pytest.raises(KeyError, match="intensity"):
        model({"integrity": x})
    with pytest.raises(KeyError, match="not part of this model"):
        model.recognizer("integrity")
