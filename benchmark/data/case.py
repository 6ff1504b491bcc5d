"""The in-memory form of one case and of a dataset's description.

Every case is a stack of 2D slices, so volumes (cine-MRI, brain MRI) and single
images (fundus, histology, ultrasound) share one code path: a 2D image is a
stack of one slice.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is, independent of any one case.

    Attributes:
        name: registry name, e.g. ``"phantom-cardiac"``.
        modality: ``"MRI"``, ``"fundus"``, ``"histology"``, ``"ultrasound"``, ``"dermoscopy"`` or ``"CT"``.
        channels: image channels (1 for MRI/ultrasound, 3 for RGB).
        class_names: label names, index 0 is background.
        n_annotators: raters per case (1 for single-annotation data).
        stands_for: the paper dataset whose task structure this one mirrors.
        phantom: True when the images are synthetic.
        note: a footnote printed under every table that uses the dataset.
        regions: named evaluation regions, each a union of foreground class indices, scored beside the
            classes (e.g. REFUGE's whole optic disc = rim + cup, BraTS's whole tumour = NCR + ED + ET).
    """

    name: str
    modality: str
    channels: int
    class_names: tuple[str, ...]
    n_annotators: int = 1
    stands_for: str = ""
    phantom: bool = True
    note: str = ""
    regions: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, classes in self.regions.items():
            if not classes or len(set(classes)) != len(classes) or \
                    any(not isinstance(c, int) or not 0 < c < self.num_classes for c in classes):
                raise ValueError(f"region {name!r} must list distinct foreground classes 1..{self.num_classes - 1}, "
                                 f"got {list(classes)}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass
class Case:
    """One case: a volume or a single image.

    Attributes:
        case_id: unique within the dataset.
        subject_id: the patient/subject; splits are made on this.
        image: float32 ``(Z, C, H, W)``.
        label: uint8 ``(R, Z, H, W)``; R raters, values in ``[0, num_classes)``.
        spacing: ``(z, y, x)`` voxel size in mm, array-axis order.
        extra: what split rules and provenance need (e.g. ``"source"``: the native file it came from).
    """

    case_id: str
    subject_id: str
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    extra: dict = field(default_factory=dict)

    def header(self) -> "Case":
        """This case without its pixels (zero slices): what split rules need, kept cheaply for thousands of cases."""
        return Case(self.case_id, self.subject_id, np.empty((0, *self.image.shape[1:]), self.image.dtype),
                    np.empty((self.label.shape[0], 0, *self.label.shape[2:]), self.label.dtype),
                    self.spacing, dict(self.extra))
