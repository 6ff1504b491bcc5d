"""The executor's job graph is DVC's graph, for the default and the paper profile (nothing is submitted); the
resources each stage asks for; a train job with several GPUs starts under Accelerate."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from benchmark.cli import main
from benchmark.cluster.commands import plan
from benchmark.cluster.graph import PipelineNode, to_submit
from benchmark.cluster.launch import stage_command
from benchmark.cluster.resources import DEFAULTS, Resources, cluster_config, stage_kind
from benchmark.config import ConfigError
from benchmark.errors import USER_ERROR
from tests.conftest import ROOT, commit_all, copy_project


def _dvc_dag(proj) -> tuple[set[str], set[tuple[str, str]]]:
    """Stages and (dependency, dependant) edges as `dvc dag --dot` draws them, without .dvc files."""
    dot = subprocess.run(["dvc", "dag", "--dot"], cwd=proj, capture_output=True, text=True, check=True).stdout
    nodes = {n for n in re.findall(r'^"([^"]+)";$', dot, re.M) if not n.endswith(".dvc")}
    edges = set(re.findall(r'^"([^"]+)" -> "([^"]+)";$', dot, re.M))
    return nodes, edges


@pytest.mark.parametrize("profile", ["params.yaml", "profiles/paper.yaml"])
def test_the_job_graph_is_dvcs_graph(tmp_path, profile):
    proj = copy_project(tmp_path)
    shutil.copy(ROOT / profile, proj / "params.yaml")
    commit_all(proj)
    jobs = plan(proj)    # a fresh copy: every stage is out of date
    nodes, edges = _dvc_dag(proj)
    assert {run.stage for run, _, _ in jobs} == nodes
    assert {(a, run.stage) for run, after, _ in jobs for a in after} == edges
    order = [run.stage for run, _, _ in jobs]
    assert all(order.index(a) < order.index(run.stage) for run, after, _ in jobs for a in after)
    assert order[-1] == "tables" and len(nodes) > (60 if "paper" in profile else 30)
    train = next((run, res) for run, _, res in jobs if run.stage.startswith("train@"))
    assert train[1] == DEFAULTS["train"] and train[0].command.startswith("segbench train ")
    dataset, method = train[0].command.split()[2:4]
    assert train[0].outs == (f"runs/{dataset}/{method}/model", f"runs/{dataset}/{method}/loss.csv")


def test_stage_kinds_and_their_default_resources():
    assert stage_kind("baseline-train@phantom-lesion-atfm") == "train"
    assert stage_kind("ablation-evaluate@phantom-lesion-medflowseg-sa") == "evaluate"
    assert stage_kind("seed-train@phantom-lesion-unet-1") == "train"
    assert stage_kind("seed-predict@phantom-lesion-unet-1") == "predict"
    assert stage_kind("nfe-sweep@phantom-fundus") == "predict" and stage_kind("check-data") == "data"
    assert DEFAULTS["data"].gpus == DEFAULTS["evaluate"].gpus == DEFAULTS["tables"].gpus == 0
    assert DEFAULTS["train"].gpus >= 1 and DEFAULTS["predict"].gpus == 1
    with pytest.raises(ConfigError, match="no stage kind for 'bogus'"):
        stage_kind("bogus@x")


def test_the_cluster_section_overrides_kinds_then_stages():
    cfg = cluster_config({"partition": "gpu", "account": "lab", "setup": ["module load cuda"],
                          "kinds": {"train": {"gpus": 4, "time": "2-00:00:00"}},
                          "stages": {"train@acdc-medflowseg": {"nodes": 2}, "tables": {"partition": "cpu"}}})
    assert cfg.resources("train@acdc-unet") == Resources(gpus=4, cpus=8, mem="64G", time="2-00:00:00",
                                                          partition="gpu", account="lab")
    assert cfg.resources("train@acdc-medflowseg").nodes == 2 and cfg.resources("train@acdc-medflowseg").gpus == 4
    assert cfg.resources("tables").partition == "cpu" and cfg.resources("evaluate@acdc-unet").partition == "gpu"
    assert cfg.setup == ("module load cuda",)
    assert cluster_config(None).resources("predict@acdc-unet") == DEFAULTS["predict"]


@pytest.mark.parametrize("section, message", [
    ({"kinds": {"train": {"gpus": -1}}}, "params.yaml: cluster.kinds.train.gpus: must be an integer >= 0"),
    ({"kinds": {"train": {"time": "2 days"}}}, "params.yaml: cluster.kinds.train.time: must be a SLURM time"),
    ({"kinds": {"train": {"mem": "lots"}}}, "params.yaml: cluster.kinds.train.mem: must be memory per node"),
    ({"kinds": {"gpu": {}}}, r"params.yaml: cluster.kinds: unknown stage kind\(s\) \['gpu'\]"),
    ({"stages": {"trian@acdc-unet": {"nodes": 2}}}, "params.yaml: cluster.stages.trian@acdc-unet: not a stage name"),
    ({"stages": {"tables": {"qos": "high"}}}, r"params.yaml: cluster.stages.tables: unknown key\(s\) \['qos'\]"),
    ({"partitions": "gpu"}, r"params.yaml: cluster: unknown key\(s\) \['partitions'\]"),
    ({"setup": "module load cuda"}, "params.yaml: cluster.setup: must be a list of shell lines"),
])
def test_a_bad_cluster_section_names_the_file_and_key(section, message):
    with pytest.raises(ConfigError, match=message):
        cluster_config(section)


def test_a_stage_named_in_the_cluster_section_must_be_in_the_pipeline(tmp_path):
    proj = copy_project(tmp_path)
    params = (ROOT / "params.yaml").read_text() + "cluster:\n  stages:\n    train@acdc-unet: {nodes: 2}\n"
    (proj / "params.yaml").write_text(params)
    with pytest.raises(ConfigError, match=r"cluster.stages: \['train@acdc-unet'\] are not stages of this profile"):
        plan(proj)


def test_a_train_job_with_several_gpus_starts_under_accelerate():
    one = Resources(gpus=1)
    assert stage_command("train@acdc-unet", "segbench train acdc unet", "segbench", one) == "segbench train acdc unet"
    four = stage_command("train@acdc-unet", "segbench train acdc unet", "segbench", Resources(gpus=4))
    assert four == ("accelerate launch --multi_gpu --num_processes 4 --num_machines 1 "
                    "-m benchmark.cli train acdc unet")
    eight = stage_command("baseline-train@acdc-atfm", "segbench train acdc atfm", "segbench",
                          Resources(gpus=4, nodes=2))
    assert eight.startswith("accelerate launch --multi_gpu --num_processes 8 --num_machines 2 "
                            "--machine_rank $SLURM_NODEID --main_process_ip $(scontrol show hostnames")
    assert eight.endswith("-m benchmark.cli train acdc atfm")
    seeded = stage_command("seed-train@acdc-unet-1", "segbench train acdc unet --seed 1", "segbench", Resources(gpus=2))
    assert seeded.endswith("--num_processes 2 --num_machines 1 -m benchmark.cli train acdc unet --seed 1")
    profile_launcher = "accelerate launch --multi_gpu --num_processes 4 -m benchmark.cli"
    assert stage_command("train@acdc-unet", f"{profile_launcher} train acdc unet", profile_launcher,
                         Resources(gpus=2)).endswith("--num_processes 2 --num_machines 1 -m benchmark.cli train acdc unet")
    assert stage_command("predict@acdc-unet", "segbench predict acdc unet", "segbench",
                         Resources(gpus=4)) == "segbench predict acdc unet"   # only train stages start several
    with pytest.raises(ConfigError, match="does not start with the profile's launcher"):
        stage_command("train@acdc-unet", "python -m benchmark.cli train acdc unet", "segbench", Resources(gpus=2))


def test_a_stage_downstream_of_a_changed_one_is_submitted_with_it():
    def node(name, needs=(), changed=False):
        return PipelineNode(name, f"run {name}", ".", (), tuple(needs), changed)
    pipeline = {n.name: n for n in (node("fetch"), node("train", ["fetch"], changed=True), node("other", ["fetch"]),
                                    node("predict", ["train"]), node("tables", ["predict", "other"]))}
    assert to_submit(pipeline) == ["train", "predict", "tables"]
    assert to_submit({**pipeline, "train": node("train", ["fetch"])}) == []


def test_the_cluster_commands_run_the_active_profile_only(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert main(["--params", "profiles/paper.yaml", "cluster", "submit", "--dry-run"]) == USER_ERROR
    assert "cp profiles/paper.yaml params.yaml" in capsys.readouterr().err
