"""nnU-Net in the suite: the registered ``nnunet``, a method that trains and predicts by itself.

:class:`NNUNet` is a :class:`~benchmark.methods.interface.TrainsItself`: ``segbench train DATASET nnunet`` and
``segbench predict DATASET nnunet`` hand their stage to it. It moves the suite's data into nnU-Net's formats and
back, runs the real ``nnunetv2`` through :mod:`baselines.nnunet` (nnU-Net's side, which imports nothing from the
suite; its docstring says what is nnU-Net's own and where this departs from nnU-Net's protocol), and writes the
suite's records and folders, so the evaluate stage scores nnU-Net exactly as every other method.

nnU-Net is given the images as its users give them: in the intensities of the dataset's source, undoing the
suite's per-case z-score with the mean and std the manifest keeps for each case
(:func:`benchmark.data.preprocess.original_intensities`), with channels named as nnU-Net's own dataset conversions
name them (:func:`channel_names`), so nnU-Net's normalisation (its CT scheme for CT) and its crop to the non-zero
region act as they would on the user's files. The slices stay on the suite's grid (the converters resample to the
profile's size when they load a source), so nnU-Net's predictions come back on it unchanged.

Train (:meth:`NNUNet.train`), in a work folder ``<run>/.nnunet-work`` (removed after training):

1. export (:func:`export_raw`): the train and val splits, never test, as nnU-Net raw dataset ``Dataset001_<Name>``,
   one NIfTI volume per channel with the case's spacing from the manifest. Raters: each rater's annotation is a
   training case of its own (``<case>_rater<r>``, the image repeated), so every patch nnU-Net samples carries a
   uniformly random rater: the rule by which every other method of the suite trains (a random rater per drawn
   slice, ``benchmark/training/data.py``), :data:`RATER_RULE`.
2. plan and preprocess, then train ``folds`` folds (:class:`NNUNetSettings`): with 1, fold 0 trains on the suite's
   train split and validates on its val split (the train split when val is empty; nnU-Net's validation is only its
   per-epoch pseudo Dice); with k > 1, nnU-Net's k-fold cross-validation over the train and val subjects together
   (the cases of a subject, its rater copies included, in one fold). Each fold seeded from ``train.seed``, with the
   schedule of ``method.nnunet.model`` and ``augmentation_workers`` data-augmentation workers.
3. ``<run>/model`` (built aside, then swapped in): ``nnunet/`` (plans.json, dataset.json, dataset_fingerprint.json,
   ``fold_<f>/checkpoint_final.pth`` for every fold, nnU-Net's logs and progress plots), ``meta.json``,
   ``manifest.json``; ``<run>/loss.csv`` has one row per epoch (step = iterations so far; loss: the mean over the
   folds; seconds: the training time of all folds up to that epoch).

Predict (:meth:`NNUNet.predict`): the test split, case by case through nnU-Net's predictor, the ensemble of every
fold (their mean logits); each output is imported by :func:`import_prediction` as ``samples`` ``(1, Z, H, W)``
uint8 and ``uncertainty`` zeros. ``nfe_per_sample`` is the number of network evaluations per slice, counted (folds x
tiles x mirrored copies: 4 with 2D mirroring on a slice that fits one tile, for one fold).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from baselines.nnunet import (CONFIGURATION, DATASET_ID, PLANS, SegbenchNNUNetTrainer, augmentation_workers,
                              build_predictor, crossval_splits, dataset_name, default_device, loss_history,
                              nnunet_environment, plan_and_preprocess, plans_summary, predict_files, read_volume,
                              train_fold, write_case_images, write_dataset_json, write_splits, write_training_case)
from benchmark.config import BOOLEAN, Checked, MethodConfig, Rule, build_section, checked, integer, number
from benchmark.data.case import DatasetInfo
from benchmark.data.manifest import MANIFEST, file_sha256, load_manifest
from benchmark.data.preprocess import load_split, original_intensities
from benchmark.data.store import CaseFileError, read_json, save_arrays, staged_folder
from benchmark.errors import SegbenchError
from benchmark.inference import write_predictions
from benchmark.methods.interface import TrainsItself
from benchmark.provenance import git_revision, json_hash
from benchmark.records import PredictionRecord, RunRecord, Status, write_record
from benchmark.training.checkpoint import CheckpointError, load_torch_file
from benchmark.training.trainer import weights_hash, write_loss_csv, write_not_run

METHOD = "nnunet"
WORK = ".nnunet-work"       # beside model/ in the run folder; removed after training
MODEL_SUBDIR = "nnunet"     # the trained nnU-Net model folder inside model/
UNCERTAINTY = "zeros: nnU-Net gives one deterministic sample"
NFE = ("network evaluations per slice, counted: folds x sliding-window tiles x mirrored copies "
       "(1 + the mirror-axis combinations: 4 with 2D mirroring)")
RATER_RULE = ("each rater's annotation is a training case of its own (the image repeated), so every sampled patch "
              "carries a uniformly random rater, as every method of the suite trains")
ENSEMBLE = "the mean of the folds' logits (nnU-Net's ensemble of folds)"
WORKERS = Rule('an integer >= 0 or "auto"', lambda v: v == "auto" or integer(0).test(v))


@dataclass(frozen=True)
class NNUNetSettings(Checked):
    """``method.nnunet.model``. The schedule and predictor defaults are nnU-Net's own (nnUNetTrainer: 1000 epochs x
    250 iterations, 50 validation iterations; nnUNetPredictor: tile step 0.5, mirroring on). ``folds`` and
    ``augmentation_workers`` default to the suite's choice, one model whose two runs give identical weights; nnU-Net's
    own are 5 folds ensembled (nnunetv2 training/nnUNetTrainer/nnUNetTrainer.py:624) and ``"auto"``
    (:func:`baselines.nnunet.augmentation_workers`), which the paper profile sets."""
    epochs: int = checked(1000, integer(1))
    iterations_per_epoch: int = checked(250, integer(1))
    val_iterations: int = checked(50, integer(1))
    tile_step_size: float = checked(0.5, number(0, 1, low_open=True))
    use_mirroring: bool = checked(True, BOOLEAN)
    num_processes: int = checked(1, integer(1))   # fingerprint and preprocessing workers (nnU-Net's -npfp / -np)
    folds: int = checked(1, integer(1))           # 1: the suite's train/val split; k > 1: k-fold CV, ensembled
    augmentation_workers: int | str = checked(0, WORKERS)  # nnUNet_n_proc_DA; 0: in the training process

    @classmethod
    def from_model(cls, model: dict | None) -> "NNUNetSettings":
        return build_section(cls, model, f"method.{METHOD}.model")


class NNUNet(TrainsItself):
    """The registry entry of nnU-Net (see the module docstring)."""

    @staticmethod
    def check_model(model: dict) -> None:
        NNUNetSettings.from_model(model)

    @staticmethod
    def train(processed: Path, out: Path, config: MethodConfig, max_steps: int | None = None) -> RunRecord:
        return train(processed, out, config, max_steps)

    @staticmethod
    def predict(processed: Path, model_dir: Path, out: Path, config: MethodConfig) -> PredictionRecord:
        return predict(processed, model_dir, out, config)


# ---------------------------------------------------------------------------------------------------------------
# Export and import


def channel_names(info: DatasetInfo) -> list[str]:
    """nnU-Net channel names for a dataset's images, as nnU-Net's own dataset conversions name them: ``CT`` for CT
    (its CT normalisation; nnunetv2 dataset_conversion/Dataset218_Amos2022_task1.py:47), ``R G B`` for colour
    images (Dataset120_RoadSegmentation.py:85), the modality otherwise (Dataset027_ACDC.py:77, ``cineMRI``); every
    name but ``CT`` gets nnU-Net's per-image z-score."""
    if info.modality == "CT":
        return ["CT"] * info.channels
    if info.channels == 3:
        return ["R", "G", "B"]
    return [info.modality] * info.channels


def training_case_id(case_id: str, rater: int) -> str:
    return f"{case_id}_rater{rater}"


def export_raw(processed: Path, raw_root: Path, folds: int = 1, dataset_id: int = DATASET_ID) -> dict:
    """Write the train and val splits of ``processed`` (never test) as nnU-Net raw dataset under ``raw_root``, each
    image in its source's intensities and one training case per rater (:func:`training_case_id`).

    Returns ``{"folder", "dataset_json", "cases": {"train": n, "val": n} (the suite's cases), "training_cases": n,
    "splits": [{"train": [...], "val": [...]}] (one per fold, training case ids)}``.
    """
    processed = Path(processed)
    manifest = load_manifest(processed)
    info = manifest.dataset
    folder = Path(raw_root) / dataset_name(info.name, dataset_id)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    subjects: dict[str, dict[str, list[str]]] = {}  # split -> subject -> its training case ids
    n_cases = {}
    for split in ("train", "val"):
        manifest, cases = load_split(processed, split)
        subjects[split], n_cases[split] = {}, len(cases)
        for entry, case in zip(manifest.split(split), cases):
            image = original_intensities(case.image, entry)
            for r, label in enumerate(case.label):
                write_training_case(folder, training_case_id(case.case_id, r), image, label, case.spacing)
                subjects[split].setdefault(case.subject_id, []).append(training_case_id(case.case_id, r))
    ids = {split: sorted(c for cs in groups.values() for c in cs) for split, groups in subjects.items()}
    n_training = len(ids["train"]) + len(ids["val"])
    dataset_json = write_dataset_json(
        folder, info.name, f"{info.name} ({info.stands_for or 'suite dataset'}): train and val splits of the suite; "
                           f"one training case per rater of {info.n_annotators}",
        channel_names(info), info.class_names, n_training)
    if folds == 1:
        splits = [{"train": ids["train"], "val": ids["val"] or ids["train"]}]
    else:
        splits = crossval_splits({**subjects["train"], **subjects["val"]}, folds)
    return {"folder": folder, "dataset_json": dataset_json, "cases": n_cases, "training_cases": n_training,
            "splits": splits}


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


def train(processed: Path, out: Path, mcfg: MethodConfig, max_steps: int | None = None) -> RunRecord:
    """The train stage for nnU-Net: export, plan, preprocess, train every fold; writes ``out/model`` and
    ``out/loss.csv``."""
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
                "predict": dataclasses.asdict(mcfg.predict), "manifest_sha256": manifest_sha}
    work = out / WORK
    shutil.rmtree(work, ignore_errors=True)
    device = default_device()
    n_proc_da = augmentation_workers(settings.augmentation_workers)
    t0 = time.perf_counter()
    try:
        exported = export_raw(processed, work / "nnUNet_raw", settings.folds)
        t_export = time.perf_counter()
        with nnunet_environment(work, n_proc_da=max(1, cfg.threads)):
            plan_and_preprocess(DATASET_ID, settings.num_processes)
        t_plan = time.perf_counter()
        name = dataset_name(info.name)
        plans = json.loads((work / "nnUNet_preprocessed" / name / f"{PLANS}.json").read_text())
        write_splits(work, name, exported["splits"])
        folds = []
        for fold in range(settings.folds):
            trainer = train_fold(work, name, fold, settings.epochs, settings.iterations_per_epoch,
                                 settings.val_iterations, cfg.seed, n_proc_da, device)
            folds.append({"history": loss_history(trainer, settings.iterations_per_epoch),
                          "weights_sha256": weights_hash(trainer.network.state_dict()),
                          "pseudo_dice": _float(trainer.logger.get_value("ema_fg_dice", step=-1))})
        results = Path(trainer.output_folder_base)
        n_params = int(sum(p.numel() for p in trainer.network.parameters()))
        del trainer
        t_train = time.perf_counter()
        history = _mean_history([f["history"] for f in folds])
        meta = RunRecord(
            Status.OK, method=METHOD, dataset=info.name,
            steps=settings.epochs * settings.iterations_per_epoch, world_size=1, device=str(device),
            seconds=round(t_train - t_plan, 3), final_loss=history[-1]["loss"] if history else None,
            model_params=mcfg.model, train=resolved["train"], predict=resolved["predict"],
            in_channels=info.channels, num_classes=info.num_classes,
            fingerprint=json_hash({k: v for k, v in resolved.items() if k != "predict"}),
            manifest_sha256=manifest_sha, git_revision=git_revision(),
            weights_sha256=hashlib.sha256("".join(f["weights_sha256"] for f in folds).encode()).hexdigest(),
            nnunet={"nnunetv2_version": version("nnunetv2"), "trainer": SegbenchNNUNetTrainer.__name__,
                "configuration": CONFIGURATION, "plans_identifier": PLANS,
                "settings": dataclasses.asdict(settings), "plans": plans_summary(plans), "params": n_params,
                "folds": settings.folds, "ensemble": ENSEMBLE if settings.folds > 1 else "one model",
                "split": "the suite's train/val split" if settings.folds == 1 else
                         f"{settings.folds}-fold cross-validation over the train and val subjects (nnU-Net's "
                         f"KFold, seed 12345, on subjects)",
                "rater_rule": RATER_RULE, "intensities": f"the source's, channels named {channel_names(info)}",
                "cases": {**exported["cases"], "training_cases": exported["training_cases"],
                          "validated_on": "each fold's held-out subjects" if settings.folds > 1 else
                          "val split" if exported["cases"]["val"] else "train split (val is empty)"},
                "fold_weights_sha256": [f["weights_sha256"] for f in folds],
                "final_ema_pseudo_dice": [f["pseudo_dice"] for f in folds],
                "seeded": ["random", "numpy", "torch"],
                "augmentation_workers": settings.augmentation_workers, "nnUNet_n_proc_DA": n_proc_da},
            timings={"export_s": round(t_export - t0, 3), "plan_preprocess_s": round(t_plan - t_export, 3),
                     "train_s": round(t_train - t_plan, 3), "total_s": round(t_train - t0, 3)})
        _write_model(out, results, meta, processed, settings.folds)
        write_loss_csv(out / "loss.csv", history)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return meta


def _mean_history(histories: list[list[dict]]) -> list[dict]:
    """One row per epoch from the folds' rows: their mean loss, the lr (the same in every fold), and the seconds of
    all folds' training up to that epoch."""
    return [{"step": rows[0]["step"], "loss": float(np.mean([r["loss"] for r in rows])), "lr": rows[0]["lr"],
             "seconds": round(sum(r["seconds"] for r in rows), 3)} for rows in zip(*histories)]


def _float(v):
    return None if v is None or not np.isfinite(v) else float(v)


def _write_model(out: Path, results: Path, meta: RunRecord, processed: Path, folds: int) -> None:
    """``out/model``: nnU-Net's model folder (final checkpoints only), meta.json, manifest.json; built aside, then
    swapped in."""
    with staged_folder(out / "model") as tmp:
        shutil.copytree(results, tmp / MODEL_SUBDIR,
                        ignore=shutil.ignore_patterns("checkpoint_best.pth", "checkpoint_latest.pth"))
        missing = [f for f in range(folds) if not checkpoint_file(tmp / MODEL_SUBDIR, f).is_file()]
        if missing:
            raise RuntimeError(f"nnU-Net wrote no checkpoint_final.pth for fold(s) {missing} in {results}")
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


def checkpoint_file(folder: Path, fold: int) -> Path:
    """The final checkpoint of ``fold`` in the nnU-Net model folder ``folder``."""
    return Path(folder) / f"fold_{fold}" / "checkpoint_final.pth"


def load_predictor(model_dir: Path, settings: NNUNetSettings):
    """nnU-Net's predictor for the model in ``model_dir/nnunet``, the ensemble of its ``settings.folds`` folds. A
    missing model or fold, or a model trained with other folds, is a :class:`CaseFileError`, a truncated or refused
    checkpoint (anything beyond tensors, plain data and numpy scalars) a
    :class:`~benchmark.training.checkpoint.CheckpointError`, each naming the file."""
    folder = Path(model_dir) / MODEL_SUBDIR
    files = [checkpoint_file(folder, f) for f in range(settings.folds)]
    for file in files:
        if not file.is_file():
            raise CaseFileError(file, "trained nnU-Net model is missing (run the train stage)")
    trained = sorted(d.name for d in folder.glob("fold_*"))
    if trained != sorted(f.parent.name for f in files):
        raise CaseFileError(folder, f"the model has {trained}, method.{METHOD}.model.folds is {settings.folds} "
                                    f"(run the train stage)")
    plans = read_json(folder / "plans.json", "nnU-Net plans")
    dataset_json = read_json(folder / "dataset.json", "nnU-Net dataset.json")
    checkpoints = []
    for file in files:
        ckpt = load_torch_file(file, NNUNET_CHECKPOINT_GLOBALS)
        if not (isinstance(ckpt, dict) and {"network_weights", "init_args", "trainer_name"} <= ckpt.keys()):
            raise CheckpointError(file, "not an nnU-Net checkpoint (network_weights, init_args, trainer_name "
                                        "expected)")
        checkpoints.append(ckpt)
    return build_predictor(plans, dataset_json, checkpoints, settings.tile_step_size, settings.use_mirroring,
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
        for entry, case in zip(manifest.split("test"), cases):
            files = write_case_images(work / "imagesTs", case.case_id, original_intensities(case.image, entry),
                                      case.spacing)
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
        nnunet={"nnunetv2_version": version("nnunetv2"), "configuration": CONFIGURATION, "folds": settings.folds,
                "ensemble": ENSEMBLE if settings.folds > 1 else "one model",
                "tile_step_size": settings.tile_step_size, "use_mirroring": settings.use_mirroring,
                "mirror_axes": list(mirror_axes) if mirror_axes else [],
                "evaluations_per_tile": 2 ** len(mirror_axes) if mirror_axes else 1,
                "network_evaluations": calls[0], "slices": n_slices, "patch_size": list(patch),
                "params": int(sum(p.numel() for p in network.parameters())),
                "macs_per_evaluation": macs,
                "macs_counted_by": "fvcore (one multiply-add = 1), one evaluation at the patch size"})
