"""CLI: ``python -m deepseek_doctor URL [URL ...]`` (``scripts/doctor`` runs it); see the package's
docstring for the options, the checks and the exit codes."""

from __future__ import annotations

import argparse
import os
import sys

from deepseek_engine.errors import ConfigError

from .probe import Options
from .runner import run


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
        prog="python -m deepseek_doctor",
        description="Probe vLLM/SGLang endpoints as the DeepSeek Self-Hosted plugin uses them and "
                    "report what to fix. Exit code 1 when a check fails (warnings do not fail, "
                    "unless --strict).")
    ap.add_argument("urls", nargs="+", metavar="URL",
                    help="OpenAI base URL of each replica, e.g. http://gpu-1:8000/v1 (as in the "
                         "plugin's Endpoint URLs; commas work too)")
    ap.add_argument("--api-key", help="the server's --api-key (default: $DEEPSEEK_API_KEY; the "
                                      "environment keeps it out of the process list)")
    ap.add_argument("--model", help="served model id to probe (default: the first served)")
    ap.add_argument("--catalogue", metavar="MODEL",
                    help="the plugin's model this endpoint will serve as, e.g. deepseek-v3.1: its "
                         "family decides the thinking switch, tools and images probed (default: "
                         "from the served model id)")
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
                       model=args.model, catalogue=args.catalogue, requests=args.requests,
                       timeout=args.timeout,
                       ca_bundle=_read(args.ca_bundle, "--ca-bundle"),
                       client_cert=_read(args.client_cert, "--client-cert"),
                       client_key=_read(args.client_key, "--client-key"),
                       insecure=args.insecure, oauth2_token_url=args.oauth2_token_url,
                       oauth2_client_id=args.oauth2_client_id,
                       oauth2_client_secret=os.environ.get("DEEPSEEK_OAUTH2_CLIENT_SECRET") or None,
                       oauth2_scope=args.oauth2_scope, oauth2_audience=args.oauth2_audience,
                       strict=args.strict)
        status = None if args.quiet else Status(sys.stderr)
        try:
            report = run(args.urls, opts, progress=status)
        finally:
            if status:
                status.clear()
    except ConfigError as e:
        print(f"doctor: {e}", file=sys.stderr)
        return 2
    print(report.to_json() if args.json else report.render(), flush=True)
    return report.exit_code


class Status:
    """Progress while probing. On a terminal it is one line rewritten in place and erased before the
    report, which says it all again; in a log (not a terminal) it is a line per step."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.tty = stream.isatty()

    def __call__(self, msg: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + msg)
            self.stream.flush()
        else:
            print(msg, file=self.stream, flush=True)

    def clear(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


if __name__ == "__main__":
    sys.exit(main())
