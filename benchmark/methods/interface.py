"""What every segmentation method implements, ours or a baseline.

A method is a ``torch.nn.Module`` built as ``cls(in_channels=C, num_classes=K, **model_params)``
(``model_params``: the ``method.<name>.model`` section of the parameters file) that provides what
:class:`SegmentationMethod` lists:

- ``loss(images, labels, generator)``: the training loss of a batch;
- ``sample(images, n, generator, sampler=None)``: a :class:`Samples` record, the labels of ``n`` samples
  per image and the network evaluations (NFE) of each sample, counted as they were made;
- ``default_sampler``: the step rule ``sample`` uses when it is passed none, read-only. It is a
  :class:`Sampler` value (the flow methods' ``medflowseg.flow.ODESolver``, MedSegDiff's DDPM or DDIM schedule),
  or None for a deterministic network, whose ``sample`` then refuses any other sampler with a ``ValueError``.

The step rule is a value the caller passes in, never state to swap: the complexity stage counts a method at
1 and 2 steps with ``sample(..., sampler=dataclasses.replace(method.default_sampler, steps=k))`` and the NFE
sweep passes ODE solvers; neither changes the model. All randomness comes from ``generator``, so a run is
reproducible and resumable bit for bit.

It is a structural protocol: a method package does not import the benchmark to satisfy it (``medflowseg``
imports nothing from ``benchmark``; ``Samples`` lives in ``medflowseg.sampling``). A flow-matching method
gets ``sample`` and ``default_sampler`` by subclassing ``medflowseg.flow.FlowMatchingMethod`` and writing its
hooks (target encoding, velocity, read-out, ...) and ``loss``. A method registers under a name through the
``segbench.methods`` entry-point group (``benchmark/methods/registry.py``), which checks this interface.

A method that configures, trains and predicts by itself (nnU-Net, ``benchmark/methods/nnunet.py``) registers
instead a class that derives from :class:`TrainsItself` and provides its three static methods; ``segbench train``
and ``segbench predict`` hand their stage to it, and its predictions take the format of ``benchmark/inference.py``,
so the evaluate stage is the same for every method.
"""
from __future__ import annotations

import abc
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, runtime_checkable

import torch

from medflowseg.sampling import Samples

if TYPE_CHECKING:
    from benchmark.config import MethodConfig
    from benchmark.records import PredictionRecord, RunRecord

__all__ = ["SegmentationMethod", "Sampler", "Samples", "CountsInEpochs", "ClipsGradients", "TrainsItself"]


@runtime_checkable
class Sampler(Protocol):
    """A step rule: a frozen dataclass (so ``dataclasses.replace`` makes a variant) with at least these fields."""

    steps: int
    """Steps from noise to the sample; fixed-step rules make this many (times the evaluations per step) network
    evaluations per trajectory."""

    @property
    def adaptive(self) -> bool:
        """True when the number of evaluations depends on the data (``steps`` then unused; dopri5)."""
        ...


@runtime_checkable
class SegmentationMethod(Protocol):

    @property
    def default_sampler(self) -> Sampler | None:
        """What ``sample`` uses without a ``sampler`` argument: the method's configured step rule, or None for a
        deterministic network. Read-only."""
        ...

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

    def sample(self, images: torch.Tensor, n: int, generator: torch.Generator,
               sampler: Sampler | None = None) -> Samples:
        """``n`` segmentation samples per image, with no effect on the model.

        Args:
            images: float ``(B, C, H, W)``.
            n: samples per image. Deterministic methods return one sample whatever ``n`` is.
            generator: the only source of randomness; the same generator state gives the same samples.
            sampler: the step rule for this call; None: ``default_sampler``. A value of the wrong kind for
                the method (or any value for a deterministic network) raises ``TypeError`` or ``ValueError``.
        Returns:
            ``Samples``: ``labels`` int64 ``(n, B, H, W)`` in ``[0, K)`` (``(1, B, H, W)`` when deterministic) and
            ``nfe``, one count per returned sample of the network evaluations that made it (all its restarts
            and averaged draws; ``(1,)`` for a deterministic network).
        """
        ...


@runtime_checkable
class CountsInEpochs(Protocol):
    """Optional, beside :class:`SegmentationMethod`: a method whose own training stages are counted in epochs
    (ATFM's prior stage, ``gtr_epochs``). Before the first step the trainer calls ``set_epoch_length`` with its
    conversion of epochs to optimizer steps for this run: ceil(epochs x training slices / global batch)."""

    def set_epoch_length(self, to_steps: Callable[[float], int]) -> None:
        ...


@runtime_checkable
class HasConditionHead(Protocol):
    """Optional, beside :class:`SegmentationMethod`: a method whose image-conditioning network has a segmentation
    head of its own (MedFlowSeg's auxiliary Dice + CE head). ``segbench predict --condition-head`` scores that head
    alone, from the same trained weights, as the row ``<method>-head``: what the generative stream adds over it."""

    def condition_labels(self, images: torch.Tensor) -> torch.Tensor:
        """images ``(B, C, H, W)`` -> int64 labels ``(B, H, W)``, the argmax of the head's class logits."""
        ...


@runtime_checkable
class ClipsGradients(Protocol):
    """Optional, beside :class:`SegmentationMethod`: a method trained with its gradients clipped (FlowSDF's
    released trainer). ``grad_clip`` is ``(norm_type, max_norm)``, the arguments of
    ``torch.nn.utils.clip_grad_norm_`` (``norm_type`` a float, ``math.inf`` for the largest absolute entry), or
    None for no clipping. After each backward pass and before the optimizer step the trainer calls
    ``accelerator.clip_grad_norm_(model.parameters(), max_norm, norm_type=norm_type)`` (Accelerate unscales
    mixed-precision gradients first; under several processes the gradients are already averaged)."""

    grad_clip: tuple[float, float] | None


class TrainsItself(abc.ABC):
    """A method that configures, trains and predicts by itself, with its own code (nnU-Net).

    The registered class derives from this one (that declaration is how ``segbench`` tells it from a
    :class:`SegmentationMethod`; it is never instantiated) and implements the three static methods. ``segbench train``
    and ``segbench predict`` call them once, in one process (rank 0 under a multi-process launcher). The stages
    that build a network (complexity, nfe-sweep) do not apply to it. Errors the user can fix (a bad
    ``method_config.model``, an unsupported option) are :class:`benchmark.errors.SegbenchError`.
    """

    @staticmethod
    @abc.abstractmethod
    def check_model(model: dict) -> None:
        """Check ``model``, the method's ``method.<name>.model`` section, when the parameters file is loaded
        (``segbench check-data`` and the method's own stages, before any work): a key the method does not take,
        or a value it cannot use, is a ``benchmark.config.ConfigError`` naming the key path
        (``method.<name>.model.<key>: ...``)."""

    @staticmethod
    @abc.abstractmethod
    def train(processed: Path, out: Path, config: "MethodConfig", max_steps: int | None = None) -> "RunRecord":
        """Train on the train split (and val, for the method's own validation) of ``processed``.

        Args:
            processed: a processed dataset folder (``manifest.json``, ``cases/``); never read its test split.
            out: the run folder. Write ``out/model/`` (``meta.json``: the :class:`~benchmark.records.RunRecord`
                returned; ``manifest.json``: a copy of the data manifest; the method's own files) and
                ``out/loss.csv`` (``benchmark.training.trainer.write_loss_csv``), each built aside and swapped in
                (``benchmark.data.store.staged_folder``).
            config: the method's section, ``method.<name>`` (``model``: its own settings; ``train``, ``predict``).
                Several raters: train as the suite's methods do, on a uniformly random rater per drawn sample
                (``benchmark.training.data.batch_at``), or say in the record which rule it follows.
            max_steps: stop early without a final model (a method that cannot raises ``SegbenchError``).
        Returns:
            The run record; a dataset whose manifest is not ok gives the not-run outputs
            (``benchmark.training.trainer.write_not_run``) and a not-run record.
        """

    @staticmethod
    @abc.abstractmethod
    def predict(processed: Path, model_dir: Path, out: Path, config: "MethodConfig") -> "PredictionRecord":
        """Predict every case of the test split of ``processed`` with the model ``train`` wrote in ``model_dir``.

        Writes through ``benchmark.inference.write_predictions`` (which gives a not-run folder when training was
        not run): ``out/<case>.npz`` with ``samples`` uint8 ``(n, Z, H, W)`` and ``uncertainty`` float16
        ``(Z, H, W)``, and ``out/meta.json``, the :class:`~benchmark.records.PredictionRecord` returned, whose
        ``nfe_per_sample`` says how network evaluations were counted (``nfe_definition``).
        """
