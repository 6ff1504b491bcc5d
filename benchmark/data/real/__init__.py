"""The paper's real datasets: one module each, fetched where internet or the files exist.

See :mod:`benchmark.data.real.source` for what a module declares; its ``source()`` is what
``pyproject.toml`` registers in the ``segbench.datasets`` entry-point group.
"""
