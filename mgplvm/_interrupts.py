"""Stopping a long fit cleanly on Ctrl-C (SIGINT) or SIGTERM.

While a fit with a checkpoint file runs, :func:`deferred_interrupts` turns the first SIGINT or
SIGTERM into a flag that the fit's loop reads at the end of an iteration: it writes the
checkpoint there (a consistent state: resuming from it gives the same result as a run that was
never interrupted) and raises :class:`FitInterrupted`; a signal during the fit's set-up is
honoured at the end of its first iteration. A second signal stops at once. Handlers are only
installed in the main thread, and the previous ones are put back afterwards.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["FitInterrupted", "deferred_interrupts", "end_of_iteration",
           "interruptible"]

_ACTIVE: dict[str, Any] | None = None  # the flag of the outermost deferred_interrupts block


class FitInterrupted(KeyboardInterrupt):
    """A fit stopped by SIGINT/SIGTERM after writing its checkpoint (``checkpoint``, the path;
    ``iteration``, the iterations done) — pass ``resume=checkpoint`` to continue."""

    def __init__(self, checkpoint: str | Path, iteration: int, signum: int) -> None:
        super().__init__(f"interrupted at iteration {iteration}; checkpoint written to "
                         f"{checkpoint}")
        self.checkpoint = Path(checkpoint)
        self.iteration = int(iteration)
        self.signum = int(signum)


@contextlib.contextmanager
def deferred_interrupts(enabled: bool = True) -> Iterator[dict[str, Any]]:
    """Within the block, SIGINT/SIGTERM set ``state["signal"]`` (the signal number) instead of
    stopping the program; a second signal raises :class:`KeyboardInterrupt` at once. Does
    nothing (the flag stays ``None``) when not ``enabled`` or outside the main thread."""
    global _ACTIVE
    if _ACTIVE is not None:  # nested (a fit's set-up, then its loop): one flag for both
        yield _ACTIVE
        return
    state: dict[str, Any] = {"signal": None}
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum, frame):  # noqa: ARG001 - the signal module's signature
        if state["signal"] is not None:
            raise KeyboardInterrupt
        state["signal"] = signum

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.getsignal(sig)
        signal.signal(sig, handler)
    _ACTIVE = state
    try:
        yield state
    finally:
        _ACTIVE = None
        for sig, old in previous.items():
            signal.signal(sig, old)


def end_of_iteration(done: int, checkpoint: str | Path | None, every: int,
                     save: Callable[[int], None], state: dict[str, Any], bar: Any = None) -> None:
    """A fit loop's checkpoint step after ``done`` iterations: ``save(done)`` every ``every``
    iterations (when there is a ``checkpoint``), and when a signal arrived (``state`` of
    :func:`deferred_interrupts`) save, close the progress ``bar`` and raise
    :class:`FitInterrupted`."""
    if checkpoint is None:
        return
    if done % int(every) == 0 or state["signal"] is not None:
        save(done)
    if state["signal"] is not None:
        if bar is not None:
            bar.close()
        raise FitInterrupted(checkpoint, done, state["signal"])


def interruptible(fit_fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fit_fn`` (a fit taking a keyword ``checkpoint``) inside :func:`deferred_interrupts`
    when a checkpoint is given, so that a signal during its set-up is honoured too."""

    @functools.wraps(fit_fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with deferred_interrupts(kwargs.get("checkpoint") is not None):
            return fit_fn(*args, **kwargs)

    return wrapper
