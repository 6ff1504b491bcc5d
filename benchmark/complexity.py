"""Parameters and multiply-adds (MACs) of a method's inference, counted by fvcore.

fvcore counts one fused multiply-add as one "flop" and silently skips operators it has no
handle for. The record gives the compute in both units, each named: MACs, and FLOPs at 2 per MAC
(:data:`FLOPS_PER_MAC`; the paper's Table 4 counts "Gflops"). Two kinds matter here and get handles:

- FFTs (``aten::fft_*``): FA-Attention and MedSegDiff's FF-Parser live in the frequency
  domain. A complex FFT of n points is counted as the Cooley-Tukey 5 n log2 n real flops,
  i.e. 2.5 n log2 n MACs, per transformed signal;
- attention (``aten::scaled_dot_product_attention``): Q K^T and A V, L S E MACs each per head.

Elementwise operators (activations, additions, normalisation arithmetic) stay uncounted, as is
fvcore's convention; ``Complexity.uncounted`` lists them so a reader sees what is left out.

The cost of one sampling protocol is split by tracing ``sample`` three times at small step counts, each
with the sampler passed in (``dataclasses.replace(method.default_sampler, steps=k)``; the model is not
changed): ``n = 1`` at 1 and at 2 steps (their difference over the difference in the NFE the calls
return is one network evaluation), and ``n = 2`` at 1 step (what a second sample adds besides its
evaluations: ATFM's prior draw, FlowSDF's image encoder per MMSE draw). The rest is the fixed per-image
cost (MedFlowSeg's Condition Network runs once per image). The evaluations per sample at the configured
steps are the NFE an untraced ``sample`` call returns, so restarts (FlowSDF's noise injection) and
MMSE draws are counted as run. The protocol of K samples with E evaluations each is
``fixed + K * (per_sample + E * per_evaluation)``.
"""
from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape

from benchmark.config import ConfigError


def _fft_handle(default_dims: int | None):
    """MACs of an ``aten::fft_*`` call: 2.5 n log2 n per signal of n points, over the output."""

    def handle(inputs: list[Any], outputs: list[Any]) -> float:
        shape = get_shape(outputs[0])
        dims = None
        if len(inputs) > 2:
            dims = inputs[2].toIValue()
        if dims is None:
            dims = list(range(len(shape) - default_dims, len(shape))) if default_dims else list(range(len(shape)))
        dims = [dims] if isinstance(dims, int) else list(dims)
        n = math.prod(shape[d] for d in dims)
        signals = math.prod(shape) // n
        return 2.5 * n * math.log2(max(n, 2)) * signals

    return handle


def _sdpa_handle(inputs: list[Any], outputs: list[Any]) -> float:
    """q ``(B, H, L, E)``, k ``(B, H, S, E)``, v ``(B, H, S, Ev)``: L S E + L S Ev per batch and head."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    *batch, length, e = q
    s, ev = k[-2], v[-1]
    return math.prod(batch) * length * s * (e + ev)


FLOPS_PER_MAC = 2   # a multiply-add is a multiplication and an addition

HANDLES = {
    "aten::fft_fft": _fft_handle(1), "aten::fft_ifft": _fft_handle(1),
    "aten::fft_rfft": _fft_handle(1), "aten::fft_irfft": _fft_handle(1),
    "aten::fft_fft2": _fft_handle(2), "aten::fft_ifft2": _fft_handle(2),
    "aten::fft_rfft2": _fft_handle(2), "aten::fft_irfft2": _fft_handle(2),
    "aten::fft_fftn": _fft_handle(None), "aten::fft_ifftn": _fft_handle(None),
    "aten::scaled_dot_product_attention": _sdpa_handle,
}


def count_macs(module: torch.nn.Module, inputs: tuple) -> tuple[float, Counter, Counter]:
    """fvcore MACs of ``module(*inputs)`` with the FFT and attention handles.

    Returns (total, MACs by operator, operators left uncounted with their call counts).
    """
    analysis = FlopCountAnalysis(module, inputs).set_op_handle(**HANDLES)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return float(analysis.total()), Counter(analysis.by_operator()), Counter(analysis.unsupported_ops())


class _SampleLabels(torch.nn.Module):
    """``method.sample`` as a module fvcore can trace (it returns the labels); ``nfe`` holds the NFE per sample
    the traced call returned."""

    def __init__(self, method: torch.nn.Module, n: int, sampler=None):
        super().__init__()
        self.method, self.n, self.sampler = method, n, sampler
        self.nfe: tuple[int, ...] = ()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.method.sample(images, self.n, torch.Generator(images.device).manual_seed(0), self.sampler)
        self.nfe = out.nfe
        return out.labels


@dataclass
class Complexity:
    """Attributes:
        params: trainable parameters.
        macs_fixed: MACs per image that do not repeat per step or sample.
        macs_per_sample: MACs each sample adds besides its network evaluations.
        macs_per_evaluation: MACs of one network evaluation (one ODE right-hand side or denoiser call).
        macs_protocol: fixed + samples x (per_sample + evaluations per sample x per_evaluation).
        samples, evaluations_per_sample: the protocol counted.
        by_operator: MACs of one evaluation by operator (fft and attention included).
        uncounted: operators fvcore has no handle for (elementwise), with call counts.
    """
    params: int
    macs_fixed: float
    macs_per_sample: float
    macs_per_evaluation: float
    macs_protocol: float
    samples: int
    evaluations_per_sample: int
    by_operator: dict
    uncounted: dict


def _traced(method: torch.nn.Module, images: torch.Tensor, n: int, steps: int):
    """MACs of ``sample(images, n)`` with the default sampler at ``steps``, and the NFE of its first sample."""
    traced = _SampleLabels(method, n, dataclasses.replace(method.default_sampler, steps=steps))
    total, by_op, uncounted = count_macs(traced, (images,))
    return total, traced.nfe[0], by_op, uncounted


def method_complexity(method: torch.nn.Module, in_channels: int, size: int, samples: int) -> Complexity:
    """Count one image ``(1, in_channels, size, size)`` through ``method``'s sampling protocol.

    A method with a fixed-step ``default_sampler`` (the ODE solver of the flow methods, MedSegDiff's DDPM or DDIM
    schedule) is split as the module docstring says; a method without one is one network evaluation.
    """
    method = method.eval()
    images = torch.zeros(1, in_channels, size, size)
    params = sum(p.numel() for p in method.parameters() if p.requires_grad)
    sampler = method.default_sampler
    if sampler is None:
        total, by_op, uncounted = count_macs(_SampleLabels(method, 1), (images,))
        return Complexity(params, 0.0, 0.0, total, total, 1, 1, dict(by_op), dict(uncounted))
    if sampler.adaptive:
        raise ConfigError(f"the complexity stage counts a fixed-step sampler; {sampler} is adaptive, so its "
                          f"evaluations depend on the data (set the method's solver to a fixed-step one)")
    one, nfe_one, by_one, uncounted = _traced(method, images, 1, 1)
    two, nfe_two, by_two, _ = _traced(method, images, 1, 2)
    pair, _, _, _ = _traced(method, images, 2, 1)
    with torch.no_grad():
        evaluations = method.sample(images, 1, torch.Generator().manual_seed(0)).nfe[0]
    per_eval = (two - one) / (nfe_two - nfe_one)
    per_sample = pair - one - nfe_one * per_eval
    fixed = one - per_sample - nfe_one * per_eval
    by_op = {k: (by_two[k] - by_one.get(k, 0)) / (nfe_two - nfe_one) for k in by_two}
    return Complexity(params, fixed, per_sample, per_eval, fixed + samples * (per_sample + evaluations * per_eval),
                      samples, evaluations, by_op, dict(uncounted))


def complexity_record(method_name: str, model_params: dict, in_channels: int, num_classes: int, size: int,
                      samples: int) -> ComplexityRecord:
    """The complexity stage's record for one method as configured: parameters and MACs of one
    ``(1, in_channels, size, size)`` image through its protocol of ``samples`` samples."""
    from benchmark.methods import build_method
    from benchmark.records import ComplexityRecord, Status

    torch.manual_seed(0)
    method = build_method(method_name, in_channels, num_classes, model_params)
    c = method_complexity(method, in_channels, size, samples)
    return ComplexityRecord(Status.OK, method=method_name, image=[in_channels, size, size], num_classes=num_classes,
                            params=c.params, macs_fixed=c.macs_fixed, macs_per_sample=c.macs_per_sample,
                            macs_per_evaluation=c.macs_per_evaluation,
                            macs_protocol=c.macs_protocol, flops_per_evaluation=FLOPS_PER_MAC * c.macs_per_evaluation,
                            flops_protocol=FLOPS_PER_MAC * c.macs_protocol, samples=c.samples,
                            evaluations_per_sample=c.evaluations_per_sample,
                            counted_by="fvcore, 1 multiply-add = 1 MAC = 2 FLOPs; FFT (2.5 n log2 n per transform) and fused "
                                       "attention counted by our handles; elementwise operators not counted",
                            uncounted_operators=sorted(c.uncounted))
