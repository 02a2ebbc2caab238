"""Typed results of a run, their JSON form, and the files that hold them.

``results.json`` is :meth:`RunResults.to_json`: per method a :class:`MethodResult`
(training record and one :class:`Evaluation` per σ, keyed ``f"{σ:g}"`` in JSON
only: :func:`sigma_key` is the one place that spelling lives). A multi-seed run
stores the same types, its evaluations holding the per-seed means and the
non-convergence count. ``metrics.jsonl`` beside it gets one line per finished
epoch (appended, so ``tail -f`` follows a long run; a resumed run first drops the lines
of the epochs it does again).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable
from typing import Any

#: Significant digits of the measured numbers in ``results.json`` (accuracies, summaries,
#: losses, timings): ``94.19999999999999`` is stored as ``94.2``. A per-run accuracy (in
#: percent, below 100) moves by at most 0.00005 points, less than half of one image of a
#: test set of up to 1,000,000 images, so it still says how many images the run got right.
RESULT_DIGITS = 6


def rounded(value: Any, digits: int = RESULT_DIGITS) -> Any:
    """``value`` with every finite float (in dicts and lists too) rounded to ``digits``
    significant digits; ints, bools, strings, None and non-finite floats unchanged."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}") if math.isfinite(value) else value
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


def sigma_key(sigma: float) -> str:
    """How σ is spelled as a JSON key (``0.4`` → ``"0.4"``)."""
    return f"{float(sigma):g}"


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and ``os.replace``."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def append_metrics(out: str, record: dict) -> None:
    """Append one JSON line to ``out/metrics.jsonl`` (flushed, so ``tail -f`` shows it)."""
    with open(os.path.join(out, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def drop_metrics(out: str, keep) -> None:
    """Rewrite ``out/metrics.jsonl`` with only the lines whose record ``keep(record)``
    accepts (a resumed run drops the epochs it does again, so each epoch has one line).
    Lines that are not JSON records are kept as they are."""
    path = os.path.join(out, "metrics.jsonl")
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or keep(record):
            kept.append(line)
    if len(kept) != len(lines):
        write_atomic(path, "".join(line + "\n" for line in kept))


@dataclasses.dataclass
class Evaluation:
    """One method at one σ: Monte Carlo accuracies (%) and their summary.

    A single run fills ``accuracies`` (one per Monte Carlo run); an aggregate over
    seeds fills ``seed_means``, ``not_converged`` and ``diverged_seeds``.
    """

    sigma: float
    summary: dict | None
    accuracies: list[float] = dataclasses.field(default_factory=list)
    diverged: bool = False
    chunk_size: int | None = None
    eval_seconds: float | None = None
    seed_means: list[float] | None = None
    not_converged: int | None = None
    diverged_seeds: list[int] | None = None

    @property
    def mean(self) -> float | None:
        return None if self.summary is None else self.summary.get("mean")

    def to_json(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items()
                if v is not None or k == "summary"}

    @classmethod
    def from_json(cls, data: dict) -> Evaluation:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclasses.dataclass
class MethodResult:
    """One method of a run: α, training record, and its evaluations by σ."""

    alpha: float | list[float] | None
    evaluations: dict[float, Evaluation] = dataclasses.field(default_factory=dict)
    diverged: bool = False
    train_seconds: float | None = None
    history: list[dict] = dataclasses.field(default_factory=list)
    best_epoch: int | None = None
    best_val_accuracy: float | None = None
    alpha_search: dict[str, float | None] | None = None
    clean_accuracy: float | None = None

    def at(self, sigma: float) -> Evaluation | None:
        """The evaluation at ``sigma`` (None if not evaluated there)."""
        return next((e for s, e in self.evaluations.items() if sigma_key(s) == sigma_key(sigma)),
                    None)

    def done(self, sigmas: Iterable[float]) -> bool:
        """Final: diverged, or evaluated at every σ of ``sigmas``."""
        return self.diverged or all(self.at(s) is not None for s in sigmas)

    def to_json(self) -> dict:
        data = {k: v for k, v in dataclasses.asdict(self).items()
                if k not in ("evaluations", "alpha_search")}
        data["evaluations"] = {sigma_key(s): e.to_json() for s, e in self.evaluations.items()}
        if self.alpha_search is not None:
            data["alpha_search"] = self.alpha_search
        return data

    @classmethod
    def from_json(cls, data: dict) -> MethodResult:
        names = {f.name for f in dataclasses.fields(cls)} - {"evaluations"}
        evaluations = {float(label): Evaluation.from_json({"sigma": float(label), **e})
                       for label, e in data.get("evaluations", {}).items()}
        return cls(evaluations=evaluations,
                   **{k: v for k, v in data.items() if k in names})


@dataclasses.dataclass
class RunResults:
    """Everything ``results.json`` holds: settings, environment, methods, wall time."""

    settings: dict
    environment: dict = dataclasses.field(default_factory=dict)
    methods: dict[str, MethodResult] = dataclasses.field(default_factory=dict)
    wall_seconds: float = 0.0
    per_seed_results: dict[str, str] | None = None

    @property
    def eval_sigmas(self) -> list[float]:
        return [float(s) for s in self.settings["eval_sigmas"]]

    @property
    def chance(self) -> float | None:
        """Chance accuracy (%) of the dataset: 100 / number of classes."""
        from neft_jax.harness.data import NUM_CLASSES

        classes = NUM_CLASSES.get(self.settings.get("dataset"))
        return 100.0 / classes if classes else None

    @property
    def seeds(self) -> list[int] | None:
        """The seeds of an aggregate over seeds (None for a single run)."""
        return self.settings.get("seeds") if isinstance(self.settings.get("seeds"), list) \
            else None

    def to_json(self) -> dict:
        """The JSON form: measured numbers :func:`rounded` (each method's α and the
        settings, which identify the run, stay exact)."""
        data: dict[str, Any] = {
            "methods": {m: {**rounded(r.to_json()), "alpha": r.alpha}
                        for m, r in self.methods.items()},
            "settings": self.settings, "environment": self.environment,
            "wall_seconds": rounded(self.wall_seconds)}
        if self.per_seed_results is not None:
            data["per_seed_results"] = self.per_seed_results
        return data

    @classmethod
    def from_json(cls, data: dict) -> RunResults:
        return cls(settings=data["settings"], environment=data.get("environment", {}),
                   methods={m: MethodResult.from_json(r)
                            for m, r in data.get("methods", {}).items()},
                   wall_seconds=data.get("wall_seconds", 0.0),
                   per_seed_results=data.get("per_seed_results"))

    def save(self, path: str) -> None:
        write_atomic(path, json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: str) -> RunResults:
        """Read ``path``; a missing, unreadable or malformed file is a ValueError naming it."""
        try:
            with open(path) as f:
                return cls.from_json(json.load(f))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: not a readable results file ({error}); delete it or "
                             "use another --out") from error
