"""The EMA of the weights (benchmark/training/ema.py): torch's numerics, on the model's device, frozen parts copied,
restored exactly from a checkpoint."""
from __future__ import annotations

import copy

import torch
from accelerate import Accelerator
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from benchmark.training import checkpoint
from benchmark.training.checkpoint import TrainingState
from benchmark.training.ema import EMAWeights


class Net(nn.Module):
    """A conv layer, a BatchNorm (float running stats and an int64 step counter) and a frozen head."""

    def __init__(self):
        super().__init__()
        self.conv, self.norm = nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.frozen = nn.Conv2d(4, 1, 1).requires_grad_(False)

    def forward(self, x):
        return self.frozen(self.norm(self.conv(x)))


def _train(model: nn.Module, steps: int, after_step) -> None:
    """SGD on random data; ``after_step(step)`` runs after each optimizer step. Every step also moves the frozen
    head (as ATFM refreshes its frozen prior from the trained one in its first stage)."""
    g = torch.Generator().manual_seed(0)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for step in range(steps):
        x = torch.randn(3, 2, 5, 5, generator=g)
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()
        with torch.no_grad():
            for p in model.frozen.parameters():
                p.add_(torch.randn(p.shape, generator=g))
        after_step(step)


def test_numerics_are_torchs_ema_and_the_frozen_part_is_the_live_one():
    torch.manual_seed(0)
    model = Net()
    ours, theirs = EMAWeights(model, 0.9), AveragedModel(copy.deepcopy(model), use_buffers=True,
                                                         multi_avg_fn=get_ema_multi_avg_fn(0.9))

    def update(step):
        ours.update(model)
        theirs.update_parameters(model)

    _train(model, 6, update)
    reference, live = theirs.module.state_dict(), model.state_dict()
    assert list(ours.weights()) == list(reference) and ours.n_averaged == int(theirs.n_averaged) == 6
    for k, v in ours.weights().items():
        if k.startswith("frozen."):
            assert torch.equal(v, live[k]) and not torch.equal(v, reference[k]), k   # copied, not averaged
        else:
            assert torch.equal(v, reference[k]), k                                    # torch's numerics, bit for bit
    assert not torch.equal(ours.weights()["conv.weight"], live["conv.weight"])      # the rest is an average
    assert ours.weights()["norm.num_batches_tracked"].dtype == torch.long


def test_the_ema_stays_on_the_models_device():
    """A meta-device model: any copy to the host would fail (a meta tensor has no data)."""
    with torch.device("meta"):
        model = Net()
    ema = EMAWeights(model, 0.99)
    for _ in range(2):
        ema.update(model)
    assert {v.device.type for v in ema.state_dict().values() if v.dim()} == {"meta"}
    assert all(v.device.type == "meta" for v in ema.weights().values())


def test_tied_tensors_stay_one_tensor():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    model[1].weight = model[0].weight
    ema = EMAWeights(model, 0.5)
    ema.update(model)
    assert ema.weights()["0.weight"] is ema.weights()["1.weight"]


def _state(model: nn.Module) -> TrainingState:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return TrainingState(model, EMAWeights(model, 0.9), optimizer,
                         torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0), None)


def test_a_checkpoint_restores_the_ema_exactly(tmp_path):
    torch.manual_seed(0)
    saved = _state(Net())
    _train(saved.model, 4, lambda step: saved.ema.update(saved.model))
    checkpoint.save(Accelerator(cpu=True), tmp_path, 4, saved, {"fingerprint": "f", "history": []}, keep=1)
    torch.manual_seed(1)
    restored = _state(Net())
    assert checkpoint.resume(Accelerator(cpu=True), tmp_path, "f", restored)["step"] == 4
    assert restored.ema.n_averaged == saved.ema.n_averaged == 4
    for k, v in saved.ema.weights().items():
        assert torch.equal(restored.ema.weights()[k], v), k
    # and it carries on as the uninterrupted one: the next update (not a first-update copy) agrees too
    saved.ema.update(saved.model), restored.ema.update(saved.model)
    assert all(torch.equal(restored.ema.weights()[k], v) for k, v in saved.ema.weights().items())
