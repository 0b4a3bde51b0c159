"""`clindav init --hostname`: the name clients connect to is in the certificate,
and a real TLS client that trusts only that certificate verifies the gateway."""

from __future__ import annotations

import io
import ipaddress
import shutil
import subprocess
import tempfile
from pathlib import Path

import piexif
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.conftest import (
    PASSWORD,
    Instance,
    require_tool,
    run_cli,
    start_gateway,
    start_in_process,
)
from tests.integration.test_clients import davfs_mount
from tests.integration.test_dav_methods import small_jpeg


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

    gw = start_in_process(inst, tls=True)
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


def jpeg_with_artist(marker: bytes) -> bytes:
    out = io.BytesIO()
    piexif.insert(piexif.dump({"0th": {piexif.ImageIFD.Artist: marker}}), small_jpeg(), out)
    return out.getvalue()


def test_davfs2_trusts_a_readable_copy_and_keeps_what_it_sent(tmp_path: Path) -> None:
    """docs/CLIENTS.md: `trust_server_cert` on a readable copy of tls/cert.pem; after a
    scrubbed upload davfs2 shows its own copy until its cache is cleared."""
    inst = init_with_names(tmp_path, "gateway.example")
    # davfs2 drops to its own user: the copy must be readable by it (pytest's tmp is 0700).
    public = Path(tempfile.mkdtemp(prefix="clindav-cert-"))
    public.chmod(0o755)
    cert = public / "clindav.pem"
    shutil.copyfile(inst.folder / "tls" / "cert.pem", cert)
    cert.chmod(0o644)
    photo = jpeg_with_artist(b"Dr Secret Photographer")
    gw = start_gateway(inst, tls=True)  # davfs2 against a separate process
    try:
        trust = f"trust_server_cert {cert}\n"
        with davfs_mount(gw, tmp_path, "tls", extra_conf=trust) as mnt:
            (mnt / "photo.jpg").write_bytes(photo)
            subprocess.run(["sync"], check=True, timeout=60)
            # The mount shows the bytes it sent, metadata and all...
            assert (mnt / "photo.jpg").read_bytes() == photo
        # ...while the server (davfs2 has uploaded everything once umount returned) holds
        # the scrubbed copy.
        stored = gw.session().get(f"{gw.url}/documents/photo.jpg")
        assert stored.status_code == 200
        assert stored.content.startswith(b"\xff\xd8")
        assert b"Dr Secret Photographer" not in stored.content
        # A fresh cache (what unmount, clear the cache, mount again does): the stored file.
        with davfs_mount(gw, tmp_path, "fresh", extra_conf=trust) as mnt:
            assert (mnt / "photo.jpg").read_bytes() == stored.content
    finally:
        gw.stop()
        shutil.rmtree(public, ignore_errors=True)


def test_rclone_with_ca_cert_verifies_the_instance_certificate(tmp_path: Path) -> None:
    rclone = require_tool("rclone")
    inst = init_with_names(tmp_path, "gateway.example")
    gw = start_in_process(inst, tls=True)
    try:
        assert gw.session().put(f"{gw.url}/documents/hello.txt", data=b"hi").status_code == 201
        obscured = subprocess.run(
            [rclone, "obscure", PASSWORD], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
        remote = f":webdav,url='{gw.url}/documents',vendor=other,user=alice,pass='{obscured}':"

        def lsf(*extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [
                    rclone,
                    "lsf",
                    remote,
                    "--config",
                    "/dev/null",
                    "--retries",
                    "1",
                    "--low-level-retries",
                    "1",
                    *extra,
                ],
                capture_output=True,
                text=True,
                timeout=60,
                env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
            )

        trusted = lsf("--ca-cert", str(inst.folder / "tls" / "cert.pem"))
        assert trusted.returncode == 0, trusted.stderr
        assert trusted.stdout.splitlines() == ["hello.txt"]
        untrusted = lsf()  # the system's CAs do not know the instance's certificate
        assert untrusted.returncode != 0 and "certificate" in untrusted.stderr
    finally:
        gw.stop()
