"""Helpers that keep the tests' compilations few. An eager ``model.init`` compiles one
random-number program per initializer and shape (≈ 120 for a VGG-8, 1–3 s each on XLA:CPU),
and a jitted init from the default threefry key is one slow compilation (≈ 14 s)."""

import jax
import jax.numpy as jnp
import numpy as np

from neft_jax import train as T


def numpy_variables(model, input_shape, seed=0, **kwargs):
    """Variables of ``model.init``'s structure, shapes and dtypes as NumPy arrays, compiling
    nothing (the structure comes from abstract evaluation): He-normal kernels (fan-out, as
    the models' own init), unit BatchNorm scales and variances, every other leaf 0. For tests
    that need some weights, not the model's initial ones."""
    x = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, **kwargs), x)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "kernel":
            fan_out = int(np.prod(leaf.shape[:-2], dtype=int)) * leaf.shape[-1]
            return rng.normal(0.0, np.sqrt(2.0 / fan_out), leaf.shape).astype(leaf.dtype)
        return (np.ones if name in ("scale", "var") else np.zeros)(leaf.shape, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def rbg_train_state(model, input_shape, tx, hparams=None, seed=0):
    """A linen model's initial train state made in one jitted program from an RBG key, whose
    draws are one XLA op each (≈ 2 s of compiling): other draws than the default key's, from
    the same initializers."""
    def create(key):
        return T.create_train_state(model, key, input_shape, tx, hparams)

    return jax.jit(create)(jax.random.key(seed, impl="rbg"))
