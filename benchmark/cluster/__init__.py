"""The DVC pipeline of the active profile on a SLURM cluster: every stage that is not up to date becomes one job,
with ``afterok`` dependencies mirroring the DVC graph; a last job records the results in DVC (``dvc commit``).

Modules: :mod:`.resources` (the ``cluster:`` section of params.yaml, the resources per stage kind), :mod:`.graph`
(the job graph from DVC's own index), :mod:`.launch` (how a train stage starts on its GPUs), :mod:`.job` (what a
job runs on its node), :mod:`.record` (the submission record under ``.segbench/cluster/``), :mod:`.slurm`
(submitting, asking and cancelling, through submitit), :mod:`.commands` (``segbench cluster
submit|status|cancel|collect``), :mod:`.cli` (their parser).
"""
