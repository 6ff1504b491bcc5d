"""``flowseg-plain``: conditional flow matching on the label with the image concatenated.

The scaffold the full MedFlowSeg model replaces: no condition network, no DB-SA, no
FA-Attention. The velocity network is MONAI's time-conditioned ``DiffusionModelUNet``
fed ``concat(x_t, image)``; the loss is the paper's L1 velocity loss by default
(``velocity_loss``; see ``medflowseg.flow.loss`` for when MSE is used instead); sampling
integrates the ODE from fresh noise and takes the argmax over classes.
"""
from __future__ import annotations

import torch
from monai.networks.nets import DiffusionModelUNet
from torch import nn

from medflowseg.flow import VELOCITY_LOSSES, LinearPath, ODESolver, decode_labels, encode_labels


class PlainFlowSeg(nn.Module):
    """Args:
        in_channels, num_classes: image channels C and label classes K (background included).
        channels, num_res_blocks, norm_num_groups: the velocity UNet's width and depth.
        label_scale: how labels become x1 (see ``medflowseg.flow.labels``).
        velocity_loss: ``"l1"`` (the paper's) or ``"mse"``.
        solver, steps, rtol, atol: the ODE solver used by ``sample``.
        time_scale: t in [0, 1] is multiplied by this before the sinusoidal time embedding,
            which MONAI designed for integer diffusion steps in [0, 1000).
    """

    def __init__(self, in_channels: int, num_classes: int, channels=(16, 32, 64), num_res_blocks: int = 1,
                 norm_num_groups: int = 8, label_scale: str = "pm1", velocity_loss: str = "l1",
                 solver: str = "euler", steps: int = 20,
                 rtol: float = 1e-5, atol: float = 1e-5, time_scale: float = 1000.0):
        super().__init__()
        self.num_classes = num_classes
        self.label_scale = label_scale
        if velocity_loss not in VELOCITY_LOSSES:
            raise ValueError(f"velocity_loss {velocity_loss!r} not in {sorted(VELOCITY_LOSSES)}")
        self.velocity_loss = VELOCITY_LOSSES[velocity_loss]
        self.time_scale = time_scale
        self.path = LinearPath()
        self.solver = ODESolver(solver, steps, rtol, atol)
        self.net = DiffusionModelUNet(
            spatial_dims=2, in_channels=num_classes + in_channels, out_channels=num_classes,
            channels=tuple(channels), num_res_blocks=num_res_blocks, norm_num_groups=norm_num_groups,
            attention_levels=(False,) * len(channels))
        self.nfe = 0

    def velocity(self, x_t: torch.Tensor, images: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t ``(B, K, H, W)``, images ``(B, C, H, W)``, t ``(B,)`` -> ``(B, K, H, W)``."""
        return self.net(torch.cat([x_t, images], dim=1), t * self.time_scale)

    def loss(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x1 = encode_labels(labels, self.num_classes, self.label_scale)
        x0 = torch.randn(x1.shape, generator=generator, device=generator.device).to(x1)
        t = torch.rand(x1.shape[0], generator=generator, device=generator.device).to(x1)
        p = self.path.sample(x0, x1, t)
        return self.velocity_loss(self.velocity(p.x_t, images, t), p.u)

    @torch.no_grad()
    def sample(self, images: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
        b, _, h, w = images.shape
        out = []
        for _ in range(n):
            x0 = torch.randn((b, self.num_classes, h, w), generator=generator, device=generator.device).to(images)
            res = self.solver.solve(lambda t, x: self.velocity(x, images, t.expand(b)), x0)
            out.append(decode_labels(res.x1))
            self.nfe = res.nfe
        return torch.stack(out)
