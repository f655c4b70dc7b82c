"""Progress lines of the scripts' long steps (scripts/progress.py, scripts/heartbeat.py): what is
happening and about how long, a line at least every heartbeat while it runs, then how long it took."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts.progress import step

ROOT = Path(__file__).resolve().parents[2]


def test_a_step_says_what_beats_while_it_runs_and_says_how_long_it_took():
    out = io.StringIO()
    with step("installing things", about="1-4 min", every=0.05, out=out):
        time.sleep(0.3)
    lines = out.getvalue().splitlines()
    assert lines[0] == "installing things (about 1-4 min) ..."
    assert len([line for line in lines if line.startswith("  ... installing things: ")]) >= 2, lines
    assert lines[-1].startswith("  done in 0.")


def test_a_failed_step_says_so_and_the_error_goes_on():
    out = io.StringIO()
    with pytest.raises(RuntimeError, match="pip failed"), step("installing things", out=out):
        raise RuntimeError("pip failed")
    assert out.getvalue().splitlines()[-1].startswith("  failed in ")


def test_heartbeat_passes_output_through_and_fills_each_silence():
    producer = "import sys, time; sys.stdout.write('..'); sys.stdout.flush(); time.sleep(1.0); print('done')"
    p1 = subprocess.Popen([sys.executable, "-c", producer], stdout=subprocess.PIPE)
    out = subprocess.run([sys.executable, "-u", "-m", "scripts.heartbeat", "--every", "0.3", "tests/x"],
                         stdin=p1.stdout, capture_output=True, text=True, cwd=ROOT, timeout=60).stdout
    p1.wait()
    # the dots pass through at once; the silence after them gets a line of its own, then the rest
    after_dots = out.split("..", 1)[1]
    assert after_dots.startswith("\n  ... tests/x still running: ") and out.endswith("s so far\ndone\n"), out
