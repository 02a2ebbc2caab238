"""Helpers that keep the tests' compilations few: a linen model's variables without
running its init (an eager init compiles one program per initializer and shape, ≈ 120 for
a VGG-8; a jitted one is one slow compilation)."""

import jax
import jax.numpy as jnp
import numpy as np


def numpy_variables(model, input_shape, seed=0, **kwargs):
    """Variables of ``model.init``'s structure, shapes and dtypes, as NumPy arrays (found by
    abstract evaluation: nothing compiles). Kernels N(0, 2 / fan_in), BatchNorm scales 1,
    variances 1, other leaves N(0, 0.1²): for tests that need some weights, not the
    model's initial ones."""
    x = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, **kwargs), x)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        if name in ("scale", "var"):
            return np.ones(leaf.shape, leaf.dtype)
        if name == "mean":
            return np.zeros(leaf.shape, leaf.dtype)
        value = rng.standard_normal(leaf.shape)
        if name == "kernel":
            value *= np.sqrt(2.0 / max(1, int(np.prod(leaf.shape[:-1]))))
        else:
            value *= 0.1
        return value.astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)
