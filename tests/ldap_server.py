"""A real OpenLDAP ``slapd`` on loopback for the LDAP tests.

:func:`start_slapd` writes everything into a temp folder: a CA and a server
certificate (``cryptography``), a ``slapd.conf`` (back-mdb, the memberOf
overlay, ACLs that let only the service account read and everyone bind), then
starts ``slapd -d stats`` in the foreground on two free loopback ports
(``ldap://`` for StartTLS, ``ldaps://``), loads ``deploy/slapd-seed.ldif``
*over the protocol* (slapadd would bypass the overlay) plus a few test-only
entries, and sets the passwords.  The stats log is kept, so tests can count
the binds and searches the gateway made.  :meth:`Slapd.stop` and
:meth:`Slapd.start` stop and restart the same directory (outage tests);
:func:`running_slapd` always stops the process at the end (and an ``atexit``
hook does, should the run die first).
"""

from __future__ import annotations

import atexit
import datetime as dt
import ipaddress
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parent.parent
SEED = REPO / "deploy" / "slapd-seed.ldif"
BASE_DN = "dc=example,dc=org"
ADMIN_DN = f"cn=admin,{BASE_DN}"
ADMIN_PASSWORD = "admin-secret-7f3a"
SERVICE_DN = f"cn=clindav,ou=services,{BASE_DN}"
SERVICE_PASSWORD = "service-secret-c41d"
GROUPS = f"ou=groups,{BASE_DN}"
# A distinct password per person, so a leak in a log names its owner.
PASSWORDS = {
    uid: f"{uid}-pw-{i}9Zq!"
    for i, uid in enumerate(["alice", "bob", "carol", "dave", "erin", "frank", "gina"])
}
SBIN = ("/usr/sbin", "/usr/bin", "/sbin")


def person(uid: str) -> str:
    return f"uid={uid},ou=people,{BASE_DN}"


def group(cn: str) -> str:
    return f"cn={cn},{GROUPS}"


# Test-only entries beside the example seed: a group cycle (cycle-a and cycle-b
# contain each other; cycle-b is also in clinicians) and a posixGroup.
EXTRA_LDIF = f"""\
dn: {person("gina")}
objectClass: inetOrgPerson
uid: gina
cn: Gina Gray
sn: Gray

dn: {group("cycle-a")}
objectClass: groupOfNames
cn: cycle-a
member: {person("gina")}

dn: {group("cycle-b")}
objectClass: groupOfNames
cn: cycle-b
member: {group("cycle-a")}

dn: cn=radiology,{GROUPS}
objectClass: posixGroup
cn: radiology
gidNumber: 5001
memberUid: alice
"""

EXTRA_MODIFY = f"""\
dn: {group("cycle-a")}
changetype: modify
add: member
member: {group("cycle-b")}

dn: {group("clinicians")}
changetype: modify
add: member
member: {group("cycle-b")}
"""

SLAPD_CONF = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
pidfile {root}/slapd.pid
argsfile {root}/slapd.args
TLSCACertificateFile {root}/ca.pem
TLSCertificateFile {root}/server.pem
TLSCertificateKeyFile {root}/server.key
TLSProtocolMin 3.3

database mdb
maxsize 33554432
suffix "{base}"
rootdn "{admin}"
rootpw {admin_password}
directory {root}/data
overlay memberof
memberof-group-oc groupOfNames
memberof-member-ad member
memberof-memberof-ad memberOf
memberof-refint TRUE

access to attrs=userPassword
    by anonymous auth
    by * none
access to *
    by dn.exact="{service}" read
    by self read
    by * none
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=":".join(SBIN))
    if path is None:
        pytest.fail(f"{name} is not installed: the LDAP tests need Debian's slapd and ldap-utils")
    return path


@dataclass
class Slapd:
    """One slapd process and its folder; restartable on the same ports."""

    root: Path
    ldap_port: int = field(default_factory=free_port)
    ldaps_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def ca_file(self) -> Path:
        return self.root / "ca.pem"

    @property
    def log_path(self) -> Path:
        return self.root / "slapd.log"

    def url(self, scheme: str = "ldaps") -> str:
        port = self.ldaps_port if scheme == "ldaps" else self.ldap_port
        return f"{scheme}://127.0.0.1:{port}"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        # 127.0.0.2 is loopback too, but not in the certificate: for host name checks.
        listen = " ".join(
            [
                f"ldap://127.0.0.1:{self.ldap_port}/",
                f"ldaps://127.0.0.1:{self.ldaps_port}/",
                f"ldaps://127.0.0.2:{self.ldaps_port}/",
            ]
        )
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [_tool("slapd"), "-f", str(self.root / "slapd.conf"), "-h", listen, "-d", "stats"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"slapd exited:\n{self.log_path.read_text(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", self.ldaps_port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError("slapd did not start listening within 15 s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def ldap(self, tool: str, ldif: str) -> None:
        """Run ldapadd or ldapmodify as the root DN over plain LDAP (loopback)."""
        proc = subprocess.run(
            [_tool(tool), "-x", "-H", self.url("ldap"), "-D", ADMIN_DN, "-w", ADMIN_PASSWORD],
            input=ldif.encode(),
            capture_output=True,
            timeout=30,
        )
        if proc.returncode != 0:
            raise AssertionError(f"{tool} failed: {proc.stderr.decode(errors='replace')}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def binds(self, dn: str) -> int:
        """How many BIND operations named ``dn`` so far (successful or not)."""
        return len(re.findall(rf'BIND dn="{re.escape(dn)}" method=', self.log(), re.IGNORECASE))

    def search_filters(self) -> list[str]:
        """The filter of every SRCH operation so far (slapd logs some twice: deduplicated)."""
        found = dict(re.findall(r"(conn=\d+ op=\d+) SRCH base=.* filter=\"(.*)\"", self.log()))
        return list(found.values())

    def searches(self, text: str) -> int:
        """How many SRCH operations had ``text`` in their filter."""
        return sum(1 for f in self.search_filters() if text.lower() in f.lower())


def start_slapd(root: Path) -> Slapd:
    root.mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(mode=0o700)
    write_certificates(root)
    (root / "slapd.conf").write_text(
        SLAPD_CONF.format(
            root=root,
            base=BASE_DN,
            admin=ADMIN_DN,
            admin_password=ADMIN_PASSWORD,
            service=SERVICE_DN,
        )
    )
    server = Slapd(root)
    server.start()
    atexit.register(server.stop)  # also if the test run dies before its teardown
    try:
        server.ldap("ldapadd", SEED.read_text())
        server.ldap("ldapadd", EXTRA_LDIF)
        server.ldap("ldapmodify", EXTRA_MODIFY)
        server.ldap("ldapmodify", _password_ldif())
    except BaseException:
        server.stop()
        raise
    return server


def _password_ldif() -> str:
    entries = [(SERVICE_DN, SERVICE_PASSWORD)] + [(person(u), p) for u, p in PASSWORDS.items()]
    return "\n".join(
        f"dn: {dn}\nchangetype: modify\nreplace: userPassword\nuserPassword: {pw}\n"
        for dn, pw in entries
    )


def write_certificates(folder: Path, *, prefix: str = "") -> None:
    """``ca.pem`` plus ``server.pem``/``server.key`` for 127.0.0.1 and localhost."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"clindav test CA {prefix}")])
    now = dt.datetime.now(dt.UTC)
    ca = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        _builder(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]),
            ca_name,
            key.public_key(),
            now,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (folder / f"{prefix}ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / f"{prefix}server.pem").write_bytes(cert.public_bytes(pem))
    key_file = folder / f"{prefix}server.key"
    key_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_file.chmod(0o600)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, now: dt.datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
    )


def ldap_settings(server: Slapd, secret_file: Path, **overrides: object) -> dict[str, object]:
    """An ``auth.ldap`` section for ``server`` (LDAPS with the test CA) plus overrides."""
    secret_file.write_text(SERVICE_PASSWORD + "\n")
    secret_file.chmod(0o600)
    conf: dict[str, object] = {
        "servers": [server.url("ldaps")],
        "tls": "ldaps",
        "ca_file": str(server.ca_file),
        "bind_dn": SERVICE_DN,
        "bind_password_file": str(secret_file),
        "base_dn": f"ou=people,{BASE_DN}",
        "user_attribute": "uid",
        "user_filter": "(objectClass=inetOrgPerson)",
        "disabled_filter": "(employeeType=disabled)",
        "group_base_dn": GROUPS,
        "group_map": {
            "clinicians": [group("clinicians")],
            "admins": ["Practice-Admins"],
            "auditors": ["auditors"],
        },
    }
    conf.update(overrides)
    return conf


@contextmanager
def running_slapd(root: Path) -> Iterator[Slapd]:
    """A seeded slapd in ``root``, stopped on exit (a test module wraps it in a fixture)."""
    server = start_slapd(root)
    try:
        yield server
    finally:
        server.stop()
