"""Why the full-width noise-trained models score lower clean than under noise (stop 20).

Kept beside the results it produced (docs/RESULTS.md, the scaling study). For every
finished cell at ×1 / 12 epochs of a study folder, it restores the kept ("best")
checkpoint and scores the backbone on the clean 1,000-image test set twice: with the
BatchNorm running statistics saved in training (what evaluation uses) and with each
test batch's own statistics (250 images). It also checks that noise injection and IRS
start from the same backbone weights for one seed.

    python3 docs/results/scaling_confirm/bn_check.py runs/scaling_confirm
"""

import glob
import json
import os
import sys

import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict

from neft_jax import train as train_lib
from neft_jax.harness.checkpoints import RunCheckpoints
from neft_jax.harness.config import ExperimentConfig
from neft_jax.harness.data import load_dataset
from neft_jax.harness.loop import RunKeys

BATCH = 250


def same_backbone_init(seed: int) -> bool:
    """Whether noise injection's and IRS's initial parameters agree where both have them."""
    cfg = ExperimentConfig(width=0.125, sigma=0.4, backward_micro_batch=8)
    flat = [flatten_dict(cfg.model_for(m, 10).init(RunKeys.of_seed(seed).init,
                                                   jnp.zeros((1, 32, 32, 1)),
                                                   train=False)["params"])
            for m in ("noise", "irs")]
    return all(np.array_equal(flat[0][p], flat[1][p]) for p in flat[0].keys() & flat[1].keys())


def clean_accuracies(cell: str, dataset) -> tuple[str, int, int, float, float]:
    """(method, seed, kept epoch, clean % with running stats, clean % with batch stats)."""
    results = json.load(open(os.path.join(cell, "results.json")))
    method, entry = next(iter(results["methods"].items()))
    seed = results["settings"]["seed"]
    cfg = ExperimentConfig(width=1.0, epochs=12, sigma=0.4, seed=seed, backward_micro_batch=8)
    model = cfg.model_for(method, 10)
    target = train_lib.create_train_state(
        model, RunKeys.of_seed(seed).init, (1, 32, 32, 1),
        train_lib.create_optimizer(cfg.learning_rate, 12 * 28),
        train_lib.make_hparams(0.4, None, entry["alpha"] or 0.0))
    folder, = glob.glob(os.path.join(cell, "checkpoints", f"{method}*"))
    state, _ = RunCheckpoints(folder).restore(target, "best")
    backbone = model.clone(exits=False) if getattr(model, "exits", False) else model
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    images, labels = jnp.asarray(dataset.test_images), np.asarray(dataset.test_labels)
    running, own = [], []
    for i in range(0, len(labels), BATCH):
        x = images[i:i + BATCH]
        running.append(np.asarray(backbone.apply(variables, x, train=False)[0]).argmax(-1))
        logits = backbone.apply(variables, x, train=True, mutable=["batch_stats"])[0][0]
        own.append(np.asarray(logits).argmax(-1))
    score = lambda predicted: 100 * float((np.concatenate(predicted) == labels).mean())  # noqa: E731
    return method, seed, entry["best_epoch"], score(running), score(own)


def main(study: str) -> None:
    print(f"noise and IRS share the backbone init (seed 1): {same_backbone_init(1)}")
    dataset = load_dataset("mnist5k")
    for cell in sorted(glob.glob(os.path.join(study, "w1-e12", "cells", "*"))):
        if os.path.exists(os.path.join(cell, "results.json")):
            method, seed, epoch, running, own = clean_accuracies(cell, dataset)
            print(f"{method} seed {seed} (kept epoch {epoch}): clean {running:.1f} % with the "
                  f"running BatchNorm statistics, {own:.1f} % with each batch's own")


if __name__ == "__main__":
    main(sys.argv[1])
