"""The paper reproduction's size before it starts: its trainings' rough seconds from a
measured loop rate (``reproduce.py --rates``, ``--estimate-only``)."""

from __future__ import annotations

from neft_jax.harness.budget import RELATIVE_COST, cell_seconds_from_rate, count_fitting
from neft_jax.harness.config import ExperimentConfig

from .plan import Plan
from .reproduce import trainings_of_plan


def estimate_from_rates(base: ExperimentConfig, plan: Plan, rows: list[dict],
                        budget_seconds: float | None, num_train: int, num_validation: int,
                        num_test: int, out: str | None = None) -> str:
    """One line, before a plan starts: its trainings' rough seconds from the last
    ``bench.py --end-to-end`` row of ``rows`` (the loop's images/s) measured with the plan's
    ``val_every``, and how many fit in ``budget_seconds``; with ``out``, of the trainings
    not finished there. ValueError when ``rows`` hold no such row."""
    # one process's loop: the rows of copies run at once (gpu_throughput.py merge) are not
    loops = [r for r in rows if r.get("bench") == "end_to_end" and not r.get("concurrent")]
    measured = [r for r in loops if r.get("val_every", 1) == base.val_every]
    if not measured:
        why = (f"no end-to-end row with --val-every {base.val_every} (it has "
               f"{sorted({r.get('val_every', 1) for r in loops})})" if loops
               else "no end-to-end row (bench.py --end-to-end)")
        raise ValueError(f"{why} in the rates file")
    row = measured[-1]
    unlike = [f"{name} {row.get(name)} (the plan's {mine})" for name, mine in
              (("compute", base.compute), ("width", base.width), ("batch_size", base.batch_size))
              if row.get(name) is not None and row.get(name) != mine]
    rate = row["loop_images_per_s"]
    # The first training of each model × method also compiles (later ones read the
    # compilation cache): bench's train row says how long its step took to compile.
    compiles = [r["compile_s"] for r in rows if r.get("bench") == "train" and r.get("compile_s")]
    compile_s = compiles[-1] if compiles else 0.0
    validation = base.validated_epochs * base.val_mc_runs * num_validation
    trainings = trainings_of_plan(base, plan, out)
    done = len(trainings_of_plan(base, plan)) - len(trainings) if out else 0
    seconds, compiled = [], set()
    for model, method, sigmas in trainings:
        first = (model, method) not in compiled
        compiled.add((model, method))
        seconds.append(cell_seconds_from_rate(
            rate, method, model, base.epochs, num_train,
            base.mc_runs * num_test * sigmas + validation, rate_model=row["model"])
            + (compile_s * RELATIVE_COST.get(method, 1.0) if first else 0.0))
    fit = count_fitting(seconds, budget_seconds)
    by_method = {}
    for (model, method, sigmas), s in zip(trainings, seconds, strict=True):
        if sigmas == 1:
            by_method.setdefault(f"{model} {method}", s)
    shown = ", ".join(f"{k} ≈ {v:.0f} s" for k, v in list(by_method.items())[:6])
    fits_line = (f"; about {fit} of them fit in the {budget_seconds:.0f} s budget"
                 if budget_seconds is not None else "")
    return (f"estimate (from the measured loop rate, {rate:,.0f} images/s of {row['model']} "
            f"{row['method']} in {row.get('compute', '?')}, and a compile of {compile_s:.0f} s "
            f"per model × method): {len(seconds)} trainings"
            + (f" ({done} more finished before)" if done else "") + ", about "
            f"{sum(seconds) / 60:.0f} min in all; first cells {shown}{fits_line}; rough (Monte "
            "Carlo from the training rate): the measured cells replace it after the first"
            + (f"; the rates were measured with another {', '.join(unlike)}" if unlike else ""))
