"""The paper harness: everything that turns the library into the paper's experiments.

It imports the core (:mod:`neft_jax`) and is never imported by it. One module per role:

* :mod:`~neft_jax.harness.paper` — the authors' hyper-parameters (α, learning rate).
* :mod:`~neft_jax.harness.config` — :class:`ExperimentConfig` (every default and choice,
  once) and the ``paper``/``quick``/``demo`` profiles.
* :mod:`~neft_jax.harness.data` — datasets, splits, augmentation, batches; their sources
  :mod:`~neft_jax.harness.tfds_source`, :mod:`~neft_jax.harness.mnist5k`,
  :mod:`~neft_jax.harness.tiny_imagenet`.
* :mod:`~neft_jax.harness.checkpoints` — orbax latest/best checkpoints.
* :mod:`~neft_jax.harness.loop` — the one training loop (one run or R vmapped runs);
  :mod:`~neft_jax.harness.bookkeeping` — each run's history, best epoch, checkpoints.
* :mod:`~neft_jax.harness.evaluation` — validation score and the Monte Carlo test table.
* :mod:`~neft_jax.harness.results` — typed results and their JSON files.
* :mod:`~neft_jax.harness.reporting` — printed table, CSV, plots.
* :mod:`~neft_jax.harness.orchestration` — one experiment end to end (and the α search).
* :mod:`~neft_jax.harness.seeds`, :mod:`~neft_jax.harness.sweeps` — many runs, grids;
  :mod:`~neft_jax.harness.budget` — a wall-clock budget that starts only work that ends in time.
* :mod:`~neft_jax.harness.cli` — the command lines, built from the config.

The studies built on it (the paper reproduction, the scaling study) live in
``experiments/paper/`` and ``experiments/scaling/``, outside the installed package.
"""
