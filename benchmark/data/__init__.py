"""Datasets: the processed case format, the manifest, phantoms and real-data converters."""
