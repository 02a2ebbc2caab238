"""Orbax checkpoints of a training run: the latest state and the best-by-validation state.

Layout under ``directory``::

    latest/<epoch>/   state + JSON metadata after each finished epoch (one kept)
    best/<epoch>/     state + JSON metadata of the best validation score (one kept)

The metadata is a small JSON dict (epoch, history, best score, settings) that a
resumed run needs besides the arrays. Saves are synchronous: when
:meth:`RunCheckpoints.save_latest` returns, the checkpoint is on disk, and
Orbax writes into a temporary folder that it renames when complete, so a
killed process never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class RunCheckpoints:
    """Latest and best checkpoints of one training run (one model × method × seed)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                               enable_async_checkpointing=False,
                                               cleanup_tmp_directories=True)
        self._managers = {
            name: ocp.CheckpointManager(os.path.join(self.directory, name), options=options)
            for name in ("latest", "best")
        }

    def _save(self, name: str, epoch: int, state: Any, metadata: dict) -> None:
        manager = self._managers[name]
        if epoch in manager.all_steps():  # an epoch redone after a resume replaces its save
            manager.delete(epoch)
        manager.save(
            epoch,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), metadata=ocp.args.JsonSave(metadata)
            ),
            force=True,
        )
        manager.wait_until_finished()

    def save_latest(self, epoch: int, state: Any, metadata: dict) -> None:
        """Save the state after ``epoch`` (1-based) epochs."""
        self._save("latest", epoch, state, metadata)

    def save_best(self, epoch: int, state: Any, metadata: dict) -> None:
        """Save the state with the best validation score so far."""
        self._save("best", epoch, state, metadata)

    def discard_after(self, epoch: int) -> None:
        """Delete saves of epochs after ``epoch``: a run killed between saving "best" and
        "latest" leaves a best of an epoch that the resumed run will redo."""
        for manager in self._managers.values():
            for step in manager.all_steps():
                if step > epoch:
                    manager.delete(step)

    def latest_epoch(self, name: str = "latest") -> int | None:
        return self._managers[name].latest_step()

    def restore(self, target: Any, name: str = "latest") -> tuple[Any, dict] | None:
        """Restore ``(state, metadata)`` shaped like ``target``; None when nothing is saved."""
        manager = self._managers[name]
        epoch = manager.latest_step()
        if epoch is None:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        restored = manager.restore(
            epoch,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), metadata=ocp.args.JsonRestore()
            ),
        )
        return restored["state"], dict(restored["metadata"])

    def close(self) -> None:
        for manager in self._managers.values():
            manager.close()
