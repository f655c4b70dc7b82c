"""The server's own endpoints: the key (``auth``), ``/v1/models`` (``models``), ``/health`` and
``/metrics``."""

from __future__ import annotations

import time

import httpx

from deepseek_engine.discovery import context_size_of
from deepseek_engine.errors import AuthError, EngineError
from deepseek_engine.routing import parse_metrics

from .probe import FLAVOR_NAME, Probe, ms
from .report import FAIL, OK, WARN, Check
from .wire import GET_TIMEOUT, get, no_answer, unauthenticated_get

__all__ = ["check_auth", "check_health", "check_metrics", "check_models"]

# Series the reference alerts and autoscaler (deploy/k8s) read
_REFERENCE_SERIES = {"vllm": ("vllm:num_requests_waiting", "vllm:num_requests_running",
                              "vllm:time_to_first_token_seconds_bucket", "vllm:kv_cache_usage_perc"),
                     "sglang": ("sglang:num_queue_reqs", "sglang:num_running_reqs",
                                "sglang:time_to_first_token_seconds_bucket", "sglang:token_usage")}


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
        required = unauthenticated_get(p, ep.url + "/models").status_code in (401, 403)
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
    family = p.family
    data["family"] = family.name
    traits = [f"family {family.name}"] + [t for t, on in (
        ("thinking on demand", family.hybrid), ("always reasons", family.thinking == "always"),
        ("images", family.vision)) if on]
    head = f"{p.model}" + (f" (max_model_len {size})" if size else "") + f" [{', '.join(traits)}]"
    if family.name in ("chat", "reasoner") and not p.opts.catalogue:
        notes.append("the name matches no DeepSeek family the plugin knows: pass --catalogue with "
                     "the plugin model you will use (e.g. deepseek-v3.1) to probe it as that")
    return Check("models", status, "; ".join([head, *notes]), data)


def _failed(path: str, e: httpx.HTTPError, p: Probe) -> str:
    return f"{path} failed: {no_answer(e, p, f'no answer within {GET_TIMEOUT:g}s').message}"


def check_health(p: Probe) -> Check:
    t0 = time.perf_counter()
    try:
        r = get(p, "/health")
    except httpx.HTTPError as e:
        return Check("health", FAIL, _failed("/health", e, p))
    took = time.perf_counter() - t0
    data = {"status": r.status_code, "ms": round(took * 1000, 2)}
    if r.status_code == 200:
        return Check("health", OK, f"/health 200 in {ms(took)}", data)
    if r.status_code == 503:
        return Check("health", FAIL, "/health 503: the server is starting, draining, or its engine "
                     "died (check its log); the plugin sets it aside until /health answers 200", data)
    # as the plugin's probe reads it: only 503 (or no answer) means down
    return Check("health", WARN, f"/health answers {r.status_code} (a gateway in front?): the "
                 "plugin's background health probe cannot see this endpoint's state and relies "
                 "on real traffic; expose the server's /health at the same address", data)


def check_metrics(p: Probe) -> Check:
    try:
        r = get(p, "/metrics")
    except httpx.HTTPError as e:
        return Check("metrics", WARN, _failed("/metrics", e, p))
    flavor_hint = ("SGLang exposes it only with --enable-metrics" if p.flavor != "vllm"
                   else "expose the server's /metrics at the same address")
    if p.gateway and r.status_code != 200:
        return Check("metrics", OK, f"/metrics answers {r.status_code}: a gateway balances its workers "
                     "by their metrics itself; the plugin needs none for its one URL",
                     {"status": r.status_code, "gateway": p.gateway})
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
    detail = f"{FLAVOR_NAME[flavor]} metrics"
    if load is not None:
        data.update(running=load.running, waiting=load.waiting, kv_cache=load.kv)
        detail += f": {load.running:g} running, {load.waiting:g} waiting"
        if load.kv is not None:
            detail += f", KV cache {load.kv:.0%}"
    if missing:
        detail += f" (not exported: {', '.join(missing)})"
    return Check("metrics", OK, detail, data)
