"""SegDiff's and EnsemDiff's profile sections: the paper profile states every default, the default profile builds."""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import yaml

from baselines.ensemdiff import EnsemDiff
from baselines.medsegdiff import DDIMSampler
from baselines.segdiff import SegDiff
from benchmark.methods.registry import _interface_problem

PROFILES = Path(__file__).resolve().parents[2] / "profiles"


def _section(profile: str, name: str) -> dict:
    return yaml.safe_load((PROFILES / f"{profile}.yaml").read_text())["method"][name]["model"]


@pytest.mark.parametrize("cls, name", [(SegDiff, "segdiff"), (EnsemDiff, "ensemdiff")])
def test_the_paper_profile_states_every_default_and_the_default_profile_builds_a_method_of_the_contract(cls, name):
    defaults = {k: v.default for k, v in inspect.signature(cls).parameters.items()
                if k not in ("in_channels", "num_classes")}
    paper = {k: tuple(v) if isinstance(v, list) else v for k, v in _section("paper", name).items()}
    assert set(defaults) - set(paper) == {"eta"}   # DDIM's alone; the paper profile samples by DDPM
    assert paper == {k: defaults[k] for k in paper}
    torch.manual_seed(0)
    model = cls(1, 4, **_section("default", name))
    assert _interface_problem(model) is None and isinstance(model.default_sampler, DDIMSampler)
    assert model.default_sampler.steps == 10
