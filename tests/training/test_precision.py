"""The trainer's GPU-efficiency settings run on the CPU too: bf16 autocast, channels-last, the fused optimizer
(ignored here, with a note in the record)."""
from __future__ import annotations

import json
import math

import pytest
import torch
from accelerate.state import AcceleratorState

from benchmark.config import MethodConfig, TrainConfig
from benchmark.training.trainer import train
from tests.conftest import MEDFLOWSEG_TINY, TINY_PARAMS


@pytest.fixture
def fresh_accelerator():
    """Accelerate keeps one state per process, precision included: a bf16 run may neither find nor leave one."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_bf16_channels_last_and_a_fused_optimizer_on_the_cpu(tiny_project, fresh_accelerator):
    cfg = TrainConfig(steps=2, batch_size=4, checkpoint_every=2, threads=1, mixed_precision="bf16",
                      channels_last=True, fused_optimizer=True)
    out = tiny_project / "runs/medflowseg"
    meta = train("medflowseg", tiny_project / "data/processed/phantom-cardiac", out,
                 MethodConfig(model=MEDFLOWSEG_TINY, train=cfg))
    record = json.loads((out / "model/meta.json").read_text())
    assert record["mixed_precision"] == "bf16" and record["device"] == "cpu"
    assert "notes" not in record          # nothing ignored: the CPU has a fused AdamW kernel too
    assert math.isfinite(meta.final_loss)
    weights = torch.load(out / "model/model.pt", weights_only=True)["state_dict"]
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float32}   # fp32 master weights
    assert all(v.device.type == "cpu" for v in weights.values())
    convs = [v for v in weights.values() if v.dim() == 4 and v.shape[1] > 1 and v.shape[2] > 1]
    assert convs and all(v.is_contiguous(memory_format=torch.channels_last) and not v.is_contiguous() for v in convs)


def test_compile_wraps_the_loss_forward_and_keeps_its_values(tiny_project, monkeypatch):
    """``compile: true`` traces the loss forward with TorchDynamo; the eager backend here (inductor's code
    generation takes minutes on two CPU cores) checks the wiring, and that the traced loss is the plain one."""
    from benchmark.training import trainer

    compiled, real_compile = [], torch.compile

    def eager_compile(module):
        compiled.append(type(module).__name__)
        return real_compile(module, backend="eager")
    monkeypatch.setattr(trainer.torch, "compile", eager_compile)
    curves = {}
    for flag in (False, True):
        cfg = TrainConfig(steps=3, batch_size=4, checkpoint_every=3, threads=1, compile=flag)
        out = tiny_project / f"runs/compile-{flag}"
        train("unet", tiny_project / "data/processed/phantom-cardiac", out,
              MethodConfig(model=TINY_PARAMS["method"]["unet"]["model"], train=cfg))
        curves[flag] = [float(row.split(",")[1]) for row in (out / "loss.csv").read_text().splitlines()[1:]]
    assert compiled == ["LossForward"]
    torch.testing.assert_close(torch.tensor(curves[True]), torch.tensor(curves[False]), rtol=1e-5, atol=0)


def test_channels_last_restrides_the_convolutions_only():
    """MedSegDiff's FF-Parser holds a 4-D parameter read with ``view_as_complex``, which needs its last dimension
    contiguous: ``model.to(memory_format=channels_last)`` would break it; the trainer re-strides the convolutions."""
    from baselines.medsegdiff import MedSegDiff
    from benchmark.training.trainer import to_channels_last
    from tests.baselines.test_medsegdiff import TINY

    torch.manual_seed(0)
    model = MedSegDiff(1, 3, **TINY)
    to_channels_last(model)
    convs = [m.weight for m in model.modules()   # (one input channel or a 1x1 kernel: both layouts coincide)
             if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1) and m.weight.shape[1] > 1]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in convs)
    ff = [p for n, p in model.named_parameters() if "ff_parser" in n]
    assert ff and all(p.is_contiguous() for p in ff)
    images = torch.randn(2, 1, 16, 16).to(memory_format=torch.channels_last)
    loss = model.loss(images, torch.randint(0, 3, (2, 16, 16)), torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_the_fused_optimizer_is_fused_on_the_cpu_and_noted_where_it_cannot_be(optimizer):
    from benchmark.training.trainer import build_optimizer
    model = torch.nn.Linear(3, 2)
    cfg = TrainConfig(steps=1, fused_optimizer=True, optimizer=optimizer, momentum=0.9 if optimizer == "sgd" else None)
    opt, notes = build_optimizer(model, cfg, torch.device("cpu"))
    assert opt.defaults["fused"] is True and notes == []
    opt, notes = build_optimizer(model, cfg, torch.device("meta"))
    assert not opt.defaults["fused"] and notes == [f"fused_optimizer ignored on meta: {type(opt).__name__}'s fused "
                                                   "kernel runs on cuda and cpu only"]
