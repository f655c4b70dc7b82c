"""Opt-in observability for operators: Prometheus metrics and one JSON log line per request.

Both are off by default. ``DEEPSEEK_METRICS_PORT=9464`` serves Prometheus metrics from the plugin
process (prometheus-client); ``DEEPSEEK_JSON_LOGS=1`` logs one JSON object per request (request id,
endpoint, model, latency, time to first token, tokens, outcome, error class) to the plugin's log,
which the Dify plugin daemon forwards: ready for ELK or Loki. Prompts and answers are never logged,
nor are secrets (messages are the engine's own, which carry none).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time

__all__ = ["Telemetry", "TELEMETRY", "configure"]

log = logging.getLogger("deepseek_selfhosted.requests")


class Telemetry:
    """No-op unless configured; the engine and the Dify edge call these at each event."""

    def __init__(self) -> None:
        self.metrics = None
        self.json_logs = False

    # -- engine events -------------------------------------------------------------------
    def attempt_failed(self, endpoint: str, error: Exception, retried: bool) -> None:
        if self.metrics and retried:
            self.metrics["retries"].labels(endpoint, type(error).__name__).inc()

    def ejected(self, endpoint: str) -> None:
        if self.metrics:
            self.metrics["ejections"].labels(endpoint).inc()

    def endpoint_state(self, endpoint: str, up: bool) -> None:
        if self.metrics:
            self.metrics["up"].labels(endpoint).set(1 if up else 0)

    def in_flight(self, endpoint: str, delta: int) -> None:
        if self.metrics:
            self.metrics["in_flight"].labels(endpoint).inc(delta)

    def answer_cache(self, event: str, reason: str, n: int) -> None:
        """The answer cache's hits, misses, bypasses (with why), errors and bytes."""
        if self.metrics:
            if event.startswith("bytes_"):
                self.metrics["cache_bytes"].labels(event.removeprefix("bytes_")).inc(n)
            else:
                self.metrics["cache"].labels(event, reason).inc(n)

    # -- request events (the Dify edge) --------------------------------------------------
    def request_done(self, *, request_id: str, endpoint: str | None, model: str, outcome: str,
                     error: str | None, latency: float, ttft: float | None,
                     prompt_tokens: int | None, completion_tokens: int | None, stream: bool,
                     cached: bool = False) -> None:
        ep = endpoint or "none"
        if self.metrics:
            m = self.metrics
            m["requests"].labels(ep, model, outcome).inc()
            m["latency"].labels(ep, outcome).observe(latency)
            if ttft is not None:
                m["ttft"].labels(ep).observe(ttft)
            if prompt_tokens:
                m["tokens"].labels(model, "prompt").inc(prompt_tokens)
            if completion_tokens:
                m["tokens"].labels(model, "completion").inc(completion_tokens)
        if self.json_logs:
            log.info(json.dumps({
                "event": "llm_request", "request_id": request_id, "endpoint": endpoint, "model": model,
                "stream": stream, "outcome": outcome, "error_class": error,
                "latency_ms": round(latency * 1000, 1),
                "ttft_ms": None if ttft is None else round(ttft * 1000, 1),
                "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "cached": cached, "ts": round(time.time(), 3)}, separators=(",", ":")))


TELEMETRY = Telemetry()
_lock = threading.Lock()


def configure(env: dict | None = None) -> Telemetry:
    """Read the environment once (at plugin start) and switch on what is asked for."""
    env = os.environ if env is None else env
    with _lock:
        TELEMETRY.json_logs = env.get("DEEPSEEK_JSON_LOGS", "").lower() in ("1", "true", "yes", "on")
        port = env.get("DEEPSEEK_METRICS_PORT", "").strip()
        if port and TELEMETRY.metrics is None:
            addr = env.get("DEEPSEEK_METRICS_ADDR", "0.0.0.0")
            try:  # a typo in the environment must not stop the plugin: it runs without metrics
                TELEMETRY.metrics = _start_metrics(_port(port), addr)
            except (ValueError, OSError) as e:
                log.warning("metrics are off: cannot serve them on DEEPSEEK_METRICS_PORT=%r "
                            "(DEEPSEEK_METRICS_ADDR=%r): %s. Set DEEPSEEK_METRICS_PORT to a free "
                            "port number (1-65535), or unset it", port, addr, e)
    return TELEMETRY


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError("not a port number from 1 to 65535")
    return int(text)


def _start_metrics(port: int, addr: str) -> dict:
    from prometheus_client import Counter, Gauge, Histogram, start_http_server

    start_http_server(port, addr=addr)  # first: a port in use leaves nothing registered
    buckets = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
    metrics = {
        "requests": Counter("deepseek_requests", "LLM requests by endpoint, model and outcome",
                            ["endpoint", "model", "outcome"]),
        "latency": Histogram("deepseek_request_duration_seconds", "Whole request duration",
                             ["endpoint", "outcome"], buckets=buckets),
        "ttft": Histogram("deepseek_time_to_first_token_seconds", "Time to first token",
                          ["endpoint"], buckets=buckets),
        "tokens": Counter("deepseek_tokens", "Tokens in and out", ["model", "direction"]),
        "retries": Counter("deepseek_retries", "Attempts retried, by endpoint and error class",
                           ["endpoint", "error"]),
        "ejections": Counter("deepseek_ejections", "Endpoints set aside by passive health",
                             ["endpoint"]),
        "in_flight": Gauge("deepseek_in_flight", "Requests in flight per endpoint", ["endpoint"]),
        "up": Gauge("deepseek_endpoint_up", "1 if the endpoint is routable, 0 if ejected", ["endpoint"]),
        "cache": Counter("deepseek_answer_cache", "Answer cache events: hit, miss, shadow_hit, shadow_miss, "
                         "bypass (reason), error, unreadable, dropped", ["event", "reason"]),
        "cache_bytes": Counter("deepseek_answer_cache_bytes", "Answer cache bytes read and written",
                               ["direction"]),
    }
    return metrics
