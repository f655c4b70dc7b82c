"""Cache tier: the answer cache on a real redis-server, started by the tests themselves.

redis-server comes from PATH; when it is missing, ``scripts/redis install`` installs Debian's
package (as root, with apt-get). When that cannot be done, every test of the tier is skipped with
the reason and the summary says so in red; with ``DEEPSEEK_REAL_REDIS=require`` (what ``.ci/run``
sets) every test FAILS instead. It is never skipped silently. To leave the tier out on purpose, set
``DEEPSEEK_REAL_REDIS=0``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from deepseek_engine.transport import ClientRegistry
from tests.cache.redisserver import ROOT, RedisServer

MODE = os.environ.get("DEEPSEEK_REAL_REDIS", "auto").strip().lower()
REQUIRED = MODE in ("require", "required", "1", "true", "yes", "on")
OPT_OUT = MODE in ("0", "false", "no", "off")
_PROBLEM: list[str] = []


def _redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    r = subprocess.run([str(ROOT / "scripts" / "redis"), "install"], capture_output=True, text=True, timeout=600)
    if r.returncode != 0 or not r.stdout.strip():
        raise RuntimeError((r.stderr.strip().splitlines() or ["scripts/redis install failed"])[-1])
    return r.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def redis_binary() -> str:
    if OPT_OUT:
        _PROBLEM.append("opted out explicitly (DEEPSEEK_REAL_REDIS=0)")
        pytest.skip("cache tier opted out explicitly (DEEPSEEK_REAL_REDIS=0); unset it to run on real Redis")
    try:
        return _redis_binary()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        problem = f"no redis-server on this machine: {e}"
        _PROBLEM.append(problem)
        if os.environ.get("DEEPSEEK_TIER_NOTE"):  # scripts/test repeats it in its final summary
            Path(os.environ["DEEPSEEK_TIER_NOTE"]).write_text(problem + "\n")
        if REQUIRED:
            pytest.fail(problem + "\n(DEEPSEEK_REAL_REDIS=require, as in CI)", pytrace=False)
        pytest.skip(problem + "\n(DEEPSEEK_REAL_REDIS=require makes this a failure, as CI does)")


@pytest.fixture
def redis_server(redis_binary):
    server = RedisServer(redis_binary).start()
    yield server
    server.close()


@pytest.fixture
def registry():
    r = ClientRegistry()
    yield r
    r.close()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if OPT_OUT:
        terminalreporter.write_line("tests/cache: SKIPPED — opted out (DEEPSEEK_REAL_REDIS=0)", yellow=True, bold=True)
    elif _PROBLEM and not REQUIRED:
        terminalreporter.write_line("tests/cache: SKIPPED, THIS MACHINE HAS NO REDIS — " + _PROBLEM[0],
                                    red=True, bold=True)
