"""nnU-Net (Isensee et al., Nature Methods 18:203-211, 2021) as a baseline: the real ``nnunetv2`` package, wrapped.

nnU-Net configures, trains and predicts by itself, so it is not a :class:`SegmentationMethod`: it takes over the
train and predict stages (``segbench train DATASET nnunet``, ``segbench predict DATASET nnunet``) through
:class:`NNUNet`'s ``train_external`` / ``predict_external`` (the hook in ``benchmark/cli.py``). Its predictions are
written in the suite's format, so the evaluate stage scores them exactly as every other method's.

Train (``train_external``), in a work folder ``<run>/.nnunet-work`` that holds nnU-Net's three folders
(``nnUNet_raw``, ``nnUNet_preprocessed``, ``nnUNet_results``; nnU-Net's environment variables point there for the
run only and are restored after it):

1. export (:func:`export_raw`): the train and val splits, never test, as ``Dataset001_<Name>``. One case = one
   NIfTI volume ``(Z, H, W)`` per channel (``<case>_000c.nii.gz``) with the case's spacing from the manifest, so
   nnU-Net's ``2d`` configuration samples 2D slices of whole volumes, as it does for its own 3D datasets (a 2D
   image is a volume of one slice). The label is the suite's reference: the raters fused by
   :func:`benchmark.metrics.fusion.fuse` with ``evaluation.reference`` (majority vote by default), as the evaluate
   stage builds it. Channels are named ``zscore``: the suite's images are already z-scored per case and channel,
   so nnU-Net's per-image z-score is the identity and its CT scheme, which needs Hounsfield units, does not apply.
2. plan and preprocess: fingerprint, nnU-Net's default ``ExperimentPlanner`` with ``suppress_transpose=True`` (the
   suite's slices are along Z; nnU-Net would otherwise pick the slicing axis from the spacing), ``DefaultPreprocessor``
   for ``2d`` only; ``num_processes`` workers (nnU-Net's ``-npfp``/``-np``; with 1, nnU-Net's worker functions run
   in this process instead of in one spawned worker).
3. train fold 0 of a one-fold ``splits_final.json``: train = the suite's train split, val = its val split (the train
   split when val is empty; nnU-Net's validation is only its per-epoch pseudo Dice), with
   :class:`SegbenchNNUNetTrainer` (``nnUNetTrainer`` with the schedule from ``method.nnunet.model``), seeded
   (random, numpy, torch from ``train.seed``) with ``nnUNet_n_proc_DA=0``, so two runs give identical weights on CPU.
   nnU-Net's own final validation (``perform_actual_validation``) is skipped: the suite evaluates on its test split.
4. ``<run>/model`` (written as ``.model.tmp`` then renamed): ``nnunet/`` (plans.json, dataset.json,
   dataset_fingerprint.json, ``fold_0/checkpoint_final.pth``, nnU-Net's log and progress plot), ``meta.json``,
   ``manifest.json``; ``<run>/loss.csv`` has one row per epoch (step = iterations so far). The work folder is removed.

Predict (``predict_external``): ``nnUNetPredictor`` built from the saved plans and checkpoint (not by trainer name:
that lookup walks nnunetv2's trainer package, whose timm/torchvision imports fail beside a CPU torch), Gaussian
sliding window with ``tile_step_size`` and mirroring (``use_mirroring``, nnU-Net's default on), run file to file
(``predict_from_files_sequential``: NIfTI in, NIfTI out, no worker processes) on the test split; each output is
imported by :func:`import_prediction` as ``samples`` ``(1, Z, H, W)`` uint8 and ``uncertainty`` zeros.
``nfe_per_sample`` is the number of network evaluations per slice, counted (tiles x mirrored copies: 4 with 2D
mirroring on a slice that fits one tile).

Where this departs from nnU-Net's own protocol: one model (fold 0 on the suite's train/val split) instead of the
ensemble of five cross-validation folds; the ``2d`` configuration only (nnU-Net would also train ``3d_fullres`` for
volumes and pick by cross-validation); no postprocessing search; the schedule from the profile (nnU-Net: 1000 epochs
x 250 iterations); the progress plot every ``PLOT_EVERY`` epochs instead of every epoch.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import random
import re
import shutil
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import SimpleITK as sitk
import torch
from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from benchmark.config import ConfigError, MethodConfig
from benchmark.data.manifest import MANIFEST, file_sha256, load_manifest
from benchmark.data.preprocess import load_split
from benchmark.data.store import CaseFileError, read_json, save_arrays, write_json
from benchmark.inference import write_predictions
from benchmark.metrics.fusion import fuse
from benchmark.provenance import git_revision, json_hash
from benchmark.training.trainer import weights_hash, write_loss_csv, write_not_run

METHOD = "nnunet"
DATASET_ID = 1              # the nnU-Net folders are private to one run, so one id serves every dataset
CONFIGURATION = "2d"
PLANS = "nnUNetPlans"
FOLD = 0
FILE_ENDING = ".nii.gz"
WORK = ".nnunet-work"       # beside model/ in the run folder; removed after training
MODEL_SUBDIR = "nnunet"     # the trained nnU-Net model folder inside model/
UNCERTAINTY = "zeros: nnU-Net gives one deterministic sample"
PLOT_EVERY = 50             # epochs between nnU-Net's progress plots (nnU-Net: every epoch)
NFE = ("network evaluations per slice, counted: sliding-window tiles x mirrored copies "
       "(1 + the mirror-axis combinations: 4 with 2D mirroring)")


@dataclass(frozen=True)
class NNUNetSettings:
    """``method.nnunet.model``. The defaults are nnU-Net's own (nnUNetTrainer: 1000 epochs x 250 iterations,
    50 validation iterations; nnUNetPredictor: tile step 0.5, mirroring on)."""
    epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations: int = 50
    tile_step_size: float = 0.5
    use_mirroring: bool = True
    num_processes: int = 1    # fingerprint and preprocessing workers (nnU-Net's -npfp / -np)

    @classmethod
    def from_model(cls, model: dict | None) -> "NNUNetSettings":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(model or {}) - names)
        if unknown:
            raise ConfigError(f"method.{METHOD}.model: unknown key(s) {unknown} (allowed: {sorted(names)})")
        s = cls(**(model or {}))
        for key in ("epochs", "iterations_per_epoch", "val_iterations", "num_processes"):
            v = getattr(s, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"method.{METHOD}.model.{key}: must be an integer >= 1, got {v!r}")
        if not isinstance(s.use_mirroring, bool):
            raise ConfigError(f"method.{METHOD}.model.use_mirroring: must be true or false, got {s.use_mirroring!r}")
        if isinstance(s.tile_step_size, bool) or not isinstance(s.tile_step_size, (int, float)) \
                or not 0 < s.tile_step_size <= 1:
            raise ConfigError(f"method.{METHOD}.model.tile_step_size: must be in (0, 1], got {s.tile_step_size!r}")
        return s


class SegbenchNNUNetTrainer(nnUNetTrainer):
    """``nnUNetTrainer`` with the suite's schedule (:meth:`set_schedule`, from ``method.nnunet.model``), no
    network-architecture plot (it needs hiddenlayer) and fewer progress plots. Everything else is nnU-Net's: the
    network from the plans, SGD with Nesterov momentum and poly learning rate, Dice + CE with deep supervision, its
    data augmentation and foreground oversampling."""

    def set_schedule(self, epochs: int, iterations_per_epoch: int, val_iterations: int) -> None:
        self.num_epochs = epochs
        self.num_iterations_per_epoch = iterations_per_epoch
        self.num_val_iterations_per_epoch = val_iterations

    def plot_network_architecture(self):
        pass

    def on_epoch_end(self):
        """nnU-Net's, with its progress plot (3-4 s on a CPU) every ``PLOT_EVERY`` epochs and after the last."""
        epoch = self.current_epoch
        if (epoch + 1) % PLOT_EVERY and epoch != self.num_epochs - 1:
            self.logger.plot_progress_png = lambda *_: None  # shadows the method for this epoch only
        try:
            super().on_epoch_end()
        finally:
            self.logger.__dict__.pop("plot_progress_png", None)


class NNUNet:
    """The registry entry of nnU-Net: a method that trains and predicts by itself (see the module docstring).

    ``benchmark/cli.py`` hands the train and predict stages of any registered class that has ``train_external``
    and ``predict_external`` to it; it has no ``loss``/``sample``, so the stages that build a method (complexity,
    nfe-sweep) do not apply."""

    def __init__(self, *args, **kwargs):
        raise TypeError(f"{METHOD} trains and predicts by itself (train_external/predict_external); it is not a "
                        f"SegmentationMethod and cannot be built for the complexity or nfe-sweep stages")

    @staticmethod
    def train_external(processed: Path, out: Path, mcfg: MethodConfig, reference: str = "majority",
                       max_steps: int | None = None) -> dict:
        return train_external(processed, out, mcfg, reference, max_steps)

    @staticmethod
    def predict_external(processed: Path, model_dir: Path, out: Path, mcfg: MethodConfig) -> dict:
        return predict_external(processed, model_dir, out, mcfg)


# ---------------------------------------------------------------------------------------------------------------
# nnU-Net's folders and environment


def dataset_name(name: str, dataset_id: int = DATASET_ID) -> str:
    """nnU-Net's ``DatasetXXX_Name`` for a suite dataset: ``phantom-cardiac`` -> ``Dataset001_PhantomCardiac``."""
    return f"Dataset{dataset_id:03d}_" + re.sub(r"[^A-Za-z0-9]", "", name.title())


@contextlib.contextmanager
def nnunet_environment(root: Path, n_proc_da: int):
    """nnU-Net's environment variables pointing into ``root`` for the duration of the block, then restored.

    nnunetv2 >= 2.7 reads ``nnUNet_raw`` etc. when a path is used, not at import, so setting them here is enough;
    worker processes it spawns inherit them. ``nnUNet_n_proc_DA=0`` runs augmentation in this process (seeded,
    deterministic); the planner calls ``torch.set_num_threads(nnUNet_n_proc_DA)``, so planning needs >= 1.
    """
    root = Path(root)
    new = {"nnUNet_raw": str(root / "nnUNet_raw"), "nnUNet_preprocessed": str(root / "nnUNet_preprocessed"),
           "nnUNet_results": str(root / "nnUNet_results"), "nnUNet_n_proc_DA": str(n_proc_da),
           "nnUNet_compile": "false", "nnUNet_wandb_enabled": "0"}
    old = {k: os.environ.get(k) for k in new}
    os.environ.update(new)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def seed_everything(seed: int) -> None:
    """nnU-Net seeds nothing: its network init uses torch's generator, its data loader and augmentation numpy's and
    torch's, so these three make a run repeatable (with ``nnUNet_n_proc_DA=0``)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------------
# Export and import


def write_volume(path: Path, volume: np.ndarray, spacing) -> None:
    """A ``(Z, H, W)`` array as a NIfTI volume; ``spacing`` is ``(z, y, x)`` mm (SimpleITK takes ``(x, y, z)``)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume))
    image.SetSpacing(tuple(float(s) for s in reversed(tuple(spacing))))
    sitk.WriteImage(image, str(path), True)


def read_volume(path: Path) -> np.ndarray:
    """A NIfTI volume as a ``(Z, H, W)`` array."""
    if not Path(path).is_file():
        raise CaseFileError(path, "nnU-Net output is missing")
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def write_case_images(folder: Path, case_id: str, image: np.ndarray, spacing) -> list[Path]:
    """A ``(Z, C, H, W)`` image as one file per channel, ``<case>_000c.nii.gz`` (nnU-Net's naming)."""
    files = []
    for c in range(image.shape[1]):
        files.append(Path(folder) / f"{case_id}_{c:04d}{FILE_ENDING}")
        write_volume(files[-1], image[:, c].astype(np.float32), spacing)
    return files


def export_raw(processed: Path, raw_root: Path, reference: str = "majority", dataset_id: int = DATASET_ID) -> dict:
    """Write the train and val splits of ``processed`` (never test) as nnU-Net raw dataset under ``raw_root``.

    Returns ``{"folder", "dataset_json", "train": [case ids], "val": [case ids]}``.
    """
    processed = Path(processed)
    manifest = load_manifest(processed)
    info = manifest.dataset
    folder = Path(raw_root) / dataset_name(info.name, dataset_id)
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    ids: dict[str, list[str]] = {}
    for split in ("train", "val"):
        _, cases = load_split(processed, split)
        for case in cases:
            write_case_images(folder / "imagesTr", case.case_id, case.image, case.spacing)
            write_volume(folder / "labelsTr" / f"{case.case_id}{FILE_ENDING}",
                         fuse(case.label, info.num_classes, reference), case.spacing)
        ids[split] = [c.case_id for c in cases]
    dataset_json = {
        "name": info.name,
        "description": f"{info.name} ({info.stands_for or 'suite dataset'}): train and val splits of the suite; "
                       f"labels = {reference} of {info.n_annotators} rater(s)",
        "channel_names": {str(c): "zscore" for c in range(info.channels)},
        "labels": {name: k for k, name in enumerate(info.class_names)},
        "numTraining": len(ids["train"]) + len(ids["val"]),
        "file_ending": FILE_ENDING,
        "overwrite_image_reader_writer": "SimpleITKIO",
    }
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=1))
    return {"folder": folder, "dataset_json": dataset_json, **ids}


def import_prediction(seg_file: Path, out_file: Path, shape: tuple[int, int, int], num_classes: int) -> np.ndarray:
    """nnU-Net's output segmentation ``seg_file`` -> the suite's ``<case>.npz``: ``samples`` ``(1, Z, H, W)`` uint8,
    ``uncertainty`` zeros float16 ``(Z, H, W)``. Checks the shape and the label range against the test case."""
    seg = read_volume(seg_file)
    if seg.shape != tuple(shape):
        raise CaseFileError(seg_file, f"nnU-Net output has shape {seg.shape}, the case is (Z, H, W) = {tuple(shape)}")
    if seg.size and (seg.min() < 0 or seg.max() >= num_classes):
        raise CaseFileError(seg_file, f"nnU-Net output has labels outside 0..{num_classes - 1}")
    samples = seg.astype(np.uint8)[None]
    save_arrays(out_file, samples=samples, uncertainty=np.zeros(seg.shape, dtype=np.float16))
    return samples


# ---------------------------------------------------------------------------------------------------------------
# Plan, preprocess, train


class _InlinePool:
    """The part of ``multiprocessing.Pool`` that nnU-Net's fingerprint extractor and preprocessor use
    (``starmap_async``, ``_pool``), running each call at once in this process."""

    _pool: list = []

    def __init__(self, processes=None):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def starmap_async(self, fn, iterable):
        return _Ready([fn(*args) for args in iterable])


class _Ready:
    def __init__(self, value):
        self.value = value

    def ready(self) -> bool:
        return True

    def get(self, timeout=None):
        return self.value


@contextlib.contextmanager
def _workers(num_processes: int):
    """nnU-Net's own process pools for ``num_processes > 1``; for 1, its worker functions run in this process
    (nnU-Net would start one spawned worker, which re-imports torch and nnunetv2: 5-15 s a pool here, and a
    caller's ``__main__`` without a main guard is run again)."""
    if num_processes > 1:
        yield
        return
    get_context = multiprocessing.get_context
    multiprocessing.get_context = lambda method=None: (
        SimpleNamespace(Pool=_InlinePool) if method == "spawn" else get_context(method))
    try:
        yield
    finally:
        multiprocessing.get_context = get_context


def plan_and_preprocess(dataset_id: int = DATASET_ID, num_processes: int = 1) -> dict:
    """Fingerprint, plan (default planner, no transpose) and preprocess the ``2d`` configuration; returns the plans.
    Runs inside :func:`nnunet_environment`."""
    with _workers(num_processes):
        DatasetFingerprintExtractor(dataset_id, num_processes, verbose=False).run(overwrite_existing=True)
        planner = ExperimentPlanner(dataset_id, plans_name=PLANS, suppress_transpose=True)
        plans = planner.plan_experiment()
        preprocessor = PlansManager(plans).get_configuration(CONFIGURATION).preprocessor_class(verbose=False)
        preprocessor.show_progress_bar = False
        preprocessor.run(dataset_id, CONFIGURATION, PLANS, num_processes=num_processes)
    return plans


def plans_summary(plans: dict) -> dict:
    c = plans["configurations"][CONFIGURATION]
    arch = c["architecture"]
    kw = arch["arch_kwargs"]
    return {"configuration": CONFIGURATION, "patch_size": c["patch_size"], "batch_size": c["batch_size"],
            "spacing": c["spacing"], "median_image_size_in_voxels": c["median_image_size_in_voxels"],
            "normalization_schemes": c["normalization_schemes"], "transpose_forward": plans["transpose_forward"],
            "network": arch["network_class_name"].rsplit(".", 1)[-1], "n_stages": kw.get("n_stages"),
            "features_per_stage": kw.get("features_per_stage"), "strides": kw.get("strides")}


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train_external(processed: Path, out: Path, mcfg: MethodConfig, reference: str = "majority",
                   max_steps: int | None = None) -> dict:
    """The train stage for nnU-Net: export, plan, preprocess, train; writes ``out/model`` and ``out/loss.csv``."""
    if max_steps is not None:
        raise ValueError(f"{METHOD}: --max-steps is not supported (nnU-Net trains whole epochs)")
    processed, out = Path(processed), Path(out)
    manifest = load_manifest(processed)
    if manifest.status != "ok":
        write_not_run(out, manifest.reason)
        return {"status": "not_run", "reason": manifest.reason, "steps": 0, "seconds": 0.0, "final_loss": None}
    settings = NNUNetSettings.from_model(mcfg.model)
    cfg = mcfg.train
    info = manifest.dataset
    torch.set_num_threads(cfg.threads)
    manifest_sha = file_sha256(processed / MANIFEST)
    resolved = {"method": METHOD, "model": dataclasses.asdict(settings), "train": dataclasses.asdict(cfg),
                "predict": dataclasses.asdict(mcfg.predict), "reference": reference, "manifest_sha256": manifest_sha}
    work = out / WORK
    shutil.rmtree(work, ignore_errors=True)
    device = _device()
    t0 = time.perf_counter()
    try:
        exported = export_raw(processed, work / "nnUNet_raw", reference)
        t_export = time.perf_counter()
        with nnunet_environment(work, n_proc_da=max(1, cfg.threads)):
            plan_and_preprocess(DATASET_ID, settings.num_processes)
        t_plan = time.perf_counter()
        name = dataset_name(info.name)
        pre = work / "nnUNet_preprocessed" / name
        val = exported["val"] or exported["train"]
        write_json(pre / "splits_final.json", [{"train": exported["train"], "val": val}])
        plans = json.loads((pre / f"{PLANS}.json").read_text())
        dataset_json = json.loads((pre / "dataset.json").read_text())
        with nnunet_environment(work, n_proc_da=0):
            seed_everything(cfg.seed)
            trainer = SegbenchNNUNetTrainer({**plans, "continue_training": False}, CONFIGURATION, FOLD,
                                            dataset_json, device)
            trainer.set_schedule(settings.epochs, settings.iterations_per_epoch, settings.val_iterations)
            trainer.run_training()
        t_train = time.perf_counter()
        network = trainer.network
        history = _history(trainer, settings.iterations_per_epoch)
        meta = {"status": "ok", "method": METHOD, "dataset": info.name,
                "steps": settings.epochs * settings.iterations_per_epoch, "world_size": 1, "device": str(device),
                "seconds": round(t_train - t_plan, 3), "final_loss": history[-1]["loss"] if history else None,
                "model_params": mcfg.model, "train": resolved["train"], "predict": resolved["predict"],
                "in_channels": info.channels, "num_classes": info.num_classes,
                "fingerprint": json_hash({k: v for k, v in resolved.items() if k != "predict"}),
                "manifest_sha256": manifest_sha, "git_revision": git_revision(),
                "weights_sha256": weights_hash(network),
                "nnunet": {"nnunetv2_version": version("nnunetv2"), "trainer": type(trainer).__name__,
                           "configuration": CONFIGURATION, "fold": FOLD, "plans_identifier": PLANS,
                           "settings": dataclasses.asdict(settings), "plans": plans_summary(plans),
                           "params": int(sum(p.numel() for p in network.parameters())),
                           "reference": f"{reference} of {info.n_annotators} rater(s)",
                           "cases": {"train": len(exported["train"]), "val": len(exported["val"]),
                                     "validated_on": "val split" if exported["val"] else "train split (val is empty)"},
                           "final_ema_pseudo_dice": _float(trainer.logger.get_value("ema_fg_dice", step=-1)),
                           "seeded": ["random", "numpy", "torch"], "nnUNet_n_proc_DA": 0},
                "timings": {"export_s": round(t_export - t0, 3), "plan_preprocess_s": round(t_plan - t_export, 3),
                            "train_s": round(t_train - t_plan, 3), "total_s": round(t_train - t0, 3)}}
        _write_model(out, Path(trainer.output_folder_base), meta, processed)
        write_loss_csv(out / "loss.csv", history)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return meta


def _float(v):
    return None if v is None or not np.isfinite(v) else float(v)


def _history(trainer: nnUNetTrainer, iterations: int) -> list[dict]:
    """One ``loss.csv`` row per epoch: step = iterations so far, nnU-Net's mean train loss, lr, seconds."""
    get = lambda key: trainer.logger.get_value(key, step=None)  # noqa: E731
    losses, lrs, ends = get("train_losses"), get("lrs"), get("epoch_end_timestamps")
    start = get("epoch_start_timestamps")[0] if ends else 0.0
    return [{"step": (e + 1) * iterations, "loss": float(losses[e]), "lr": float(lrs[e]),
             "seconds": round(ends[e] - start, 3)} for e in range(len(losses))]


def _write_model(out: Path, results: Path, meta: dict, processed: Path) -> None:
    """``out/model``: nnU-Net's model folder (final checkpoint only), meta.json, manifest.json; built aside, renamed."""
    tmp, final = out / ".model.tmp", out / "model"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(results, tmp / MODEL_SUBDIR,
                    ignore=shutil.ignore_patterns("checkpoint_best.pth", "checkpoint_latest.pth"))
    if not (tmp / MODEL_SUBDIR / f"fold_{FOLD}" / "checkpoint_final.pth").is_file():
        raise RuntimeError(f"nnU-Net wrote no checkpoint_final.pth in {results}")
    shutil.copy2(processed / MANIFEST, tmp / MANIFEST)
    write_json(tmp / "meta.json", meta)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


# ---------------------------------------------------------------------------------------------------------------
# Predict


def load_predictor(model_dir: Path, settings: NNUNetSettings) -> nnUNetPredictor:
    """An ``nnUNetPredictor`` from ``model_dir/nnunet`` without nnU-Net's lookup of the trainer class by name."""
    folder = Path(model_dir) / MODEL_SUBDIR
    ckpt_file = folder / f"fold_{FOLD}" / "checkpoint_final.pth"
    if not ckpt_file.is_file():
        raise CaseFileError(ckpt_file, "trained nnU-Net model is missing (run the train stage)")
    plans = read_json(folder / "plans.json", "nnU-Net plans")
    dataset_json = read_json(folder / "dataset.json", "nnU-Net dataset.json")
    try:  # our own file, written by nnU-Net's trainer; it holds the trainer's init args, so not weights_only
        ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a broken file
        raise CaseFileError(ckpt_file, f"unreadable or truncated checkpoint ({type(e).__name__}: {e})") from e
    plans_manager = PlansManager(plans)
    cm = plans_manager.get_configuration(ckpt["init_args"]["configuration"])
    n_in = determine_num_input_channels(plans_manager, cm, dataset_json)
    n_out = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    network = SegbenchNNUNetTrainer.build_network_architecture(plans_manager, cm, n_in, n_out,
                                                               enable_deep_supervision=False)
    network.load_state_dict(ckpt["network_weights"])
    device = _device()
    predictor = nnUNetPredictor(tile_step_size=settings.tile_step_size, use_gaussian=True,
                                use_mirroring=settings.use_mirroring,
                                perform_everything_on_device=device.type == "cuda", device=device, verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    predictor.manual_initialization(network.to(device).eval(), plans_manager, cm, [ckpt["network_weights"]],
                                    dataset_json, ckpt["trainer_name"], ckpt.get("inference_allowed_mirroring_axes"))
    return predictor


def predict_external(processed: Path, model_dir: Path, out: Path, mcfg: MethodConfig) -> dict:
    """The predict stage for nnU-Net: ``out/<case>.npz`` and ``out/meta.json`` (built aside, then renamed)."""
    processed, out = Path(processed), Path(out)
    torch.set_num_threads(mcfg.train.threads)
    work = out.with_name(f".{out.name}{WORK}")

    def predict_cases(tmp: Path) -> dict:
        try:
            return _predict_cases(processed, Path(model_dir), tmp, work, NNUNetSettings.from_model(mcfg.model), mcfg)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    return write_predictions(model_dir, out, predict_cases)


def _predict_cases(processed: Path, model_dir: Path, out: Path, work: Path, settings: NNUNetSettings,
                   mcfg: MethodConfig) -> dict:
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
            with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):  # a few lines per case
                predictor.predict_from_files_sequential([[str(f) for f in files]],
                                                        [str(work / "predicted" / case.case_id)])
            seconds.append(time.perf_counter() - t0)
            import_prediction(work / "predicted" / f"{case.case_id}{FILE_ENDING}", out / f"{case.case_id}.npz",
                              case.label.shape[1:], info.num_classes)
            n_slices += case.image.shape[0]
    finally:
        hook.remove()
    patch = tuple(predictor.configuration_manager.patch_size)
    macs, _, _ = count_macs(network.cpu().eval(), (torch.zeros(1, info.channels, *patch),))
    mirror_axes = predictor.allowed_mirroring_axes if settings.use_mirroring else None
    evaluations = n_slices and calls[0] / n_slices
    return {"status": "ok", "dataset": info.name, "n_cases": len(cases), "n_samples_requested": mcfg.predict.n_samples,
            "n_samples": 1, "nfe_per_sample": int(evaluations) if float(evaluations).is_integer() else evaluations,
            "nfe_definition": NFE, "seconds_per_case": float(np.mean(seconds)) if seconds else 0.0,
            "seconds_total": float(np.sum(seconds)), "device": str(_device()), "seed": mcfg.predict.seed,
            "uncertainty": UNCERTAINTY,
            "nnunet": {"nnunetv2_version": version("nnunetv2"), "configuration": CONFIGURATION, "fold": FOLD,
                       "tile_step_size": settings.tile_step_size, "use_mirroring": settings.use_mirroring,
                       "mirror_axes": list(mirror_axes) if mirror_axes else [],
                       "evaluations_per_tile": 2 ** len(mirror_axes) if mirror_axes else 1,
                       "network_evaluations": calls[0], "slices": n_slices, "patch_size": list(patch),
                       "params": int(sum(p.numel() for p in network.parameters())),
                       "macs_per_evaluation": macs,
                       "macs_counted_by": "fvcore (one multiply-add = 1), one evaluation at the patch size"}}
