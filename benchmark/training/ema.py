"""The exponential moving average of a model's weights, kept on the model's device and updated in place.

One tensor per entry of the model's state dict, on that entry's device (a GPU model's EMA never visits the host
while training). :meth:`EMAWeights.update`, after each optimizer step, does what torch's
``AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)`` did here before, so a run
without frozen parameters keeps its weights bit for bit:

- the first update copies every tensor (the EMA starts at the weights after step 1);
- later ones average the floating parameters that require a gradient and the floating buffers,
  ``ema <- decay * ema + (1 - decay) * live`` (``torch._foreach_lerp_`` with weight ``1 - decay``), and the
  integer buffers (step counters) by the same formula truncated to an integer, as torch's update does;
- parameters that do not require a gradient (a frozen part, such as ATFM's frozen prior) are copied from the live
  model at every update: the saved model holds the part the rest trained against, not an average of its history.
"""
from __future__ import annotations

import torch
from torch import nn


class EMAWeights:
    """EMA of ``model``'s state dict with ``decay``; ``state_dict``/``load_state_dict`` for checkpoints.

    Tensors tied in the model (one tensor under two keys) are one tensor here too.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.n_averaged = 0
        copies: dict[int, torch.Tensor] = {}
        self.tensors = {k: copies.setdefault(id(v), v.detach().clone())
                        for k, v in model.state_dict(keep_vars=True).items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the live weights of ``model`` (the module this EMA was made from) into the average."""
        live = model.state_dict(keep_vars=True)
        copy, average, counters, seen = ([], []), ([], []), [], set()
        for k, ema in self.tensors.items():
            if id(ema) in seen:
                continue
            seen.add(id(ema))
            v = live[k]
            if self.n_averaged == 0 or isinstance(v, nn.Parameter) and not v.requires_grad:
                copy[0].append(ema), copy[1].append(v.detach())
            elif ema.is_floating_point() or ema.is_complex():
                average[0].append(ema), average[1].append(v.detach())
            else:
                counters.append((ema, v.detach()))
        if copy[0]:
            torch._foreach_copy_(*copy)
        if average[0]:
            torch._foreach_lerp_(*average, 1 - self.decay)
        for ema, v in counters:
            ema.copy_(ema * self.decay + v * (1 - self.decay))
        self.n_averaged += 1

    def weights(self) -> dict[str, torch.Tensor]:
        """The averaged state dict, keys in the model's order, on the model's device."""
        return dict(self.tensors)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint keeps: ``module.<key>`` for each tensor and ``n_averaged`` (int64), the layout of
        torch's ``AveragedModel``."""
        return {**{f"module.{k}": v for k, v in self.tensors.items()},
                "n_averaged": torch.tensor(self.n_averaged, dtype=torch.long)}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore from :meth:`state_dict`'s layout (tensors on any device; copied onto this EMA's)."""
        for k, v in self.tensors.items():
            v.copy_(state[f"module.{k}"])
        self.n_averaged = int(state["n_averaged"])
