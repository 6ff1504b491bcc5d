"""``medsegdiff``: MedSegDiff-V1 (Wu et al., MIDL 2023, arXiv 2211.00611), a conditional DDPM on masks.

Labelled "MedSegDiff-V1 (suite reimplementation)" in tables: it is our own code, not the authors'.

Why our own code and not lucidrains' ``med-seg-diff-pytorch``: that package declares torchvision, wandb
and lion-pytorch as dependencies, which pull a CUDA build of torch onto our CPU machines; it has not been
maintained since December 2023; and it follows its own reading of the paper rather than the official
code. Written here, the networks are built from the suite's blocks (``medflowseg.unet``,
``medflowseg.blocks``) and every operator is seen by the suite's MAC counter (``benchmark.complexity``,
which has handles for the FF-Parser's FFTs).

Sources, cited as file:line of the official code (github.com/KidsWithTokens/MedSegDiff at 60850bf, a
guided-diffusion fork; V1 is ``--version 1``, the network ``UNetModel_v1preview``, ``script_util.py:195``):
``README.md``, ``scripts/segmentation_{train,sample}.py`` (train.py, sample.py), ``guided_diffusion/`` files
(gd = ``gaussian_diffusion.py``). What follows them:

- diffusion: T = 1000 and the ``linear`` beta schedule (README.md:65, 109; ``diffusion.beta_schedule``); the
  network predicts the noise (``predict_xstart`` False, script_util.py:21, 440) and the loss is its MSE
  (gd:1033-1038), t uniform over the T steps (train.py:95), the step t itself the time input
  (``rescale_timesteps`` False, README.md:65);
- the learned variance of the README's ``--learn_sigma True`` (README.md:65, 105): a second output channel v
  per mask channel (the network always has two outputs, script_util.py:199), the variance interpolated in log
  space between the posterior's and beta's (``learned range``, script_util.py:442-450, gd:282-290) and trained
  by the variational bound with the mean's gradient stopped, added unscaled to the noise MSE (loss type MSE,
  script_util.py:428-433; gd:1005-1026, gd:1042-1043): ``learn_sigma=True`` at the paper profile;
- sampling: ancestral DDPM over all T steps (``p_sample_loop_known`` unless ``--use_ddim``, sample.py:111-113,
  175; ``DDPMSampler``), x0 predictions clipped to [-1, 1] (``clip_denoised`` True, sample.py:172, gd:307-312),
  the reverse variance the learned one (fixed-large beta without it, script_util.py:444-446): ``sampler='ddpm'``
  at the paper profile. ``DDIMSampler`` is the other step rule (``sampler='ddim'``, ``eta``);
- the mask: the official code merges the classes into one {0, 1} foreground mask and diffuses it in that range
  (gd:993-996; ``label_scale='01'``). ``label_scale='pm1'`` (mask scaled to [-1, 1]) is the DDPM image
  convention, kept as an option;
- the mask network (a time-conditioned UNet) sees the image concatenated to the noisy mask, as the
  official input ``cat(image, x_t)`` does (sample.py:94-95, gd:646);
- the condition network: a second UNet on the image alone (the official "highway" nnU-Net, base width 32,
  unet.py:718-720, its last layer a sigmoid, unet.py:2243, 2492). Dynamic conditional encoding, as the
  official V1 forward pass executes it (unet.py:775, 2469-2477): at every condition-encoder scale below full
  resolution and above the bottleneck (four scales in the official six-level network), the noisy-mask
  encoder's feature at that scale is projected by a 1x1 convolution to the condition width, passed through
  the FF-Parser, and turned into a spatial map (a 1x1 convolution to one channel) and a channel vector (its
  spatial mean); the condition feature is multiplied by both. The condition bottleneck, projected by a 1x1
  convolution, is added to the mask network's deepest feature before its middle blocks (unet.py:776-777);
- FF-Parser: a learnable complex weight per channel and frequency of the real 2D FFT (orthonormal) of the
  feature, multiplied with the spectrum, then the inverse FFT (unet.py:467-484); initialisation N(0, 0.02^2)
  for the real and imaginary parts (unet.py:463; ``ff_init='randn'``; ``'ones'`` starts as the identity);
- auxiliary loss: the condition UNet's sigmoid map ("cal") trained by MSE to the {0, 1} mask (gd:1039) with
  weight 10 (train_util.py:251; ``cal_loss_weight``);
- output (``calibrated_output=True``): the official blend of the final sample s (the clipped x0 of the last
  step, on the mask's {0, 1} scale, not clamped to [0, 1]) and the condition map at the last step (gd:590-593,
  used as V1's output, sample.py:126-130): d = Dice of the hard mask (s > 0) against the soft map (utils.py:67-69),
  then clamp(cal + 0.25 s, 0, 1) if d < 0.65 else clamp((cal + s) / 2, 0, 1); the label is that map > 0.5.
  It pulls every sample toward the one deterministic condition map, so the samples' spread (GED, CI) is
  smaller than the diffusion samples' own; ``calibrated_output=False`` returns each sample's final x0 instead;
- ensemble of 5 samples per image (README.md:67, sample.py:177): the suite's ``predict.n_samples``.

Deviations, each a named field or stated here:

- the README's MedSegDiff-B advice trains with lr 5e-5 (README.md:121); the paper profile takes the 1e-4 of
  the README's training commands (README.md:65, 93) and of train.py:96;
- the sampler defaults to DDIM (``sampler='ddim'``, eta 0, ``steps`` 1000) and the variance is not learned
  (``learn_sigma=False``): the default profile's choice (CPU: 10 DDIM steps); the paper profile sets the
  official ``ddpm`` and ``learn_sigma=True``. With fewer than T steps the DDPM chain is respaced as
  guided-diffusion's ``timestep_respacing`` does (the official runs use none); one step starts at T - 1
  (guided-diffusion's respacing keeps t = 0 there);
- networks: the suite's residual UNet (GroupNorm, SiLU, no self-attention) for both branches, where the
  official mask network is guided-diffusion's UNet with attention at 16x16 and in the middle (README.md:65,
  ``--attention_resolutions 16``), its output layer zero-initialised (unet.py:712-716), and the condition
  network nnU-Net's (BatchNorm, LeakyReLU, max-pooling);
- the official code projects the condition bottleneck with a 1x1 convolution created anew (random,
  untrained) at every forward pass (unet.py:2481); here it is a learned layer. The paper's layer-norm product
  form of the fusion (the official ``enhance``, unet.py:738-741, never called) is not used. FF-Parser weights
  are built for ``image_size`` (official: hard-coded for 256 px, unet.py:2351); at another input size they
  are resampled bilinearly;
- the blend's Dice is per image; the official one pools the batch (utils.py:67-69), the same at its sampling
  batch of 1 (sample.py:174);
- several classes (K > 2, not in the official code): the mask is the one-hot map over K channels, the label
  the argmax; K = 2 is the official single foreground channel;
- the label threshold: 0.5 on the [0, 1] scale; the official evaluation averages Dice over the thresholds
  0.1 to 0.9 (``scripts/segmentation_env.py:88-134``), which is not a binary Dice;
- fusion of samples: the suite's (STAPLE by default). The official ensemble function called ``staple``
  (utils.py:45-57, sample.py:165) is not STAPLE (each sample multiplied by the samples' mean, then averaged)
  and is not reproduced.

The MedFlowSeg paper (arXiv 2604.19675, section 4.2) gives 100 sampling steps for MedSegDiff-V2 and FlowSDF
only ("much fewer than the 100 sampling steps in MedSegDiff-V2 [34] and FlowSDF [4]") and no step count, sampler
or training setting for the MedSegDiff (V1) rows of its tables, so the paper profile runs V1 as its authors did
(1000 ancestral steps) for those rows too.

The model's defaults are the paper-scale values (official README, "MedSegDiff-B": 256 px, 128 base channels,
``channel_mult`` (1, 1, 2, 2, 4, 4) at 256 px (script_util.py:159-163), two residual blocks per level,
1000 steps), the sampler and the variance excepted (above). Training, not model fields (profiles/paper.yaml):
AdamW (train_util.py:90-91), lr 1e-4, weight decay 0, no warm-up or decay (train.py:96-98), EMA 0.9999
(train.py:101), batch 8 (README.md:65, 93, 121), "about 100,000 steps" (README.md:125).
"""
from __future__ import annotations

import torch
from torch import nn

from medflowseg.blocks import TimeEmbedding, group_norm
from medflowseg.unet import UNet

from .base import MaskDDPM
from .conditioning import DynamicConditionalEncoding


def two_unets(unet_in: int, unet_out: int, image_channels: int, channels, num_res_blocks: int, time_embed_dim: int,
              norm_groups: int, cond_channels, cond_res_blocks: int, num_timesteps: int):
    """What MedSegDiff-V1 and V2 share: the step's sinusoid embedding, the mask UNet on ``cat(image, x_t)``
    (``unet_in`` channels) with its output head (``unet_out``), and the time-free condition UNet on the image."""
    time_embed = TimeEmbedding(time_embed_dim, time_scale=float(num_timesteps))  # sinusoid of the step t
    unet = UNet(unet_in, channels, num_res_blocks, time_embed_dim, norm_groups)
    out = nn.Sequential(group_norm(channels[0], norm_groups), nn.SiLU(), nn.Conv2d(channels[0], unet_out, 3, padding=1))
    cond = UNet(image_channels, cond_channels, cond_res_blocks, None, norm_groups)
    return time_embed, unet, out, cond


class MedSegDiff(MaskDDPM):
    """MedSegDiff-V1 (suite reimplementation).

    Args:
        in_channels, num_classes: image channels C and label classes K (background included).
        image_size: the square side the FF-Parser weights are built for (official: 256; set to ``data.size``).
        channels, num_res_blocks, time_embed_dim, norm_groups: the mask UNet (official: 128 x (1, 1, 2, 2, 4, 4),
            2 residual blocks, embedding 4 x 128 (unet.py:561), GroupNorm 32 (nn.py:103)).
        cond_channels, cond_res_blocks: the condition UNet, as many levels as ``channels`` (official nnU-Net:
            32 doubling to at most 480, unet.py:720, 2233; two convolutions per stage, unet.py:2238, = one
            residual block here).
        ff_init: FF-Parser initialisation, 'randn' (official) or 'ones'.
        num_timesteps, noise_schedule: T and the beta schedule (official: 1000, 'linear').
        label_scale: '01' (official) or 'pm1', the range the mask is diffused in.
        clip_x0: clip x0 predictions to [-1, 1] while sampling (official ``clip_denoised=True``).
        cal_loss_weight: weight of the condition branch's MSE to the mask (official: 10; 0 turns it off).
        calibrated_output: return the official blend of the condition map and the sample (default), or the sample.
        learn_sigma: a second output per mask channel for the learned-range variance, trained by the variational
            bound (official: True); without it the ancestral variance is fixed-large (beta).
        sampler, steps, eta: the ``default_sampler``: 'ddpm' (official: ancestral, ``steps`` = 1000), a
            ``DDPMSampler(steps)``, or 'ddim', a ``DDIMSampler(steps, eta)``; eta is DDIM's alone.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int = 256,
                 channels=(128, 128, 256, 256, 512, 512), num_res_blocks: int = 2, time_embed_dim: int = 512,
                 norm_groups: int = 32, cond_channels=(32, 64, 128, 256, 480, 480), cond_res_blocks: int = 1,
                 ff_init: str = "randn", num_timesteps: int = 1000, noise_schedule: str = "linear",
                 label_scale: str = "01", clip_x0: bool = True, cal_loss_weight: float = 10.0,
                 calibrated_output: bool = True, learn_sigma: bool = False, sampler: str = "ddim",
                 steps: int = 1000, eta: float = 0.0):
        super().__init__(num_classes, num_timesteps, noise_schedule, label_scale, clip_x0, learn_sigma, sampler,
                         steps, eta, mmse_samples=1)
        channels, cond_channels = tuple(channels), tuple(cond_channels)
        if len(channels) < 3 or len(cond_channels) != len(channels):
            raise ValueError("channels needs >= 3 levels (one fusion scale between full resolution and the "
                             f"bottleneck) and cond_channels as many: got {channels} and {cond_channels}")
        if image_size % 2 ** (len(channels) - 1):
            raise ValueError(f"image_size {image_size} is not divisible by 2**{len(channels) - 1}")
        self.image_size = image_size
        self.cal_loss_weight, self.calibrated_output = cal_loss_weight, calibrated_output

        m = self.mask_channels
        self.time_embed, self.unet, self.out, self.cond = two_unets(
            in_channels + m, self.output_channels, in_channels, channels, num_res_blocks, time_embed_dim, norm_groups,
            cond_channels, cond_res_blocks, num_timesteps)
        self.dce = nn.ModuleList(
            DynamicConditionalEncoding(channels[i - 1], cond_channels[i - 1], image_size // 2 ** i,
                                       image_size // 2 ** i, ff_init)
            for i in range(1, len(channels) - 1))
        self.merge = nn.Conv2d(cond_channels[-1], channels[-1], 1)
        self.cal_head = nn.Sequential(group_norm(cond_channels[0], norm_groups), nn.SiLU(),
                                      nn.Conv2d(cond_channels[0], m, 1))

    # ---- the network -----------------------------------------------------------------------------------------

    def evaluate(self, x_t: torch.Tensor, images: torch.Tensor, t: torch.Tensor,
                 with_cal: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One network evaluation. x_t ``(B, M, H, W)``, images ``(B, C, H, W)``, t int64 ``(B,)`` -> (the output:
        eps ``(B, M, H, W)``, with ``learn_sigma`` followed by the variance values ``(B, 2M, H, W)``; the condition
        branch's sigmoid map ``(B, M, H, W)`` or None without ``with_cal``)."""
        temb = self.time_embed(t.to(x_t.dtype) / self.schedule.num_timesteps)
        net, cond, last = self.unet, self.cond, len(self.unet.encoder) - 1
        # noisy-mask encoder; keep its features where they enter stages 1 .. L-2 (the fusion scales)
        h = net.stem(torch.cat([images, x_t], dim=1))
        skips, entries = [], []
        for i, stage in enumerate(net.encoder):
            if 1 <= i < last:
                entries.append(h)
            h = stage(h, temb)
            skips.append(h)
            if i < last:
                h = net.downsample[i](h)
        # condition encoder on the image, each fusion scale modulated by the noisy-mask feature there
        c, cond_skips = cond.stem(images), []
        for i, stage in enumerate(cond.encoder):
            if 1 <= i < last:
                c = self.dce[i - 1](c, entries[i - 1])
            c = stage(c)
            cond_skips.append(c)
            if i < last:
                c = cond.downsample[i](c)
        c = cond.mid(c)
        h = net.mid(h + self.merge(c), temb)
        out = self.out(net.decode(h, skips, temb))
        cal = torch.sigmoid(self.cal_head(cond.decode(c, cond_skips, None))) if with_cal else None
        return out, cal

    # ---- the condition branch's loss and the output ------------------------------------------------------------

    @property
    def trains_condition(self) -> bool:
        return self.cal_loss_weight > 0

    def condition_loss(self, cal: torch.Tensor, labels: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``cal_loss_weight`` times the MSE of the condition branch's sigmoid map to the {0, 1} mask (gd:1039,
        train_util.py:251), at every t."""
        return self.cal_loss_weight * torch.mean((cal - self.mask01(labels).to(cal)) ** 2)

    @property
    def wants_last_cal(self) -> bool:
        return self.calibrated_output

    def output_map(self, x0: torch.Tensor, cal: torch.Tensor | None) -> torch.Tensor:
        return self.calibrate(x0, cal) if cal is not None else self.to_unit(x0)

    def calibrate(self, x0: torch.Tensor, cal: torch.Tensor) -> torch.Tensor:
        """The official output blend (gaussian_diffusion.py:590-593), per image, on the mask's [0, 1] scale.

        s = the final sample on that scale, not clamped (in [-1, 1] when x0 is clipped); d = Dice of the hard
        mask s > 0 against the soft condition map (utils.py:67-69); clamp(cal + 0.25 s, 0, 1) if d < 0.65, else
        clamp((cal + s) / 2, 0, 1). x0, cal ``(B, M, H, W)`` -> ``(B, M, H, W)``.
        """
        s = self.to_unit(x0)
        hard = (s > 0).to(s)
        dice = 2 * (hard * cal).sum(dim=(1, 2, 3)) / (hard + cal).sum(dim=(1, 2, 3)).clamp(min=1e-8)
        low = (dice < 0.65).reshape(-1, 1, 1, 1)
        return torch.where(low, cal + 0.25 * s, 0.5 * cal + 0.5 * s).clamp(0, 1)
