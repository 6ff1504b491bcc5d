"""MedFlowSeg: conditional flow matching for segmentation with DB-SA and FA-Attention
(Chen, Hu and Zhang, arXiv 2604.19675 v2), and the ablation variants of its Tables 3 and 4.

Training loss (Eqs. 3-5): L1 between the predicted and the target velocity, plus
lambda * (Dice + alpha * CE) on the Condition Network's auxiliary head, lambda = 0.1, alpha = 10.
Training and sampling are the shared flow-matching ones (``medflowseg.flow.matching``): the
Condition Network runs once per batch (at sampling, its decoder only where a structural module
reads it); each of the ``n`` samples starts from fresh noise and integrates the Flow Network's
velocity from t = 0 to 1 with the ODE solver; the label is the argmax over classes. NFE counts
Flow Network evaluations.
"""
from __future__ import annotations

import dataclasses
import inspect

import torch
from monai.losses import DiceCELoss

from medflowseg.config import CHANNELS_111M, MedFlowSegConfig
from medflowseg.flow import VELOCITY_LOSSES, FlowMatchingMethod, ODESolver, decode_labels, encode_labels
from medflowseg.networks import ConditionFeatures, ConditionNetwork, FlowNetwork


def _constructor_signature(config: type) -> inspect.Signature:
    """``(in_channels, num_classes, *, <each field of config with its default>)``: what ``inspect.signature``
    reports for a constructor taking ``**fields``, so a caller can check a parameter's name before building."""
    p = inspect.Parameter
    fixed = [p(name, p.POSITIONAL_OR_KEYWORD, annotation=int) for name in ("in_channels", "num_classes")]
    return inspect.Signature(fixed + [p(f.name, p.KEYWORD_ONLY, default=f.default) for f in dataclasses.fields(config)])


class MedFlowSeg(FlowMatchingMethod):
    """The full model (Table 3 row 5). Built as ``MedFlowSeg(in_channels=C, num_classes=K, **fields)``
    with the fields of ``MedFlowSegConfig`` (the registry's constructor convention)."""

    variant: dict = {"structural": "dbsa", "semantic": "fa"}
    """The fields this registered method fixes (the conditioning switches; ``medflowseg-111m`` also the widths);
    overriding them is an error, so a method name always means one architecture (Table 3's rows are the
    subclasses below)."""
    __signature__ = _constructor_signature(MedFlowSegConfig)

    def __init__(self, in_channels: int, num_classes: int, **fields):
        clash = {k: v for k, v in fields.items()
                 if k in self.variant and (tuple(v) if isinstance(v, list) else v) != self.variant[k]}
        if clash:
            raise ValueError(f"{type(self).__name__} fixes {self.variant}; cannot override {clash}")
        config = MedFlowSegConfig(**{**fields, **self.variant})
        super().__init__(num_classes, ODESolver(config.solver, config.steps, config.rtol, config.atol))
        self.config = config
        self.num_classes = num_classes
        self.condition_net = ConditionNetwork(in_channels, num_classes, self.config)
        self.flow_net = FlowNetwork(num_classes, self.config)
        self.velocity_loss = VELOCITY_LOSSES[self.config.velocity_loss]
        self.aux_loss = DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=1.0,
                                   lambda_ce=self.config.aux_ce_weight)

    def condition(self, images: torch.Tensor, in_loss: bool) -> ConditionFeatures:
        """images ``(B, C, H, W)`` with H, W multiples of ``config.size_multiple``. The decoder runs for
        the loss (the auxiliary head reads it) and otherwise only where a structural module reads it."""
        m = self.config.size_multiple
        if images.shape[-1] % m or images.shape[-2] % m:
            raise ValueError(f"MedFlowSeg needs image sides divisible by {m} (bottleneck stride x FA patch); "
                             f"got {tuple(images.shape[-2:])}")
        return self.condition_net(images, in_loss or self.config.structural != "none")

    def target(self, labels: torch.Tensor) -> torch.Tensor:
        return encode_labels(labels, self.num_classes, self.config.label_scale)

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, cond: ConditionFeatures) -> torch.Tensor:
        """One network evaluation: x_t ``(B, K, H, W)``, t ``(B,)`` -> ``(B, K, H, W)``."""
        return self.flow_net(x_t, t, cond)

    def read_out(self, x1: torch.Tensor) -> torch.Tensor:
        return decode_labels(x1)

    def loss(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        step = self.flow_step(images, labels, generator)
        l_vel = self.velocity_loss(step.velocity, step.u)
        l_aux = self.aux_loss(step.cond.aux_logits.float(), labels[:, None])
        return l_vel + self.config.aux_weight * l_aux

    @torch.no_grad()
    def condition_labels(self, images: torch.Tensor) -> torch.Tensor:
        """The Condition Network's auxiliary head alone: images ``(B, C, H, W)`` -> labels int64 ``(B, H, W)``."""
        return self.condition(images, in_loss=True).aux_logits.argmax(1)


class MedFlowSegBackbone(MedFlowSeg):
    """Ablation, Table 3 row 1: both streams, no conditioning module. The flow stream still sees
    the image: the condition bottleneck c0 is added to the flow bottleneck through a 1x1 conv
    (the same merge the full model applies to FA-Attention's c1)."""
    variant = {"structural": "none", "semantic": "add"}


class MedFlowSegSA(MedFlowSeg):
    """Ablation, Table 3 row 2: the backbone plus plain spatial attention in place of DB-SA."""
    variant = {"structural": "sa", "semantic": "add"}


class MedFlowSegDBSA(MedFlowSeg):
    """Ablation, Table 3 row 3 and Table 4 "bone + DB-SA": the backbone plus DB-SA (the paper's
    two tables give this configuration different Dice; see DESIGN.md)."""
    variant = {"structural": "dbsa", "semantic": "add"}


class MedFlowSegFA(MedFlowSeg):
    """Ablation, Table 4 "bone + FA-A.": the backbone plus FA-Attention (with the modulator), no DB-SA."""
    variant = {"structural": "none", "semantic": "fa"}


class MedFlowSegNoModulator(MedFlowSeg):
    """Ablation, Table 3 row 4: DB-SA plus FA-Attention without the Neural Modulator."""
    variant = {"structural": "dbsa", "semantic": "fa_nomod"}


class MedFlowSeg111M(MedFlowSeg):
    """The full model at the widths that give Table 4's 111 M parameters, {64, 128, 256, 512} (110.9 M; the printed
    {64, 128, 256, 256} give 52.8 M): the paper's size read as its architecture (``medflowseg/config.py``)."""
    variant = {**MedFlowSeg.variant, "channels": CHANNELS_111M}
