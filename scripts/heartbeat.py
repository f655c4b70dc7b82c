"""Copy a command's output through as it comes; after ``HEARTBEAT_S`` seconds without any, say what is
still running and for how long, so a slow test never looks like a hang. ``scripts/test`` pipes each
tier's pytest through it:  ``pytest ... 2>&1 | python -m scripts.heartbeat tests/wire``."""

from __future__ import annotations

import os
import select
import sys
import time

from scripts.progress import HEARTBEAT_S


def main(what: str, every: float = HEARTBEAT_S) -> int:
    t0 = time.monotonic()
    quiet_since = t0
    at_line_start = True
    out = sys.stdout.buffer
    while True:
        ready, _, _ = select.select([0], [], [], min(1.0, every / 4))
        now = time.monotonic()
        if ready:
            data = os.read(0, 65536)
            if not data:
                return 0
            out.write(data)
            out.flush()
            at_line_start = data.endswith(b"\n")
            quiet_since = now
        elif now - quiet_since >= every:
            lead = b"" if at_line_start else b"\n"
            out.write(lead + f"  ... {what} still running: {now - t0:.0f} s so far\n".encode())
            out.flush()
            at_line_start = True
            quiet_since = now


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(prog="python -m scripts.heartbeat", description=__doc__)
    ap.add_argument("what", nargs="*", help="what is running, for the heartbeat line")
    ap.add_argument("--every", type=float, default=HEARTBEAT_S,
                    help=f"seconds of silence before a line (default {HEARTBEAT_S:g})")
    args = ap.parse_args()
    sys.exit(main(" ".join(args.what) or "it", args.every))
