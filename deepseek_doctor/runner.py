"""The run: each endpoint through the plugin's own settings parsing and ``ChatClient``, then
through ``CHECKS`` in order (a check whose need failed is skipped), then the fleet compared."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from urllib.parse import urlsplit

from deepseek_engine.client import ChatClient
from deepseek_engine.errors import ConfigError
from deepseek_engine.health import HealthBook
from deepseek_engine.retry import RetryPolicy
from deepseek_engine.settings import Settings, parse_settings
from deepseek_engine.transport import ClientRegistry

from .cache import check_cache
from .chat import check_continue, check_reasoning, check_speed, check_tools, check_usage
from .gateway import check_gateway
from .images import check_images
from .network import check_connect, check_tls
from .probe import Options, Probe
from .report import FAIL, OK, SKIP, WARN, Check, EndpointReport, Report
from .server import check_auth, check_health, check_metrics, check_models
from .structured import check_structured
from .thinking import check_thinking

__all__ = ["CHECKS", "run"]

# (check, the checks it needs): a check whose need failed is skipped
CHECKS: list[tuple[Callable[[Probe], Check | None], tuple[str, ...]]] = [
    (check_connect, ()),
    (check_tls, ("connect",)),
    (check_auth, ("connect", "tls")),
    (check_models, ("auth",)),
    (check_gateway, ("connect", "tls")),
    (check_health, ("connect", "tls")),
    (check_metrics, ("connect", "tls")),
    (check_reasoning, ("models",)),
    (check_thinking, ("models", "reasoning")),
    (check_tools, ("models", "reasoning")),
    (check_images, ("models", "reasoning")),
    (check_structured, ("models", "reasoning")),
    (check_speed, ("models", "reasoning")),
    (check_usage, ("speed",)),
    (check_continue, ("speed",)),
]


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
    one_try = RetryPolicy.one_shot()
    reports = []
    try:
        for ep in settings.endpoints:
            single = replace(settings, endpoints=(ep,))
            client = ChatClient(single, registry=registry, health=HealthBook(), policy=one_try,
                                prober=None)
            p = Probe(ep, single, client, opts)
            p.listed = len(settings.endpoints)
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
                except Exception as e:  # noqa: BLE001 - a doctor reports; one odd answer must not crash it
                    c = Check(name, FAIL, f"the check crashed: {type(e).__name__}: {e}")
                if c is None:
                    continue
                if c.status in (FAIL, SKIP):
                    p.failed[name] = name
                say(f"{ep.name}: {name} {c.status}")
                checks.append(c)
            reports.append(EndpointReport(ep.name, checks, p.model, p.flavor, p.shape,
                                          p.family.name if p.model else None))
    finally:
        registry.close()
    cache = check_cache(os.environ)  # the answer cache's Redis, when the environment names one
    secrets = settings.secrets() + [s for s in (os.environ.get("DEEPSEEK_CACHE_REDIS_PASSWORD"),
                                                urlsplit(os.environ.get("DEEPSEEK_CACHE_REDIS_URL", "")).password) if s]
    return Report(reports, _fleet(reports) + ([cache] if cache else []), secrets=secrets, strict=opts.strict)
