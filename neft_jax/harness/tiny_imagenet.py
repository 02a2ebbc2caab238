"""Tiny-ImageNet read from the standard ``tiny-imagenet-200`` folder (method.md §4).

Layout (as unpacked from ``tiny-imagenet-200.zip``, http://cs231n.stanford.edu/)::

    tiny-imagenet-200/
      wnids.txt                              200 class ids, one per line
      train/<wnid>/images/<wnid>_<i>.JPEG    500 training images per class
      val/images/val_<i>.JPEG                10,000 validation images
      val/val_annotations.txt                "<file>\\t<wnid>\\t<box...>" per image

The labelled ``val`` split serves as the test set (the ``test`` split has no
labels). Images are 64×64 RGB, kept at 64×64 (VGG-8's exits keep Table I's
pools; ResNet-18's pick theirs by tap resolution, :mod:`neft_jax.models`), scaled
to [0, 1] and normalised per channel with a common Tiny-ImageNet mean/std. Nothing is downloaded.
Pillow (a matplotlib dependency) decodes the JPEGs. Memory: the full set as
float32 is ≈ 4.9 GB (train) + 0.5 GB (val).
"""

from __future__ import annotations

import os

import numpy as np

FOLDER = "tiny-imagenet-200"
IMAGE_SIZE = 64
NUM_CLASSES = 200
MEAN_STD = ((0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821))


class TinyImageNetUnavailable(FileNotFoundError):
    """The ``tiny-imagenet-200`` folder is missing or incomplete."""


def find_root(data_dir: str | None) -> str:
    """The ``tiny-imagenet-200`` folder: ``data_dir`` itself or ``data_dir/tiny-imagenet-200``.

    Raises:
        TinyImageNetUnavailable: with what to download and where to put it.
    """
    candidates = [] if data_dir is None else [data_dir, os.path.join(data_dir, FOLDER)]
    for root in candidates:
        if os.path.isfile(os.path.join(root, "wnids.txt")):
            return root
    where = f"--data-dir {data_dir!r}" if data_dir else "no --data-dir was given"
    raise TinyImageNetUnavailable(
        f"Tiny-ImageNet not found ({where}): download tiny-imagenet-200.zip from "
        "http://cs231n.stanford.edu/tiny-imagenet-200.zip, unzip it, and pass "
        f"--data-dir DIR where DIR/{FOLDER}/wnids.txt exists (nothing is downloaded here)")


def load(data_dir: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_images, train_labels, val_images, val_labels): (N, 64, 64, 3) float32
    normalised, (N,) int32 in ``[0, 200)``; labels index the sorted ``wnids.txt``."""
    root = find_root(data_dir)
    with open(os.path.join(root, "wnids.txt")) as f:
        wnids = sorted(line.strip() for line in f if line.strip())
    label_of = {wnid: i for i, wnid in enumerate(wnids)}
    train_files, train_labels = [], []
    for wnid in wnids:
        folder = os.path.join(root, "train", wnid, "images")
        if not os.path.isdir(folder):
            raise TinyImageNetUnavailable(f"Tiny-ImageNet is incomplete: {folder} is missing; "
                                          "unzip tiny-imagenet-200.zip again")
        names = sorted(n for n in os.listdir(folder) if n.lower().endswith((".jpeg", ".jpg")))
        train_files += [os.path.join(folder, n) for n in names]
        train_labels += [label_of[wnid]] * len(names)
    val_files, val_labels = _val_split(root, label_of)
    return (_read_images(train_files), np.asarray(train_labels, np.int32),
            _read_images(val_files), np.asarray(val_labels, np.int32))


def _val_split(root: str, label_of: dict[str, int]) -> tuple[list[str], list[int]]:
    annotations = os.path.join(root, "val", "val_annotations.txt")
    if not os.path.isfile(annotations):
        raise TinyImageNetUnavailable(f"Tiny-ImageNet is incomplete: {annotations} is "
                                      "missing; unzip tiny-imagenet-200.zip again")
    files, labels = [], []
    with open(annotations) as f:
        for number, line in enumerate(f, 1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 2 or fields[1] not in label_of:
                raise ValueError(f"{annotations}:{number}: expected '<file>\\t<wnid>...' with "
                                 f"a wnid of wnids.txt, got {line.strip()!r}")
            files.append(os.path.join(root, "val", "images", fields[0]))
            labels.append(label_of[fields[1]])
    return files, labels


def _read_images(paths: list[str]) -> np.ndarray:
    from PIL import Image

    mean, std = (np.asarray(v, np.float32) for v in MEAN_STD)
    images = np.empty((len(paths), IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"), np.float32) / 255.0
        except OSError as error:  # missing, or not an image (PIL's error is an OSError)
            raise TinyImageNetUnavailable(
                f"{path}: cannot be read ({type(error).__name__}); unzip "
                "tiny-imagenet-200.zip again") from None
        if pixels.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise ValueError(f"{path}: expected a {IMAGE_SIZE}×{IMAGE_SIZE} image, got "
                             f"{pixels.shape[1]}×{pixels.shape[0]}")
        images[i] = (pixels - mean) / std
    return images
