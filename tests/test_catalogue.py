"""The catalogue (paper/catalogue.yaml, benchmark/catalogue.py): its loader's errors, and what an entry does."""
from __future__ import annotations

import pytest
import yaml

from benchmark.catalogue import CatalogueError, load_catalogue
from benchmark.config import load_config
from benchmark.layouts import TABLES
from benchmark.tables import build_table
from tests.conftest import write_params
from tests.evidence_helpers import CATALOGUE, evaluation, evidence

TABLE1 = next(layout for layout in TABLES if layout.table == "Table 1")
TABLE2 = next(layout for layout in TABLES if layout.table == "Table 2")


def test_the_projects_catalogue_maps_rows_labels_and_datasets():
    cat = load_catalogue(CATALOGUE)
    assert list(cat.papers) == ["medflowseg", "flowsdf", "atfm"]
    assert cat.row_method("U-Net") == cat.row_method("UNet") == "unet"
    assert cat.row_method("bone + DB-SA") == "medflowseg-dbsa" and cat.row_method("SwinBTS") is None
    assert cat.row_method("TransUNet") == "transunet" and cat.row_method("SwinUNet") == "swin-unet"
    assert cat.label("medflowseg") == "MedFlowSeg" and cat.label("medflowseg-fa") == "medflowseg-fa"
    assert cat.label("not-in-the-catalogue") == "not-in-the-catalogue"
    assert cat.stand_in("nnunet") == "nnunetv2, 2d configuration, no postprocessing" and cat.stand_in("unet") is None
    assert cat.stand_ins("REFUGE2-Cup").stand_ins == ("refuge2", "phantom-fundus")
    assert cat.stand_ins("REFUGE2-Cup").regions == ("cup",) and cat.stand_ins("REFUGE2-Disc").regions == ("disc",)
    assert cat.stand_ins("BraTS-2021").regions == ("WT", "TC", "ET") and "WT, TC and ET" in cat.stand_ins("BraTS-2021").reading
    assert cat.stand_ins("ACDC").cls is None and cat.stand_ins("ACDC").regions == ()
    assert cat.stand_ins("ISIC").stand_ins == ()


def _write(tmp_path, change) -> object:
    raw = yaml.safe_load(CATALOGUE.read_text())
    change(raw)
    path = tmp_path / "catalogue.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(tables={}), r"the catalogue: unknown keys \['tables'\]"),
    (lambda r: r.pop("datasets"), r"missing keys \['datasets'\]"),
    (lambda r: r["methods"]["unet"].update(colour="red"), r"methods.unet: unknown keys \['colour'\]"),
    (lambda r: r["methods"]["unet"].update(paper_rows="UNet"), r"methods.unet.paper_rows must be a list"),
    (lambda r: r["methods"]["unet"].update(label=""), r"methods.unet.label must be a non-empty string"),
    (lambda r: r["methods"].update(atfm=["ATFM"]), r"methods.atfm must be a mapping"),
    (lambda r: r["methods"]["flowseg-plain"].update(paper_rows=["U-Net"]),
     r"methods.flowseg-plain.paper_rows: row 'U-Net' is already listed by methods.unet"),
    (lambda r: r["datasets"]["ACDC"].pop("stand_ins"), r"datasets.ACDC: missing key 'stand_ins'"),
    (lambda r: r["datasets"]["GlaS"].update(stand_ins=[1]), r"datasets.GlaS.stand_ins\[0\] must be a non-empty"),
    (lambda r: r["papers"].update(atfm=None), r"papers.atfm must be a non-empty string"),
    (lambda r: r["datasets"]["REFUGE2-Cup"].update({"class": "optic cup"}),
     r"datasets.REFUGE2-Cup: give 'class' or 'regions', not both"),
    (lambda r: r["datasets"]["REFUGE2-Cup"].update(regions=[]), r"datasets.REFUGE2-Cup.regions must name at least"),
    (lambda r: r["datasets"]["BraTS-2021"].update(regions="WT"), r"datasets.BraTS-2021.regions must be a list"),
])
def test_a_malformed_entry_is_one_error_naming_the_file_and_key(tmp_path, change, message):
    path = _write(tmp_path, change)
    with pytest.raises(CatalogueError, match=message) as err:
        load_catalogue(path)
    assert str(err.value).startswith(f"{path}: ")


def test_an_unreadable_catalogue_names_the_file(tmp_path):
    with pytest.raises(CatalogueError, match="cannot read the catalogue"):
        load_catalogue(tmp_path / "absent.yaml")
    (tmp_path / "bad.yaml").write_text("methods: [unclosed")
    with pytest.raises(CatalogueError, match="bad.yaml: not valid YAML"):
        load_catalogue(tmp_path / "bad.yaml")


def test_a_catalogue_entry_puts_a_method_on_a_paper_row(tmp_path):
    """Without an entry a method has a row of its own under its label; one entry puts it on the paper's row."""
    cfg = load_config(write_params(tmp_path / "params.yaml", datasets=["phantom-gland"],
                                   methods=["unet", "flowseg-plain"]))
    results = {("phantom-gland", "unet"): evaluation(0.6), ("phantom-gland", "flowseg-plain"): evaluation(0.9)}
    before = build_table(TABLE2, evidence(cfg, results))
    assert before.loc["SwinBTS", "GlaS Dice"] == "not implemented (paper 84.3)"
    assert before.loc["flowseg-plain (flow-matching scaffold, not MedFlowSeg)", "GlaS Dice"] == "90.00"

    def sit_on_swinbts(raw):
        raw["methods"]["flowseg-plain"] = {"stand_in": "a scaffold", "paper_rows": ["SwinBTS"]}
    after = build_table(TABLE2, evidence(cfg, results, catalogue=load_catalogue(_write(tmp_path, sit_on_swinbts))))
    row = "SwinBTS [ours: flowseg-plain, a scaffold]"
    assert after.loc[row, "GlaS Dice"] == "90.00 (paper 84.3, Δ +5.70)"
    assert not [i for i in after.index if i.startswith("flowseg-plain")]    # no row of its own any more
    assert list(after.index).index(row) == list(before.index).index("SwinBTS")
