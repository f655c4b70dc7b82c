"""Reaching the endpoint: DNS and TCP (``connect``), then TLS (``tls``), on plain sockets so that
each step is timed and named on its own. A TLS failure is typed by the engine's transport, as the
plugin's pool would meet it; the words here name the doctor's flags."""

from __future__ import annotations

import socket
import ssl
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx

from deepseek_engine.errors import AuthError, TLSError, connection_reason
from deepseek_engine.transport import connection_error

from .probe import Probe, host_port, ms
from .report import FAIL, OK, WARN, Check
from .wire import pool_ssl_context

__all__ = ["check_connect", "check_tls"]


def check_connect(p: Probe) -> Check:
    host, port = host_port(p.endpoint)
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
        return Check("connect", FAIL, f"could not connect to {addr[0]}:{port}: {connection_reason(e)}",
                     {"address": addr[0], "port": port})
    tcp = time.perf_counter() - t1
    return Check("connect", OK, f"{host} resolved to {addr[0]} in {ms(dns)}, TCP connect {ms(tcp)}",
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
    host, port = host_port(p.endpoint)
    tls = p.settings.tls
    # the very context the plugin's pool verifies with (the system's CAs by default, or the settings')
    ctx = pool_ssl_context(p.client)
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
    except OSError as e:  # ssl.SSLError included
        return _tls_failure(e, p, data)
    if not answered:  # closed right after the handshake: how some servers refuse a client cert
        return Check("tls", FAIL, _mtls_refusal(tls.client_cert) + " (the server closed the "
                     "connection after the handshake without answering)", data)
    parts = [f"{data['version']}, handshake {ms(took)}"]
    status = OK
    if not tls.verify:
        status = WARN
        parts.append("certificate NOT verified (--insecure): for testing only")
    if cert:
        issuer = dict(x[0] for x in cert.get("issuer", ()))
        subject = dict(x[0] for x in cert.get("subject", ()))
        expires = datetime.fromtimestamp(ssl.cert_time_to_seconds(cert["notAfter"]), UTC)
        days = (expires - datetime.now(UTC)).days
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


def _tls_failure(e: OSError, p: Probe, data: dict) -> Check:
    # typed as the engine types the same failure met by its pool, where httpx raises it as a
    # ConnectError carrying the ssl error's text
    kind = connection_error(httpx.ConnectError(str(e)), p.endpoint.name)
    reason = getattr(e, "reason", None)
    if isinstance(kind, AuthError):  # the server refused this client's certificate, or its absence
        return Check("tls", FAIL, _mtls_refusal(p.settings.tls.client_cert),
                     {**data, "error": reason or str(e)[:200]})
    if isinstance(kind, TLSError):  # this side does not trust the server's certificate
        why = getattr(e, "verify_message", None) or reason or str(e)
        return Check("tls", FAIL, f"the server's certificate was rejected: {why}. Give the CA that "
                     "signed it with --ca-bundle FILE (in the plugin: TLS → Custom → CA Bundle), or "
                     "fix the server's certificate", {**data, "error": why})
    if isinstance(e, ssl.SSLError):
        return Check("tls", FAIL, f"TLS handshake failed: {reason or e}; is this an https "
                     "port?", {**data, "error": str(e)[:200]})
    return Check("tls", FAIL, f"TLS connection failed: {connection_reason(e)}", data)
