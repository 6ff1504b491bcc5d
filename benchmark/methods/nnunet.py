"""nnU-Net in the suite: the registered ``nnunet``, a method that trains and predicts by itself.

:class:`NNUNet` is a :class:`~benchmark.methods.interface.TrainsItself`: ``segbench train DATASET nnunet`` and
``segbench predict DATASET nnunet`` hand their stage to it. It moves the suite's data into nnU-Net's formats and
back, runs the real ``nnunetv2`` through :mod:`baselines.nnunet` (nnU-Net's side, which imports nothing from the
suite; its docstring says what is nnU-Net's own and where this departs from nnU-Net's protocol), and writes the
suite's records and folders, so the evaluate stage scores nnU-Net exactly as every other method.

Train (:meth:`NNUNet.train`), in a work folder ``<run>/.nnunet-work`` (removed after training):

1. export (:func:`export_raw`): the train and val splits, never test, as nnU-Net raw dataset ``Dataset001_<Name>``,
   one NIfTI volume per channel with the case's spacing from the manifest. The label is the suite's reference: the
   raters fused by :func:`benchmark.metrics.fusion.fuse` with ``evaluation.reference`` (majority vote by default),
   as the evaluate stage builds it.
2. plan and preprocess, then train fold 0 with train = the suite's train split, val = its val split (the train
   split when val is empty; nnU-Net's validation is only its per-epoch pseudo Dice), seeded from ``train.seed``,
   with the schedule of ``method.nnunet.model`` (:class:`NNUNetSettings`).
3. ``<run>/model`` (built aside, then swapped in): ``nnunet/`` (plans.json, dataset.json, dataset_fingerprint.json,
   ``fold_0/checkpoint_final.pth``, nnU-Net's log and progress plot), ``meta.json``, ``manifest.json``;
   ``<run>/loss.csv`` has one row per epoch (step = iterations so far).

Predict (:meth:`NNUNet.predict`): the test split, case by case through nnU-Net's predictor; each output is imported
by :func:`import_prediction` as ``samples`` ``(1, Z, H, W)`` uint8 and ``uncertainty`` zeros. ``nfe_per_sample`` is
the number of network evaluations per slice, counted (tiles x mirrored copies: 4 with 2D mirroring on a slice that
fits one tile).
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from baselines.nnunet import (CONFIGURATION, DATASET_ID, FOLD, PLANS, build_predictor, dataset_name, default_device,
                              loss_history, nnunet_environment, plan_and_preprocess, plans_summary, predict_files,
                              read_volume, train_fold, write_case_images, write_dataset_json, write_training_case)
from benchmark.config import BOOLEAN, Checked, MethodConfig, build_section, checked, integer, number
from benchmark.data.manifest import MANIFEST, file_sha256, load_manifest
from benchmark.data.preprocess import load_split
from benchmark.data.store import CaseFileError, read_json, save_arrays, staged_folder
from benchmark.errors import SegbenchError
from benchmark.inference import write_predictions
from benchmark.methods.interface import TrainsItself
from benchmark.metrics.fusion import fuse
from benchmark.provenance import git_revision, json_hash
from benchmark.records import PredictionRecord, RunRecord, Status, write_record
from benchmark.training.checkpoint import CheckpointError, load_torch_file
from benchmark.training.trainer import weights_hash, write_loss_csv, write_not_run

METHOD = "nnunet"
WORK = ".nnunet-work"       # beside model/ in the run folder; removed after training
MODEL_SUBDIR = "nnunet"     # the trained nnU-Net model folder inside model/
UNCERTAINTY = "zeros: nnU-Net gives one deterministic sample"
NFE = ("network evaluations per slice, counted: sliding-window tiles x mirrored copies "
       "(1 + the mirror-axis combinations: 4 with 2D mirroring)")


@dataclass(frozen=True)
class NNUNetSettings(Checked):
    """``method.nnunet.model``. The defaults are nnU-Net's own (nnUNetTrainer: 1000 epochs x 250 iterations,
    50 validation iterations; nnUNetPredictor: tile step 0.5, mirroring on)."""
    epochs: int = checked(1000, integer(1))
    iterations_per_epoch: int = checked(250, integer(1))
    val_iterations: int = checked(50, integer(1))
    tile_step_size: float = checked(0.5, number(0, 1, low_open=True))
    use_mirroring: bool = checked(True, BOOLEAN)
    num_processes: int = checked(1, integer(1))   # fingerprint and preprocessing workers (nnU-Net's -npfp / -np)

    @classmethod
    def from_model(cls, model: dict | None) -> "NNUNetSettings":
        return build_section(cls, model, f"method.{METHOD}.model")


class NNUNet(TrainsItself):
    """The registry entry of nnU-Net (see the module docstring)."""

    @staticmethod
    def check_model(model: dict) -> None:
        NNUNetSettings.from_model(model)

    @staticmethod
    def train(processed: Path, out: Path, config: MethodConfig, reference: str = "majority",
              max_steps: int | None = None) -> RunRecord:
        return train(processed, out, config, reference, max_steps)

    @staticmethod
    def predict(processed: Path, model_dir: Path, out: Path, config: MethodConfig) -> PredictionRecord:
        return predict(processed, model_dir, out, config)


# ---------------------------------------------------------------------------------------------------------------
# Export and import


def export_raw(processed: Path, raw_root: Path, reference: str = "majority", dataset_id: int = DATASET_ID) -> dict:
    """Write the train and val splits of ``processed`` (never test) as nnU-Net raw dataset under ``raw_root``.

    Returns ``{"folder", "dataset_json", "train": [case ids], "val": [case ids]}``.
    """
    processed = Path(processed)
    manifest = load_manifest(processed)
    info = manifest.dataset
    folder = Path(raw_root) / dataset_name(info.name, dataset_id)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    ids: dict[str, list[str]] = {}
    for split in ("train", "val"):
        _, cases = load_split(processed, split)
        for case in cases:
            write_training_case(folder, case.case_id, case.image, fuse(case.label, info.num_classes, reference),
                                case.spacing)
        ids[split] = [c.case_id for c in cases]
    dataset_json = write_dataset_json(
        folder, info.name, f"{info.name} ({info.stands_for or 'suite dataset'}): train and val splits of the suite; "
                           f"labels = {reference} of {info.n_annotators} rater(s)",
        info.channels, info.class_names, len(ids["train"]) + len(ids["val"]))
    return {"folder": folder, "dataset_json": dataset_json, **ids}


def import_prediction(seg_file: Path, out_file: Path, shape: tuple[int, int, int], num_classes: int) -> np.ndarray:
    """nnU-Net's output segmentation ``seg_file`` -> the suite's ``<case>.npz``: ``samples`` ``(1, Z, H, W)`` uint8,
    ``uncertainty`` zeros float16 ``(Z, H, W)``. Checks the shape and the label range against the test case."""
    if not Path(seg_file).is_file():
        raise CaseFileError(seg_file, "nnU-Net output is missing")
    seg = read_volume(seg_file)
    if seg.shape != tuple(shape):
        raise CaseFileError(seg_file, f"nnU-Net output has shape {seg.shape}, the case is (Z, H, W) = {tuple(shape)}")
    if seg.size and (seg.min() < 0 or seg.max() >= num_classes):
        raise CaseFileError(seg_file, f"nnU-Net output has labels outside 0..{num_classes - 1}")
    samples = seg.astype(np.uint8)[None]
    save_arrays(out_file, samples=samples, uncertainty=np.zeros(seg.shape, dtype=np.float16))
    return samples


# ---------------------------------------------------------------------------------------------------------------
# Train


def train(processed: Path, out: Path, mcfg: MethodConfig, reference: str = "majority",
          max_steps: int | None = None) -> RunRecord:
    """The train stage for nnU-Net: export, plan, preprocess, train; writes ``out/model`` and ``out/loss.csv``."""
    if max_steps is not None:
        raise SegbenchError(f"{METHOD}: --max-steps is not supported (nnU-Net trains whole epochs)")
    processed, out = Path(processed), Path(out)
    manifest = load_manifest(processed)
    if manifest.status != "ok":
        write_not_run(out, manifest.reason)
        return RunRecord.not_run(manifest.reason)
    settings = NNUNetSettings.from_model(mcfg.model)
    cfg = mcfg.train
    info = manifest.dataset
    torch.set_num_threads(cfg.threads)
    manifest_sha = file_sha256(processed / MANIFEST)
    resolved = {"method": METHOD, "model": dataclasses.asdict(settings), "train": dataclasses.asdict(cfg),
                "predict": dataclasses.asdict(mcfg.predict), "reference": reference, "manifest_sha256": manifest_sha}
    work = out / WORK
    shutil.rmtree(work, ignore_errors=True)
    device = default_device()
    t0 = time.perf_counter()
    try:
        exported = export_raw(processed, work / "nnUNet_raw", reference)
        t_export = time.perf_counter()
        with nnunet_environment(work, n_proc_da=max(1, cfg.threads)):
            plan_and_preprocess(DATASET_ID, settings.num_processes)
        t_plan = time.perf_counter()
        name = dataset_name(info.name)
        plans = json.loads((work / "nnUNet_preprocessed" / name / f"{PLANS}.json").read_text())
        trainer = train_fold(work, name, exported["train"], exported["val"] or exported["train"], settings.epochs,
                             settings.iterations_per_epoch, settings.val_iterations, cfg.seed, device)
        t_train = time.perf_counter()
        network = trainer.network
        history = loss_history(trainer, settings.iterations_per_epoch)
        meta = RunRecord(
            Status.OK, method=METHOD, dataset=info.name,
            steps=settings.epochs * settings.iterations_per_epoch, world_size=1, device=str(device),
            seconds=round(t_train - t_plan, 3), final_loss=history[-1]["loss"] if history else None,
            model_params=mcfg.model, train=resolved["train"], predict=resolved["predict"],
            in_channels=info.channels, num_classes=info.num_classes,
            fingerprint=json_hash({k: v for k, v in resolved.items() if k != "predict"}),
            manifest_sha256=manifest_sha, git_revision=git_revision(),
            weights_sha256=weights_hash(network.state_dict()),
            nnunet={"nnunetv2_version": version("nnunetv2"), "trainer": type(trainer).__name__,
                "configuration": CONFIGURATION, "fold": FOLD, "plans_identifier": PLANS,
                "settings": dataclasses.asdict(settings), "plans": plans_summary(plans),
                "params": int(sum(p.numel() for p in network.parameters())),
                "reference": f"{reference} of {info.n_annotators} rater(s)",
                "cases": {"train": len(exported["train"]), "val": len(exported["val"]),
                          "validated_on": "val split" if exported["val"] else "train split (val is empty)"},
                "final_ema_pseudo_dice": _float(trainer.logger.get_value("ema_fg_dice", step=-1)),
                "seeded": ["random", "numpy", "torch"], "nnUNet_n_proc_DA": 0},
            timings={"export_s": round(t_export - t0, 3), "plan_preprocess_s": round(t_plan - t_export, 3),
                     "train_s": round(t_train - t_plan, 3), "total_s": round(t_train - t0, 3)})
        _write_model(out, Path(trainer.output_folder_base), meta, processed)
        write_loss_csv(out / "loss.csv", history)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return meta


def _float(v):
    return None if v is None or not np.isfinite(v) else float(v)


def _write_model(out: Path, results: Path, meta: RunRecord, processed: Path) -> None:
    """``out/model``: nnU-Net's model folder (final checkpoint only), meta.json, manifest.json; built aside, then
    swapped in."""
    with staged_folder(out / "model") as tmp:
        shutil.copytree(results, tmp / MODEL_SUBDIR,
                        ignore=shutil.ignore_patterns("checkpoint_best.pth", "checkpoint_latest.pth"))
        if not (tmp / MODEL_SUBDIR / f"fold_{FOLD}" / "checkpoint_final.pth").is_file():
            raise RuntimeError(f"nnU-Net wrote no checkpoint_final.pth in {results}")
        shutil.copy2(processed / MANIFEST, tmp / MANIFEST)
        write_record(tmp / "meta.json", meta)


# ---------------------------------------------------------------------------------------------------------------
# Predict


_NUMPY_SCALAR = np.float32(0).__reduce__()[0]  # numpy's ``scalar``, by whichever module name this numpy has
NNUNET_CHECKPOINT_GLOBALS = [(np.dtype, "numpy.dtype"),
                             *((_NUMPY_SCALAR, f"{m}.multiarray.scalar") for m in ("numpy.core", "numpy._core")),
                             *(type(np.dtype(code)) for code in "?bBhHiIlLqQefdg")]
"""What nnU-Net's ``checkpoint_final.pth`` holds besides tensors and plain data: numpy scalars (its logged losses
and Dice) and their numeric dtypes. Object dtypes are not admitted, so nothing in the file can build an object
or run code."""


def load_predictor(model_dir: Path, settings: NNUNetSettings):
    """nnU-Net's predictor for the model in ``model_dir/nnunet``. A missing model is a :class:`CaseFileError`, a
    truncated or refused checkpoint (anything beyond tensors, plain data and numpy scalars) a
    :class:`~benchmark.training.checkpoint.CheckpointError`, each naming the file."""
    folder = Path(model_dir) / MODEL_SUBDIR
    ckpt_file = folder / f"fold_{FOLD}" / "checkpoint_final.pth"
    if not ckpt_file.is_file():
        raise CaseFileError(ckpt_file, "trained nnU-Net model is missing (run the train stage)")
    plans = read_json(folder / "plans.json", "nnU-Net plans")
    dataset_json = read_json(folder / "dataset.json", "nnU-Net dataset.json")
    ckpt = load_torch_file(ckpt_file, NNUNET_CHECKPOINT_GLOBALS)
    if not (isinstance(ckpt, dict) and {"network_weights", "init_args", "trainer_name"} <= ckpt.keys()):
        raise CheckpointError(ckpt_file, "not an nnU-Net checkpoint (network_weights, init_args, trainer_name "
                                         "expected)")
    return build_predictor(plans, dataset_json, ckpt, settings.tile_step_size, settings.use_mirroring,
                           default_device())


def predict(processed: Path, model_dir: Path, out: Path, mcfg: MethodConfig) -> PredictionRecord:
    """The predict stage for nnU-Net: ``out/<case>.npz`` and ``out/meta.json`` (built aside, then swapped in)."""
    processed, out = Path(processed), Path(out)
    torch.set_num_threads(mcfg.train.threads)

    def predict_cases(tmp: Path) -> PredictionRecord:
        work = tmp / WORK  # inside this run's private folder: a second run at once has its own
        try:
            return _predict_cases(processed, Path(model_dir), tmp, work, NNUNetSettings.from_model(mcfg.model), mcfg)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    return write_predictions(model_dir, out, predict_cases)


def _predict_cases(processed: Path, model_dir: Path, out: Path, work: Path, settings: NNUNetSettings,
                   mcfg: MethodConfig) -> PredictionRecord:
    from benchmark.complexity import count_macs

    predictor = load_predictor(model_dir, settings)
    network = predictor.network
    manifest, cases = load_split(processed, "test")
    info = manifest.dataset
    shutil.rmtree(work, ignore_errors=True)
    (work / "imagesTs").mkdir(parents=True)
    (work / "predicted").mkdir()
    calls = [0]
    hook = network.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    seconds, n_slices = [], 0
    try:
        for case in cases:
            files = write_case_images(work / "imagesTs", case.case_id, case.image, case.spacing)
            t0 = time.perf_counter()
            seg_file = predict_files(predictor, files, work / "predicted" / case.case_id)
            seconds.append(time.perf_counter() - t0)
            import_prediction(seg_file, out / f"{case.case_id}.npz", case.label.shape[1:], info.num_classes)
            n_slices += case.image.shape[0]
    finally:
        hook.remove()
    patch = tuple(predictor.configuration_manager.patch_size)
    macs, _, _ = count_macs(network.cpu().eval(), (torch.zeros(1, info.channels, *patch),))
    mirror_axes = predictor.allowed_mirroring_axes if settings.use_mirroring else None
    evaluations = n_slices and calls[0] / n_slices
    return PredictionRecord(
        Status.OK, dataset=info.name, n_cases=len(cases), n_samples_requested=mcfg.predict.n_samples,
        n_samples=1, nfe_per_sample=int(evaluations) if float(evaluations).is_integer() else evaluations,
        nfe_definition=NFE, seconds_per_case=float(np.mean(seconds)) if seconds else 0.0,
        seconds_total=float(np.sum(seconds)), device=str(default_device()), seed=mcfg.predict.seed,
        uncertainty=UNCERTAINTY,
        nnunet={"nnunetv2_version": version("nnunetv2"), "configuration": CONFIGURATION, "fold": FOLD,
                "tile_step_size": settings.tile_step_size, "use_mirroring": settings.use_mirroring,
                "mirror_axes": list(mirror_axes) if mirror_axes else [],
                "evaluations_per_tile": 2 ** len(mirror_axes) if mirror_axes else 1,
                "network_evaluations": calls[0], "slices": n_slices, "patch_size": list(patch),
                "params": int(sum(p.numel() for p in network.parameters())),
                "macs_per_evaluation": macs,
                "macs_counted_by": "fvcore (one multiply-add = 1), one evaluation at the patch size"})
