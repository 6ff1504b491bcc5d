"""Baseline methods, one module each; every one registers under ``segbench.methods`` in pyproject.toml."""
