"""The global batch, split into processes and micro-batches (benchmark/training/trainer.py, BatchPlan)."""
from __future__ import annotations

import pytest

from benchmark.config import ConfigError, MethodConfig, TrainConfig
from benchmark.training.trainer import BatchPlan, train


@pytest.mark.parametrize("batch, micro, world, plan, rank1", [
    (48, None, 4, (12, 1), range(1, 2)),      # the paper's 48 on its four GPUs: 12 each, one pass
    (48, 24, 1, (24, 2), range(2, 4)),        # the paper profile on one card: two passes of 24 ...
    (48, 24, 2, (24, 1), range(1, 2)),        # ... on two: one pass each ...
    (48, 24, 4, (12, 1), range(1, 2)),        # ... on four: a share of 12 needs no accumulation
    (48, 6, 4, (6, 2), range(2, 4)),
    (4, None, 1, (4, 1), range(1, 2))])       # the default: one process, one pass, shard = rank as before
def test_the_plan_splits_the_global_batch(batch, micro, world, plan, rank1):
    p = BatchPlan.of(TrainConfig(batch_size=batch, micro_batch_size=micro), world, "m")
    assert (p.micro, p.accumulation) == plan and p.batch_size == batch and p.world_size == world
    assert p.shards(1) == rank1
    # the shards of all processes together are 0 .. processes x accumulation - 1, each once
    assert sorted(s for r in range(world) for s in p.shards(r)) == list(range(world * p.accumulation))


@pytest.mark.parametrize("batch, micro, world, message", [
    (6, None, 4, "train.batch_size of m: the global batch 6 does not divide among 4 processes; give a multiple of 4"),
    (12, 5, 1, r"train.micro_batch_size of m: 5 does not divide the 12 slices each process takes of the global "
               r"batch \(12 / 1 process\(es\)\)"),
    (20, 4, 2, r"train.micro_batch_size of m: 4 does not divide the 10 slices each process takes of the global "
               r"batch \(20 / 2 process\(es\)\)")])
def test_a_batch_that_does_not_split_is_one_error_naming_the_key(batch, micro, world, message):
    with pytest.raises(ConfigError, match=f"^{message}$"):
        BatchPlan.of(TrainConfig(batch_size=batch, micro_batch_size=micro), world, "m")


def test_a_method_counting_its_stages_in_loss_calls_refuses_accumulation(tiny_project):
    """ATFM switches from its prior to its flow after a count of loss calls: two calls a step would halve its
    first stage."""
    from tests.baselines.test_atfm import TINY

    mcfg = MethodConfig(model={**TINY, "gtr_steps": 2},
                        train=TrainConfig(steps=2, batch_size=4, micro_batch_size=2, threads=1))
    with pytest.raises(ConfigError, match="^train.micro_batch_size of atfm: atfm counts its training stages"):
        train("atfm", tiny_project / "data/processed/phantom-cardiac", tiny_project / "runs/atfm", mcfg)
    assert not (tiny_project / "runs/atfm").exists()


def test_every_method_of_the_paper_profile_splits_on_one_two_and_four_cards():
    """The paper profile's global batches against its micro-batch cap: every method trains on 1, 2 and 4 processes
    (EnsemDiff's 10 not on 4, said in one error), and ATFM, which may not accumulate, never does (LIDC and ISIC)."""
    from benchmark.config import load_config
    from benchmark.methods.interface import TrainsItself
    from benchmark.methods.registry import method_class
    from tests.conftest import ROOT

    cfg = load_config(ROOT / "profiles/paper.yaml")
    plans = {}
    for name in cfg.named_methods():
        train_cfg = cfg.method_config(name).train
        precision = "fp16" if name == "segdiff" else "bf16"     # SegDiff's code trains in fp16 (train.py:31)
        assert (train_cfg.mixed_precision, train_cfg.fused_optimizer, train_cfg.channels_last, train_cfg.compile) == \
               (precision, True, True, False), name
        if issubclass(method_class(name), TrainsItself):   # nnU-Net: its own batches
            continue
        for world in (1, 2, 4):
            if (name, world) == ("ensemdiff", 4):   # its code's batch of 10 (README.md:49) splits among 1, 2, 5
                with pytest.raises(ConfigError, match="global batch 10 does not divide among 4 processes"):
                    BatchPlan.of(train_cfg, world, name)
                continue
            plan = BatchPlan.of(train_cfg, world, name)
            plans[name, world] = (plan.micro, plan.accumulation)
    assert plans["medflowseg", 1] == (24, 2) and plans["medflowseg", 2] == (24, 1) and plans["medflowseg", 4] == (12, 1)
    assert plans["atfm", 1] == (256, 1) and plans["medsegdiff", 1] == (8, 1)
    assert BatchPlan.of(cfg.method_config("atfm", "isic").train, 4, "atfm").accumulation == 1
    with pytest.raises(ConfigError, match="global batch 8 does not divide among 3 processes"):
        BatchPlan.of(cfg.method_config("atfm", "isic").train, 3, "atfm")
