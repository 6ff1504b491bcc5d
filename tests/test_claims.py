"""paper/claims.yaml: it parses, each printed table cell is in it once, spot values, the loader's checks."""
from __future__ import annotations

from collections import Counter
from itertools import product

import pytest

from benchmark.catalogue import load_catalogue
from benchmark.claims import Claim, load_claims
from tests.conftest import ROOT

CLAIMS = ROOT / "paper" / "claims.yaml"
PAPERS = tuple(load_catalogue(ROOT / "paper" / "catalogue.yaml").papers)

# Claims per (paper, source table). Table cells are counted as rows x numeric columns minus the cells the
# paper leaves empty:
#   MedFlowSeg Table 1: 11 methods x 9 (Average Dice/IoU/HD95, RV/Myo/LV Dice/IoU)               =  99
#   MedFlowSeg Table 2: 18 methods x 11 (BraTs-2021 Dice/IoU/HD95, REFUGE2-Disc, REFUGE2-Cup,
#                       GlaS, CAMUS Dice/IoU)                                                      = 198
#   MedFlowSeg Table 3: 5 ablation rows x 3 datasets                                               =  15
#   MedFlowSeg Table 4: 8 rows x 5 (Params, Gflops, CI, GED, Dice) - 2 "bone + ..." rows x 2
#                       (no Params, no Gflops)                                                     =  36
#   FlowSDF Table 1:    12 rows x 4 (MoNuSeg, GlaS x F1, mIoU) - 1 (K=25,T=100 MoNuSeg F1 empty)    =  47
#   ATFM timing table:  4 rows x Time + ATFM's Steps ("GTR + 25 steps"; the others "Multi-step")     =   5
# Text claims (settings stated in prose), counted by section:
#   MedFlowSeg §3.2 lambda, alpha; §3.3 two Gaussian kernel sizes; §3.4 R, N; §4.2 GPUs, VRAM, input side,
#   4 channel widths, residual blocks, time embedding, batch, lr, EMA, 50 steps, 10 samples (14) and
#   MedSegDiff-V2's and FlowSDF's 100 steps (2 more: 16); §4.4 the Gflops convergence window and threshold.
#   FlowSDF §4.3: 0.85 s, 4 samples, 4 NFEs. ATFM: 100 samples (table heading), 3.7x and 9.7x speedups.
EXPECTED_COUNTS = {
    ("medflowseg", "Table 1"): 99,
    ("medflowseg", "Table 2"): 198,
    ("medflowseg", "Table 3"): 15,
    ("medflowseg", "Table 4"): 36,
    ("medflowseg", "text §3.2"): 2,
    ("medflowseg", "text §3.3"): 2,
    ("medflowseg", "text §3.4"): 2,
    ("medflowseg", "text §4.2"): 16,
    ("medflowseg", "text §4.4"): 2,
    ("flowsdf", "Table 1"): 47,
    ("flowsdf", "text §4.3"): 3,
    ("atfm", "Inference efficiency (generating 100 samples)"): 5,
    ("atfm", "text (Key Experimental Results)"): 1,
    ("atfm", "text (Highlights)"): 2,
}

# The MedFlowSeg tables' printed rows and columns, as the paper names them.
T1_ROWS = ["UNet", "nnUNet", "TransUNet", "SwinUNet", "MT-UNet", "EnsemDiff", "SegDiff", "MedSegDiff",
           "MedSegDiff-V2", "FlowSDF", "MedFlowSeg"]
T1_COLS = ["Average Dice", "Average IoU", "Average HD95"] + [f"{s} {m}" for s in ("RV", "Myo", "LV")
                                                             for m in ("Dice", "IoU")]
T2_ROWS = ["TransBTS", "SwinBTS", "ResUNet", "BEAL", "DCAN", "TA-Net", "UltraUNet", "ECHO-SegNet", "nnUNet",
           "TransUNet", "UNetr", "Swin-UNetr", "EnsemDiff", "SegDiff", "MedSegDiff", "MedSegDiff-V2", "FlowSDF",
           "MedFlowSeg"]
T2_COLS = ["BraTs-2021 Dice", "BraTs-2021 IoU", "BraTs-2021 HD95"] + [
    f"{d} {m}" for d in ("REFUGE2-Disc", "REFUGE2-Cup", "GlaS", "CAMUS") for m in ("Dice", "IoU")]
T3_ROWS = ["backbone", "+ SA", "+ DB-SA", "+ DB-SA + FA-A. (w/o Mod.)", "+ DB-SA + FA-A. + Neural Mod."]
T3_COLS = ["Brain Tumor Dice", "Optic Cup Dice", "Histology Gland Dice"]
T4_ROWS = ["EnsemDiff", "SegDiff", "MedSegDiff", "MedSegDiff-V2", "FlowSDF", "bone + DB-SA", "bone + FA-A.",
           "MedFlowSeg"]
T4_COLS = ["Params", "Gflops", "CI", "GED", "Dice"]
T4_EMPTY = {(r, c) for r in ("bone + DB-SA", "bone + FA-A.") for c in ("Params", "Gflops")}
MEDFLOWSEG_CELLS = {
    "Table 1": set(product(T1_ROWS, T1_COLS)),
    "Table 2": set(product(T2_ROWS, T2_COLS)),
    "Table 3": set(product(T3_ROWS, T3_COLS)),
    "Table 4": set(product(T4_ROWS, T4_COLS)) - T4_EMPTY,
}


@pytest.fixture(scope="module")
def claims() -> list[Claim]:
    return load_claims(CLAIMS, PAPERS)


def _value(claims: list[Claim], paper: str, table: str, row: str, column: str) -> float:
    (hit,) = [c.value for c in claims if (c.paper, c.table, c.row, c.column) == (paper, table, row, column)]
    return hit


def test_file_parses(claims):
    assert len(claims) == sum(EXPECTED_COUNTS.values())
    assert {c.paper for c in claims} == set(PAPERS)


def test_counts_per_paper_and_table(claims):
    assert Counter((c.paper, c.table) for c in claims) == EXPECTED_COUNTS


@pytest.mark.parametrize("table", sorted(MEDFLOWSEG_CELLS))
def test_every_medflowseg_table_cell_once(claims, table):
    cells = Counter((c.row, c.column) for c in claims if (c.paper, c.table) == ("medflowseg", table))
    assert set(cells) == MEDFLOWSEG_CELLS[table]
    assert set(cells.values()) == {1}


@pytest.mark.parametrize("paper, table, row, column, value", [
    ("medflowseg", "Table 1", "MedFlowSeg", "Average Dice", 93.57),
    ("medflowseg", "Table 1", "UNet", "Average HD95", 9.58),
    ("medflowseg", "Table 1", "MT-UNet", "LV IoU", 90.77),
    ("medflowseg", "Table 2", "TransBTS", "BraTs-2021 HD95", 12.44),
    ("medflowseg", "Table 2", "MedFlowSeg", "CAMUS IoU", 84.7),
    ("medflowseg", "Table 3", "backbone", "Brain Tumor Dice", 87.6),
    ("medflowseg", "Table 4", "MedFlowSeg", "Params", 111),
    ("medflowseg", "Table 4", "MedFlowSeg", "Gflops", 789),
    ("medflowseg", "Table 4", "MedFlowSeg", "GED", 21.9),
    ("medflowseg", "Table 4", "bone + FA-A.", "CI", 82.9),
    ("medflowseg", "text §4.2", "MedFlowSeg", "sampling steps (default)", 50),
    ("medflowseg", "text §4.2", "MedFlowSeg", "samples per case (fused by STAPLE)", 10),
    ("medflowseg", "text §4.2", "MedFlowSeg", "initial learning rate (AdamW)", 1e-4),
    ("flowsdf", "Table 1", "FlowSDF (K=1)", "GlaS F1", 88.64),
    ("flowsdf", "Table 1", "FlowSDF - MMSE (K=25,T=100)", "MoNuSeg mIoU", 68.46),
    ("flowsdf", "text §4.3", "FlowSDF", "time to generate 4 samples with 4 NFEs", 0.85),
    ("atfm", "Inference efficiency (generating 100 samples)", "ATFM", "Time", 113),
    ("atfm", "Inference efficiency (generating 100 samples)", "CCDM", "Time", 1100),
])
def test_spot_values(claims, paper, table, row, column, value):
    assert _value(claims, paper, table, row, column) == pytest.approx(value)


def test_tables_agree_where_the_paper_repeats_a_number(claims):
    t2 = {(c.row, c.column): c.value for c in claims if (c.paper, c.table) == ("medflowseg", "Table 2")}
    # Table 3's full model is Table 2's MedFlowSeg; Table 4's Dice is Table 2's REFUGE2-Cup Dice.
    for t3_col, t2_col in zip(T3_COLS, ("BraTs-2021 Dice", "REFUGE2-Cup Dice", "GlaS Dice")):
        assert _value(claims, "medflowseg", "Table 3", T3_ROWS[-1], t3_col) == t2[("MedFlowSeg", t2_col)]
    for row in set(T4_ROWS) & set(T2_ROWS):
        assert _value(claims, "medflowseg", "Table 4", row, "Dice") == t2[(row, "REFUGE2-Cup Dice")]


def test_dice_at_least_iou(claims):
    """Dice >= IoU holds for every mask, so for means too: a swapped pair of columns would fail here."""
    overlap = {}
    for c in claims:
        if c.metric in ("dice", "f1", "iou", "miou") and c.table in ("Table 1", "Table 2"):
            key = (c.paper, c.table, c.row, c.column.rsplit(" ", 1)[0])
            overlap.setdefault(key, {})["dice" if c.metric in ("dice", "f1") else "iou"] = c.value
    pairs = [v for v in overlap.values() if len(v) == 2]
    assert len(pairs) == 11 * 4 + 18 * 5 + 12 * 2 - 1
    assert all(v["dice"] >= v["iou"] for v in pairs)


GOOD = ('- {id: a.one, paper: medflowseg, source: {table: "Table 1", row: UNet, column: "Average Dice"}, '
        'value: 87.55, unit: "%", higher_is_better: true}\n')


@pytest.mark.parametrize("text, claim_id, message", [
    (GOOD + GOOD, "a.one", "duplicate id"),
    (GOOD.replace("unit:", "units:"), "a.one", "unknown keys ['units']"),
    (GOOD.replace("87.55", "n/a"), "a.one", "'value' must be a number"),
    (GOOD.replace("87.55", "1e-4"), "a.one", "'value' must be a number"),  # YAML 1.1 reads 1e-4 as a string
    (GOOD.replace("medflowseg", "flowseg"), "a.one", "unknown paper 'flowseg'"),
    (GOOD.replace(', unit: "%"', ""), "a.one", "missing keys ['unit']"),
    (GOOD.replace("row: UNet, ", ""), "a.one", "'source' must have exactly the keys"),
])
def test_loader_rejects(tmp_path, text, claim_id, message):
    path = tmp_path / "claims.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        load_claims(path, PAPERS)
    assert str(path) in str(err.value) and repr(claim_id) in str(err.value) and message in str(err.value)


def test_loader_reads_a_valid_claim(tmp_path):
    path = tmp_path / "claims.yaml"
    path.write_text(GOOD)
    assert load_claims(path, PAPERS) == [
        Claim("a.one", "medflowseg", "Table 1", "UNet", "Average Dice", 87.55, "%", True)]
