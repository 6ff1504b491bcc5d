"""MedFlowSeg under bf16 autocast (the paper profile's mixed precision): the FA-Attention FFTs run in float32 with
autocast off, since torch's FFTs take no bfloat16; checked on the CPU, whose autocast casts the same way."""
from __future__ import annotations

import torch

from medflowseg import semantic
from tests.medflowseg.test_model import batch, gen, tiny


def _recording_ffts(monkeypatch) -> list[tuple[str, torch.dtype, bool]]:
    """Wrap the FFTs ``semantic`` calls: each call appends (name, input dtype, whether autocast was on)."""
    calls = []
    for name in ("fft2", "ifft2"):
        real = getattr(torch.fft, name)

        def recording(x, *args, _name=name, _real=real, **kwargs):
            calls.append((_name, x.dtype, torch.is_autocast_enabled(x.device.type)))
            return _real(x, *args, **kwargs)
        monkeypatch.setattr(semantic.torch.fft, name, recording)
    return calls


def test_bf16_autocast_trains_with_float32_ffts(monkeypatch):
    calls = _recording_ffts(monkeypatch)
    model = tiny()
    images, labels = batch(size=16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model.loss(images, labels, gen(1))
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    assert {n for n, _, _ in calls} == {"fft2", "ifft2"}
    assert all(dtype in (torch.float32, torch.complex64) and not autocast for _, dtype, autocast in calls), calls
    assert all(p.dtype == torch.float32 for p in model.parameters())    # fp32 master weights


def test_the_spectrum_keeps_the_features_dtype_under_autocast(monkeypatch):
    calls = _recording_ffts(monkeypatch)
    x = torch.randn(2, 3, 6, 10, generator=gen(0)).to(torch.bfloat16)   # not a power of two
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s = semantic.to_spectrum(x)
        back = semantic.from_spectrum(s)
    assert (s.dtype, s.shape, back.dtype) == (torch.bfloat16, (2, 6, 6, 10), torch.bfloat16)
    assert [c[1:] for c in calls] == [(torch.float32, False), (torch.complex64, False)]
    torch.testing.assert_close(back.float(), x.float(), atol=0.05, rtol=0.05)   # bf16 keeps about 3 digits
