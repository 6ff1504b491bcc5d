"""MedSegDiff (Wu et al.): conditional diffusion on masks, in reusable pieces.

``diffusion``: the noise schedule, the DDIM update and the ancestral chain (guided-diffusion's); ``samplers``:
the step rules ``sample`` takes; ``base``: the mask DDPM MedSegDiff shares with SegDiff and EnsemDiff (mask
encoding, the training draw, the sampling loop); ``conditioning``: the FF-Parser and the dynamic conditional
encoding; ``v1``: MedSegDiff-V1, its networks and condition loss (its docstring: what follows the official code,
every deviation); ``ssformer``: MedSegDiff-V2's U-SA, NBP-Filter and SS-Former; ``v2``: MedSegDiff-V2 (its
docstring: the paper, what the official code runs instead, every deviation).
"""
from .conditioning import DynamicConditionalEncoding, FFParser
from .diffusion import Chain, NoiseSchedule, beta_schedule
from .samplers import DDIMSampler, DDPMSampler, spaced_timesteps
from .v1 import MedSegDiff
from .v2 import MedSegDiffV2

__all__ = ["Chain", "DDIMSampler", "DDPMSampler", "DynamicConditionalEncoding", "FFParser", "MedSegDiff",
           "MedSegDiffV2", "NoiseSchedule", "beta_schedule", "spaced_timesteps"]
