"""``flowseg-plain``: conditional flow matching on the label with the image concatenated.

The scaffold the full MedFlowSeg model replaces: no condition network, no DB-SA, no
FA-Attention. The velocity network is MONAI's time-conditioned ``DiffusionModelUNet``
fed ``concat(x_t, image)``; the loss is the paper's L1 velocity loss by default
(``velocity_loss``; see ``medflowseg.flow.loss`` for when MSE is used instead); training and
sampling are the shared flow-matching ones (``medflowseg.flow.matching``): the ODE from fresh
noise, then the argmax over classes.
"""
from __future__ import annotations

import torch
from monai.networks.nets import DiffusionModelUNet

from medflowseg.flow import VELOCITY_LOSSES, FlowMatchingMethod, ODESolver, decode_labels, encode_labels


class PlainFlowSeg(FlowMatchingMethod):
    """Args:
        in_channels, num_classes: image channels C and label classes K (background included).
        channels, num_res_blocks, norm_groups: the velocity UNet's width, depth and GroupNorm groups.
        label_scale: how labels become x1 (see ``medflowseg.flow.labels``).
        velocity_loss: ``"l1"`` (the paper's) or ``"mse"``.
        solver, steps, rtol, atol: the ``default_sampler``.
        time_scale: t in [0, 1] is multiplied by this before the sinusoidal time embedding,
            which MONAI designed for integer diffusion steps in [0, 1000).
    """

    def __init__(self, in_channels: int, num_classes: int, channels=(16, 32, 64), num_res_blocks: int = 1,
                 norm_groups: int = 8, label_scale: str = "pm1", velocity_loss: str = "l1",
                 solver: str = "euler", steps: int = 20,
                 rtol: float = 1e-5, atol: float = 1e-5, time_scale: float = 1000.0):
        super().__init__(num_classes, ODESolver(solver, steps, rtol, atol))
        self.num_classes = num_classes
        self.label_scale = label_scale
        if velocity_loss not in VELOCITY_LOSSES:
            raise ValueError(f"velocity_loss {velocity_loss!r} not in {sorted(VELOCITY_LOSSES)}")
        self.velocity_loss = VELOCITY_LOSSES[velocity_loss]
        self.time_scale = time_scale
        self.net = DiffusionModelUNet(
            spatial_dims=2, in_channels=num_classes + in_channels, out_channels=num_classes,
            channels=tuple(channels), num_res_blocks=num_res_blocks, norm_num_groups=norm_groups,
            attention_levels=(False,) * len(channels))

    def target(self, labels: torch.Tensor) -> torch.Tensor:
        return encode_labels(labels, self.num_classes, self.label_scale)

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """x_t ``(B, K, H, W)``, t ``(B,)``, images ``(B, C, H, W)`` (the condition) -> ``(B, K, H, W)``."""
        return self.net(torch.cat([x_t, images], dim=1), t * self.time_scale)

    def read_out(self, x1: torch.Tensor) -> torch.Tensor:
        return decode_labels(x1)

    def loss(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        step = self.flow_step(images, labels, generator)
        return self.velocity_loss(step.velocity, step.u)
