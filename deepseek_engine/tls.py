"""TLS from what an operator pastes in the console: a CA bundle, a client certificate and key.

Verification against the system CAs is the default; a pasted CA bundle is added to them. The
client key is handed to OpenSSL through an anonymous in-memory file (memfd), so it never touches
the disk; where memfd is missing, a private temporary file lives only while OpenSSL reads it.
"""

from __future__ import annotations

import hashlib
import os
import re
import ssl
import tempfile
from dataclasses import dataclass, field

from .errors import ConfigError

__all__ = ["TLSConfig", "build_context", "normalize_pem"]

_CERT = "-----BEGIN CERTIFICATE-----"


@dataclass(frozen=True, slots=True)
class TLSConfig:
    verify: bool = True
    ca_bundle: str | None = None
    client_cert: str | None = None
    client_key: str | None = field(default=None, repr=False)

    @property
    def key(self) -> tuple:
        """Identifies the context (for pooling) without holding the material itself."""
        digest = lambda s: hashlib.sha256(s.encode()).hexdigest() if s else ""  # noqa: E731
        return (self.verify, digest(self.ca_bundle), digest(self.client_cert), digest(self.client_key))

    @property
    def default(self) -> bool:
        return self.verify and not (self.ca_bundle or self.client_cert)


_PEM_BLOCK = re.compile(r"(-----BEGIN [A-Z0-9 ]+-----)(.*?)(-----END [A-Z0-9 ]+-----)", re.DOTALL)


def normalize_pem(text: str) -> str:
    """PEM as OpenSSL wants it, also when a one-line console field turned its newlines into
    spaces: each block's base64 body re-wrapped at 64 columns."""
    def fix(m: re.Match) -> str:
        body = "".join(m.group(2).split())
        lines = [body[i:i + 64] for i in range(0, len(body), 64)]
        return "\n".join([m.group(1), *lines, m.group(3)])
    return "\n".join(fix(m) for m in _PEM_BLOCK.finditer(text)) + "\n"


def build_context(cfg: TLSConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    cfg = TLSConfig(cfg.verify, cfg.ca_bundle and normalize_pem(cfg.ca_bundle),
                    cfg.client_cert and normalize_pem(cfg.client_cert),
                    cfg.client_key and normalize_pem(cfg.client_key))
    if cfg.ca_bundle:
        if _CERT not in cfg.ca_bundle:
            raise ConfigError("tls_ca_bundle is not a PEM certificate bundle: paste the CA "
                              "certificate(s) including the -----BEGIN CERTIFICATE----- lines")
        try:
            ctx.load_verify_locations(cadata=cfg.ca_bundle)
        except (ssl.SSLError, ValueError):
            raise ConfigError("tls_ca_bundle could not be read: one of its certificates is "
                              "damaged (check that it was pasted whole)") from None
    if not cfg.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cfg.client_cert or cfg.client_key:
        if not (cfg.client_cert and cfg.client_key):
            missing = "tls_client_key" if cfg.client_cert else "tls_client_cert"
            raise ConfigError(f"mutual TLS needs both a client certificate and its key: {missing} is empty")
        if _CERT not in cfg.client_cert:
            raise ConfigError("tls_client_cert is not a PEM certificate (it should start with "
                              "-----BEGIN CERTIFICATE-----)")
        if "PRIVATE KEY-----" not in cfg.client_key:
            raise ConfigError("tls_client_key is not a PEM private key (it should start with "
                              "-----BEGIN PRIVATE KEY----- or -----BEGIN RSA/EC PRIVATE KEY-----)")
        if "ENCRYPTED" in cfg.client_key:
            raise ConfigError("tls_client_key is encrypted with a passphrase; paste an unencrypted key")
        _load_chain(ctx, cfg.client_cert, cfg.client_key)
    return ctx


def _load_chain(ctx: ssl.SSLContext, cert: str, key: str) -> None:
    with _secret_file(cert) as cert_path, _secret_file(key) as key_path:
        try:
            ctx.load_cert_chain(cert_path, key_path)
        except ssl.SSLError as e:
            reason = str(e)
            if "KEY_VALUES_MISMATCH" in reason or "key values mismatch" in reason:
                raise ConfigError("tls_client_key does not belong to tls_client_cert: paste the key "
                                  "that was generated with this certificate") from None
            raise ConfigError("tls_client_cert or tls_client_key could not be read "
                              f"({e.reason or 'invalid PEM'}); check that both were pasted whole") from None


class _secret_file:
    """A path OpenSSL can read, holding ``text`` only while the block runs."""

    def __init__(self, text: str) -> None:
        self.data = text.encode()
        self.fd: int | None = None
        self.path: str | None = None

    def __enter__(self) -> str:
        if hasattr(os, "memfd_create"):
            self.fd = os.memfd_create("deepseek-tls", os.MFD_CLOEXEC)
            os.write(self.fd, self.data)
            return f"/proc/self/fd/{self.fd}"
        fd, self.path = tempfile.mkstemp(prefix="deepseek-tls-")  # 0600, private
        with os.fdopen(fd, "wb") as f:
            f.write(self.data)
        return self.path

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
        if self.path is not None:
            os.unlink(self.path)
