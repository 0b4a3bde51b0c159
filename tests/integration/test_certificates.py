"""`clindav init --hostname`: the name clients connect to is in the certificate,
and a real TLS client that trusts only that certificate verifies the gateway."""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.conftest import PASSWORD, Instance, require_tool, run_cli, start_gateway


def init_with_names(tmp_path: Path, *names: str) -> Instance:
    folder = tmp_path / "instance"
    args = [a for name in names for a in ("--hostname", name)]
    run_cli("init", str(folder), *args)
    inst = Instance(folder, folder / "clindav.yaml", "sqlite")
    data = inst.settings()
    data["server"]["workers"] = 1
    inst.write_settings(data)
    inst.add_user("alice", "clinicians")
    return inst


def curl(cert: Path, name: str, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    """curl that trusts only ``cert`` and reaches ``name`` at 127.0.0.1 (no DNS)."""
    return subprocess.run(
        [
            require_tool("curl"),
            "-sS",
            "--noproxy",
            "*",
            "--cacert",
            str(cert),
            "--resolve",
            f"{name}:{port}:127.0.0.1",
            "-u",
            f"alice:{PASSWORD}",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            *args,
            f"https://{name}:{port}/documents/note.txt",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_init_hostname_goes_into_the_certificate_and_a_client_verifies_it(
    tmp_path: Path,
) -> None:
    inst = init_with_names(tmp_path, "gateway.example", "Dav.Practice.Example", "10.1.2.3")
    cert_path = inst.folder / "tls" / "cert.pem"
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = san.get_values_for_type(x509.DNSName)
    assert {"gateway.example", "dav.practice.example", "localhost"} <= set(dns)
    assert ipaddress.ip_address("10.1.2.3") in san.get_values_for_type(x509.IPAddress)
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usage

    gw = start_gateway(inst, tls=True)
    try:
        put = curl(cert_path, "gateway.example", gw.port, "-X", "PUT", "--data-binary", "hello")
        assert put.returncode == 0, put.stderr
        assert put.stdout.splitlines()[-1] == "201", put.stdout
        stored = curl(cert_path, "gateway.example", gw.port)
        assert stored.stdout.splitlines() == ["hello", "200"], stored.stdout
        # The check is real: a name the certificate does not carry fails verification.
        other = curl(cert_path, "other.example", gw.port)
        assert other.returncode == 60, (other.returncode, other.stderr)
    finally:
        gw.stop()


def test_init_refuses_a_name_that_cannot_be_in_a_certificate(tmp_path: Path) -> None:
    refused = run_cli("init", str(tmp_path / "x"), "--hostname", "bad_name!", check=False)
    assert refused.returncode == 2
    assert "is not a host name" in refused.stderr
    assert not (tmp_path / "x").exists()
