"""Data layer: readers for BEIR, MS MARCO / TREC and teacher-score files, and the Parquet cache."""

from tasb_ray.data.prepare import PreparedDataset, prepare_dataset, resolve_source

__all__ = ["PreparedDataset", "prepare_dataset", "resolve_source"]
