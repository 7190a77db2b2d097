"""Datasets: records, readers (real layouts), the synthetic benchmark, transforms, samplers."""

from .readers import (
    DATASET_SPLITS,
    IMAGE_EXTENSIONS,
    READERS,
    SYSU_GALLERY_CAMERAS,
    UNKNOWN_PID,
    detect_layout,
    read_dataset,
    read_list,
    read_llcm,
    read_market1501,
    read_msmt17,
    read_regdb,
    read_sysu_mm01,
    read_sysu_mm02,
    relabel,
    summarize,
    sysu_mm01_split_ids,
    sysu_query_gallery,
    verify_images,
)
from .samplers import CrossModalitySampler, RandomIdentitySampler
from .records import INFRARED, MODALITIES, VISIBLE, DatasetError, Record, record_arrays

__all__ = [
    "CrossModalitySampler", "DATASET_SPLITS", "RandomIdentitySampler", "IMAGE_EXTENSIONS", "INFRARED", "MODALITIES", "READERS", "SYSU_GALLERY_CAMERAS",
    "UNKNOWN_PID", "VISIBLE", "DatasetError", "Record", "detect_layout", "read_dataset", "read_list",
    "read_llcm", "read_market1501", "read_msmt17", "read_regdb", "read_sysu_mm01", "read_sysu_mm02",
    "record_arrays", "relabel", "summarize", "sysu_mm01_split_ids", "sysu_query_gallery", "verify_images",
]
