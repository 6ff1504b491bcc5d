"""benchmarks/gpu_efficiency.py in its CPU smoke mode, on a tiny profile."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_efficiency.py"


def load_script():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec = importlib.util.spec_from_file_location("gpu_efficiency", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(SCRIPT.parent))


@pytest.fixture
def tiny_profile(tmp_path) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({
        "profile": "tiny", "datasets": ["glas"], "methods": ["unet", "medflowseg"], "data": {"size": 32},
        "train": {"steps": 10, "batch_size": 4}, "predict": {"n_samples": 3, "batch_size": 4},
        "condition_head": {"method": "medflowseg", "datasets": ["glas"]},   # a row that trains nothing
        "method": {"unet": {"model": {"channels": [4, 8], "strides": [2]}},
                   "medflowseg": {"model": {"channels": [8, 16], "num_res_blocks": 1, "time_embed_dim": 16,
                                            "norm_groups": 4, "fa_depth": 1, "fa_dim": 16, "fa_heads": 2,
                                            "steps": 5}}}}))
    return p


def test_smoke_mode_prints_throughput_flops_sampling_and_the_command(tiny_profile):
    args = ["--smoke", "--params", str(tiny_profile), "--checkpointing", "--fused-adamw", "--channels-last"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "device cpu; peak none (no MFU); 32 px" in text
    # the profile's methods, each trained at the smoke batch; checkpointing only where the method has it
    assert re.search(r"^unet: train batch 2 \d+ ms, [0-9.]+ images/s, [0-9.e-]+ TFLOP per step \| sampling "
                     r"\(eager\) 1 samples x 1 evaluations of 2 images", text, re.M), text
    assert re.search(r"^medflowseg: train batch 2 \(checkpointing\) \d+ ms, [0-9.]+ images/s, .* \| sampling "
                     r"\(eager\) 2 samples x 2 evaluations of 2 images: [0-9.]+ s", text, re.M), text
    assert "medflowseg-head" not in text                               # the head row has no training step
    assert f"    python benchmarks/gpu_efficiency.py {' '.join(args)}\n" in text
    assert "Rows for benchmarks/step_times.yaml" not in text      # measured rows come from CUDA runs only


def test_mfu_is_training_flops_over_time_and_peak(tiny_profile):
    module = load_script()
    from benchmark.config import load_config
    from benchmark.plan import training_flops_per_image
    args = module.parse(["--smoke", "--params", str(tiny_profile), "--no-sampling"])
    args.size = 32
    cfg = load_config(tiny_profile)
    fig = module.train_figures("medflowseg", args, cfg, peak_tflops=1.0)
    per_image = training_flops_per_image(module.build("medflowseg", args, cfg, False), 1, 3, 32)
    assert fig["tflops_step"] == pytest.approx(2 * per_image / 1e12)
    assert fig["mfu"] == pytest.approx(fig["tflops_step"] / fig["step_s"])
    assert fig["images_s"] == pytest.approx(2 / fig["step_s"]) and fig["checkpointing"] is False


def test_a_failing_method_is_reported_and_the_others_still_run(tiny_profile, monkeypatch, capsys):
    module = load_script()
    real = module.train_figures

    def broken_unet(name, *a):
        if name == "unet":
            raise RuntimeError("planted")
        return real(name, *a)

    monkeypatch.setattr(module, "train_figures", broken_unet)
    module.main(["--smoke", "--params", str(tiny_profile), "--no-sampling"])
    text = capsys.readouterr().out
    assert "unet: failed: RuntimeError: planted" in text
    assert re.search(r"^medflowseg: train batch 2 \d+ ms", text, re.M), text


def test_atfm_is_timed_on_its_prior_stage_at_the_paper_profile():
    # the paper gives ATFM's prior stage in epochs (gtr_epochs): without a conversion its loss refuses to run
    module = load_script()
    from benchmark.config import load_config
    args = module.parse(["--smoke", "--params", str(ROOT / "profiles" / "paper.yaml"), "--no-sampling"])
    args.size = 32
    fig = module.train_figures("atfm", args, load_config(ROOT / "profiles" / "paper.yaml"), peak_tflops=None)
    assert fig["step_s"] > 0 and fig["tflops_step"] > 0


def test_a_method_whose_package_is_missing_is_skipped_by_name(tiny_profile, monkeypatch, capsys):
    # a GPU machine without nnunetv2: the default method list must not stop at its import
    module = load_script()
    real = module.method_class

    def no_unet_package(name):
        if name == "unet":
            raise ModuleNotFoundError("No module named 'monai_missing'")
        return real(name)

    monkeypatch.setattr(module, "method_class", no_unet_package)
    module.main(["--smoke", "--params", str(tiny_profile), "--no-sampling"])
    text = capsys.readouterr().out
    assert "unet: skipped: No module named 'monai_missing'" in text
    assert "unet: train" not in text and re.search(r"^medflowseg: train batch 2 \d+ ms", text, re.M), text
