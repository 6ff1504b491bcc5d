"""The benchmark suite: data, training, inference, metrics, tables and the CLI.

Data flows one way, each stage reading and writing files:
fetch -> preprocess -> train -> predict -> evaluate -> tables.
"""
