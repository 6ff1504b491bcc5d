"""The ``segbench cluster`` subcommands' parser; each imports its implementation (:mod:`.commands`) when run,
so the other subcommands start without DVC's and submitit's imports."""
from __future__ import annotations

import argparse


def _lazy(name: str):
    def run(args):
        from benchmark.cluster import commands
        return getattr(commands, name)(args)
    return run


def add_cluster_commands(sub: argparse._SubParsersAction) -> None:
    """``segbench cluster submit|status|cancel|collect`` (README "Running the paper profile on a SLURM cluster")."""
    help_ = "run the pipeline's stages that are not up to date as SLURM jobs; their state; cancel them"
    cluster = sub.add_parser("cluster", help=help_, description=help_)
    actions = cluster.add_subparsers(dest="cluster_command", required=True)
    s = actions.add_parser("submit", help="submit every stage that is not up to date as a job, with afterok "
                           "dependencies mirroring the DVC graph, and a last job recording the results in DVC")
    s.add_argument("--dry-run", action="store_true", help="print the jobs, what each waits for, its resources "
                   "and command; submit nothing")
    s.set_defaults(func=_lazy("cmd_submit"))
    actions.add_parser("status", help="each stage's job, state and log; the failed stages").set_defaults(
        func=_lazy("cmd_status"))
    actions.add_parser("cancel", help="cancel every job of the latest submission").set_defaults(
        func=_lazy("cmd_cancel"))
    actions.add_parser("collect", help="record in DVC the outputs of the stages whose jobs completed (the "
                       "submission's last job runs this)").set_defaults(func=_lazy("cmd_collect"))
