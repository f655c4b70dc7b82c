"""Whether the endpoint is a gateway in front of several GPU servers (``gateway``).

SGLang Model Gateway (SMG, formerly sgl-router) answers Kubernetes-style ``/liveness`` and
``/readiness`` probes without authentication, which neither vLLM nor SGLang serves; its control
plane lists its workers at ``/workers``. A gateway routes, retries and ejects among its workers
itself (``cache_aware`` by default: prefix affinity with a load guard), so the plugin should be
given that one URL: with one endpoint the plugin's own routing, affinity and ejection have nothing
to decide and cannot fight the gateway's. Listed beside other URLs, the gateway would be one
"replica" among servers it also balances.
"""

from __future__ import annotations

import httpx

from .probe import Probe
from .report import OK, WARN, Check
from .wire import get

__all__ = ["check_gateway", "GATEWAY_NAME"]

GATEWAY_NAME = "SGLang Model Gateway"


def _workers(p: Probe) -> int | None:
    """How many workers its control plane lists (None: not shown to this key)."""
    try:
        r = get(p, "/workers")
        data = r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    if isinstance(data, dict):
        data = data.get("workers", data.get("data"))
    return len(data) if isinstance(data, list) else None


def check_gateway(p: Probe) -> Check | None:
    """A ``gateway`` check when the endpoint is one; nothing for a plain vLLM or SGLang server."""
    try:
        probes = [get(p, path).status_code for path in ("/liveness", "/readiness")]
    except httpx.HTTPError:
        return None
    if not all(200 <= s < 300 for s in probes):
        return None
    p.gateway = GATEWAY_NAME
    workers = _workers(p)
    behind = f" in front of {workers} worker(s)" if workers is not None else ""
    data = {"gateway": GATEWAY_NAME, "workers": workers, "endpoints": p.listed}
    if p.listed > 1:
        return Check("gateway", WARN, f"{GATEWAY_NAME}{behind}, listed beside other endpoints: the "
                     "plugin would balance the gateway against servers it balances itself. Give the "
                     "plugin the gateway's URL alone", data)
    return Check("gateway", OK, f"{GATEWAY_NAME}{behind}: it routes among its workers itself "
                 "(its cache_aware policy keeps conversations where their prefix is cached); give the "
                 "plugin this one URL, where its own routing has nothing to decide", data)
