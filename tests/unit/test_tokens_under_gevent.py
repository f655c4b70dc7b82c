"""Token counting as the plugin runs it: gevent-patched, in gevent's OS-thread pool (llm._offload).

Monkey-patching is process-wide, so the burst runs in a subprocess of its own."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BURST = 16

_SCRIPT = textwrap.dedent("""
    import gevent.monkey
    gevent.monkey.patch_all()
    import json, os, sys
    import gevent
    from deepseek_engine import tokens  # a fresh import: the tokenizer is not loaded yet

    pool = gevent.get_hub().threadpool
    answers = {}

    def count(i):
        answers[i] = pool.apply(tokens.count_text, (["hello world"] * (i + 1),))

    greenlets = [gevent.spawn(count, i) for i in range(int(sys.argv[1]))]
    gevent.joinall(greenlets, timeout=float(sys.argv[2]))
    print(json.dumps(answers))
    sys.stdout.flush()
    os._exit(0)  # a pool thread stuck on a lock would keep the process from exiting
""")


def test_a_burst_of_counts_in_gevents_thread_pool_all_answer():
    """16 greenlets count at once on a fresh import: the pool's threads meet at the lock that
    guards the tokenizer's load. A gevent lock (what ``threading.Lock`` is once patched) shared
    by OS threads lost wake-ups: 5-8 of 16 counts never answered."""
    done = subprocess.run([sys.executable, "-c", _SCRIPT, str(BURST), "30"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    answers = {int(k): v for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}
    assert sorted(answers) == list(range(BURST)), f"{BURST - len(answers)} of {BURST} counts never answered"
    one = answers[0]
    assert one > 0 and all(answers[i] == one * (i + 1) for i in answers), answers
