"""A self-signed certificate for a new instance (made with ``cryptography``).

Explorer refuses Basic auth over plain HTTP, so even the embedded default
serves HTTPS.  Replace the generated pair with a certificate your clients
trust (docs/DEPLOY.md); the generated one covers localhost, 127.0.0.1, ::1,
this machine's host name and the names given to ``clindav init --hostname``.
It is its own CA: a client trusts it by importing ``cert.pem``
(docs/CLIENTS.md).  It carries what macOS requires of a trusted server
certificate (at most 825 days, ``serverAuth``, names only in the SAN).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import socket
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def write_self_signed(
    cert_path: Path, key_path: Path, *, hostnames: Sequence[str] = (), days: int = 825
) -> None:
    """A new key and certificate; ``hostnames``: the names clients connect to."""
    key = ec.generate_private_key(ec.SECP256R1())
    host = socket.gethostname()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"clindav {host}")])
    names = dict.fromkeys(["localhost", host, *hostnames])  # in order, once each
    sans: list[x509.GeneralName] = [
        *(_general_name(n) for n in names),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _general_name(name: str) -> x509.GeneralName:
    """A host name as a DNS name, an address as an IP address (clients match them apart)."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def check_hostname(name: str) -> str:
    """``name`` if it can go into a certificate: a DNS name or an IP address."""
    try:
        ipaddress.ip_address(name)
        return name
    except ValueError:
        pass
    labels = name.rstrip(".").split(".")
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{name!r} is not a host name such as dav.practice.example")
    return name.rstrip(".").lower()


_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
