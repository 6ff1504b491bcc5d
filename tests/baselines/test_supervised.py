"""The supervised baselines' losses: the official TransUNet / Swin-Unet loss against its definition written out."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from baselines.supervised import official_dice_ce
from baselines.swin_unet import SwinUnet
from baselines.transunet import TransUNet


def _official(logits: torch.Tensor, labels: torch.Tensor, ce_weight: float, dice_weight: float) -> torch.Tensor:
    """The official code's loss by hand: CE over pixels; per class, 1 - (2 sum(p t) + s) / (sum p^2 + sum t^2 + s)
    over the whole batch, s = 1e-5, averaged over every class (background included)."""
    probs = logits.softmax(dim=1)
    onehot = F.one_hot(labels, logits.shape[1]).permute(0, 3, 1, 2).float()
    dice = [1 - (2 * (probs[:, k] * onehot[:, k]).sum() + 1e-5)
            / ((probs[:, k] ** 2).sum() + (onehot[:, k] ** 2).sum() + 1e-5) for k in range(logits.shape[1])]
    return ce_weight * F.cross_entropy(logits, labels) + dice_weight * torch.stack(dice).mean()


@pytest.mark.parametrize("weights", [(0.5, 0.5), (0.4, 0.6)])
def test_the_official_loss_is_its_definition(weights):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 8, 8, generator=g)
    labels = torch.randint(0, 4, (3, 8, 8), generator=g)
    ours = official_dice_ce(*weights)(logits, labels.unsqueeze(1))
    assert ours.item() == pytest.approx(_official(logits, labels, *weights).item(), rel=1e-5)


@pytest.mark.parametrize("build, weights", [
    (lambda **k: TransUNet(1, 3, img_size=32, resnet_width=8, resnet_units=(1, 1, 1), norm_groups=4, hidden_size=32,
                           num_layers=1, num_heads=2, mlp_dim=64, dropout_rate=0.0, decoder_channels=(16, 8, 8, 4),
                           head_channels=32, **k),
     (0.5, 0.5)),
    (lambda **k: SwinUnet(1, 3, img_size=32, embed_dim=12, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), window_size=2, drop_path_rate=0.0,
                          **k), (0.4, 0.6))])
def test_official_loss_switches_the_methods_training_loss(build, weights):
    torch.manual_seed(0)
    method = build(official_loss=True)
    images = torch.randn(2, 1, 32, 32)
    labels = torch.randint(0, 3, (2, 32, 32))
    loss = method.loss(images, labels, torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(_official(method.net(images), labels, *weights).item(), rel=1e-5)
    torch.manual_seed(0)
    assert build().loss(images, labels, torch.Generator()).item() != pytest.approx(loss.item(), rel=1e-3)
