"""The parameters file: every enumerated or ranged field is checked when the file is loaded, and each error
names the file and the key path."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from benchmark.config import (ConfigError, DataConfig, EvalConfig, MethodConfig, TrainConfig, build_section,
                              load_config)
from tests.conftest import MEDFLOWSEG_TINY, TINY_PARAMS, config_error, raw_params

ROOT = Path(__file__).resolve().parents[1]


_params, _error = raw_params, config_error


@pytest.mark.parametrize("profile", ["params.yaml", "profiles/paper.yaml", "profiles/cpu-full.yaml", "profiles/cpu-64.yaml"])
def test_the_shipped_profiles_load(profile):
    cfg = load_config(ROOT / profile)
    assert cfg.datasets and cfg.methods and cfg.method_config(cfg.methods[0]).train.steps >= 1


@pytest.mark.parametrize("section, key, value, rule", [
    ("train", "steps", -5, "an integer >= 1"),
    ("train", "steps", 2.5, "an integer >= 1"),
    ("train", "batch_size", 0, "an integer >= 1"),
    ("train", "checkpoint_every", 0, "an integer >= 1"),
    ("train", "keep_checkpoints", 0, "an integer >= 1"),
    ("train", "threads", 0, "an integer >= 1"),
    ("train", "warmup_steps", -1, "an integer >= 0"),
    ("train", "lr", 0, "a number > 0"),
    ("train", "lr", "1e-3", "a number > 0"),               # YAML 1.1 reads 1e-3 without a dot as a string
    ("train", "weight_decay", -0.1, "a number >= 0"),
    ("train", "ema_decay", 1.0, "a number in [0, 1)"),
    ("train", "ema_decay", -0.5, "a number in [0, 1)"),
    ("train", "mixed_precision", "fp32", "one of 'no', 'bf16', 'fp16'"),
    ("train", "mixed_precision", False, "one of 'no', 'bf16', 'fp16'"),  # YAML's bare `no` is a boolean
    ("train", "optimizer", "adam", "one of 'adamw', 'sgd'"),
    ("train", "momentum", 1.0, "a number in [0, 1)"),
    ("train", "schedule", "cosine", "one of 'constant', 'poly'"),
    ("train", "poly_power", 0, "a number > 0"),
    ("predict", "n_samples", 0, "an integer >= 1"),
    ("predict", "batch_size", True, "an integer >= 1"),   # a boolean is not a count
    ("data", "size", 0, "an integer >= 1"),
    ("data", "n_subjects", -1, "an integer >= 1"),
    ("data", "splits", "random", "one of 'standard', 'seeded'"),
    ("data", "split", {"train": 0.5, "test": 0.5, "holdout": 0.1}, "fractions of train, val and test"),
    ("data", "split", {"val": 0.1, "test": 0.9}, "fractions of train, val and test, each >= 0, train > 0"),
    ("data", "split", {"train": 0.9, "test": -0.1}, "fractions of train, val and test, each >= 0, train > 0"),
    ("evaluation", "hd95_convention", "mean", "one of 'pooled', 'max'"),
    ("evaluation", "both_empty", "zero", "one of 'nan', 'perfect'"),
    ("evaluation", "one_empty_hd95", "max", "one of 'diagonal', 'nan'"),
    ("evaluation", "fusion", "mode", "one of 'majority', 'staple'"),
    ("evaluation", "reference", "union", "one of 'majority', 'staple'"),
    ("evaluation", "per_slice", "yes", "true or false"),
    ("evaluation", "ged_samples", [16, 0], "a list of integers >= 1"),
    ("evaluation", "workers", 0, "an integer >= 1"),
    ("claims", "tolerance", {"%": -1}, "a mapping of claim units to numbers >= 0"),
])
def test_a_bad_value_names_the_file_the_key_path_and_the_rule(tmp_path, section, key, value, rule):
    path = _params(tmp_path, **{section: {key: value}})
    message = _error(path)
    assert message.startswith(f"{path}: {section}.{key}: must be {rule}"), message
    assert message.endswith(f"got {value!r}") or message.endswith(f"got {tuple(value)!r}"), message


def test_a_method_override_names_the_method_section(tmp_path):
    path = _params(tmp_path, method={"unet": {"train": {"steps": -5}}})
    assert _error(path) == f"{path}: method.unet.train.steps: must be an integer >= 1, got -5"
    path = _params(tmp_path, method={"unet": {"predict": {"n_samples": 0}}})
    assert _error(path) == f"{path}: method.unet.predict.n_samples: must be an integer >= 1, got 0"


def test_the_lists_of_names_and_the_shape_of_sections(tmp_path):
    assert _error(_params(tmp_path, datasets="phantom-cardiac")).startswith(
        f"{tmp_path / 'params.yaml'}: datasets: must be a list of names, got 'phantom-cardiac'")
    assert "baselines.methods: must be a list of names, got (1,)" in _error(
        _params(tmp_path, baselines={"datasets": [], "methods": [1]}))
    assert "nfe_sweep.method: must be a string, got 3" in _error(_params(tmp_path, nfe_sweep={"method": 3}))
    assert "train: must be a mapping of keys to values, got [1, 2]" in _error(_params(tmp_path, train=[1, 2]))
    assert "method.unet: must be a mapping" in _error(_params(tmp_path, method={"unet": "fast"}))
    assert "method.unet.model: must be a mapping of the method's parameters" in _error(
        _params(tmp_path, method={"unet": {"model": [16, 32]}}))
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert _error(path).startswith(f"{path}: must be a mapping of sections")


def test_unknown_keys_are_named_with_their_section(tmp_path):
    path = _params(tmp_path, train={"step": 5})
    assert _error(path).startswith(f"{path}: train: unknown key(s) ['step'] (allowed: ")
    path = _params(tmp_path, method={"unet": {"trian": {}}})
    assert _error(path) == f"{path}: method.unet: unknown key(s) ['trian'] (allowed: model, train, predict, datasets)"
    path = _params(tmp_path, evalution={})
    assert _error(path).startswith(f"{path}: unknown top-level key(s) ['evalution']")


def test_good_values_load_unchanged(tmp_path):
    path = _params(tmp_path, train={"steps": 7, "lr": 0.01, "ema_decay": 0.0, "mixed_precision": "bf16"},
                   evaluation={"hd95_convention": "max", "both_empty": "perfect", "one_empty_hd95": "nan",
                               "ged_samples": [16, 100]},
                   data={"splits": "seeded", "split": {"train": 0.5, "test": 0.5}})
    cfg = load_config(path)
    train = cfg.method_config("unet").train
    assert (train.steps, train.lr, train.ema_decay, train.mixed_precision) == (7, 0.01, 0.0, "bf16")
    assert cfg.evaluation.ged_samples == (16, 100) and cfg.evaluation.hd95_convention == "max"
    assert cfg.data == DataConfig(split={"train": 0.5, "test": 0.5}, splits="seeded")
    assert cfg.method["unet"] == MethodConfig(train=dataclasses.replace(TrainConfig(), steps=7, lr=0.01, ema_decay=0.0,
                                                                        mixed_precision="bf16"))


@pytest.mark.parametrize("train, key", [
    ({"momentum": 0.9}, "momentum"),                                  # momentum is SGD's: an error with adamw
    ({"optimizer": "sgd"}, "momentum"),                               # SGD states its momentum (0: plain SGD)
    ({"poly_power": 0.9}, "poly_power"),                              # the power of a constant schedule
    ({"schedule": "poly"}, "poly_power"),
    ({"optimizer": "adamw", "momentum": 0.0, "schedule": "poly", "poly_power": 0.9}, "momentum"),
])
def test_momentum_goes_with_sgd_and_poly_power_with_poly_only(tmp_path, train, key):
    path = _params(tmp_path, method={"unet": {"train": train}})
    assert _error(path).startswith(f"{path}: method.unet.train.{key}: give {key} with "), _error(path)


def test_sgd_with_a_poly_schedule_loads():
    cfg = build_section(TrainConfig, {"optimizer": "sgd", "momentum": 0.9, "schedule": "poly", "poly_power": 0.9},
                        "train")
    assert (cfg.optimizer, cfg.momentum, cfg.schedule, cfg.poly_power) == ("sgd", 0.9, "poly", 0.9)
    assert (TrainConfig().optimizer, TrainConfig().schedule, TrainConfig().momentum) == ("adamw", "constant", None)


def test_a_dataclass_built_in_code_is_checked_too():
    with pytest.raises(ConfigError, match=r"^steps: must be an integer >= 1, got 0$"):
        TrainConfig(steps=0)
    with pytest.raises(ConfigError, match=r"^workers: must be an integer >= 1, got 0$"):
        dataclasses.replace(EvalConfig(), workers=0)


def test_build_section_without_a_file_names_the_key_path():
    with pytest.raises(ConfigError, match=r"^method.x.model.steps: must be an integer >= 1, got 0$"):
        build_section(TrainConfig, {"steps": 0}, "method.x.model")
    assert build_section(TrainConfig, None, "train") == TrainConfig()


# ---------------------------------------------------------------- the examples, through `segbench`
def _with_method(**sections) -> dict:
    """The tiny profile's ``method:`` with ``sections`` replacing or adding methods' sections."""
    return {"method": {**TINY_PARAMS["method"], **sections}}


@pytest.mark.parametrize("argv, overrides, message", [
    (["train", "phantom-cardiac", "unet"], {"train": {"steps": -5}}, "train.steps: must be an integer >= 1, got -5"),
    (["train", "phantom-cardiac", "unet"], {"train": {"steps": "thirty"}},
     "train.steps: must be an integer >= 1, got 'thirty'"),
    (["train", "phantom-cardiac", "unet"], {"train": {"checkpoint_every": 0}},
     "train.checkpoint_every: must be an integer >= 1, got 0"),
    (["predict", "phantom-cardiac", "unet"], {"predict": {"n_samples": -2}},
     "predict.n_samples: must be an integer >= 1, got -2"),
    (["train", "phantom-cardiac", "unet"], {"evaluation": {"hd95_convention": "mean"}},
     "evaluation.hd95_convention: must be one of 'pooled', 'max', got 'mean'"),
    (["train", "phantom-cardiac", "medflowseg"], _with_method(medflowseg={"model": {**MEDFLOWSEG_TINY, "widht": 8}}),
     "method.medflowseg.model.widht: not a parameter of medflowseg; accepted: channels, num_res_blocks, "),
    (["check-data", "--no-probe"], _with_method(medflowseg={"model": {**MEDFLOWSEG_TINY, "widht": 8}}),
     "method.medflowseg.model.widht: not a parameter of medflowseg; accepted: channels, num_res_blocks, "),
    (["predict", "phantom-cardiac", "unet"], _with_method(unet={"model": {"chanels": [4, 8]}}),
     "method.unet.model.chanels: not a parameter of unet; accepted: channels, strides, num_res_units, dropout "),
    (["train", "phantom-cardiac", "nnunet"], _with_method(nnunet={"model": {"epoch": 2}}),
     "method.nnunet.model: unknown key(s) ['epoch'] (allowed: ['augmentation_workers', 'epochs', "),
    (["check-data", "--no-probe"], {"baselines": {"datasets": ["phantom-cardiac"], "methods": ["nnunet"]},
                                    **_with_method(nnunet={"model": {"tile_step_size": 0}})},
     "method.nnunet.model.tile_step_size: must be a number in (0, 1], got 0"),
])
def test_a_bad_value_stops_the_stage_at_once_with_one_line_naming_the_file_and_key(tmp_path, monkeypatch, capsys,
                                                                                   argv, overrides, message):
    from benchmark.cli import main
    from benchmark.errors import USER_ERROR
    from tests.conftest import write_params

    monkeypatch.chdir(tmp_path)  # nothing may be written: the run folder would appear here
    params = write_params(tmp_path / "params.yaml", **overrides)
    assert main(["--params", str(params), *argv]) == USER_ERROR == 2
    err = capsys.readouterr().err
    assert err.startswith(f"segbench {argv[0]}: error: {params}: {message}") and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


@pytest.mark.parametrize("overrides, message", [
    ({"datasets": ["phantom-cardaic"], "ablations": {"datasets": [], "methods": []}, "nfe_sweep": {"datasets": []},
      "table4": {"datasets": [], "methods": []}},
     "datasets: unknown dataset 'phantom-cardaic'; registered: ["),
    ({"nfe_sweep": {"datasets": ["phantom-hart"], "method": "medflowseg"}},
     "nfe_sweep.datasets: unknown dataset 'phantom-hart'; registered: ["),
    ({"ablations": {"datasets": ["phantom-cardiac"], "methods": ["medflowseg-sx"]},
      "table4": {"datasets": [], "methods": []}, **_with_method(**{"medflowseg-sx": {}})},
     "ablations.methods: unknown method 'medflowseg-sx'; registered: ["),
])
def test_check_data_stops_on_a_dataset_or_method_no_package_registers(tmp_path, capsys, overrides, message):
    from benchmark.cli import main
    from tests.conftest import write_params

    params = write_params(tmp_path / "params.yaml", **overrides)
    out = tmp_path / "availability.json"
    assert main(["--params", str(params), "check-data", "--no-probe", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"segbench check-data: error: {params}: {message}") and err.count("\n") == 1, err
    assert not out.exists()


def test_check_data_passes_the_shipped_profiles_names(tmp_path):
    for profile in ("params.yaml", "profiles/paper.yaml", "profiles/cpu-full.yaml", "profiles/cpu-64.yaml"):
        load_config(ROOT / profile).check_names()   # every name registered, every model section binds


def test_a_method_listed_without_a_section_names_the_list(tmp_path):
    path = _params(tmp_path, ablations={"datasets": ["phantom-cardiac"], "methods": ["medflowseg-dsba"]})
    assert _error(path) == (f"{path}: ablations.methods: 'medflowseg-dsba' has no section method.medflowseg-dsba "
                            f"(sections: ['unet'])")


def test_a_method_section_on_one_dataset_overrides_its_length_model_and_predict(tmp_path):
    path = _params(tmp_path, train={"steps": 300, "batch_size": 16}, method={"unet": {
        "model": {"channels": [8, 16], "strides": [2]}, "train": {"batch_size": 8},
        "datasets": {"phantom-cardiac": {"model": {"strides": [1]}, "train": {"epochs": 4},
                                         "predict": {"n_samples": 3}}}}})
    cfg = load_config(path)
    base, on = cfg.method_config("unet"), cfg.method_config("unet", "phantom-cardiac")
    assert (base.train.steps, base.train.epochs, base.train.batch_size) == (300, None, 8)
    assert (on.train.steps, on.train.epochs, on.train.batch_size) == (None, 4, 8)     # epochs replace the steps
    assert on.model == {"channels": [8, 16], "strides": [1]} and on.predict.n_samples == 3
    assert cfg.method_config("unet", "phantom-brain") is base                         # no entry: the section


def test_a_bad_per_dataset_section_names_its_key_path(tmp_path):
    path = _params(tmp_path, method={"unet": {"datasets": {"phantom-cardiac": {"train": {"steps": 0}}}}})
    assert _error(path) == f"{path}: method.unet.datasets.phantom-cardiac.train.steps: must be an integer >= 1, got 0"
    path = _params(tmp_path, method={"unet": {"datasets": {"phantom-cardiac": {"datasets": {}}}}})
    assert _error(path) == (f"{path}: method.unet.datasets.phantom-cardiac: unknown key(s) ['datasets'] "
                            f"(allowed: model, train, predict)")
    cfg = load_config(_params(tmp_path, method={"unet": {"datasets": {"phantom-hart": {}}}}))
    with pytest.raises(ConfigError, match=r"method\.unet\.datasets: unknown dataset 'phantom-hart'"):
        cfg.check_names()
