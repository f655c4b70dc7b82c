"""Real vLLM (CPU build) serving tiny DeepSeek-style models built by the tests.

Once per test session: install vLLM into its own venv (cached in ``.cache/real_vllm``; instant
when done), build the tiny models (seconds; cached per version of build_model.py), and start
three servers on loopback, at the same time:

* ``parsed``: the R1-style model, ``--reasoning-parser deepseek_r1 --enable-auto-tool-choice
  --tool-call-parser deepseek_v3``
* ``raw``: the R1-style model with no parser, and the January-2025 R1 generation prompt, so
  ``<think>…</think>`` arrives inside ``content``.
* ``hybrid``: the V3.1-style model (thinking on demand through ``chat_template_kwargs``),
  ``--reasoning-parser deepseek_v3 --enable-auto-tool-choice --tool-call-parser deepseek_v31``.

When the machine cannot provide this (no Python 3.11/3.12, the install fails, a server does not
come up), every test of the tier is skipped with the reason and the summary says so in red; with
``DEEPSEEK_REAL_VLLM=require`` (what ``.ci/run`` sets) every test FAILS instead. It is never
skipped silently. To leave the tier out on purpose, set ``DEEPSEEK_REAL_VLLM=0``.

Environment: ``DEEPSEEK_REAL_VLLM_START_TIMEOUT`` (s, default 240) for a server to answer
/health; ``DEEPSEEK_REAL_VLLM_CACHE`` moves the cache; ``DEEPSEEK_VLLM_PYTHON`` picks the
interpreter for vLLM's venv; ``DEEPSEEK_REAL_VLLM_ARGS`` replaces the extra server arguments
(default ``--enforce-eager``: no torch.compile warm-up, the API is the same).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from scripts.progress import step
from scripts.real_vllm import realvllm as rv
from tests.protocol.plugin_util import running_plugin
from tests.real.recorder import VLLM_TOOL_STREAM_LOSSES, RecordingProxy

MODE = os.environ.get("DEEPSEEK_REAL_VLLM", "auto").strip().lower()
OPT_OUT = MODE in ("0", "false", "no", "off")
#: CI sets ``require``: there a machine that cannot run real vLLM is a failure, not a skip
REQUIRED = MODE in ("require", "required", "1", "true", "yes", "on")
OPT_OUT_REASON = "real vLLM tier opted out explicitly (DEEPSEEK_REAL_VLLM=0); unset it to run against real vLLM"

_TIMINGS: dict[str, str] = {}


def pytest_collection_modifyitems(config, items):
    if not OPT_OUT:
        return
    here = Path(__file__).resolve().parent
    for item in items:
        if Path(str(item.fspath)).resolve().parent == here:
            item.add_marker(pytest.mark.skip(reason=OPT_OUT_REASON))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if OPT_OUT:
        terminalreporter.write_line(f"tests/real: SKIPPED — {OPT_OUT_REASON}", yellow=True, bold=True)
    elif "UNAVAILABLE" in _TIMINGS and not REQUIRED:
        terminalreporter.write_line("tests/real: SKIPPED, THIS MACHINE CANNOT RUN REAL vLLM — "
                                    + _TIMINGS["UNAVAILABLE"],
                                    red=True, bold=True)
    elif _TIMINGS:
        terminalreporter.write_line("tests/real: " + "; ".join(f"{k} {v}" for k, v in _TIMINGS.items()))
    for line in VLLM_TOOL_STREAM_LOSSES:
        terminalreporter.write_line(f"tests/real: vLLM lost a streamed tool call and the test retried: {line}",
                                    yellow=True)


def _unavailable(problem: str) -> None:
    _TIMINGS["UNAVAILABLE"] = problem.splitlines()[0]
    if os.environ.get("DEEPSEEK_TIER_NOTE"):  # scripts/test repeats it in its final summary
        Path(os.environ["DEEPSEEK_TIER_NOTE"]).write_text(_TIMINGS["UNAVAILABLE"] + "\n")
    message = f"real vLLM tier cannot run on this machine: {problem}"
    if REQUIRED:
        pytest.fail(message + "\n(DEEPSEEK_REAL_VLLM=require, as in CI)", pytrace=False)
    # a machine without what vLLM's CPU build needs (e.g. only Python 3.12 and no +cpu torch
    # wheel) still runs every other tier; the skip is loud: in every test and in the summary
    pytest.skip(message + "\n(DEEPSEEK_REAL_VLLM=require makes this a failure, as CI does)")


class Servers:
    def __init__(self, by_name: dict[str, rv.VllmServer]) -> None:
        self.by_name = by_name
        self.parsed = by_name["parsed"]
        self.raw = by_name["raw"]
        self.hybrid = by_name["hybrid"]

    def __getitem__(self, name: str) -> rv.VllmServer:
        return self.by_name[name]


@pytest.fixture(scope="session")
def vllm_servers(request):
    """Every server, healthy. Any failure is a loud test error naming the cause. What it is doing is
    shown as it happens (pytest would hold it until the end: a silent first two minutes look hung)."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        by_name = _start_servers()
    try:
        yield Servers(by_name)
    finally:
        rss = [rv.rss_of_group(s.proc.pid) for s in by_name.values() if s.proc is not None]
        if rss:
            _TIMINGS["server RSS"] = " + ".join(f"{r / 2**30:.1f} GiB" for r in rss)
        for srv in by_name.values():
            srv.stop()


def _start_servers() -> dict[str, rv.VllmServer]:
    print()  # off the line of test dots
    t0 = time.monotonic()
    problem = None
    try:
        python = rv.ensure_venv()
        t1 = time.monotonic()
        models = rv.ensure_models(python)
    except rv.RealVllmUnavailable as e:
        problem = str(e)
    if problem:
        _unavailable(problem)
    t2 = time.monotonic()
    _TIMINGS["vLLM venv"] = f"{t1 - t0:.1f}s"
    _TIMINGS["model build"] = f"{t2 - t1:.1f}s"

    by_name = rv.servers(models)
    ncpu = os.cpu_count() or 1
    timeout = float(os.environ.get("DEEPSEEK_REAL_VLLM_START_TIMEOUT", "240"))
    started: list[rv.VllmServer] = []
    try:
        for i, srv in enumerate(by_name.values()):
            srv.start(python, cpu=i % ncpu if ncpu > 1 else None)
            started.append(srv)
        with step(f"[real_vllm] starting {len(by_name)} vLLM servers ({', '.join(by_name)}) on loopback",
                  "20-110 s; more on a loaded machine"), ThreadPoolExecutor(len(by_name)) as pool:
            took = dict(zip(by_name, pool.map(lambda s: s.wait_healthy(timeout), by_name.values()),
                            strict=True))
    except rv.RealVllmUnavailable as e:
        problem = str(e)
    except BaseException:
        for srv in started:
            srv.stop()
        raise
    if problem:
        for srv in started:
            srv.stop()
        _unavailable(problem)
    _TIMINGS["servers healthy after"] = " / ".join(f"{t:.0f}s ({name})" for name, t in took.items())
    return by_name


@pytest.fixture(scope="session")
def plugin():
    """The plugin, launched as the Dify daemon launches it (``python -m main``, stdio protocol)."""
    with running_plugin() as p:
        yield p


@pytest.fixture(params=["parsed", "raw"])
def server(request, vllm_servers) -> rv.VllmServer:
    return vllm_servers[request.param]


@pytest.fixture(scope="session")
def recorded(vllm_servers):
    """A recording relay in front of each server: ``recorded["parsed"].exchanges`` is what vLLM sent."""
    proxies = {name: RecordingProxy("127.0.0.1", vllm_servers[name].port).start()
               for name in ("parsed", "raw", "hybrid")}
    try:
        yield proxies
    finally:
        for p in proxies.values():
            p.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, attach what vLLM itself sent (through the recording relay) to the report."""
    outcome = yield
    rep = outcome.get_result()
    proxies = getattr(item, "funcargs", {}).get("recorded")
    if not rep.failed or not proxies:
        return
    lines = []
    for name, proxy in proxies.items():
        for ex in proxy.chats()[-3:]:
            lines.append(f"[{name}] {ex.method} {ex.path} {ex.headers.get('X-Request-Id')} -> {ex.status}")
            lines.append(f"  request: {(ex.forwarded or ex.body)[:600]!r}")
            lines.append(f"  vLLM sent: {ex.response[:3000]!r}")
    rep.sections.append(("what vLLM sent (last chat requests per relay)", "\n".join(lines)))
