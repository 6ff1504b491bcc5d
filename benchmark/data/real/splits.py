"""Subject splits of the real datasets: the published one where there is one, else seeded fractions.

``data.splits`` chooses: ``"standard"`` uses a dataset's published train/test split (its module says which)
and draws validation subjects from the training part, a share ``split.val / (split.train + split.val)``,
seeded by ``data.seed``; ``"seeded"`` ignores published splits and splits all subjects by ``data.split``.
Datasets without a published split always use seeded fractions. The manifest records which was used.
"""
from __future__ import annotations

import numpy as np

from benchmark.config import DataConfig
from benchmark.data.interface import DataFormatError
from benchmark.data.manifest import assign_splits


def seeded(subjects, cfg: DataConfig) -> dict[str, str]:
    return assign_splits(list(subjects), cfg.split, cfg.seed)


def standard(train_subjects, test_subjects, cfg: DataConfig) -> dict[str, str]:
    """Published train/test subjects -> train/val/test, validation drawn from the training subjects."""
    train, test = sorted(set(train_subjects)), sorted(set(test_subjects))
    overlap = set(train) & set(test)
    if overlap:
        raise DataFormatError(f"subjects in both the published train and test split: {sorted(overlap)[:5]}")
    share = cfg.split.get("val", 0) / max(1e-12, cfg.split.get("train", 0) + cfg.split.get("val", 0))
    n_val = min(len(train) - 1, int(round(share * len(train)))) if share > 0 else 0
    val = set(np.random.default_rng(cfg.seed).permutation(train)[:n_val].tolist()) if n_val > 0 else set()
    out = {s: "val" if s in val else "train" for s in train}
    out.update({s: "test" for s in test})
    return out


def choose(published: tuple[list[str], list[str]] | None, subjects, cfg: DataConfig) -> dict[str, str]:
    """``standard`` on ``published`` (train, test) when given and ``data.splits`` asks for it, else ``seeded``."""
    if published is not None and cfg.splits == "standard":
        return standard(*published, cfg)
    return seeded(subjects, cfg)


def by_part(dataset: str, cases, train_parts, cfg: DataConfig) -> dict[str, str]:
    """The published split a release encodes in its folders or names (``extra["part"]`` of each case):
    cases of ``train_parts`` train (validation drawn from them), the others test. Under ``standard``, a
    release missing one side, or a patient on both sides, is an error that names ``dataset`` and the way out."""
    train = [c.subject_id for c in cases if c.extra["part"] in train_parts]
    test = [c.subject_id for c in cases if c.extra["part"] not in train_parts]
    hint = "set data.splits: seeded to split by patient instead"
    if cfg.splits == "standard" and not (train and test):
        raise DataFormatError(f"{dataset}: only {'training' if train else 'test'} cases were loaded, so the published "
                              f"split cannot be kept; extract the whole release or {hint}")
    try:
        return choose((train, test), [c.subject_id for c in cases], cfg)
    except ValueError as e:
        raise DataFormatError(f"{dataset}: {e}; {hint}") from e
