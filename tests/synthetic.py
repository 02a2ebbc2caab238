"""A small synthetic image task for tests: class c lights up quadrant c."""

import numpy as np


def quadrant_task(num_examples: int, seed: int, channels: int = 1, num_classes: int = 4):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, num_examples).astype(np.int32)
    images = rng.normal(0.0, 0.3, (num_examples, 32, 32, channels)).astype(np.float32)
    for c in range(num_classes):
        row, col = divmod(c, 2)
        images[labels == c, row * 16:(row + 1) * 16, col * 16:(col + 1) * 16] += 1.0
    return images, labels
