"""Progress events and the one way long work is driven.

Long work (reading big files, registration search, feature extraction, training) is written once as a
generator that yields :class:`Progress` events and *returns* its result. The napari widgets run such a
generator in a worker thread (``napari.qt.threading.create_worker``), scripts and the CLI call
:func:`run`, which iterates it (optionally with a terminal progress bar) and returns the result.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

ProgressGen = Generator["Progress", None, T]


@dataclass
class Progress:
    """One progress event.

    ``stage`` names the work ("read imzML P1_S1"), ``step``/``total`` count units of it (``total`` may be
    ``None`` when unknown), ``message`` is free text, and ``info`` carries numbers (e.g. losses).
    """

    stage: str
    step: int = 0
    total: int | None = None
    message: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.perf_counter)

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return min(1.0, self.step / self.total)

    def __str__(self) -> str:
        count = f" {self.step}/{self.total}" if self.total else ""
        msg = f": {self.message}" if self.message else ""
        return f"{self.stage}{count}{msg}"


def run(
    gen: ProgressGen[T],
    *,
    progress: bool | Callable[[Progress], None] = False,
) -> T:
    """Drive a progress generator to completion and return its result.

    ``progress=True`` shows a terminal progress bar (tqdm) per stage; a callable receives every event.
    """
    callback: Callable[[Progress], None] | None
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        state: dict[str, Any] = {"last": None, "first": {}}

        def finish(ev: Progress | None) -> None:
            """Close the stage's transient bar; print one line for a stage that completed."""
            nonlocal bar
            if bar is not None:
                bar.close()
                bar = None
            if ev is not None and (ev.total is None or ev.step >= ev.total):
                msg = f" ({ev.message})" if ev.message else ""
                tqdm.write(f"{ev.stage}{msg}: {ev.time - state['first'][ev.stage]:.1f} s", file=sys.stderr)

        def callback(ev: Progress) -> None:
            nonlocal bar
            last = state["last"]
            if last is None or ev.stage != last.stage:
                finish(last)
                state["first"].setdefault(ev.stage, ev.time)
                bar = tqdm(total=ev.total, desc=ev.stage, file=sys.stderr, leave=False)
            state["last"] = ev
            if ev.total is not None and bar.total != ev.total:
                bar.total = ev.total
            bar.n = ev.step
            if ev.message:
                bar.set_postfix_str(ev.message, refresh=False)
            bar.refresh()

    elif callable(progress):
        callback = progress
    else:
        callback = None
    try:
        while True:
            ev = next(gen)
            if callback is not None:
                callback(ev)
    except StopIteration as stop:
        if progress is True:
            finish(state["last"])
        return stop.value
    except BaseException:
        # Ctrl-C / SIGTERM landing here (in the progress bar, not in the generator): close the generator now, so
        # that its clean-up (e.g. training's checkpoint of the last completed epoch) runs before the caller reports
        gen.close()
        raise
    finally:
        if bar is not None:
            bar.close()


def forward(gen: ProgressGen[T], stage_prefix: str = "") -> ProgressGen[T]:
    """Re-yield the events of a sub-generator (optionally prefixing the stage) and return its result.

    Use as ``result = yield from forward(sub(), "P1_S1 · ")``.
    """
    try:
        while True:
            ev = next(gen)
            if stage_prefix:
                ev.stage = f"{stage_prefix}{ev.stage}"
            yield ev
    except StopIteration as stop:
        return stop.value
