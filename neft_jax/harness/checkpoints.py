"""Orbax checkpoints of a training run: the latest state and the best-by-validation state.

Layout under ``directory``::

    latest/<epoch>/   state + JSON metadata after each finished epoch (two kept)
    best/<epoch>/     state + JSON metadata of the best validation scores (two kept)

The metadata is a small JSON dict (epoch, history, best score, settings) that a
resumed run needs besides the arrays, plus a checksum of the state's bytes
(:func:`state_checksum`) and one of the metadata itself (:func:`metadata_checksum`), so
an edited value is caught like a flipped bit. Saves are synchronous: when
:meth:`RunCheckpoints.save_latest` returns, the checkpoint is on disk, and
Orbax writes into a temporary folder that it renames when complete, so a
killed process never leaves a half-written checkpoint behind.

A restore verifies the checksum. A checkpoint that cannot be read or whose bytes
changed on disk (a flipped bit, a truncated file) is skipped with a one-line
warning for the one saved before it; when none is good,
:class:`CheckpointCorrupt` names the folder and how to recover. Corruption is
never trained on, so it cannot show up as a diverged run.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

#: Saves kept per kind: the newest and one more to fall back to.
KEEP = 2


class CheckpointCorrupt(ValueError):
    """No readable, intact checkpoint is left where one was saved."""


def state_checksum(state: Any) -> str:
    """CRC-32 of every leaf's dtype, shape and bytes, in tree order (hex): what a restore
    must give back bit for bit."""
    crc = 0
    for leaf in jax.tree.leaves(state):
        if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        array = np.ascontiguousarray(jax.device_get(leaf))
        crc = zlib.crc32(f"{array.dtype}{array.shape}".encode(), crc)
        crc = zlib.crc32(array.reshape(-1).view(np.uint8), crc)
    return f"{crc:08x}"


def metadata_checksum(metadata: dict) -> str:
    """CRC-32 (hex) of a save's JSON metadata with sorted keys (its checksums left out):
    what a restore must read back."""
    body = {k: v for k, v in metadata.items() if k not in ("checksum", "metadata_checksum")}
    return f"{zlib.crc32(json.dumps(body, sort_keys=True).encode()):08x}"


def newest_metadata(directory: str) -> tuple[dict, str] | None:
    """``(metadata, path)`` of the newest save under ``directory`` (``latest``, else
    ``best``) whose metadata reads back intact; None when there is none.

    Reads the metadata's JSON file directly, with no checkpoint manager, so nothing is
    created or cleaned up in a folder another process may be writing."""
    for kind in ("latest", "best"):
        folder = os.path.join(directory, kind)
        try:
            steps = sorted((int(n) for n in os.listdir(folder) if n.isdigit()), reverse=True)
        except OSError:
            continue
        for step in steps:
            path = os.path.join(folder, str(step), "metadata", "metadata")
            try:
                with open(path) as f:
                    metadata = json.load(f)
            except (OSError, ValueError):
                continue
            if not isinstance(metadata, dict):
                continue
            expected = metadata.get("metadata_checksum")  # saves made before have none
            if expected is None or metadata_checksum(metadata) == expected:
                return metadata, path
    return None


def _one_line(error: BaseException) -> str:
    """The first sentence of ``error``'s message, on one line, at most 160 characters."""
    text = " ".join(str(error).split()).split(". See ")[0] or type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def check_checkpoint_folder(folder: str) -> None:
    """Save and restore a tiny state under ``folder`` (then remove it): a ValueError, before
    any training, when checkpoints cannot be kept there (e.g. a path with ``[1]``)."""
    import shutil

    probe = os.path.join(folder, f".checkpoint-probe-{os.getpid()}")
    state = {"probe": np.arange(4, dtype=np.float32)}
    try:
        checkpoints = RunCheckpoints(probe)
        checkpoints.save_latest(1, state, {"probe": True})
        restored, _ = checkpoints.restore_epoch(state, "latest", 1)
        checkpoints.close()
        if not np.array_equal(np.asarray(restored["probe"]), state["probe"]):
            raise ValueError("the test save came back different")
    except Exception as error:
        raise ValueError(f"out {folder!r} cannot hold checkpoints: a test save could not be "
                         f"read back ({_one_line(error)}); use another --out (characters such as "
                         "'[' ']' '*' '?' in the path are known to break the checkpointer)"
                         ) from None
    finally:
        shutil.rmtree(probe, ignore_errors=True)


class RunCheckpoints:
    """Latest and best checkpoints of one training run (one model × method × seed)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(max_to_keep=KEEP, create=True,
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
                state=ocp.args.StandardSave(state),
                metadata=ocp.args.JsonSave({**metadata, "checksum": state_checksum(state),
                                            "metadata_checksum": metadata_checksum(metadata)})
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

    def restore(self, target: Any, name: str = "latest",
                log: Callable[[str], None] = print) -> tuple[Any, dict] | None:
        """Restore ``(state, metadata)`` shaped like ``target`` from the newest intact save
        of ``name``; None when nothing is saved.

        A save that cannot be read or fails its checksum is skipped with a line to
        ``log``; :class:`CheckpointCorrupt` when every save is bad.
        """
        manager = self._managers[name]
        epochs = sorted(manager.all_steps(), reverse=True)
        if not epochs:
            return None
        for i, epoch in enumerate(epochs):
            try:
                return self.restore_epoch(target, name, epoch)
            except Exception as error:  # orbax/tensorstore raise many types for bad files
                later = (f"falling back to epoch {epochs[i + 1]}" if i + 1 < len(epochs)
                         else "no earlier save to fall back to")
                log(f"warning: checkpoint {os.path.join(self.directory, name, str(epoch))} is "
                    f"corrupt or unreadable ({_one_line(error)}); {later}")
        raise CheckpointCorrupt(
            f"no intact checkpoint left in {os.path.join(self.directory, name)}: every save "
            f"({', '.join(map(str, epochs))}) is corrupt or unreadable; delete "
            f"{self.directory} to train this method again from the start, or rerun with "
            "--overwrite")

    def restore_kept(self, target: Any, epoch: int) -> tuple[Any, dict]:
        """Restore the "best" save of ``epoch``, the run's kept epoch. A bad one is never
        replaced by an earlier best, which would be another epoch's state scored in its
        place: the saves from ``epoch`` on are deleted (the run up to them is intact) and
        :class:`CheckpointCorrupt` says to resume, which trains those epochs again."""
        try:
            return self.restore_epoch(target, "best", epoch)
        except Exception as error:  # orbax/tensorstore raise many types for bad files
            where = os.path.join(self.directory, "best", str(epoch))
            self.discard_after(epoch - 1)
            raise CheckpointCorrupt(
                f"checkpoint {where}, the kept epoch's state, is corrupt or unreadable "
                f"({_one_line(error)}); it and every save from epoch {epoch} on were deleted: "
                f"run the same command again (run.py: with --resume) to train epoch {epoch} "
                "on again, which gives the same numbers") from None

    def restore_epoch(self, target: Any, name: str, epoch: int) -> tuple[Any, dict]:
        """Restore the save of ``epoch`` and verify its checksum; raise if it is bad."""
        # Python scalars in ``target`` (a fresh TrainState's step is int 0) become the
        # arrays that were saved, so the checksum sees the saved dtypes.
        abstract = jax.tree.map(lambda x: ocp.utils.to_shape_dtype_struct(jnp.asarray(x)),
                                target)
        restored = self._managers[name].restore(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), metadata=ocp.args.JsonRestore()))
        state, metadata = restored["state"], dict(restored["metadata"])
        expected = metadata.pop("checksum", None)  # saves made before checksums have none
        if expected is not None and state_checksum(state) != expected:
            raise ValueError("its bytes changed on disk (checksum mismatch)")
        expected = metadata.pop("metadata_checksum", None)
        if expected is not None and metadata_checksum(metadata) != expected:
            raise ValueError("its metadata changed on disk (metadata checksum mismatch)")
        return state, metadata

    def close(self) -> None:
        for manager in self._managers.values():
            manager.close()
