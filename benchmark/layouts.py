"""The layout of each table the tables stage writes: where to change a table's rows, columns and data.

A table stands for one of the MedFlowSeg paper's tables. Its paper rows and paper columns are the cells of
that table in ``paper/claims.yaml`` (a column's claims say which metric, unit and paper dataset); the layout
below adds what is ours: which of the profile's methods get rows, which of our datasets are measured, the
columns of ours, the file and the title. Which method sits on a paper row, and which of our datasets stands
for a paper dataset, is the catalogue's (``paper/catalogue.yaml``).
"""
from __future__ import annotations

from dataclasses import dataclass

from benchmark.config import Config

# The profile's methods a table covers (``TableLayout.methods``).
METHOD_GROUPS = {
    "compared": lambda cfg: cfg.compared_methods,     # methods and baselines.methods
    "ablations": lambda cfg: cfg.ablations.methods,
    "table4": lambda cfg: cfg.table4.methods,
}
# The profile's datasets a table covers (``TableLayout.datasets``); any other value names a paper dataset
# and means our datasets of the profile standing for it.
DATASET_GROUPS = {
    "profile": lambda cfg: cfg.datasets,
    "ablations": lambda cfg: cfg.ablations.datasets,
    "table4": lambda cfg: cfg.table4.datasets,
}


@dataclass(frozen=True)
class TableLayout:
    """One table.

    ``methods``: a key of :data:`METHOD_GROUPS`: the profile's methods with rows (a method with no paper row
    gets a row of its own); ``with_methods``: methods added to them where the profile runs them (and named
    in the caption). ``datasets``: a key of :data:`DATASET_GROUPS` or a paper dataset: the caption's
    datasets, and where ``extra_metrics`` are measured. ``extra_metrics``: ``(metric of the evaluation's
    average, column name)`` added for each of those datasets that stands for none of the table's paper
    datasets. ``region_metrics``: ``(metric, column name)`` added for each evaluation region of each of
    those datasets that declares regions (BraTS's WT, TC and ET, REFUGE's whole disc and cup). ``blocks``: one
    block of rows per dataset, every row measured on it; ``our_columns``: ``(column name, value)`` after the
    paper's, per block (value: ``gmacs_per_evaluation``, ``gflops_per_evaluation`` (2 FLOPs per MAC),
    ``protocol``, or a set metric of the evaluation, x100). ``caption``: ``results`` (metric conventions, samples, datasets) or
    ``complexity`` (how Table 4 counts).
    """
    table: str
    file: str
    title: str
    methods: str
    datasets: str
    with_methods: tuple[str, ...] = ()
    extra_metrics: tuple[tuple[str, str], ...] = ()
    region_metrics: tuple[tuple[str, str], ...] = ()
    blocks: bool = False
    our_columns: tuple[tuple[str, str], ...] = ()
    caption: str = "results"

    def row_methods(self, cfg: Config) -> tuple[str, ...]:
        return METHOD_GROUPS[self.methods](cfg) + tuple(m for m in self.with_methods if m in cfg.methods)

    def caption_methods(self, cfg: Config) -> list[str]:
        return list(METHOD_GROUPS[self.methods](cfg)) + list(self.with_methods)


TABLES = (
    TableLayout("Table 1", "table1_cardiac", "Table 1: multi-class cardiac segmentation (ACDC in the paper)",
                methods="compared", datasets="ACDC"),
    TableLayout("Table 2", "table2_modalities", "Table 2: methods across modalities",
                methods="compared", datasets="profile",
                extra_metrics=(("dice", "Dice"), ("iou", "IoU"), ("hd95", "HD95")),
                region_metrics=(("dice", "Dice"), ("hd95", "HD95"))),
    TableLayout("Table 3", "table3_ablation", "Table 3: MedFlowSeg ablation (Dice %)",
                methods="ablations", with_methods=("medflowseg",), datasets="ablations",
                extra_metrics=(("dice", "Dice"),), region_metrics=(("dice", "Dice"),)),
    TableLayout("Table 4", "table4_complexity_uncertainty", "Table 4: model complexity and sample uncertainty",
                methods="table4", datasets="table4", blocks=True, caption="complexity",
                our_columns=(("GMACs per evaluation", "gmacs_per_evaluation"),
                             ("GFLOPs per evaluation (2 per MAC)", "gflops_per_evaluation"), ("Samples x NFE", "protocol"),
                             ("CI (harmonic)", "ci_harmonic"), ("HM-IoU", "hm_iou"))),
)
