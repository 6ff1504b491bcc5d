"""Datasets: what a dataset provides (``interface``), the registry of datasets by name (``registry``),
the processed case format, the manifest, phantoms and real-data converters."""
