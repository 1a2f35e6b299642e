"""Data sources, patient-grouped splits, the decoded-image cache and batch transforms."""

from cxrlab.data.dataset import Dataset, load_dataset

__all__ = ["Dataset", "load_dataset"]
