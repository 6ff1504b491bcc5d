"""The method contract's redesign (issue 15: the shared flow-matching step and sampling loop, samplers passed per
call) changed no number: the training loss and the samples of small seeded models are those the code before it
produced, bit for bit.

The references were recorded with the code before the redesign (commit 612674d, with the parameter names of
then: FlowSDF ``nfe``, MedSegDiff ``ddim_steps`` / ``ddim_eta``, flowseg-plain ``norm_num_groups``) on one
thread: the loss as the float's hex, the samples as the first 16 hex digits of the SHA-256 of their int64 bytes.
FlowSDF's were recorded again, the same way, when its network became the released one (the RRDB encoder's trunk
and output convolutions, the zero-initialised output convolution): a change of the model, not of the contract.
Float kernels differ between CPU instruction sets and torch versions, so the check runs only where the
references were recorded.
"""
from __future__ import annotations

import hashlib

import pytest
import torch

from benchmark.methods import build_method

RECORDED_ON = ("AVX512", "2.13.0+cpu")
MFS = {"channels": (8, 16), "num_res_blocks": 1, "time_embed_dim": 16, "norm_groups": 4, "fa_depth": 1,
       "fa_dim": 16, "fa_heads": 2, "steps": 3}
ATFM = {"gtr_filters": (4, 8, 8, 8), "gtr_norm_groups": 4, "rank": 3, "mc_samples": 4, "channels": (8, 16),
        "num_res_blocks": 1, "time_embed_dim": 16, "norm_groups": 4, "attention_heads": 2, "attention_head_dim": 4,
        "steps": 3, "gtr_steps": 1}
MSD = {"image_size": 16, "channels": (8, 16, 16), "num_res_blocks": 1, "time_embed_dim": 16, "norm_groups": 4,
       "cond_channels": (4, 8, 8), "steps": 3}
# name, classes, model parameters, losses (ATFM: stage 1, then two calls of stage 2), samples' hash, NFE per sample
CASES = [
    ("medflowseg", 3, MFS, ["0x1.35bc5c0000000p+1"], "62438b9031c8e141", 3),
    ("medflowseg", 3, {**MFS, "solver": "dopri5", "rtol": 1e-3, "atol": 1e-3}, ["0x1.35bc5c0000000p+1"],
     "3ab07f0ddee7db2a", 26),
    ("medflowseg-backbone", 3, MFS, ["0x1.2df3c80000000p+1"], "814e11248061dd6e", 3),
    ("flowseg-plain", 3, {"channels": (8, 16), "norm_groups": 4, "steps": 3}, ["0x1.23a3220000000p+0"],
     "6280a8d57850eb26", 3),
    ("flowsdf", 2, {"channels": (8, 16), "num_res_blocks": 1, "time_embed_dim": 16, "norm_groups": 4,
                    "rrdb_growth": 4, "noise_injection_steps": 2, "mmse_samples": 2, "steps": 3},
     ["0x1.f85c7c0000000p-1"], "412de8c741db89e2", 2 * (3 + 2)),
    ("atfm", 2, ATFM, ["0x1.b56a600000000p-1", "0x1.531ede0000000p-2", "0x1.48963a0000000p-2"], "84362a8c4d94aebf", 3),
    ("atfm", 3, ATFM, ["0x1.6894700000000p+0", "0x1.2fb9020000000p-2", "0x1.425e8e0000000p-2"], "b4b27b7e3def494a", 3),
    ("medsegdiff", 2, MSD, ["0x1.ea0b560000000p+1"], "5eca0dcbd4dd78ba", 3),
    ("medsegdiff", 2, {**MSD, "eta": 1.0}, ["0x1.ea0b560000000p+1"], "b357d423d20eb571", 3),
    ("unet", 3, {"channels": (4, 8, 16), "strides": (2, 2)}, ["0x1.f61f7a0000000p+0"], "e48132258cbe62f3", 1),
]


@pytest.fixture(autouse=True)
def one_thread():
    if (torch.backends.cpu.get_cpu_capability(), torch.__version__) != RECORDED_ON:
        pytest.skip(f"references recorded on {RECORDED_ON}, this machine is "
                    f"{(torch.backends.cpu.get_cpu_capability(), torch.__version__)}")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _hash(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()[:16]


@pytest.mark.parametrize("name, k, params, losses, samples, nfe", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_loss_and_samples_are_the_recorded_ones(name, k, params, losses, samples, nfe):
    torch.manual_seed(0)
    m = build_method(name, 1, k, params)
    g = torch.Generator().manual_seed(1)
    images, labels = torch.randn(2, 1, 16, 16, generator=g), torch.randint(0, k, (2, 16, 16), generator=g)
    m.train()
    assert [m.loss(images, labels, torch.Generator().manual_seed(5 + i)).item().hex()
            for i in range(len(losses))] == losses
    m.eval()
    with torch.no_grad():
        perturb = torch.Generator().manual_seed(3)   # zero-initialised output layers would make every sample alike
        for p in m.parameters():
            if p.abs().sum() == 0:
                p.normal_(0.0, 0.05, generator=perturb)
        out = m.sample(images, 3, torch.Generator().manual_seed(9))
    assert _hash(out.labels) == samples
    assert out.nfe == (nfe,) * out.labels.shape[0]
