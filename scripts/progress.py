"""Progress lines for the long steps of the scripts: what is happening and roughly how long it takes,
a heartbeat while it runs (a silent minute looks like a hang), then the time it took.

    with step("starting the plugin as Dify's daemon does", about="5-30 s"):
        ...

prints ``starting the plugin as Dify's daemon does (about 5-30 s) ...``, then
``  ... starting the plugin as Dify's daemon does: 10 s so far`` every ``every`` seconds, then
``  done in 12.3 s``. Standard library only: ``scripts/real_vllm`` runs it with whatever ``python3`` it finds.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

#: the longest silence a progress line allows (the README promises a line at least every 15 s)
HEARTBEAT_S = 10.0


@contextmanager
def step(what: str, about: str | None = None, *, every: float = HEARTBEAT_S,
         out: TextIO | None = None) -> Iterator[None]:
    """Announce ``what``, beat every ``every`` seconds while the block runs, then say how long it took
    (or that it failed after that long: the exception itself goes on untouched)."""
    stream = out if out is not None else sys.stderr
    say(stream, f"{what}" + (f" (about {about})" if about else "") + " ...")
    t0 = time.monotonic()
    done = threading.Event()

    def beat() -> None:
        while not done.wait(every):
            say(stream, f"  ... {what}: {time.monotonic() - t0:.0f} s so far")

    beater = threading.Thread(target=beat, name="progress", daemon=True)
    beater.start()
    ok = False
    try:
        yield
        ok = True
    finally:
        done.set()
        beater.join()
        say(stream, f"  {'done' if ok else 'failed'} in {time.monotonic() - t0:.1f} s")


def say(stream: TextIO, line: str) -> None:
    print(line, file=stream, flush=True)
