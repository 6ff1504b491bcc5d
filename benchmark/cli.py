"""segbench: one subcommand per pipeline stage, so each stage runs with or without DVC."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time
from pathlib import Path

from benchmark import paths
from benchmark.cluster.cli import add_cluster_commands
from benchmark.errors import USER_ERROR, SegbenchError


def _config(args, *methods: str):
    """The parameters file, with the ``model:`` sections of ``methods`` (those the stage builds) bound to their
    constructors now, before any work."""
    from benchmark.config import load_config
    cfg = load_config(args.params)
    cfg.check_methods(methods)
    return cfg


def _method_config(cfg, args):
    """The method's section on the dataset; with ``--seed S``, its ``train.seed`` replaced by S."""
    mcfg = cfg.method_config(args.method, args.dataset)
    if args.seed is None:
        return mcfg
    return dataclasses.replace(mcfg, train=dataclasses.replace(mcfg.train, seed=args.seed))


def _one_at_a_time(folder: Path, stage: str, wait: bool = False):
    """The lock of ``stage`` on ``folder`` (:mod:`benchmark.lock`). Under a multi-process launcher only rank 0
    takes it: when that rank stops, the launcher stops the others."""
    from benchmark.lock import exclusive
    return exclusive(folder, stage, wait) if int(os.environ.get("RANK", "0")) == 0 else contextlib.nullcontext()


def cmd_fetch(args):
    from benchmark.data.sources import fetch
    cfg = _config(args)
    with _one_at_a_time(paths.downloads(args.dataset), "fetch", wait=True):
        status = fetch(args.dataset, args.out or paths.fetched(args.dataset), cfg.data)
    print(f"fetch {args.dataset}: {'available' if status['available'] else 'NOT AVAILABLE'}")


def cmd_check_data(args):
    from benchmark.config import ConfigError
    from benchmark.data.real.availability import check
    from benchmark.data.store import write_json
    from benchmark.profiles import missing_sections
    cfg = _config(args)
    cfg.check_names()
    absent = missing_sections(Path(args.params))
    if absent:
        raise ConfigError(f"{args.params}: no section {absent}, which later stages read; write it from the profile "
                          f"with `segbench profile use NAME_OR_FILE`, which fills left-out sections with defaults")
    record, message = check(cfg.datasets, probe=not args.no_probe)
    out = args.out or paths.DATA / "availability.json"
    if message:
        out.unlink(missing_ok=True)
        print(message, file=sys.stderr)
        return USER_ERROR
    write_json(out, record)
    print(f"check-data: {len(record)} real datasets, none missing")


def cmd_preprocess(args):
    from benchmark.data.preprocess import preprocess
    cfg = _config(args)
    m = preprocess(args.dataset, args.src or paths.fetched(args.dataset), args.out or paths.processed(args.dataset), cfg.data)
    counts = {s: len(m.split(s)) for s in ("train", "val", "test")}
    print(f"preprocess {args.dataset}: {m.status.value} {counts}")


def _trains_itself(method: str):
    """The registered class of ``method`` when it trains and predicts by itself (a
    :class:`~benchmark.methods.interface.TrainsItself`, nnU-Net), which takes over the train and predict stages;
    None for every other method (an unknown name is reported by the stage itself)."""
    from benchmark.methods.interface import TrainsItself
    from benchmark.methods.registry import UnknownMethodError, method_class
    try:
        cls = method_class(method)
    except UnknownMethodError:
        return None
    return cls if isinstance(cls, type) and issubclass(cls, TrainsItself) else None


def cmd_train(args):
    cfg = _config(args, args.method)
    out = args.out or paths.run(args.dataset, args.method, args.seed)
    with _one_at_a_time(out, "train"):
        _train(args, cfg, out)


def _train(args, cfg, out: Path):
    from benchmark.data.manifest import load_manifest
    from benchmark.training.trainer import train, write_not_run
    manifest = load_manifest(paths.processed(args.dataset))
    if manifest.status != "ok":
        write_not_run(out, manifest.reason)
        print(f"train {args.dataset}/{args.method}: not run ({manifest.reason.splitlines()[0] if manifest.reason else ''})")
        return
    external = _trains_itself(args.method)
    if external and int(os.environ.get("RANK", "0")) != 0:
        # Under a multi-process launcher, a method that trains itself (nnU-Net) runs once, on rank 0.
        print(f"train {args.dataset}/{args.method}: trains in one process; rank {os.environ['RANK']} has nothing to do")
        return
    if external:
        meta = external.train(paths.processed(args.dataset), out, _method_config(cfg, args), args.max_steps)
    else:
        meta = train(args.method, paths.processed(args.dataset), out, _method_config(cfg, args), args.max_steps)
    print(f"train {args.dataset}/{args.method}{_seed_note(args)}: {meta.status.value} {meta.steps} steps in "
          f"{meta.seconds:.1f} s, final loss {meta.final_loss}")


def cmd_predict(args):
    from benchmark.inference import predict
    cfg = _config(args, args.method)
    mcfg = _method_config(cfg, args)
    external = _trains_itself(args.method)
    if external and args.condition_head:
        from benchmark.config import ConfigError
        raise ConfigError(f"{args.method} predicts with its own code and has no condition head to score")
    if external:
        meta = external.predict(paths.processed(args.dataset), paths.model(args.dataset, args.method, args.seed),
                                args.out or paths.predictions(args.dataset, args.method, args.seed), mcfg)
    else:
        row = f"{args.method}-head" if args.condition_head else args.method
        meta = predict(paths.processed(args.dataset), paths.model(args.dataset, args.method, args.seed),
                       args.out or paths.predictions(args.dataset, row, args.seed), mcfg.predict, mcfg.train.threads,
                       args.condition_head)
    head = " (condition head)" if args.condition_head else ""
    print(f"predict {args.dataset}/{args.method}{_seed_note(args)}{head}: {meta.status.value}")


def cmd_evaluate(args):
    from benchmark.evaluation import evaluate
    cfg = _config(args)
    out = args.out or paths.results(args.dataset, args.method, args.seed)
    with _one_at_a_time(out, "evaluate"):
        m = evaluate(paths.processed(args.dataset), paths.predictions(args.dataset, args.method, args.seed), out,
                     cfg.evaluation, args.method)
    summary = {k: round(v, 4) if v is not None else None for k, v in (m.average or {}).items()}
    print(f"evaluate {args.dataset}/{args.method}{_seed_note(args)}: {m.status.value} {summary}")


def _seed_note(args) -> str:
    return "" if args.seed is None else f" (seed {args.seed})"


def cmd_complexity(args):
    from benchmark.complexity import complexity_record
    from benchmark.data.manifest import load_manifest
    from benchmark.records import ComplexityRecord, write_record
    cfg = _config(args, args.method)
    mcfg = cfg.method_config(args.method, args.dataset)
    manifest = load_manifest(paths.processed(args.dataset))
    out = args.out or paths.results(args.dataset, args.method) / "complexity.json"
    if manifest.status != "ok":
        record = ComplexityRecord.not_run(manifest.reason, method=args.method)
    else:
        info = manifest.dataset
        record = complexity_record(args.method, mcfg.model, info.channels, info.num_classes, cfg.data.size,
                                   mcfg.predict.n_samples)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_record(out, record)
    print(f"complexity {args.dataset}/{args.method}: {record.status.value}"
          + (f" {record.params / 1e6:.2f} M params, {record.macs_per_evaluation / 1e6:.1f} MMACs per "
             f"evaluation, {record.macs_protocol / 1e9:.2f} GMACs per protocol" if record.ok else ""))


def cmd_nfe_sweep(args):
    from benchmark.nfe_sweep import nfe_sweep, sweep_settings
    cfg = _config(args, args.method)
    mcfg = cfg.method_config(args.method, args.dataset)
    out = args.out or paths.results(args.dataset, args.method) / "nfe_sweep"

    def given(option: str):
        """The command line's value of ``option``, else the profile's ``nfe_sweep.<option>``."""
        value = getattr(args, option)
        return getattr(cfg.nfe_sweep, option) if value is None else value

    with _one_at_a_time(out, "nfe-sweep"):
        df = nfe_sweep(paths.processed(args.dataset), paths.model(args.dataset, args.method), out,
                       sweep_settings(list(given("steps")), given("dopri5"), given("rtol"), given("atol")), args.n_samples,
                       mcfg.predict.seed, mcfg.predict.batch_size, mcfg.train.threads, cfg.evaluation)
    print(f"nfe-sweep {args.dataset}/{args.method}: {'not run' if df.empty else f'{len(df)} settings'} -> {out}")
    if not df.empty:
        print(df.to_string(index=False))


def cmd_tables(args):
    from benchmark.tables_stage import render_all
    cfg = _config(args)
    with _one_at_a_time(paths.PAPER, "tables"):
        written = render_all(cfg, log_mlflow=not args.no_mlflow)
    for path in written:
        print(path)


def cmd_check_leaks(args):
    from benchmark.data.manifest import check_leaks, load_manifest
    bad = 0
    for p in args.manifests:
        report = check_leaks(load_manifest(p))
        print(f"{p}: {report.summary()}")
        bad += not report.ok
    return 1 if bad else 0


def cmd_plan(args):
    from benchmark.plan import plan, render
    from benchmark.steptable import load_step_table
    cfg = _config(args)
    table = load_step_table()
    print(render(plan(cfg, args.gpu, table), cfg, args.gpu, args.gpus, table), end="")


def cmd_list(args):
    from benchmark.data.registry import available_datasets
    from benchmark.methods import available_methods
    print("datasets:", ", ".join(available_datasets()))
    print("methods: ", ", ".join(available_methods()))


def cmd_profile(args):
    from benchmark import profiles
    from benchmark.config import read_params
    if args.action == "use":
        source = profiles.use(args.name, Path(args.params))
        print(f"{args.params} now holds the profile {read_params(args.params).get('profile')!r} from {source}; "
              f"`dvc repro` runs it, `dvc exp run` records it as an experiment")
        return
    first = Path(args.params).read_text().splitlines()[:1]
    source = first[0] if first and first[0].startswith(profiles.HEADER.split("{")[0]) else "(written by hand)"
    print(f"{args.params}: profile {read_params(args.params).get('profile')!r} {source.lstrip('# ')}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="segbench", description=__doc__)
    p.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name, func, help_, dataset=True, method=False):
        s = sub.add_parser(name, help=help_, description=help_)
        if dataset:
            s.add_argument("dataset", help="dataset name (see `segbench list`)")
        if method:
            s.add_argument("method", help="method name (see `segbench list`)")
        s.set_defaults(func=func)
        return s

    s = add("check-data", cmd_check_data, "stop at once, listing how to get each, if a real dataset of the profile "
            "is neither on this machine nor downloadable from it; else write data/availability.json", dataset=False)
    s.add_argument("--no-probe", action="store_true", help="do not ask the download hosts whether they answer")
    s.add_argument("--out", type=Path, help="record (default: data/availability.json)")
    s = add("fetch", cmd_fetch, "generate a phantom or obtain a real dataset into data/fetched/DATASET")
    s.add_argument("--out", type=Path, help="output folder (default: data/fetched/DATASET)")
    s = add("preprocess", cmd_preprocess, "normalise, split by subject and write data/processed/DATASET with its manifest")
    s.add_argument("--src", type=Path, help="fetched folder (default: data/fetched/DATASET)")
    s.add_argument("--out", type=Path, help="output folder (default: data/processed/DATASET)")
    s = add("train", cmd_train, "train METHOD on DATASET (resumes from the latest matching checkpoint)", method=True)
    s.add_argument("--out", type=Path, help="run folder (default: runs/DATASET/METHOD)")
    s.add_argument("--max-steps", type=int, help="stop after this many steps without writing the final model")
    _seed_option(s, "train with train.seed = SEED into runs/DATASET/METHOD/seed-SEED (an extra training seed)")
    s = add("predict", cmd_predict, "write n samples per test case with the trained EMA weights", method=True)
    s.add_argument("--out", type=Path, help="predictions folder (default: runs/DATASET/METHOD/predictions)")
    s.add_argument("--condition-head", action="store_true",
                   help="the labels of the method's condition network's own head, from the same trained model "
                        "(default out: runs/DATASET/METHOD-head/predictions)")
    _seed_option(s, "predict with the model trained with --seed SEED: runs/DATASET/METHOD/seed-SEED")
    s = add("evaluate", cmd_evaluate, "Dice/IoU/HD95 per case and class: evaluation.json, metrics.json, per_case.csv", method=True)
    s.add_argument("--out", type=Path, help="results folder (default: results/DATASET/METHOD)")
    _seed_option(s, "evaluate the predictions of the run with --seed SEED into results/DATASET/METHOD/seed-SEED")
    s = add("complexity", cmd_complexity, "parameters and fvcore MACs of METHOD as configured, per network "
            "evaluation and per inference protocol, on one image of DATASET", method=True)
    s.add_argument("--out", type=Path, help="output file (default: results/DATASET/METHOD/complexity.json)")
    s = add("nfe-sweep", cmd_nfe_sweep, "Dice against NFE of a flow-matching method over ODE solver settings "
            "(Euler step counts, dopri5)", method=True)
    s.add_argument("--steps", type=int, nargs="+", help="Euler step counts (default: nfe_sweep.steps)")
    s.add_argument("--dopri5", action=argparse.BooleanOptionalAction,
                   help="add one adaptive dopri5 setting (default: nfe_sweep.dopri5)")
    s.add_argument("--rtol", type=float, help="dopri5 relative tolerance (default: nfe_sweep.rtol)")
    s.add_argument("--atol", type=float, help="dopri5 absolute tolerance (default: nfe_sweep.atol)")
    s.add_argument("--n-samples", type=int, default=1,
                   help="samples per case and setting, fused as the evaluate stage does")
    s.add_argument("--out", type=Path, help="output folder (default: results/DATASET/METHOD/nfe_sweep)")
    s = add("tables", cmd_tables, "render the tables and figures under paper/ and log everything to MLflow", dataset=False)
    s.add_argument("--no-mlflow", action="store_true", help="skip MLflow logging")
    s = add("check-leaks", cmd_check_leaks, "report subjects or identical slices shared between splits", dataset=False)
    s.add_argument("manifests", nargs="+", type=Path, help="manifest.json files or processed dataset folders")
    s = add("plan", cmd_plan, "print the compute plan of the profile: every trained (dataset, method) with its "
            "steps, batch, test protocol, estimated GPU-hours and memory, from benchmarks/step_times.yaml", dataset=False)
    s.add_argument("--params", default=argparse.SUPPRESS, help="parameters file (as segbench --params)")
    s.add_argument("--gpu", default="h100", help="a GPU of benchmarks/step_times.yaml: h100, h200, a100-40gb")
    s.add_argument("--gpus", type=int, default=1, help="GPUs the trainings share, for the wall time (default: 1)")
    add("list", cmd_list, "list the registered datasets and methods", dataset=False)
    s = add("profile", cmd_profile, "switch params.yaml (the file DVC reads; --params) to a profile, filling the "
            "sections it leaves out with their defaults, or show which profile it holds", dataset=False)
    s.add_argument("action", choices=["use", "show"])
    s.add_argument("name", nargs="?", default="default", help="profiles/NAME.yaml or a path (for `use`)")
    add_cluster_commands(sub)
    return p


def _seed_option(parser: argparse.ArgumentParser, help_: str) -> None:
    parser.add_argument("--seed", type=_seed, metavar="SEED", help=help_)


def _seed(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"a training seed is an integer >= 0, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Run one stage and return the exit status: 0; 1 when ``check-leaks`` finds a leak; :data:`USER_ERROR` (2)
    for a :class:`~benchmark.errors.SegbenchError`, printed as one ``segbench STAGE: error: ...`` message. Any
    other exception is a bug and propagates with its traceback."""
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    try:
        rc = args.func(args) or 0
    except SegbenchError as e:  # an error the user can fix: the message says what; any other exception is a bug
        print(f"segbench {args.command}: error: {e}", file=sys.stderr)
        return USER_ERROR
    print(f"[{args.command} took {time.perf_counter() - t0:.1f} s]", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
