"""What every segmentation method implements, ours or a baseline.

A method is a ``torch.nn.Module`` built as ``cls(in_channels=C, num_classes=K, **model_params)``
with two methods. It is a structural protocol: a method package does not import the
benchmark to satisfy it (``medflowseg`` imports nothing from ``benchmark``).

A method that trains and predicts by itself (nnU-Net) registers a class with the static methods
``train_external(processed, out, method_config, reference, max_steps)`` and
``predict_external(processed, model_dir, out, method_config)`` instead; ``segbench train`` and
``segbench predict`` hand their stage to it, and its predictions take the format of
``benchmark/inference.py``, so the evaluate stage is the same for every method.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class SegmentationMethod(Protocol):
    nfe: int
    """Network evaluations per sample in the last ``sample`` call (1 for a deterministic network)."""

    def loss(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Training loss on a batch.

        Args:
            images: float ``(B, C, H, W)``, intensity-normalised.
            labels: int64 ``(B, H, W)`` in ``[0, K)``.
            generator: the only source of randomness (noise, time), so a run is reproducible
                and resumable bit for bit.
        Returns:
            A scalar tensor.
        """
        ...

    def sample(self, images: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` segmentation samples per image: int64 ``(n, B, H, W)``.

        Deterministic methods return one sample whatever ``n`` is: ``(1, B, H, W)``.
        """
        ...
