"""deepseek_doctor: probe vLLM / SGLang endpoints the way the plugin uses them and say what to fix.

An operator's tool beside the engine, not part of the plugin (the .difypkg leaves it out).

    python -m deepseek_doctor http://gpu-1:8000/v1 http://gpu-2:8000/v1 [--model NAME] [--catalogue MODEL]
        [--api-key KEY | env DEEPSEEK_API_KEY] [--json] [--requests N] [--timeout S]
        [--ca-bundle FILE] [--client-cert FILE --client-key FILE] [--insecure] [--quiet]
        [--oauth2-token-url URL --oauth2-client-id ID [--oauth2-scope S] [--oauth2-audience A]
         + env DEEPSEEK_OAUTH2_CLIENT_SECRET] [--strict]

    from deepseek_doctor import Options, run
    report = run(["http://gpu-1:8000/v1"], Options(requests=1))   # a Report
    report.exit_code, report.render(), report.to_json()

Each endpoint goes through the plugin's own settings parsing (``parse_settings``) and transport
(``ChatClient``: the pooled client, its TLS, its auth headers, ``get_json`` and ``stream``), then
through a list of checks (``runner.CHECKS``), each returning a ``Check(name, status, detail, data)``:

    network.py  connect    DNS and TCP connect, timed
                tls        https only: handshake, certificate verification and expiry, mutual TLS
    server.py   auth       the key is accepted (and needed)
                models     served ids and max_model_len
                health     /health
                metrics    /metrics: vLLM or SGLang names, the series the reference deployment reads
    chat.py     reasoning  where reasoning arrives (raw deltas; a hybrid model asked to think):
                           reasoning / reasoning_content / inline <think> / bare </think> (no
                           reasoning parser) / none (a chat model)
    thinking.py thinking   a hybrid model (V3.1, V3.2, V4, V4.1) sent chat_template_kwargs.thinking on
                           and off: the server honours the switch, or its template ignores it
    chat.py     tools      a tool offered: tool_calls back means the tool-call parser is on; the
                           family's markup in the text (V3, V3.1, DSML) names the parser to add
    images.py   images     a tiny PNG as a data URL: a text model refuses it (fine), a vision model
                           refusing it is not served with multimodal support
    chat.py     speed      median TTFT and tokens/s
                usage      stream_options.include_usage honoured
                continue   continue_final_message accepted: a stream cut mid-answer can be continued
    cache.py    cache      once, with the fleet: the answer cache's Redis named by DEEPSEEK_CACHE_REDIS_URL
                           in the environment (reachable, fast enough, maxmemory with eviction)

The model's family (``deepseek_engine.families``: the served id, or ``--catalogue``) decides what
is sent (``thinking.thinking_for`` and ``protocol.build_body``, as the plugin does) and which
server flags each finding names (``serve_flags.yaml``, per family, for vLLM and SGLang).

Failures are typed by the engine (``error_from_response``, ``parse_chunk``,
``transport.connection_error``), so the doctor and the plugin name them alike; ``wire.py`` sends the
raw requests. Statuses: ok, warn (works, but worth fixing; does not fail the run unless
``--strict``), fail, skip (a check it depends on failed). Exit code: 0 when nothing failed, 1 when a
check failed (or, with ``--strict``, warned), 2 for bad arguments. Progress lines go to stderr, the
report to stdout (``--json``: one JSON document). The API key and the OAuth2 client secret never
appear in either: every output string is scrubbed of the settings' secrets (``report.py``).
"""

from .probe import Options
from .report import Check, EndpointReport, Report
from .runner import CHECKS, run

__all__ = ["CHECKS", "Check", "EndpointReport", "Options", "Report", "run"]
