"""Tiny-ImageNet from the standard folder layout, written by the test."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from neft_jax.harness import cli as run_cli
from neft_jax.harness import data as data_lib
from neft_jax.harness import tiny_imagenet
from neft_jax.models import create_model

WNIDS = ["n01443537", "n01629819", "n01641577"]


def _write_folder(parent, per_class=4, val_per_class=2):
    """A miniature tiny-imagenet-200 folder; class c's images have constant value 40·(c+1)."""
    root = parent / "tiny-imagenet-200"
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(WNIDS[::-1]) + "\n")  # unsorted on purpose
    lines = []
    for c, wnid in enumerate(WNIDS):
        folder = root / "train" / wnid / "images"
        folder.mkdir(parents=True)
        pixels = np.full((64, 64, 3), 40 * (c + 1), np.uint8)
        for i in range(per_class):
            Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG", quality=100)
        for i in range(val_per_class):
            name = f"val_{c * val_per_class + i}.JPEG"
            Image.fromarray(pixels).save(root / "val" / "images" / name, quality=100)
            lines.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("point_at", ["parent", "root"])
def test_loads_the_standard_folder_layout(tmp_path, point_at):
    root = _write_folder(tmp_path)
    dataset = data_lib.load_dataset("tiny_imagenet",
                                    str(tmp_path if point_at == "parent" else root))
    assert dataset.train_images.shape == (12, 64, 64, 3)
    assert dataset.test_images.shape == (6, 64, 64, 3)
    assert dataset.num_classes == 200 and dataset.augment
    assert dataset.train_images.dtype == np.float32
    np.testing.assert_array_equal(dataset.train_labels, np.repeat([0, 1, 2], 4))
    np.testing.assert_array_equal(dataset.test_labels, np.repeat([0, 1, 2], 2))
    mean, std = (np.asarray(v) for v in tiny_imagenet.MEAN_STD)
    for c in range(3):  # labels follow the sorted wnids; pixel 40·(c+1) normalised
        expected = (40 * (c + 1) / 255 - mean) / std
        np.testing.assert_allclose(dataset.train_images[4 * c].mean(axis=(0, 1)), expected,
                                   atol=0.05)


def test_missing_data_fails_fast_saying_what_to_download(tmp_path):
    with pytest.raises(data_lib.DatasetUnavailableError, match="tiny-imagenet-200.zip"):
        data_lib.load_dataset("tiny_imagenet", str(tmp_path))
    with pytest.raises(data_lib.DatasetUnavailableError, match="no --data-dir"):
        data_lib.load_dataset("tiny_imagenet", None)
    root = _write_folder(tmp_path)
    image = next((root / "val" / "images").iterdir())
    os.remove(image)  # a missing (or unreadable) image: one line, not PIL's traceback
    with pytest.raises(data_lib.DatasetUnavailableError,
                       match=rf"{image.name}: cannot be read \(FileNotFoundError\)"):
        data_lib.load_dataset("tiny_imagenet", str(tmp_path))
    os.remove(root / "val" / "val_annotations.txt")
    with pytest.raises(data_lib.DatasetUnavailableError, match="val_annotations.txt"):
        data_lib.load_dataset("tiny_imagenet", str(tmp_path))


def test_run_py_without_the_data_exits_2_with_one_line(tmp_path, capsys):
    code = run_cli.run_main(["--dataset", "tiny_imagenet", "--data-dir", str(tmp_path / "none"),
                         "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tiny-imagenet-200.zip" in err[0]


@pytest.mark.parametrize("name", ["vgg8", "resnet18"])
def test_models_take_64px_inputs(name):
    # Shapes only, so abstract evaluation: init and apply traced at 64 px, nothing compiled.
    model = create_model(name, 200, exits=True, width=0.0625)

    def init(size):
        return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                              jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32))

    variables = init(64)
    logits, exits = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables,
                                   jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32))
    assert logits.shape == (2, 200) and all(z.shape == (2, 200) for z in exits)
    hidden_inputs = [variables["params"][f"exit_{i}"]["Dense_0"]["kernel"].shape[0]
                     for i in range(1, len(exits) + 1)]
    at_32 = init(32)
    table1 = [at_32["params"][f"exit_{i}"]["Dense_0"]["kernel"].shape[0]
              for i in range(1, len(exits) + 1)]
    if name == "vgg8":  # Table I's pools at any input size
        assert hidden_inputs == table1
    else:  # pools chosen by tap resolution: 64→24, then 32→6 and 16→4 one stage later
        assert hidden_inputs == [24 * 24 * 4, 24 * 24 * 4, 6 * 6 * 8, 4 * 4 * 16]
