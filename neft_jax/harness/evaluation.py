"""Scoring a trained run: the per-epoch validation score and the Monte Carlo test table.

Monte Carlo keys are shared by every method at a σ (common random numbers): they
come from the run's seed folded with :data:`MC_KEY_OFFSET` + σ in millionths.
Each σ's evaluation is saved as soon as it finishes (``evaluations.json`` beside
the method's checkpoints), so a run stopped during a σ sweep keeps the finished σ
and a resumed one, or one resumed with more σ, evaluates only the others.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence

import jax

from neft_jax import parallel
from neft_jax.evaluate import TestSet, monte_carlo
from neft_jax.harness.config import ExperimentConfig
from neft_jax.harness.results import Evaluation, MethodResult, sigma_key, write_atomic
from neft_jax.stats import summarize

#: Monte Carlo keys of σ fold ``MC_KEY_OFFSET + round(σ·1e6)`` into the seed's key, far
#: from the small integers other key streams of a run use.
MC_KEY_OFFSET = 2**20
#: The α search scores each α with keys folded from this constant (one stream for all α).
ALPHA_SEARCH_KEY = 12345


def mc_keys(seed: int, sigma: float, runs: int) -> jax.Array:
    """Monte Carlo keys of σ, shared by every method (common random numbers)."""
    key = jax.random.fold_in(jax.random.key(seed),  # fold_in takes 32 bits: σ ≥ 4293 wraps
                             (MC_KEY_OFFSET + int(round(sigma * 1e6))) % 2**32)
    return jax.random.split(key, runs)


def validation_accuracy(model, state, val_set: TestSet, val_root: jax.Array, epoch: int,
                        cfg: ExperimentConfig, method: str, mesh=None) -> float:
    """Accuracy (%) on the validation set after ``epoch`` (0-based): Monte Carlo mean over
    ``cfg.val_mc_runs`` runs at σ, or the one clean evaluation for vanilla (σ = 0)."""
    sigma = cfg.validation_sigma(method)
    runs = cfg.val_mc_runs if sigma > 0 else 1
    val_keys = jax.random.split(jax.random.fold_in(val_root, epoch), runs)
    val = monte_carlo(model, {"params": state.params, "batch_stats": state.batch_stats},
                      val_set, val_keys, cfg.device(sigma), chunk_size=cfg.chunk_size, mesh=mesh)
    return 100 * float(val.accuracies.mean())


def evaluate_at_sigmas(cfg: ExperimentConfig, model, state, test_set: TestSet,
                       sigmas: Sequence[float], show_progress: bool = True,
                       saved: SavedEvaluations | None = None) -> dict[float, Evaluation]:
    """Monte Carlo evaluation of ``state`` at each σ (``cfg.mc_runs`` runs; one at σ = 0).

    With ``saved``, σ found there are taken as they are and each new one is added to it
    as soon as it finishes.
    """
    from tqdm.auto import tqdm

    variables = {"params": state.params, "batch_stats": state.batch_stats}
    evaluations = {}
    for sigma in sigmas:
        if saved is not None and (done := saved.get(sigma)) is not None:
            evaluations[float(sigma)] = done
            continue
        runs = 1 if sigma == 0 else cfg.mc_runs
        start = time.perf_counter()
        with tqdm(total=runs, desc=f"Monte Carlo σ={sigma:g}", unit="run", leave=False,
                  disable=not show_progress) as bar:
            result = monte_carlo(model, variables, test_set, mc_keys(cfg.seed, sigma, runs),
                                 cfg.device(sigma), chunk_size=cfg.chunk_size,
                                 mesh=parallel.local_data_mesh(jax.local_device_count()),
                                 progress=lambda done, bar=bar: bar.update(done - bar.n))
        accuracies = 100 * result.accuracies
        evaluations[float(sigma)] = Evaluation(
            sigma=float(sigma), summary=summarize(accuracies, result.ekl),
            accuracies=[round(float(a), 6) for a in accuracies], chunk_size=result.chunk_size,
            eval_seconds=time.perf_counter() - start)
        if saved is not None:
            saved.add(evaluations[float(sigma)])
    return evaluations


class SavedEvaluations:
    """Finished Monte Carlo evaluations of one trained state, in a JSON file.

    ``identity`` says which state and protocol they belong to (best epoch, runs, seed);
    a file made for another identity is ignored and replaced.
    """

    def __init__(self, path: str, identity: dict):
        self.path, self.identity = path, identity
        self._evaluations: dict[str, dict] = {}
        try:
            with open(path) as f:
                data = json.load(f)
            if data.get("identity") == identity:
                self._evaluations = dict(data["evaluations"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # none saved yet, or unreadable: evaluate again

    def get(self, sigma: float) -> Evaluation | None:
        data = self._evaluations.get(sigma_key(sigma))
        return None if data is None else Evaluation.from_json(data)

    def add(self, evaluation: Evaluation) -> None:
        self._evaluations[sigma_key(evaluation.sigma)] = evaluation.to_json()
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        write_atomic(self.path, json.dumps({"identity": self.identity,
                                            "evaluations": self._evaluations}))


def train_and_test_record(cfg: ExperimentConfig, method: str, outcome, alpha: float,
                          test_set: TestSet, log: Callable[[str], None] = print,
                          show_progress: bool = True) -> MethodResult:
    """A trained method's result: its training record, then a Monte Carlo evaluation of its
    best state at every σ of ``cfg`` (none if it diverged before any epoch was kept)."""
    record = MethodResult(alpha=alpha, diverged=outcome.diverged,
                          train_seconds=outcome.train_seconds, history=outcome.history,
                          best_epoch=outcome.best_epoch,
                          best_val_accuracy=outcome.best_val_accuracy)
    if outcome.diverged and outcome.best_epoch is None:
        record.evaluations = {s: Evaluation(sigma=s, summary=None, diverged=True)
                              for s in cfg.eval_sigmas}
        return record
    log(f"{method}: Monte Carlo evaluation ({cfg.mc_runs} run{'s' * (cfg.mc_runs != 1)} per σ)")
    sigmas = cfg.eval_sigmas if 0.0 in cfg.eval_sigmas else (0.0, *cfg.eval_sigmas)
    saved = SavedEvaluations(
        os.path.join(cfg.checkpoint_dir(method, alpha), "evaluations.json"),
        {"best_epoch": outcome.best_epoch, "mc_runs": cfg.mc_runs, "seed": cfg.seed})
    try:
        evaluations = evaluate_at_sigmas(cfg, outcome.model, outcome.state, test_set, sigmas,
                                         show_progress, saved)
    except KeyboardInterrupt as stop:
        done = sum(saved.get(s) is not None for s in sigmas)
        stop.add_note(f"in the Monte Carlo evaluation of {method}, " + (
            "no σ finished yet" if not done else f"{done} of {len(sigmas)} σ saved"))
        raise
    record.clean_accuracy = evaluations[0.0].mean
    record.evaluations = {s: e for s, e in evaluations.items() if s in cfg.eval_sigmas}
    if outcome.diverged:  # evaluated at its best epoch before the loss blew up
        for evaluation in record.evaluations.values():
            evaluation.diverged = True
    return record
