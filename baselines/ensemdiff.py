"""``ensemdiff``: EnsemDiff (Wolleb et al., "Diffusion models for implicit image segmentation ensembles", MIDL 2022,
arXiv 2112.03145), a DDPM on the mask with the image concatenated to the noisy mask as input channels.

Labelled "EnsemDiff (suite reimplementation)" in tables. Sources, file:line of the official code
(github.com/JuliaWolleb/Diffusion-based-Segmentation at 676f214, a guided-diffusion fork): ``README.md``,
``scripts/segmentation_{train,sample}.py`` (train.py, sample.py), ``guided_diffusion/`` files (gd =
``gaussian_diffusion.py``, su = ``script_util.py``). What follows them:

- diffusion: T = 1000, the linear beta schedule (README.md:48 ``--diffusion_steps 1000 --noise_schedule linear``;
  su:17-18), the network predicts the noise (``predict_xstart`` False, su:21) and the time input is the step t
  itself (``--rescale_timesteps False``, README.md:48); t uniform (train.py:68);
- the learned variance (``--learn_sigma True``, README.md:47): the network's second output channel (su:170 hard-codes
  two outputs) is the learned-range interpolation of the log-variance (gd:262-276), trained by the variational bound
  with the mean's gradient stopped, added unscaled to the noise MSE (``--rescale_learned_sigmas False``,
  README.md:48, su:397-402; gd:934-971);
- the mask: every tumour class merged into one foreground, diffused in {0, 1} (gd:925-930; ``label_scale='01'``);
- conditioning: the image channels concatenated before the noisy mask as the network input, at every step
  (gd:511, 578; su:168 ``in_channels=5``: four MR sequences and the mask);
- the network: guided-diffusion's UNet at 256 px, 128 base channels, ``channel_mult`` (1, 1, 2, 2, 4, 4) (su:151-152),
  two residual blocks per level, attention at the 16 px level with one head (``--num_heads 1
  --attention_resolutions 16``, README.md:47) and in the middle, no scale-shift norm (``--use_scale_shift_norm
  False``), dropout 0 (su:56); built by MONAI's ``DiffusionModelUNet`` (``maskddpm.guided_unet``);
- sampling: ancestral DDPM over all 1000 steps (``p_sample_loop_known`` unless ``--use_ddim``, sample.py:89-91;
  gd:560), x0 clipped to [-1, 1] (``clip_denoised`` True, sample.py:110; gd:296-297): ``sampler='ddpm'``,
  ``steps=1000``, ``clip_x0=True``;
- the ensemble: 5 samples per image (``num_ensemble=5``, sample.py:86, 115; README.md:57-60): the suite's
  ``predict.n_samples``, fused by the suite's fusion (``evaluation.fusion``).

The uncertainty map. The paper derives a pixel-wise uncertainty map from the ensemble (its abstract); ``uncertainty``
returns the per-pixel variance of the soft samples, the ones the official script saves (sample.py:103-105; whether
the paper thresholds them first was not checked against its text: a choice here). The predict stage writes its own
map from the thresholded samples, 1 - (count of the modal label) / n, which differs: it sees hard labels (a sample
at 0.45 and one at 0.05 agree there), and for binary masks it is min(p, 1 - p) of the foreground vote fraction p,
where the variance of hard votes would be p (1 - p). The stage does not call ``uncertainty`` (the method contract,
``benchmark/methods/interface.py``, has no such hook).

Deviations, each a named field or stated here:

- training schedule: the official loop runs until stopped (``lr_anneal_steps`` 0, train.py:72; train_util.py:172-
  175); the paper profile's step count is a choice (profiles/paper.yaml). Batch 10 and AdamW lr 1e-4 are the
  README's (README.md:49; train_util.py:90-92), EMA 0.9999 (train.py:75);
- the official loader crops BraTS slices to 224 px (bratsloader.py:54, 60) inside a network built for 256; the
  suite feeds ``data.size`` images;
- the label: each sample is thresholded at 0.5 on the [0, 1] scale; the official script saves the soft samples and
  leaves the read-out to the evaluation (its unused ``dice_score`` thresholds at 0, sample.py:39-41);
- several classes (K > 2, not in the official code): the one-hot map over K channels, read back by argmax;
- MONAI's UNet against guided-diffusion's: the same levels, blocks, attention placement and widths; the attention
  block's projections differ (MONAI's ``SpatialAttentionBlock``, guided-diffusion's ``QKVAttention``), and the
  sinusoid's halves are in the other order (cos, sin), which the first linear layer absorbs;
- the default profile (CPU): 64 px, widths cut, DDIM with 10 steps, the learned variance kept (profiles/default.yaml).
"""
from __future__ import annotations

import torch

from .maskddpm import guided_unet
from .medsegdiff.base import MaskDDPM


class EnsemDiff(MaskDDPM):
    """EnsemDiff (suite reimplementation). The defaults are the paper-scale values (above).

    Args:
        in_channels, num_classes: image channels C and label classes K (background included).
        channels, num_res_blocks, attention_levels, attention_heads, norm_groups: the denoiser (``guided_unet``;
            official: 128 x (1, 1, 2, 2, 4, 4), 2 blocks, attention at the 16 px level (index 4 at 256 px), 1 head,
            GroupNorm 32).
        num_timesteps, noise_schedule, label_scale, clip_x0, learn_sigma, sampler, steps, eta: ``MaskDDPM``'s
            (official: 1000, 'linear', '01', True, True, 'ddpm', 1000, 0).
    """

    def __init__(self, in_channels: int, num_classes: int, channels=(128, 128, 256, 256, 512, 512),
                 num_res_blocks: int = 2, attention_levels=(False, False, False, False, True, False),
                 attention_heads: int = 1, norm_groups: int = 32, num_timesteps: int = 1000,
                 noise_schedule: str = "linear", label_scale: str = "01", clip_x0: bool = True,
                 learn_sigma: bool = True, sampler: str = "ddpm", steps: int = 1000, eta: float = 0.0):
        super().__init__(num_classes, num_timesteps, noise_schedule, label_scale, clip_x0, learn_sigma, sampler,
                         steps, eta, mmse_samples=1)
        self.unet = guided_unet(in_channels + self.mask_channels, self.output_channels, channels, num_res_blocks,
                                attention_levels, attention_heads, norm_groups)

    def denoise(self, x_t: torch.Tensor, images: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The network on ``cat(images, x_t)`` ``(B, C + M, H, W)``, the image channels first (gd:511)."""
        return self.unet(torch.cat([images, x_t], dim=1), t)

    @torch.no_grad()
    def uncertainty(self, images: torch.Tensor, n: int, generator: torch.Generator, sampler=None) -> torch.Tensor:
        """The paper's uncertainty map: the per-pixel variance (1/n, population) of ``n`` soft samples on the [0, 1]
        scale, ``(B, H, W)``: the foreground channel's (K = 2) or the sum over the K channels' (K > 2)."""
        soft, _ = self.sample_soft(images, n, generator, sampler)
        return soft.var(dim=0, unbiased=False).sum(dim=1)
