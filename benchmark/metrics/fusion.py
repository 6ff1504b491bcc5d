"""Fusing several label maps (samples of a method, or raters) into one, and their disagreement.

Every function takes a stack of integer label maps ``(N, ...)``: ``N`` samples or raters,
``...`` being ``(Z, H, W)`` or ``(H, W)``, labels in ``0..num_classes-1``.
"""
from __future__ import annotations

import warnings

import numpy as np
import SimpleITK as sitk

# SimpleITK's STAPLE filters iterate until their estimates stop changing (binary: every rater's sensitivity
# and specificity moves by at most 1e-7; multi-label: every confusion-matrix entry by less than 1e-5), with
# no cap by default, and that converged map is the fused map. Noisy copies of thin structures need hundreds
# to tens of thousands of iterations (measured: 834, 1,392, 3,270, 17,683, 29,406 and 54,466 binary, 3,462
# multi-label, on 3 to 6 copies of 64x64 lines; a cap of 100 changed 3 to 433 of their 4,096 pixels),
# so the guard sits above them: it is there only for maps with nothing in common, on which binary STAPLE's
# estimates drift on (10 maps of 2% scattered noise at 256x256: about 6 ms an iteration on a 2-core CPU, so
# the guard costs such a case about 10 minutes). A case it stops is warned about and counted. Converging can
# itself be slow on maps that barely agree: 4 maps of 8x64x64 with 20% noise took 56 s (a cap of 100: 0.1 s).
STAPLE_MAX_ITERATIONS = 100_000


class StapleNotConverged(RuntimeWarning):
    """STAPLE stopped by its iteration guard before its estimates stopped changing."""


def _votes(stack: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-pixel count of each label: ``(N, ...)`` -> ``(num_classes, ...)``."""
    return np.stack([(stack == k).sum(axis=0) for k in range(num_classes)])


def majority_vote(stack: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-pixel most frequent label (plurality) of ``(N, ...)`` integer maps -> ``(...)`` uint8.

    Ties go to the lowest label, so a 2-2 split between background and a structure is
    background: a structure needs a strict majority.

    This is also the argmax of the mean one-hot ("mean of probabilities"), which is all a
    mean fusion can be when the samples are hard label maps, so there is no separate "mean".
    """
    if stack.shape[0] == 1:
        return stack[0].astype(np.uint8)
    return _votes(stack, num_classes).argmax(axis=0).astype(np.uint8)


def staple(stack: np.ndarray, num_classes: int, max_iterations: int = STAPLE_MAX_ITERATIONS) -> np.ndarray:
    """STAPLE (Warfield et al. 2004) of ``(N, ...)`` integer maps -> ``(...)`` uint8, run to SimpleITK's
    convergence; after ``max_iterations`` (the guard) it stops and warns :class:`StapleNotConverged`.

    Two classes: SimpleITK's ``STAPLEImageFilter`` on the foreground (label 1) masks, the
    estimated foreground probability thresholded at 0.5 (exactly 0.5 is background, as a tie is
    in :func:`majority_vote`). More classes: ``MultiLabelSTAPLEImageFilter``; the pixels it
    leaves undecided (equal posteriors) take the per-pixel :func:`majority_vote`.

    A stack of identical maps (so ``N == 1`` and an all-background stack too) is returned as
    is: there is no disagreement to weigh, and binary STAPLE on constant masks gives NaN.
    """
    if (stack == stack[0]).all():
        return stack[0].astype(np.uint8)
    if num_classes == 2:
        fused, iterations = _staple_binary(stack, max_iterations)
    else:
        fused, iterations = _staple_multilabel(stack, num_classes, max_iterations)
    if iterations >= max_iterations:
        warnings.warn(StapleNotConverged(f"STAPLE of {stack.shape[0]} maps {stack.shape[1:]} stopped by its "
                                         f"guard after {max_iterations} iterations without converging"))
    return fused


def _images(stack: np.ndarray, dtype) -> list[sitk.Image]:
    # GetImageFromArray reads numpy (z, y, x) as ITK (x, y, z); GetArrayFromImage reverses it
    # back, so shapes round-trip and 2D maps become 2D images.
    return [sitk.GetImageFromArray(np.ascontiguousarray(m, dtype=dtype)) for m in stack]


def _staple_binary(stack: np.ndarray, max_iterations: int) -> tuple[np.ndarray, int]:
    """The fused map and the iterations run: ITK stops at ``max_iterations`` only when not converged."""
    f = sitk.STAPLEImageFilter()
    f.SetForegroundValue(1)
    f.SetMaximumIterations(max_iterations)
    probability = sitk.GetArrayFromImage(f.Execute(_images(stack == 1, np.uint8)))
    return (probability > 0.5).astype(np.uint8), f.GetElapsedIterations()


def _staple_multilabel(stack: np.ndarray, num_classes: int, max_iterations: int) -> tuple[np.ndarray, int]:
    """The fused map and the iterations run (counted by ITK's iteration event, which SimpleITK exposes
    where it exposes no count: a run that converges on its last allowed iteration counts as stopped)."""
    f = sitk.MultiLabelSTAPLEImageFilter()
    f.SetMaximumNumberOfIterations(max_iterations)
    f.SetLabelForUndecidedPixels(num_classes)  # out of range, so undecided pixels are found exactly
    iterations = [0]
    f.AddCommand(sitk.sitkIterationEvent, lambda: iterations.__setitem__(0, iterations[0] + 1))
    fused = sitk.GetArrayFromImage(f.Execute(_images(stack, np.uint16)))
    undecided = fused == num_classes
    fused[undecided] = majority_vote(stack[:, undecided], num_classes)
    return fused.astype(np.uint8), iterations[0]


def sample_spread(stack: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-pixel disagreement of ``(N, ...)`` integer maps -> ``(...)`` float32 in ``[0, 1 - 1/N]``.

    ``1 - (count of the modal label) / N``: 0 where all N maps agree (everywhere when N == 1),
    0.5 where the most frequent label has half the votes.
    """
    return (1.0 - _votes(stack, num_classes).max(axis=0) / stack.shape[0]).astype(np.float32)


def sample_entropy(stack: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-pixel entropy (bits) of the label frequencies of ``(N, ...)`` integer maps -> ``(...)`` float32:
    0 where all N agree, 1 where half say one label and half another, at most ``log2(min(N, num_classes))``.
    The same disagreement as ``sample_spread`` on another scale (1 bit where the spread is 0.5)."""
    p = _votes(stack, num_classes) / stack.shape[0]
    return (-(p * np.log2(np.where(p > 0, p, 1))).sum(axis=0)).astype(np.float32)


FUSIONS = {"majority": majority_vote, "staple": staple}


def fuse(stack: np.ndarray, num_classes: int, how: str,
         staple_max_iterations: int = STAPLE_MAX_ITERATIONS) -> np.ndarray:
    """``(N, ...)`` integer maps fused by ``how`` (a key of :data:`FUSIONS`) -> ``(...)`` uint8."""
    if how not in FUSIONS:
        raise ValueError(f"fusion {how!r} not in {sorted(FUSIONS)}")
    if how == "staple":
        return staple(stack, num_classes, staple_max_iterations)
    return FUSIONS[how](stack, num_classes)
