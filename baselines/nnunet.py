"""nnU-Net (Isensee et al., Nature Methods 18:203-211, 2021) as a baseline: the real ``nnunetv2`` package, driven.

nnU-Net configures, trains and predicts by itself, so it is not a :class:`SegmentationMethod`: the suite's
``benchmark/methods/nnunet.py`` (the registered ``nnunet``, a :class:`~benchmark.methods.interface.TrainsItself`)
takes over the train and predict stages, moves the suite's data in and out of nnU-Net's formats and writes the
suite's records. This module is nnU-Net's side only, and imports nothing from the suite.

In a work folder that holds nnU-Net's three folders (``nnUNet_raw``, ``nnUNet_preprocessed``, ``nnUNet_results``;
nnU-Net's environment variables point there for the run only and are restored after it, :func:`nnunet_environment`):

1. raw dataset: one case = one NIfTI volume ``(Z, H, W)`` per channel (``<case>_000c.nii.gz``) with the case's
   spacing, so nnU-Net's ``2d`` configuration samples 2D slices of whole volumes, as it does for its own 3D datasets
   (a 2D image is a volume of one slice), and one label volume (:func:`write_training_case`). The images are given
   in their source's intensities and the channels named as nnU-Net's users name them (the caller chooses; e.g.
   ``CT``, which selects nnU-Net's CT normalisation), so nnU-Net's own normalisation and crop to the non-zero
   region do their work (:func:`write_dataset_json`).
2. plan and preprocess (:func:`plan_and_preprocess`): fingerprint, nnU-Net's default ``ExperimentPlanner`` with
   ``suppress_transpose=True`` (the suite's slices are along Z; nnU-Net would otherwise pick the slicing axis from
   the spacing), ``DefaultPreprocessor`` for ``2d`` only; ``num_processes`` workers (nnU-Net's ``-npfp``/``-np``;
   with 1, nnU-Net's worker functions run in this process instead of in one spawned worker).
3. train each fold of ``splits_final.json`` (:func:`write_splits`; :func:`crossval_splits` makes nnU-Net's k-fold
   split, on groups of cases) with :class:`SegbenchNNUNetTrainer` (``nnUNetTrainer`` with a given schedule), each
   fold seeded (random, numpy, torch) before it starts (:func:`train_fold`). ``nnUNet_n_proc_DA`` workers augment
   the data (:func:`augmentation_workers`); with 0, augmentation runs in this process and two runs give identical
   weights on CPU. nnU-Net's own final validation (``perform_actual_validation``) is skipped.
4. predict (:func:`build_predictor`, :func:`predict_files`): ``nnUNetPredictor`` built from the saved plans and the
   checkpoints of every fold, whose logits it averages (nnU-Net's ensemble of folds; not by trainer name: that lookup
   walks nnunetv2's trainer package, whose timm/torchvision imports fail beside a CPU torch; the suite reads each
   checkpoint with ``torch.load(weights_only=True)``, never with nnU-Net's ``load_checkpoint``, which unpickles
   anything), Gaussian sliding window with ``tile_step_size`` and mirroring (``use_mirroring``, nnU-Net's default
   on), run file to file (``predict_from_files_sequential``: NIfTI in, NIfTI out, no workers).

Where this departs from nnU-Net's own protocol: the ``2d`` configuration only (nnU-Net would also train
``3d_fullres`` for volumes and pick by cross-validation); no postprocessing search; the schedule from the profile
(nnU-Net: 1000 epochs x 250 iterations); the cross-validation folds group the cases of one subject (nnU-Net splits
cases); the progress plot every ``PLOT_EVERY`` epochs instead of every epoch.
"""
from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import random
import re
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
from sklearn.model_selection import KFold

DATASET_ID = 1              # the nnU-Net folders are private to one run, so one id serves every dataset
CONFIGURATION = "2d"
PLANS = "nnUNetPlans"
FILE_ENDING = ".nii.gz"
PLOT_EVERY = 50             # epochs between nnU-Net's progress plots (nnU-Net: every epoch)
SPLIT_SEED = 12345          # nnU-Net's k-fold split seed (nnunetv2 training/nnUNetTrainer/nnUNetTrainer.py:624)
AUTO_WORKERS = 12           # nnU-Net's augmentation workers on a host it does not know
                            # (nnunetv2 utilities/default_n_proc_DA.py:47)


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


# ---------------------------------------------------------------------------------------------------------------
# nnU-Net's folders and environment


def dataset_name(name: str, dataset_id: int = DATASET_ID) -> str:
    """nnU-Net's ``DatasetXXX_Name`` for a suite dataset: ``phantom-cardiac`` -> ``Dataset001_PhantomCardiac``."""
    return f"Dataset{dataset_id:03d}_" + re.sub(r"[^A-Za-z0-9]", "", name.title())


@contextlib.contextmanager
def nnunet_environment(root: Path, n_proc_da: int):
    """nnU-Net's environment variables pointing into ``root`` for the duration of the block, then restored.

    nnunetv2 >= 2.7 reads ``nnUNet_raw`` etc. when a path is used, not at import, so setting them here is enough;
    worker processes it spawns inherit them. ``n_proc_da``: nnU-Net's data-augmentation workers, 0 runs augmentation
    in this process (seeded, deterministic); the planner calls ``torch.set_num_threads(nnUNet_n_proc_DA)``, so
    planning needs >= 1.
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


def augmentation_workers(setting: int | str) -> int:
    """nnU-Net's ``nnUNet_n_proc_DA`` for a setting: a number as it is; ``"auto"``: nnU-Net's own default for a
    host it does not know, 12, capped by the cores this process may use (nnunetv2 utilities/default_n_proc_DA.py:47-49
    caps by ``os.cpu_count()``; the affinity mask is what a SLURM job or a container is given)."""
    if setting == "auto":
        return min(AUTO_WORKERS, len(os.sched_getaffinity(0)))
    return int(setting)


def seed_everything(seed: int) -> None:
    """nnU-Net seeds nothing: its network init uses torch's generator, its data loader and augmentation numpy's and
    torch's, so these three make a run repeatable (with ``nnUNet_n_proc_DA=0``)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------------
# Raw dataset


def write_volume(path: Path, volume: np.ndarray, spacing) -> None:
    """A ``(Z, H, W)`` array as a NIfTI volume; ``spacing`` is ``(z, y, x)`` mm (SimpleITK takes ``(x, y, z)``)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume))
    image.SetSpacing(tuple(float(s) for s in reversed(tuple(spacing))))
    sitk.WriteImage(image, str(path), True)


def read_volume(path: Path) -> np.ndarray:
    """A NIfTI volume as a ``(Z, H, W)`` array."""
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def write_case_images(folder: Path, case_id: str, image: np.ndarray, spacing) -> list[Path]:
    """A ``(Z, C, H, W)`` image as one file per channel, ``<case>_000c.nii.gz`` (nnU-Net's naming)."""
    files = []
    for c in range(image.shape[1]):
        files.append(Path(folder) / f"{case_id}_{c:04d}{FILE_ENDING}")
        write_volume(files[-1], image[:, c].astype(np.float32), spacing)
    return files


def write_training_case(folder: Path, case_id: str, image: np.ndarray, label: np.ndarray, spacing) -> None:
    """One training case of a raw dataset ``folder``: ``image`` ``(Z, C, H, W)`` into ``imagesTr/``, ``label``
    ``(Z, H, W)`` into ``labelsTr/``."""
    folder = Path(folder)
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(exist_ok=True)
    write_case_images(folder / "imagesTr", case_id, image, spacing)
    write_volume(folder / "labelsTr" / f"{case_id}{FILE_ENDING}", label, spacing)


def write_dataset_json(folder: Path, name: str, description: str, channel_names: list[str], class_names,
                       n_training: int) -> dict:
    """``folder/dataset.json`` of a raw dataset of channels ``channel_names`` (nnU-Net picks each channel's
    normalisation by its name: ``CT`` is its CT scheme, any name it does not know its per-image z-score; nnunetv2
    preprocessing/normalization/map_channel_name_to_normalization.py:7-24) and classes ``class_names`` (0 is
    background); returns its content."""
    dataset_json = {
        "name": name,
        "description": description,
        "channel_names": {str(c): n for c, n in enumerate(channel_names)},
        "labels": {label: k for k, label in enumerate(class_names)},
        "numTraining": n_training,
        "file_ending": FILE_ENDING,
        "overwrite_image_reader_writer": "SimpleITKIO",
    }
    (Path(folder) / "dataset.json").write_text(json.dumps(dataset_json, indent=1))
    return dataset_json


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


def default_device() -> torch.device:
    """The GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def crossval_splits(groups: dict[str, list[str]], folds: int) -> list[dict]:
    """nnU-Net's k-fold cross-validation split (scikit-learn's ``KFold``, shuffled, seed 12345, over the sorted keys:
    nnunetv2 utilities/crossval_split.py:7-16) made on ``groups`` (subject -> its case ids), so the cases of one
    subject fall in one fold. Returns ``[{"train": [...], "val": [...]}]``, one per fold, case ids sorted."""
    keys = sorted(groups)
    if len(keys) < folds:
        raise ValueError(f"{folds} cross-validation folds need at least {folds} subjects, there are {len(keys)}")
    splits = []
    for tr, va in KFold(n_splits=folds, shuffle=True, random_state=SPLIT_SEED).split(keys):
        splits.append({part: sorted(c for i in idx for c in groups[keys[i]]) for part, idx in (("train", tr),
                                                                                             ("val", va))})
    return splits


def write_splits(work: Path, name: str, splits: list[dict]) -> None:
    """nnU-Net's ``splits_final.json`` of the preprocessed dataset ``name`` in ``work``: fold f trains on
    ``splits[f]["train"]`` and validates (its per-epoch pseudo Dice) on ``splits[f]["val"]``."""
    (Path(work) / "nnUNet_preprocessed" / name / "splits_final.json").write_text(json.dumps(splits, indent=1))


def train_fold(work: Path, name: str, fold: int, epochs: int, iterations_per_epoch: int, val_iterations: int,
               seed: int, n_proc_da: int, device: torch.device) -> SegbenchNNUNetTrainer:
    """Train fold ``fold`` of :func:`write_splits`'s split of the planned and preprocessed dataset ``name`` in
    ``work`` with ``n_proc_da`` augmentation workers; returns the trained trainer."""
    pre = Path(work) / "nnUNet_preprocessed" / name
    plans = json.loads((pre / f"{PLANS}.json").read_text())
    dataset_json = json.loads((pre / "dataset.json").read_text())
    with nnunet_environment(work, n_proc_da=n_proc_da):
        seed_everything(seed)
        trainer = SegbenchNNUNetTrainer({**plans, "continue_training": False}, CONFIGURATION, fold,
                                        dataset_json, device)
        trainer.set_schedule(epochs, iterations_per_epoch, val_iterations)
        trainer.run_training()
    return trainer


def loss_history(trainer: nnUNetTrainer, iterations: int) -> list[dict]:
    """One ``loss.csv`` row per epoch: step = iterations so far, nnU-Net's mean train loss, lr, seconds."""
    get = lambda key: trainer.logger.get_value(key, step=None)  # noqa: E731
    losses, lrs, ends = get("train_losses"), get("lrs"), get("epoch_end_timestamps")
    start = get("epoch_start_timestamps")[0] if ends else 0.0
    return [{"step": (e + 1) * iterations, "loss": float(losses[e]), "lr": float(lrs[e]),
             "seconds": round(ends[e] - start, 3)} for e in range(len(losses))]


# ---------------------------------------------------------------------------------------------------------------
# Predict


def build_predictor(plans: dict, dataset_json: dict, checkpoints: list[dict], tile_step_size: float,
                    use_mirroring: bool, device: torch.device) -> nnUNetPredictor:
    """An ``nnUNetPredictor`` from a trained model's plans, dataset.json and the loaded final checkpoints of its
    folds, without nnU-Net's lookup of the trainer class by name. With several folds it averages their logits
    (nnunetv2 inference/predict_from_raw_data.py:513-530), nnU-Net's ensemble."""
    checkpoint = checkpoints[0]
    plans_manager = PlansManager(plans)
    cm = plans_manager.get_configuration(checkpoint["init_args"]["configuration"])
    n_in = determine_num_input_channels(plans_manager, cm, dataset_json)
    n_out = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    network = SegbenchNNUNetTrainer.build_network_architecture(plans_manager, cm, n_in, n_out,
                                                               enable_deep_supervision=False)
    network.load_state_dict(checkpoint["network_weights"])
    predictor = nnUNetPredictor(tile_step_size=tile_step_size, use_gaussian=True, use_mirroring=use_mirroring,
                                perform_everything_on_device=device.type == "cuda", device=device, verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    predictor.manual_initialization(network.to(device).eval(), plans_manager, cm,
                                    [c["network_weights"] for c in checkpoints],
                                    dataset_json, checkpoint["trainer_name"],
                                    checkpoint.get("inference_allowed_mirroring_axes"))
    return predictor


def predict_files(predictor: nnUNetPredictor, files: list[Path], out_stem: Path) -> Path:
    """Segment one case given as one file per channel; returns nnU-Net's output ``<out_stem>.nii.gz``."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):  # a few lines per case
        predictor.predict_from_files_sequential([[str(f) for f in files]], [str(out_stem)])
    return Path(f"{out_stem}{FILE_ENDING}")
