"""Datasets: records, readers (real layouts), the synthetic benchmark, transforms, samplers."""

from .records import INFRARED, MODALITIES, VISIBLE, DatasetError, Record, record_arrays

__all__ = ["INFRARED", "MODALITIES", "VISIBLE", "DatasetError", "Record", "record_arrays"]
