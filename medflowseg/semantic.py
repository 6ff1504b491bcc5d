"""The semantic condition at the bottleneck: FA-Attention (paper section 3.4, Fig. 2b, Fig. 3).

One ``FAAttention`` block refines the condition feature c ``(B, C, h, w)`` using the flow
feature f ``(B, C, h, w)`` and the time embedding ``(B, T)``. Names follow the paper:

- spectral branch: centred 2D FFT of f and c (real and imaginary parts stacked on channels),
  FiLM, patch embedding and 2D sine-cosine positions give ``spec_f`` (T^_f) and ``spec_c``
  (T^_c) ``(B, N, D)``; cross-attention with T^_c as query and T^_f as key/value gives
  ``t_F_hat`` (T^_F, Eq. 10);
- spatial-token branch: FiLM and patch embedding of the real features give ``tok_f`` (T_f) and
  ``tok_c`` (T_c); TD-X turns them into ``tok_f_tilde`` (T~_f) and ``tok_c_tilde`` (T~_c)
  (Eq. 11, Fig. 3);
- Neural Modulator: ``R`` time-conditioned blocks map (T^_F, T~_f, T~_c) to a mask M0;
  ``t_C1_hat`` = T^_F * (1 + M0) (Eq. 12);
- inverse patch embedding and inverse FFT give the update; ``c1 = c + update``.

``FAAttentionStack`` chains N such blocks (N = 4 in the paper). The inverse patch embedding
starts at zero, so every block, and the stack, is exactly the identity at initialisation. The
choices the paper leaves open are listed, with the reasons, in ``medflowseg/DESIGN.md``.
"""
from __future__ import annotations

import torch
from torch import nn

SPATIAL = (-2, -1)


def to_spectrum(x: torch.Tensor) -> torch.Tensor:
    """Real ``(B, C, h, w)`` -> its orthonormal 2D FFT, zero frequency shifted to the centre, as real
    ``(B, 2C, h, w)`` (real parts, then imaginary), in ``x``'s dtype. Centring puts neighbouring frequencies in
    one patch and gives the position codes a meaning (distance from the centre ~ frequency).

    The transform itself runs in float32, with autocast off: torch's FFTs take no bfloat16 (CPU or cuFFT) and
    cuFFT's float16 only at power-of-two sizes, so under mixed precision the features are upcast for it."""
    with torch.autocast(x.device.type, enabled=False):
        s = torch.fft.fftshift(torch.fft.fft2(x.float(), norm="ortho"), dim=SPATIAL)
        return torch.cat([s.real, s.imag], dim=1).to(x.dtype)


def from_spectrum(s: torch.Tensor) -> torch.Tensor:
    """Inverse of ``to_spectrum``: ``(B, 2C, h, w)`` -> the real part of the inverse FFT ``(B, C, h, w)``, in
    ``s``'s dtype; the transform in float32 with autocast off, as in ``to_spectrum``."""
    with torch.autocast(s.device.type, enabled=False):
        re, im = s.float().chunk(2, dim=1)
        return torch.fft.ifft2(torch.fft.ifftshift(torch.complex(re, im), dim=SPATIAL), norm="ortho").real.to(s.dtype)


def sincos_positions(h: int, w: int, dim: int, device=None, dtype=None) -> torch.Tensor:
    """Fixed 2D sine-cosine position codes ``(h * w, dim)`` (half the width per axis), row-major
    like the tokens; computed per call, so the block works at any bottleneck size."""
    if dim % 4:
        raise ValueError(f"token width must be divisible by 4 for 2D sine-cosine positions, got {dim}")
    quarter = dim // 4
    freqs = 1.0 / (10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter))
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    ay, ax = ys.reshape(-1, 1) * freqs, xs.reshape(-1, 1) * freqs
    return torch.cat([ay.sin(), ay.cos(), ax.sin(), ax.cos()], dim=1).to(dtype)


class FiLM(nn.Module):
    """x * (1 + gamma(z)) + beta(z), per channel, zero-initialised so it starts as the identity.

    z is the time embedding ``(B, T)``, plus, when ``context_channels`` is set, a linear map of a
    context vector ``(B, context_channels)`` (the other stream, spatially averaged).
    x ``(B, C, h, w)``.
    """

    def __init__(self, channels: int, time_dim: int, context_channels: int = 0):
        super().__init__()
        self.context = nn.Linear(context_channels, time_dim) if context_channels else None
        self.proj = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, 2 * channels))
        nn.init.zeros_(self.proj[1].weight)
        nn.init.zeros_(self.proj[1].bias)

    def forward(self, x: torch.Tensor, temb: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        z = temb if self.context is None else temb + self.context(context)
        gamma, beta = self.proj(z)[:, :, None, None].chunk(2, dim=1)
        return x * (1 + gamma) + beta


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches to tokens: ``(B, C, h, w)`` -> ``(B, (h/p)(w/p), D)``."""

    def __init__(self, channels: int, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class InversePatchEmbed(nn.Module):
    """Tokens back to a feature map: ``(B, N, D)`` with grid ``(h/p, w/p)`` -> ``(B, C, h, w)``.
    Zero-initialised: the block it closes starts as the identity."""

    def __init__(self, dim: int, channels: int, patch: int):
        super().__init__()
        self.proj = nn.ConvTranspose2d(dim, channels, patch, stride=patch)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, n, d = tokens.shape
        return self.proj(tokens.transpose(1, 2).reshape(b, d, *grid))


class TDX(nn.Module):
    """Token Discrepancy Extractor (Fig. 3).

    Cues (Eq. 11): agreement T_f * T_c, difference |T_f - T_c|, residual T_f - T_c. Each is
    encoded by its own LayerNorm-Linear-GELU; a linear layer fuses the three into the evidence
    token T_z; T_z recalibrates each stream, by a sigmoid gate in the form of Eq. (9),
    T~ = T + T * sigmoid(W T_z) (``recalibration="gate"``), or additively, T~ = T + W T_z
    (``"add"``). All tokens ``(B, N, D)``.
    """

    def __init__(self, dim: int, recalibration: str = "gate"):
        super().__init__()
        self.recalibration = recalibration
        self.encoders = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU()) for _ in range(3))
        self.fuse = nn.Linear(3 * dim, dim)
        self.gate_f, self.gate_c = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, tok_f: torch.Tensor, tok_c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(T_f, T_c) -> (T~_f, T~_c)."""
        cues = (tok_f * tok_c, (tok_f - tok_c).abs(), tok_f - tok_c)
        t_z = self.fuse(torch.cat([enc(cue) for enc, cue in zip(self.encoders, cues)], dim=-1))
        if self.recalibration == "add":
            return tok_f + self.gate_f(t_z), tok_c + self.gate_c(t_z)
        return tok_f + tok_f * torch.sigmoid(self.gate_f(t_z)), tok_c + tok_c * torch.sigmoid(self.gate_c(t_z))


class ModulatorBlock(nn.Module):
    """One time-conditioned transformation block: adaptive LayerNorm (scale and shift from the
    time embedding) then a residual MLP. ``(B, N, D)``, temb ``(B, T)``."""

    def __init__(self, dim: int, time_dim: int, mlp_ratio: int = 2):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, 2 * dim))
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.ada(temb)[:, None].chunk(2, dim=-1)
        return x + self.mlp(self.norm(x) * (1 + scale) + shift)


class NeuralModulator(nn.Module):
    """(T^_F, T~_f, T~_c) -> M0 ``(B, N, D)`` through ``blocks`` time-conditioned blocks (R = 2).

    The output layer starts at zero, so M0 = 0 and T^_C1 = T^_F at initialisation. M0 has no
    output activation: Eq. (12) names it a mask but bounds it nowhere.
    """

    def __init__(self, dim: int, time_dim: int, blocks: int = 2, mlp_ratio: int = 2):
        super().__init__()
        self.inp = nn.Linear(3 * dim, dim)
        self.blocks = nn.ModuleList(ModulatorBlock(dim, time_dim, mlp_ratio) for _ in range(blocks))
        self.out = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))
        nn.init.zeros_(self.out[1].weight)
        nn.init.zeros_(self.out[1].bias)

    def forward(self, t_F_hat: torch.Tensor, tok_f_tilde: torch.Tensor, tok_c_tilde: torch.Tensor,
                temb: torch.Tensor) -> torch.Tensor:
        x = self.inp(torch.cat([t_F_hat, tok_f_tilde, tok_c_tilde], dim=-1))
        for block in self.blocks:
            x = block(x, temb)
        return self.out(x)


class StaticFusion(nn.Module):
    """The "FA-Attention without Neural Modulator" ablation: the three token sets are fused by one
    time-independent linear map added to T^_F (no time conditioning, no multiplicative mask), so
    TD-X still contributes. Zero-initialised like the modulator's output."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(3 * dim, dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, t_F_hat: torch.Tensor, tok_f_tilde: torch.Tensor, tok_c_tilde: torch.Tensor) -> torch.Tensor:
        return t_F_hat + self.proj(torch.cat([t_F_hat, tok_f_tilde, tok_c_tilde], dim=-1))


class FAAttention(nn.Module):
    """One FA-Attention block: (f, c, temb) -> c1, all features ``(B, C, h, w)`` with h, w
    divisible by ``patch``; temb ``(B, T)``.

    ``film``: what drives the FiLM layers, ``"time"`` (the time embedding) or ``"time_and_stream"``
    (plus the other stream's spatial mean). ``recalibration``: TD-X's, ``"gate"`` or ``"add"``.
    """

    def __init__(self, channels: int, time_dim: int, dim: int = 256, heads: int = 8, patch: int = 2,
                 modulator_blocks: int = 2, modulator: bool = True, film: str = "time",
                 recalibration: str = "gate", mlp_ratio: int = 2):
        super().__init__()
        self.patch = patch
        ctx = channels if film == "time_and_stream" else 0
        # spectral branch (2C channels: real and imaginary parts)
        self.film_spec_f, self.film_spec_c = FiLM(2 * channels, time_dim, ctx), FiLM(2 * channels, time_dim, ctx)
        self.embed_spec_f, self.embed_spec_c = PatchEmbed(2 * channels, dim, patch), PatchEmbed(2 * channels, dim, patch)
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        # spatial-token branch
        self.film_f, self.film_c = FiLM(channels, time_dim, ctx), FiLM(channels, time_dim, ctx)
        self.embed_f, self.embed_c = PatchEmbed(channels, dim, patch), PatchEmbed(channels, dim, patch)
        self.tdx = TDX(dim, recalibration)
        self.modulator = NeuralModulator(dim, time_dim, modulator_blocks, mlp_ratio) if modulator else None
        self.static_fusion = None if modulator else StaticFusion(dim)
        self.unembed = InversePatchEmbed(dim, 2 * channels, patch)

    def spectral_tokens(self, f: torch.Tensor, c: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """T^_F ``(B, N, D)``: condition tokens attending to flow tokens in the frequency domain (Eq. 10).
        Positions are added to the attention's inputs; the residual path is T^_c itself."""
        ctx_f, ctx_c = c.mean(dim=SPATIAL), f.mean(dim=SPATIAL)   # each stream's FiLM context: the other
        spec_f = self.embed_spec_f(self.film_spec_f(to_spectrum(f), temb, ctx_f))
        spec_c = self.embed_spec_c(self.film_spec_c(to_spectrum(c), temb, ctx_c))
        pos = sincos_positions(*self.grid(f), spec_f.shape[-1], device=f.device, dtype=spec_f.dtype)
        q, kv = self.norm_q(spec_c + pos), self.norm_kv(spec_f + pos)
        return spec_c + self.cross_attn(q, kv, kv, need_weights=False)[0]

    def grid(self, x: torch.Tensor) -> tuple[int, int]:
        return x.shape[-2] // self.patch, x.shape[-1] // self.patch

    def forward(self, f: torch.Tensor, c: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        t_F_hat = self.spectral_tokens(f, c, temb)
        ctx_f, ctx_c = c.mean(dim=SPATIAL), f.mean(dim=SPATIAL)
        tok_f, tok_c = self.embed_f(self.film_f(f, temb, ctx_f)), self.embed_c(self.film_c(c, temb, ctx_c))
        tok_f_tilde, tok_c_tilde = self.tdx(tok_f, tok_c)
        if self.modulator is not None:
            t_C1_hat = t_F_hat * (1 + self.modulator(t_F_hat, tok_f_tilde, tok_c_tilde, temb))
        else:
            t_C1_hat = self.static_fusion(t_F_hat, tok_f_tilde, tok_c_tilde)
        return c + from_spectrum(self.unembed(t_C1_hat, self.grid(f)))


class FAAttentionStack(nn.Module):
    """N FA-Attention blocks in sequence: c_{k+1} = FA_k(f, c_k, temb); returns c_N ``(B, C, h, w)``."""

    def __init__(self, depth: int, **block_kwargs):
        super().__init__()
        self.blocks = nn.ModuleList(FAAttention(**block_kwargs) for _ in range(depth))

    def forward(self, f: torch.Tensor, c: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            c = block(f, c, temb)
        return c
