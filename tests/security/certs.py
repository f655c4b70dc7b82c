"""Certificates made by the tests: a CA, a server certificate for 127.0.0.1, client certificates."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class Pair:
    cert: str
    key: str


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(k) -> str:
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption()).decode()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn: str = "Test CA") -> tuple[Pair, object, object]:
    k = _key()
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(k.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(k, hashes.SHA256()))
    return Pair(cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(k)), cert, k


def issue(ca_cert, ca_key, cn: str, *, server: bool, expired: bool = False) -> Pair:
    k = _key()
    now = dt.datetime.now(dt.UTC)
    start, end = (now - dt.timedelta(days=10), now - dt.timedelta(days=1)) if expired else \
        (now - dt.timedelta(days=1), now + dt.timedelta(days=30))
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject)
         .public_key(k.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(start).not_valid_after(end))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                            critical=False)
    cert = b.sign(ca_key, hashes.SHA256())
    return Pair(cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(k))


def server_context(server: Pair, client_ca: Pair | None = None) -> ssl.SSLContext:
    """What an mTLS gateway does: present ``server``; if ``client_ca``, demand a client cert."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as d:
        c, k = Path(d, "c.pem"), Path(d, "k.pem")
        c.write_text(server.cert)
        k.write_text(server.key)
        ctx.load_cert_chain(c, k)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=client_ca.cert)
    return ctx


@dataclass
class PKI:
    ca: Pair
    server: Pair
    expired_server: Pair
    client: Pair
    rogue_ca: Pair
    rogue_client: Pair


def make_pki() -> PKI:
    ca, ca_cert, ca_key = make_ca("Test CA")
    rogue, rogue_cert, rogue_key = make_ca("Rogue CA")
    return PKI(ca=ca, server=issue(ca_cert, ca_key, "127.0.0.1", server=True),
               expired_server=issue(ca_cert, ca_key, "127.0.0.1", server=True, expired=True),
               client=issue(ca_cert, ca_key, "dify-plugin", server=False), rogue_ca=rogue,
               rogue_client=issue(rogue_cert, rogue_key, "intruder", server=False))
