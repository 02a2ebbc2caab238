"""Ctrl-C at a chosen point of a run, for the tests of clean stops."""

import os
import signal


def ctrl_c_at_the_end_of_epoch_1(monkeypatch, real_signal: bool = False) -> None:
    """Stop the run as Ctrl-C would, when its first epoch ends (before that epoch is saved):
    raise ``KeyboardInterrupt``, or (``real_signal``) send this process a real SIGINT, which
    the command's own handler turns into one."""
    from neft_jax.harness import loop

    def stop(*args, **kwargs):
        if real_signal:
            os.kill(os.getpid(), signal.SIGINT)
        raise KeyboardInterrupt  # reached only without a handler that raises

    monkeypatch.setattr(loop, "epoch_means", stop)
