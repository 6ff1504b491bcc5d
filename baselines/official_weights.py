"""What TransUNet, Swin-Unet and MT-UNet share: the official grey-to-RGB repeat, and loading a user-supplied
official checkpoint without executing code.

Each network's ``pretrained`` field names an official file; its module maps that file's keys onto its own
parameters with :func:`assign`, which fails with one :class:`CheckpointError` naming the file and every key that
did not fit (a key of the file it does not know, a parameter it needs that the file lacks, a shape that
differs), before it changes any weight.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn



class CheckpointError(ValueError):
    """An official checkpoint that does not fit the network; the message names the file."""


def network_in_channels(in_channels: int) -> int:
    """The input channels the network is built for: the official code repeats a grey image to 3 channels
    (TransUNet vit_seg_modeling.py:386-387, Swin-Unet vision_transformer.py:48-49, MT-UNet MTUNet.py:484-485), so
    C = 1 builds a 3-channel stem (and an RGB checkpoint's stem fits it); any other C is taken as it is."""
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    return 3 if in_channels == 1 else in_channels


def repeat_grey(x: torch.Tensor, in_channels: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, network_in_channels(C), H, W)``."""
    return x.expand(-1, 3, -1, -1) if in_channels == 1 else x


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` (Google's ViT release format), with pickled objects refused."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read as an .npz of arrays ({e})") from None


def read_torch(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``torch.save`` file, read with ``weights_only=True`` (no code runs); a checkpoint that
    nests them under ``"model"`` (Microsoft's Swin release) gives that mapping."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a file that is not a weights-only checkpoint
        raise CheckpointError(f"{path}: cannot read as a weights-only torch checkpoint ({e})") from None
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a mapping of tensor names to tensors")
    return state


Convert = Callable[[torch.Tensor], torch.Tensor]


def assign(path: str | Path, weights: dict[str, torch.Tensor], targets: dict[str, list[tuple[str, Convert]]],
           ignored: Callable[[str], bool], module: nn.Module) -> None:
    """Copy the file's tensors into ``module``'s parameters and buffers.

    Args:
        path: the file (named in every error).
        weights: its tensors by key.
        targets: for each file key, the ``(parameter name in module, conversion)`` pairs it fills (a key may fill
            several: Swin-Unet's decoder starts from the encoder's weights).
        ignored: the file keys that are not weights of this network (a classifier head, derived buffers).
        module: the network.
    Raises:
        CheckpointError: listing every unknown file key, every target parameter no key fills, and every shape that
            differs; nothing is copied then.
    """
    own = dict(module.state_dict(keep_vars=True))
    unknown = sorted(k for k in weights if k not in targets and not ignored(k))
    missing = sorted(k for k in targets if k not in weights)
    planned, wrong = [], []
    for key, dests in targets.items():
        if key not in weights:
            continue
        for name, convert in dests:
            value = convert(torch.as_tensor(weights[key]).float())
            if tuple(value.shape) != tuple(own[name].shape):
                wrong.append(f"{key} -> {name}: {tuple(value.shape)} vs {tuple(own[name].shape)}")
            else:
                planned.append((own[name], value))
    problems = ([f"keys this network does not take: {unknown}"] if unknown else []) + \
               ([f"keys the network needs and the file lacks: {missing}"] if missing else []) + \
               ([f"shapes that differ: {wrong}"] if wrong else [])
    if problems:
        raise CheckpointError(f"{path}: not a checkpoint of this configuration; " + "; ".join(problems))
    with torch.no_grad():
        for tensor, value in planned:
            tensor.copy_(value)
