"""Endpoint doctor: probe vLLM / SGLang endpoints the way the plugin uses them and say what to fix.

    python -m deepseek_engine.doctor http://gpu-1:8000/v1 http://gpu-2:8000/v1 [--model NAME]
        [--api-key KEY | env DEEPSEEK_API_KEY] [--json] [--requests N] [--timeout S]
        [--ca-bundle FILE] [--client-cert FILE --client-key FILE] [--insecure] [--quiet]
        [--oauth2-token-url URL --oauth2-client-id ID [--oauth2-scope S] [--oauth2-audience A]
         + env DEEPSEEK_OAUTH2_CLIENT_SECRET] [--strict]

Each endpoint goes through the plugin's own settings parsing (``parse_settings``) and transport
(``ChatClient``: the pooled client, its TLS, its auth headers, ``get_json`` and ``stream``), then
through a list of checks, each returning a ``Check(name, status, detail, data)``:

    connect    DNS and TCP connect, timed
    tls        https only: handshake, certificate verification and expiry, mutual TLS
    auth       the key is accepted (and needed)            models   served ids and max_model_len
    health     /health                                      metrics  /metrics: vLLM or SGLang names
    reasoning  where R1 reasoning arrives (raw deltas): reasoning / reasoning_content / inline
               <think> / bare </think> (no reasoning parser) / none (a chat model)
    tools      a tool offered: tool_calls back means the tool-call parser is on
    usage      stream_options.include_usage honoured        speed    median TTFT and tokens/s
    continue   continue_final_message accepted: a stream cut mid-answer can be continued

Statuses: ok, warn (works, but worth fixing; does not fail the run unless ``--strict``), fail,
skip (a check it depends on failed). Exit code: 0 when nothing failed, 1 when a check failed (or,
with ``--strict``, warned), 2 for bad arguments. Progress lines go to stderr, the report to stdout
(``--json``: one JSON document). The API key and the OAuth2 client secret never appear in either:
every output string is scrubbed of the settings' secrets.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from urllib.parse import urlsplit

import httpx

from .client import ChatClient
from .discovery import context_size_of, normalise
from .errors import (AuthError, ConfigError, ConnectError, EngineError, ServerError,
                     StreamBrokenError, error_from_response, scrub)
from .health import HealthBook
from .protocol import build_body
from .retry import RetryBudget, RetryPolicy
from .routing import parse_metrics
from .settings import Endpoint, Settings, parse_settings
from .sse import iter_sse_data
from .tls import build_context
from .transport import ClientRegistry

__all__ = ["Check", "EndpointReport", "Report", "run", "main", "CHECKS"]

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"

# Raw probes stop reading as soon as they know the answer; these are upper bounds.
SHAPE_TOKENS = 512  # enough for R1 to finish thinking about "hello" and close </think>
TOOL_TOKENS = 512
SPEED_TOKENS = 64

_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                   "required": ["location"]}}}
# What a DeepSeek model writes when the server has no tool-call parser to turn it into tool_calls:
# its special tokens, or (when the server strips special tokens) the bare name and JSON arguments
_TOOL_TEXT_MARKERS = ("tool▁call", "tool▁sep", "<|tool", "<｜tool")

_REASONING_HINT = {"vllm": "vLLM: add --reasoning-parser deepseek_r1",
                   "sglang": "SGLang: add --reasoning-parser deepseek-r1",
                   None: "add --reasoning-parser deepseek_r1 (vLLM) or --reasoning-parser "
                         "deepseek-r1 (SGLang)"}
_TOOL_HINT = {"vllm": "start vLLM with --enable-auto-tool-choice --tool-call-parser deepseek_v3 "
                      "(deepseek_v31 for V3.1)",
              "sglang": "start SGLang with --tool-call-parser deepseekv3 (deepseekv31 for V3.1)",
              None: "vLLM: --enable-auto-tool-choice --tool-call-parser deepseek_v3; SGLang: "
                    "--tool-call-parser deepseekv3"}
_FLAVOR_NAME = {"vllm": "vLLM", "sglang": "SGLang", None: "the server"}
# Series the reference alerts and autoscaler (deploy/k8s) read
_REFERENCE_SERIES = {"vllm": ("vllm:num_requests_waiting", "vllm:num_requests_running",
                              "vllm:time_to_first_token_seconds_bucket", "vllm:kv_cache_usage_perc"),
                     "sglang": ("sglang:num_queue_reqs", "sglang:num_running_reqs",
                                "sglang:time_to_first_token_seconds_bucket", "sglang:token_usage")}


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail | skip
    detail: str
    data: dict = field(default_factory=dict)


@dataclass
class Options:
    api_key: str | None = None
    model: str | None = None
    requests: int = 3
    timeout: float = 60.0  # first token: a cold R1 with a long queue may need more (--timeout)
    ca_bundle: str | None = None  # PEM text
    client_cert: str | None = None
    client_key: str | None = None
    insecure: bool = False
    oauth2_token_url: str | None = None  # OAuth2 client credentials, as the plugin's settings
    oauth2_client_id: str | None = None
    oauth2_client_secret: str | None = field(default=None, repr=False)
    oauth2_scope: str | None = None
    oauth2_audience: str | None = None
    strict: bool = False  # warnings fail the run too


@dataclass
class Raw:
    """What one raw streamed chat showed, delta by delta (before the engine merges anything)."""

    status: int | None = None
    error: EngineError | None = None
    fields: set = field(default_factory=set)  # "reasoning", "reasoning_content" seen non-empty
    content: str = ""
    tool_calls: list = field(default_factory=list)
    finish_reason: str | None = None


class Probe:
    """One endpoint being examined: its settings, client, and what earlier checks found."""

    def __init__(self, endpoint: Endpoint, settings: Settings, client: ChatClient | None,
                 opts: Options) -> None:
        self.endpoint = endpoint
        self.settings = settings
        self.client = client
        self.opts = opts
        self.failed: dict[str, str] = {}  # check that failed or was skipped -> the root failure
        self.served: list[dict] | None = None
        self.model: str | None = None
        self.flavor: str | None = None  # "vllm" | "sglang" | None
        self.shape: str | None = None
        self.usage_seen: bool | None = None


# -- small helpers ---------------------------------------------------------------------------

def _ms(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds * 1000:.0f} ms"


def _host_port(ep: Endpoint) -> tuple[str, int]:
    parts = urlsplit(ep.url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def _is_r1(model: str | None) -> bool:
    key = normalise(model or "")
    return "r1" in key or "reason" in key


def _raw_chat(p: Probe, body: dict, stop: Callable[[Raw], bool]) -> Raw:
    """Stream ``body`` through the client's pool and headers, recording the raw deltas; stop
    reading (closing the stream, so the server stops generating) once ``stop`` says so."""
    client, ep, t = p.client, p.endpoint, p.settings.timeouts
    out = Raw()
    try:
        with client._client.stream(  # noqa: SLF001 - the raw wire, as the engine's pool sends it
                "POST", ep.url + "/chat/completions", json=body,
                headers=client._headers,  # noqa: SLF001
                timeout=httpx.Timeout(t.first_token, connect=t.connect)) as resp:
            out.status = resp.status_code
            if resp.status_code != 200:
                text = resp.read().decode("utf-8", "replace")
                out.error = error_from_response(resp.status_code, text, ep.name,
                                                resp.headers.get("retry-after"))
                return out
            for data in iter_sse_data(resp.iter_raw()):
                if data == "[DONE]":
                    break
                try:
                    obj = json.loads(data)
                except ValueError:
                    out.error = StreamBrokenError(f"the server sent a malformed chunk: {data[:80]!r}",
                                                  endpoint=ep.name)
                    return out
                if not isinstance(obj, dict):
                    continue
                if obj.get("error") and not obj.get("choices"):
                    err = obj["error"]
                    msg = err.get("message") if isinstance(err, dict) else err
                    out.error = ServerError(f"the server failed while generating: {str(msg)[:300]}",
                                            endpoint=ep.name)
                    return out
                for choice in obj.get("choices") or []:
                    delta = choice.get("delta") or {}
                    for key in ("reasoning", "reasoning_content"):
                        if isinstance(delta.get(key), str) and delta[key]:
                            out.fields.add(key)
                    if isinstance(delta.get("content"), str):
                        out.content += delta["content"]
                    if delta.get("tool_calls"):
                        out.tool_calls.extend(delta["tool_calls"])
                    if choice.get("finish_reason"):
                        out.finish_reason = choice["finish_reason"]
                if stop(out):
                    break
    except httpx.TimeoutException:
        out.error = ConnectError(f"no answer within {t.first_token:g}s (raise --timeout for a "
                                 "busy or cold server)", endpoint=ep.name)
    except httpx.HTTPError as e:
        out.error = ConnectError(f"the connection failed: {str(e)[:200] or type(e).__name__}",
                                 endpoint=ep.name)
    return out


def _get(p: Probe, path: str) -> httpx.Response:
    t = p.settings.timeouts
    return p.client._client.get(  # noqa: SLF001
        p.endpoint.root + path, headers=p.client._headers,  # noqa: SLF001
        timeout=httpx.Timeout(10.0, connect=t.connect))


def _http_error(e: httpx.HTTPError) -> str:
    text = str(e)
    low = text.lower()
    if "refused" in low:
        return "connection refused"
    if isinstance(e, httpx.TimeoutException):
        return "timed out"
    return text[:200] or type(e).__name__


# -- the checks --------------------------------------------------------------------------------

def check_connect(p: Probe) -> Check:
    host, port = _host_port(p.endpoint)
    t0 = time.perf_counter()
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        return Check("connect", FAIL, f"host name {host!r} not found ({e.strerror}): check the "
                     "name; in Kubernetes a replica is <pod>.<headless service>.<namespace>.svc, "
                     "e.g. vllm-0.vllm-headless.llm.svc", {"host": host, "port": port})
    dns = time.perf_counter() - t0
    family, _, _, _, addr = infos[0]
    t1 = time.perf_counter()
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(p.settings.timeouts.connect)
            s.connect(addr)
    except ConnectionRefusedError:
        return Check("connect", FAIL, f"connection refused by {addr[0]}:{port}: nothing listens "
                     "there. The server is down, or still loading weights (vLLM opens its port "
                     "only once the model is loaded; watch its log)", {"address": addr[0], "port": port})
    except TimeoutError:
        return Check("connect", FAIL, f"no answer from {addr[0]}:{port} within "
                     f"{p.settings.timeouts.connect:g}s: a firewall, a wrong address, or the host "
                     "is down", {"address": addr[0], "port": port})
    except OSError as e:
        return Check("connect", FAIL, f"could not connect to {addr[0]}:{port}: {e.strerror or e}",
                     {"address": addr[0], "port": port})
    tcp = time.perf_counter() - t1
    return Check("connect", OK, f"{host} resolved to {addr[0]} in {_ms(dns)}, TCP connect {_ms(tcp)}",
                 {"address": addr[0], "port": port, "dns_ms": round(dns * 1000, 2),
                  "connect_ms": round(tcp * 1000, 2)})


def _mtls_refusal(client_cert: str | None) -> str:
    if client_cert:
        return ("the server rejected this client certificate (mutual TLS): check that it is "
                "signed by a CA the server trusts")
    return ("the server requires a client certificate (mutual TLS): pass --client-cert and "
            "--client-key (in the plugin: TLS → Custom)")


def check_tls(p: Probe) -> Check | None:
    if not p.endpoint.url.startswith("https://"):
        return None
    host, port = _host_port(p.endpoint)
    tls = p.settings.tls
    # the very context the plugin's pool verifies with (certifi's CAs by default, or the settings')
    ctx = getattr(getattr(getattr(p.client._client, "_transport", None), "_pool", None),  # noqa: SLF001
                  "_ssl_context", None) or build_context(tls)
    data: dict = {"verify": tls.verify, "client_certificate": bool(tls.client_cert)}
    t0 = time.perf_counter()
    try:
        with socket.create_connection((host, port), timeout=p.settings.timeouts.connect) as raw, \
                ctx.wrap_socket(raw, server_hostname=host) as s:
            took = time.perf_counter() - t0
            data.update(version=s.version(), handshake_ms=round(took * 1000, 2))
            cert = s.getpeercert() or {}
            # TLS 1.3 servers judge the client certificate after the handshake: ask once to see
            s.settimeout(p.settings.timeouts.connect)
            path = urlsplit(p.endpoint.root).path + "/health"  # behind a gateway's path prefix too
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            answered = bool(s.recv(64))
    except ssl.SSLCertVerificationError as e:
        why = e.verify_message or e.reason or str(e)
        return Check("tls", FAIL, f"the server's certificate was rejected: {why}. Give the CA that "
                     "signed it with --ca-bundle FILE (in the plugin: TLS → Custom → CA Bundle), or "
                     "fix the server's certificate", {**data, "error": why})
    except ssl.SSLError as e:
        text = f"{e.reason or ''} {e}".lower()
        if any(k in text for k in ("certificate required", "unknown ca", "bad certificate",
                                   "certificate unknown", "access denied", "handshake failure")):
            return Check("tls", FAIL, _mtls_refusal(tls.client_cert),
                         {**data, "error": e.reason or str(e)[:200]})
        return Check("tls", FAIL, f"TLS handshake failed: {e.reason or e}; is this an https "
                     "port?", {**data, "error": str(e)[:200]})
    except OSError as e:
        return Check("tls", FAIL, f"TLS connection failed: {e.strerror or e}", data)
    if not answered:  # closed right after the handshake: how some servers refuse a client cert
        return Check("tls", FAIL, _mtls_refusal(tls.client_cert) + " (the server closed the "
                     "connection after the handshake without answering)", data)
    parts = [f"{data['version']}, handshake {_ms(took)}"]
    status = OK
    if not tls.verify:
        status = WARN
        parts.append("certificate NOT verified (--insecure): for testing only")
    if cert:
        issuer = dict(x[0] for x in cert.get("issuer", ()))
        subject = dict(x[0] for x in cert.get("subject", ()))
        expires = datetime.fromtimestamp(ssl.cert_time_to_seconds(cert["notAfter"]), timezone.utc)
        days = (expires - datetime.now(timezone.utc)).days
        data.update(subject=subject.get("commonName"), issuer=issuer.get("commonName"),
                    expires=expires.isoformat(), days_left=days)
        parts.append(f"certificate verified ({subject.get('commonName', '?')}, issued by "
                     f"{issuer.get('commonName', '?')}), expires in {days} days")
        if days < 14:
            status = WARN
            parts.append("renew it soon")
    if tls.client_cert:
        parts.append("client certificate accepted")
    return Check("tls", status, "; ".join(parts), data)


def check_auth(p: Probe) -> Check:
    ep = p.endpoint
    oauth2 = p.settings.oauth2 is not None
    keyed = bool(p.settings.api_key) or oauth2
    what = "OAuth2 token" if oauth2 else "API key"
    try:
        data = p.client.get_json(ep, ep.url + "/models", timeout=p.settings.timeouts.first_token)
    except AuthError as e:
        if e.status is None:  # not the endpoint's answer: the token endpoint, or mutual TLS
            detail = str(e)
        elif oauth2:
            detail = (f"the server refused the OAuth2 token (HTTP {e.status}), also after fetching "
                      "a fresh one: check --oauth2-scope / --oauth2-audience against what the "
                      "gateway requires, and that it trusts this identity provider")
        elif keyed:
            detail = (f"the server refused the API key (HTTP {e.status}): check --api-key / "
                      "DEEPSEEK_API_KEY against the server's --api-key (VLLM_API_KEY)")
        else:
            detail = (f"the server requires an API key (HTTP {e.status}): pass --api-key or set "
                      "DEEPSEEK_API_KEY (in the plugin: API Key)")
        return Check("auth", FAIL, detail, {"status": e.status, "key_sent": keyed})
    except EngineError as e:
        where = e.message if e.endpoint == ep.name else str(e)  # e.g. the token endpoint's name
        return Check("auth", FAIL, f"GET /v1/models failed: {where}", {"key_sent": keyed})
    models = data.get("data") if isinstance(data, dict) else None
    if not isinstance(models, list):
        return Check("auth", FAIL, "/v1/models did not return an OpenAI model list: is this the "
                     "OpenAI base URL of a vLLM or SGLang server (usually ending in /v1)?",
                     {"key_sent": keyed})
    p.served = [m for m in models if isinstance(m, dict)]
    owners = {str(m.get("owned_by", "")).lower() for m in p.served}
    p.flavor = "vllm" if "vllm" in owners else "sglang" if "sglang" in owners else None
    if not keyed:
        return Check("auth", WARN, "no API key needed: anyone who can reach this port can use "
                     "the GPUs; start the server with --api-key (or VLLM_API_KEY)",
                     {"key_sent": False, "key_required": False})
    try:  # does the server actually check it?
        r = p.client._client.get(ep.url + "/models", timeout=10.0)  # noqa: SLF001 - no auth header
        required = r.status_code in (401, 403)
    except httpx.HTTPError:
        required = None
    if required is False:
        return Check("auth", WARN, f"the {what} was sent, but the server answers without one too: "
                     "it runs without --api-key", {"key_sent": True, "key_required": False})
    return Check("auth", OK, f"{what} accepted" + (" (requests without it are refused)"
                                                   if required else ""),
                 {"key_sent": True, "key_required": required})


def check_models(p: Probe) -> Check:
    served = p.served or []
    listing = [{"id": str(m.get("id")), "max_model_len": context_size_of(m)} for m in served
               if m.get("id")]
    ids = [m["id"] for m in listing]
    data: dict = {"served": listing}
    if not ids:
        return Check("models", FAIL, "the server lists no models at /v1/models", data)
    wanted = p.opts.model
    if wanted and wanted not in ids:
        return Check("models", FAIL, f"{wanted!r} is not served here; the server serves: "
                     f"{', '.join(ids)}. Fix --model (the plugin's Served Model Name) or the "
                     "server's --served-model-name", data)
    p.model = wanted or ids[0]
    size = next(m["max_model_len"] for m in listing if m["id"] == p.model)
    data.update(model=p.model, max_model_len=size)
    status, notes = OK, []
    if len(ids) > 1 and not wanted:
        status = WARN
        notes.append(f"several models served ({', '.join(ids)}): probing the first; choose with "
                     "--model, and set Served Model Name in the plugin")
    if size is None:
        status = WARN
        notes.append("the server does not report max_model_len: enter the context size in the "
                     "plugin's model settings")
    head = f"{p.model}" + (f" (max_model_len {size})" if size else "")
    return Check("models", status, "; ".join([head, *notes]), data)


def check_health(p: Probe) -> Check:
    t0 = time.perf_counter()
    try:
        r = _get(p, "/health")
    except httpx.HTTPError as e:
        return Check("health", FAIL, f"/health failed: {_http_error(e)}")
    took = time.perf_counter() - t0
    data = {"status": r.status_code, "ms": round(took * 1000, 2)}
    if r.status_code == 200:
        return Check("health", OK, f"/health 200 in {_ms(took)}", data)
    if r.status_code == 503:
        return Check("health", FAIL, "/health 503: the server is starting, draining, or its engine "
                     "died (check its log); the plugin sets it aside until /health answers 200", data)
    # as the plugin's probe reads it: only 503 (or no answer) means down
    return Check("health", WARN, f"/health answers {r.status_code} (a gateway in front?): the "
                 "plugin's background health probe cannot see this endpoint's state and relies "
                 "on real traffic; expose the server's /health at the same address", data)


def check_metrics(p: Probe) -> Check:
    try:
        r = _get(p, "/metrics")
    except httpx.HTTPError as e:
        return Check("metrics", WARN, f"/metrics failed: {_http_error(e)}")
    flavor_hint = ("SGLang exposes it only with --enable-metrics" if p.flavor != "vllm"
                   else "expose the server's /metrics at the same address")
    if r.status_code != 200:
        return Check("metrics", WARN, f"/metrics answers {r.status_code}: {flavor_hint}. Without it "
                     "the plugin routes on its own in-flight counts and measured time to first "
                     "token only, and the reference autoscaler and alerts (deploy/k8s) have no "
                     "data", {"status": r.status_code})
    text = r.text
    names = {line.split("{", 1)[0].split(" ", 1)[0] for line in text.splitlines()
             if line and not line.startswith("#")}
    flavor = ("vllm" if any(n.startswith("vllm:") for n in names)
              else "sglang" if any(n.startswith("sglang:") for n in names) else None)
    if flavor is None:
        return Check("metrics", WARN, "/metrics has no vLLM or SGLang series: is this a gateway's "
                     "own metrics? The plugin's load-aware routing needs the server's queue depth",
                     {"status": 200, "series": len(names)})
    p.flavor = p.flavor or flavor
    load = parse_metrics(text)
    missing = [n for n in _REFERENCE_SERIES[flavor] if n not in names]
    data = {"status": 200, "flavor": flavor, "missing": missing}
    detail = f"{_FLAVOR_NAME[flavor]} metrics"
    if load is not None:
        data.update(running=load.running, waiting=load.waiting, kv_cache=load.kv)
        detail += f": {load.running:g} running, {load.waiting:g} waiting"
        if load.kv is not None:
            detail += f", KV cache {load.kv:.0%}"
    if missing:
        detail += f" (not exported: {', '.join(missing)})"
    return Check("metrics", OK, detail, data)


def _shape_known(raw: Raw) -> bool:
    text = raw.content.lstrip()
    return bool(raw.fields) or text.startswith("<think>") or "</think>" in text \
        or bool(raw.tool_calls)


def check_reasoning(p: Probe) -> Check:
    body = build_body(p.model, [{"role": "user", "content": "Hello! Answer in one short sentence."}],
                      {"max_tokens": SHAPE_TOKENS, "temperature": 0.6})
    raw = _raw_chat(p, body, _shape_known)
    if raw.error is not None:
        return Check("reasoning", FAIL, f"the chat request failed: {raw.error.message}",
                     {"status": raw.status})
    hint = _REASONING_HINT[p.flavor]
    text = raw.content.lstrip()
    data: dict = {"fields": sorted(raw.fields)}
    if raw.fields:
        if "reasoning" in raw.fields:
            p.shape = "reasoning"
            where = "`reasoning` (vLLM with a reasoning parser)"
            if "reasoning_content" in raw.fields:
                where += ", with the older `reasoning_content` alias"
        else:
            p.shape = "reasoning_content"
            where = "`reasoning_content` (SGLang, or vLLM before 0.11, with a reasoning parser)"
        return Check("reasoning", OK, f"reasoning arrives in {where}", {**data, "shape": p.shape})
    if text.startswith("<think>"):
        p.shape = "think_inline"
        return Check("reasoning", WARN, f"reasoning arrives inline as <think>…</think> in the "
                     f"answer text: {_FLAVOR_NAME[p.flavor]} runs without a reasoning parser. The "
                     f"plugin still shows it correctly; to fix it at the source, {hint}",
                     {**data, "shape": p.shape})
    if "</think>" in text:
        p.shape = "think_close_only"
        return Check("reasoning", WARN, f"reasoning arrives in the answer text, closed by a bare "
                     f"</think> (the chat template opened <think>): {_FLAVOR_NAME[p.flavor]} runs "
                     f"without a reasoning parser. The plugin still shows it correctly; to fix it "
                     f"at the source, {hint}", {**data, "shape": p.shape})
    p.shape = "none"
    data["shape"] = "none"
    if raw.finish_reason == "length" and not raw.content.strip():
        return Check("reasoning", WARN, f"no answer text within {SHAPE_TOKENS} tokens: cannot tell "
                     "where reasoning goes", data)
    if _is_r1(p.model):
        if raw.finish_reason == "length":
            return Check("reasoning", WARN, f"no reasoning markers within {SHAPE_TOKENS} tokens; "
                         f"an R1 model normally closes </think> by then. If reasoning shows up in "
                         f"answers, {hint}", data)
        return Check("reasoning", WARN, f"{p.model} looks like an R1 model but answered without "
                     "reasoning: is the model the one you think it is?", data)
    return Check("reasoning", OK, "no reasoning (a chat model)", data)


def _tool_as_text(content: str) -> bool:
    return any(m in content for m in _TOOL_TEXT_MARKERS) or (
        _TOOL["function"]["name"] in content and '"location"' in content)


def _tool_done(raw: Raw) -> bool:
    return bool(raw.tool_calls) or _tool_as_text(raw.content)


def check_tools(p: Probe) -> Check:
    body = build_body(p.model, [{"role": "user", "content": "What is the weather in Paris right "
                                                            "now? Use the get_weather tool."}],
                      {"max_tokens": TOOL_TOKENS, "temperature": 0.6}, tools=[_TOOL])
    raw = _raw_chat(p, body, _tool_done)
    hint = _TOOL_HINT[p.flavor]
    r1 = (" (R1 and its distills are not trained for tool calls; agents want V3 or V2.5)"
          if _is_r1(p.model) else "")
    if raw.error is not None:
        msg = raw.error.message
        if raw.status == 400 and "tool" in msg.lower():
            return Check("tools", WARN, f"the server rejects tool calls ({msg[:200]}): {hint}{r1}",
                         {"status": 400, "parser": False})
        if isinstance(raw.error, ConnectError) or raw.status is None or raw.status >= 500:
            return Check("tools", FAIL, f"the request with a tool failed: {msg}",
                         {"status": raw.status})
        return Check("tools", WARN, f"the request with a tool was refused: {msg}. {hint}{r1}",
                     {"status": raw.status, "parser": False})
    if raw.tool_calls:
        names = sorted({str((c.get("function") or {}).get("name")) for c in raw.tool_calls
                        if isinstance(c, dict) and (c.get("function") or {}).get("name")})
        return Check("tools", OK, f"tool calls work: the tool-call parser returned "
                     f"{', '.join(names) or 'a call'}", {"parser": True, "called": names})
    if _tool_as_text(raw.content):
        return Check("tools", WARN, "the model wrote its tool call as plain text: the server has "
                     f"no tool-call parser; {hint}", {"parser": False, "text_call": True})
    return Check("tools", WARN, "the model answered in text instead of calling the offered tool: "
                 f"either the server has no tool-call parser ({hint}) or the model does not call "
                 f"tools{r1}", {"parser": None})


def check_speed(p: Probe) -> Check:
    body = build_body(p.model, [{"role": "user", "content": "Count from 1 to 30, separated by "
                                                            "spaces."}],
                      {"max_tokens": SPEED_TOKENS, "temperature": 0.6})
    ttfts, rates, usage_seen = [], [], []
    for _ in range(max(1, p.opts.requests)):
        began = time.monotonic()
        first = last = None
        pieces = 0
        usage = None
        try:
            for delta in p.client.stream(body):
                if delta.usage:
                    usage = delta.usage
                if delta.reasoning or delta.content or delta.tool_calls:
                    last = time.monotonic()
                    first = first or last
                    pieces += 1
        except EngineError as e:
            p.usage_seen = None
            return Check("speed", FAIL, f"a short request failed: {e.message}",
                         {"completed": len(ttfts)})
        usage_seen.append(usage is not None)
        if first is None:
            continue
        ttfts.append(first - began)
        tokens = (usage or {}).get("completion_tokens") or pieces
        if last > first and tokens > 1:
            rates.append((tokens - 1) / (last - first))
    p.usage_seen = any(usage_seen)
    if not ttfts:
        return Check("speed", FAIL, "the server answered without any token")
    ttft = statistics.median(ttfts)
    rate = statistics.median(rates) if rates else None
    data = {"requests": len(ttfts), "ttft_ms_median": round(ttft * 1000, 1),
            "ttft_ms_max": round(max(ttfts) * 1000, 1),
            "tokens_per_s_median": round(rate, 1) if rate else None}
    detail = (f"time to first token {_ms(ttft)} (median of {len(ttfts)}, max {_ms(max(ttfts))}), "
              + (f"{rate:.0f} tokens/s" if rate else "tokens/s not measurable (one chunk)"))
    if ttft > 2.0:
        return Check("speed", WARN, detail + ": slow for a short prompt: the server is busy "
                     "(see metrics: waiting) or cold", data)
    return Check("speed", OK, detail, data)


def check_usage(p: Probe) -> Check:
    if p.usage_seen:
        return Check("usage", OK, "token usage reported on streams (stream_options.include_usage "
                     "honoured)", {"usage": True})
    return Check("usage", WARN, "the server sent no token usage although the requests asked for "
                 "it (stream_options.include_usage): the plugin then counts tokens offline with "
                 "DeepSeek's tokenizer, which can differ from the model's own (R1 distills use "
                 "Qwen/Llama tokenizers). Upgrade the server or the gateway that drops it",
                 {"usage": False})


def check_continue(p: Probe) -> Check:
    """Whether a stream cut after its first tokens can be continued (``continue_final_message``,
    what the plugin sends to recover one) rather than ending in an error."""
    body = build_body(p.model, [{"role": "user", "content": "Say hello."},
                                {"role": "assistant", "content": "Hello"}],
                      {"max_tokens": 4, "temperature": 0.6})
    body.update(continue_final_message=True, add_generation_prompt=False)
    raw = _raw_chat(p, body, lambda r: bool(r.content or r.finish_reason))
    if raw.error is None:
        return Check("continue", OK, "a stream cut mid-answer can be continued from its last token "
                     "(continue_final_message accepted)", {"continue": True})
    if isinstance(raw.error, ConnectError) or raw.status is None or raw.status >= 500:
        return Check("continue", FAIL, f"the continuation request failed: {raw.error.message}",
                     {"status": raw.status})
    return Check("continue", WARN, f"the server refuses continue_final_message ({raw.error.message[:200]}): "
                 "a stream cut after its first tokens (a GPU node dying, a proxy timing out) reaches "
                 "users as an error instead of being continued. vLLM and SGLang accept it; check the "
                 "server's version, or the gateway in front that drops unknown fields",
                 {"continue": False, "status": raw.status})


# (check, the checks it needs): a check whose need failed is skipped
CHECKS: list[tuple[Callable[[Probe], Check | None], tuple[str, ...]]] = [
    (check_connect, ()),
    (check_tls, ("connect",)),
    (check_auth, ("connect", "tls")),
    (check_models, ("auth",)),
    (check_health, ("connect", "tls")),
    (check_metrics, ("connect", "tls")),
    (check_reasoning, ("models",)),
    (check_tools, ("models", "reasoning")),
    (check_speed, ("models", "reasoning")),
    (check_usage, ("speed",)),
    (check_continue, ("speed",)),
]


@dataclass
class EndpointReport:
    endpoint: str
    checks: list[Check]
    model: str | None = None
    flavor: str | None = None
    shape: str | None = None

    def get(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)


@dataclass
class Report:
    endpoints: list[EndpointReport]
    fleet: list[Check]
    secrets: list[str] = field(default_factory=list, repr=False)
    strict: bool = False  # --strict: a warning fails the run too

    @property
    def all_checks(self) -> list[Check]:
        return [c for e in self.endpoints for c in e.checks] + self.fleet

    @property
    def exit_code(self) -> int:
        failing = (FAIL, WARN) if self.strict else (FAIL,)
        return 1 if any(c.status in failing for c in self.all_checks) else 0

    def counts(self) -> dict[str, int]:
        out = {OK: 0, WARN: 0, FAIL: 0, SKIP: 0}
        for c in self.all_checks:
            out[c.status] += 1
        return out

    def to_dict(self) -> dict:
        return {"ok": self.exit_code == 0, "exit_code": self.exit_code, "strict": self.strict,
                "summary": self.counts(),
                "endpoints": [{"endpoint": e.endpoint, "model": e.model, "server": e.flavor,
                               "reasoning_shape": e.shape,
                               "checks": [asdict(c) for c in e.checks]} for e in self.endpoints],
                "fleet": [asdict(c) for c in self.fleet]}

    def to_json(self) -> str:
        return scrub(json.dumps(self.to_dict(), indent=2, ensure_ascii=False, default=str),
                      self.secrets)

    def render(self) -> str:
        lines = [f"DeepSeek endpoint doctor: {len(self.endpoints)} endpoint"
                 f"{'s' if len(self.endpoints) != 1 else ''}", ""]
        width = max((len(c.name) for c in self.all_checks), default=8)
        for e in self.endpoints:
            lines.append(e.endpoint)
            lines += [f"  {c.status:<5} {c.name:<{width}}  {c.detail}" for c in e.checks]
            lines.append("")
        if self.fleet:
            lines.append(f"all {len(self.endpoints)} endpoints")
            lines += [f"  {c.status:<5} {c.name:<{width}}  {c.detail}" for c in self.fleet]
            lines.append("")
        n = self.counts()
        verdict = "FAILED" if self.exit_code else "passed"
        if self.exit_code and not n[FAIL]:
            verdict += " (--strict: warnings fail)"
        lines.append(f"{verdict}: {n[OK]} ok, {n[WARN]} warnings, {n[FAIL]} failed"
                     + (f", {n[SKIP]} skipped" if n[SKIP] else ""))
        return scrub("\n".join(lines), self.secrets)


def _settings(urls: list[str], opts: Options) -> Settings:
    creds = {"endpoint_urls": "\n".join(urls), "api_key": opts.api_key or "",
             "served_model_name": opts.model or "",
             "timeouts": f"connect=5 first_token={opts.timeout:g} idle=30 "
                         f"total={max(120.0, opts.timeout * 2):g}"}
    if opts.ca_bundle or opts.client_cert or opts.client_key or opts.insecure:
        creds.update(tls_mode="custom", tls_verify="false" if opts.insecure else "true",
                     tls_ca_bundle=opts.ca_bundle or "", tls_client_cert=opts.client_cert or "",
                     tls_client_key=opts.client_key or "")
    if opts.oauth2_token_url:
        creds.update(auth_mode="oauth2", oauth2_token_url=opts.oauth2_token_url,
                     oauth2_client_id=opts.oauth2_client_id or "",
                     oauth2_client_secret=opts.oauth2_client_secret or "",
                     oauth2_scope=opts.oauth2_scope or "", oauth2_audience=opts.oauth2_audience or "")
    return parse_settings(creds)


def _fleet(reports: list[EndpointReport]) -> list[Check]:
    reports = [r for r in reports if r.model]  # the endpoints that answered
    if len(reports) < 2:
        return []
    out = []
    for what, attr in (("model", "model"), ("reasoning shape", "shape"), ("server", "flavor")):
        seen = {r.endpoint: getattr(r, attr) for r in reports if getattr(r, attr)}
        if len(set(seen.values())) > 1:
            out.append(Check("fleet", WARN, f"the endpoints differ in {what}: "
                             + ", ".join(f"{k}={v}" for k, v in seen.items())
                             + ". The plugin sends any request to any endpoint: keep replicas alike",
                             {attr: seen}))
    sizes = {}
    for r in reports:
        c = r.get("models")
        if c and c.data.get("max_model_len"):
            sizes[r.endpoint] = c.data["max_model_len"]
    if len(set(sizes.values())) > 1:
        out.append(Check("fleet", WARN, "the endpoints differ in max_model_len: "
                         + ", ".join(f"{k}={v}" for k, v in sizes.items())
                         + ". A long request may fit one replica and fail on another",
                         {"max_model_len": sizes}))
    if not out:
        out.append(Check("fleet", OK, f"{len(reports)} endpoints serve the same model the same way",
                         {}))
    return out


def run(urls: list[str], opts: Options | None = None, *,
        progress: Callable[[str], None] | None = None) -> Report:
    """Probe every endpoint; raises ``ConfigError`` for unusable arguments (bad URL, PEM...)."""
    opts = opts or Options()
    settings = _settings(urls, opts)
    say = progress or (lambda _msg: None)
    registry = ClientRegistry()
    one_try = RetryPolicy(attempts=1, budget=RetryBudget())
    reports = []
    try:
        for ep in settings.endpoints:
            single = replace(settings, endpoints=(ep,))
            client = ChatClient(single, registry=registry, health=HealthBook(), policy=one_try,
                                prober=None)
            p = Probe(ep, single, client, opts)
            checks = []
            for fn, needs in CHECKS:
                name = fn.__name__.removeprefix("check_")
                if fn is check_tls and not ep.url.startswith("https://"):
                    continue  # plain http: nothing to check
                blocked = [p.failed[n] for n in needs if n in p.failed]
                if blocked:
                    p.failed[name] = blocked[0]
                    checks.append(Check(name, SKIP, f"skipped: {blocked[0]} failed"))
                    continue
                say(f"{ep.name}: {name}…")
                try:
                    c = fn(p)
                except ConfigError:
                    raise
                except Exception as e:  # a doctor reports; it does not crash on one odd answer
                    c = Check(name, FAIL, f"the check crashed: {type(e).__name__}: {e}")
                if c is None:
                    continue
                if c.status in (FAIL, SKIP):
                    p.failed[name] = name
                say(f"{ep.name}: {name} {c.status}")
                checks.append(c)
            reports.append(EndpointReport(ep.name, checks, p.model, p.flavor, p.shape))
    finally:
        registry.close()
    return Report(reports, _fleet(reports), secrets=settings.secrets(), strict=opts.strict)


def _read(path: str | None, what: str) -> str | None:
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"{what}: cannot read {path}: {e.strerror}") from None


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m deepseek_engine.doctor",
        description="Probe vLLM/SGLang endpoints as the DeepSeek Self-Hosted plugin uses them and "
                    "report what to fix. Exit code 1 when a check fails (warnings do not fail, "
                    "unless --strict).")
    ap.add_argument("urls", nargs="+", metavar="URL",
                    help="OpenAI base URL of each replica, e.g. http://gpu-1:8000/v1 (as in the "
                         "plugin's Endpoint URLs; commas work too)")
    ap.add_argument("--api-key", help="the server's --api-key (default: $DEEPSEEK_API_KEY; the "
                                      "environment keeps it out of the process list)")
    ap.add_argument("--model", help="served model id to probe (default: the first served)")
    ap.add_argument("--json", action="store_true", help="print one JSON report on stdout")
    ap.add_argument("--requests", type=int, default=3,
                    help="short requests for the time-to-first-token / tokens-per-second median "
                         "(default 3)")
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="seconds to wait for a first token (default 60)")
    ap.add_argument("--ca-bundle", metavar="FILE", help="PEM CA certificate(s) for https endpoints")
    ap.add_argument("--client-cert", metavar="FILE", help="PEM client certificate (mutual TLS)")
    ap.add_argument("--client-key", metavar="FILE", help="PEM client key (mutual TLS)")
    ap.add_argument("--insecure", action="store_true",
                    help="do not verify the server's certificate (testing only)")
    ap.add_argument("--oauth2-token-url", metavar="URL",
                    help="OAuth2 client credentials: the identity provider's token endpoint; the "
                         "client secret is read from $DEEPSEEK_OAUTH2_CLIENT_SECRET only")
    ap.add_argument("--oauth2-client-id", metavar="ID", help="OAuth2 client id")
    ap.add_argument("--oauth2-scope", metavar="SCOPE", help="OAuth2 scope (optional)")
    ap.add_argument("--oauth2-audience", metavar="AUDIENCE", help="OAuth2 audience (optional)")
    ap.add_argument("--strict", action="store_true",
                    help="exit 1 on warnings too (no reasoning parser, no tool-call parser, no "
                         "usage on streams, ...): for a deployment gate")
    ap.add_argument("--quiet", "-q", action="store_true", help="no progress lines on stderr")
    return ap


def _oauth2_args(args: argparse.Namespace) -> str | None:
    """What is wrong with the OAuth2 arguments, or None."""
    rest = [f"--oauth2-{n}" for n in ("client-id", "scope", "audience")
            if getattr(args, "oauth2_" + n.replace("-", "_"))]
    if not args.oauth2_token_url:
        return f"{rest[0]} needs --oauth2-token-url" if rest else None
    if not args.oauth2_client_id:
        return "--oauth2-token-url needs --oauth2-client-id"
    if not os.environ.get("DEEPSEEK_OAUTH2_CLIENT_SECRET"):
        return ("--oauth2-token-url needs the client secret in $DEEPSEEK_OAUTH2_CLIENT_SECRET (it "
                "is never taken on the command line, where the process list would show it)")
    return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.requests < 1 or args.requests > 100:
        print("doctor: --requests must be between 1 and 100", file=sys.stderr)
        return 2
    if not 0.1 <= args.timeout <= 3600:
        print("doctor: --timeout must be between 0.1 and 3600 seconds", file=sys.stderr)
        return 2
    if problem := _oauth2_args(args):
        print(f"doctor: {problem}", file=sys.stderr)
        return 2
    try:
        opts = Options(api_key=args.api_key or os.environ.get("DEEPSEEK_API_KEY") or None,
                       model=args.model, requests=args.requests, timeout=args.timeout,
                       ca_bundle=_read(args.ca_bundle, "--ca-bundle"),
                       client_cert=_read(args.client_cert, "--client-cert"),
                       client_key=_read(args.client_key, "--client-key"),
                       insecure=args.insecure, oauth2_token_url=args.oauth2_token_url,
                       oauth2_client_id=args.oauth2_client_id,
                       oauth2_client_secret=os.environ.get("DEEPSEEK_OAUTH2_CLIENT_SECRET") or None,
                       oauth2_scope=args.oauth2_scope, oauth2_audience=args.oauth2_audience,
                       strict=args.strict)
        progress = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
        report = run(args.urls, opts, progress=progress)
    except ConfigError as e:
        print(f"doctor: {e}", file=sys.stderr)
        return 2
    print(report.to_json() if args.json else report.render(), flush=True)
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
