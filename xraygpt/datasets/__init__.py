"""Datasets: builders (``builders``), folder and shard datasets, the collater, loaders,
``prepare`` (raw MIMIC-CXR / OpenI -> ``filter_cap.json``) and ``shards`` (WebDataset).

Nothing is imported here: importing one submodule does not pull in the others.
"""
