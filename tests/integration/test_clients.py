"""Acceptance: real WebDAV clients (litmus, rclone, cadaver, davfs2) against the real gateway.

Every client here is the Debian-packaged program, run as a subprocess against
``clindav serve`` on loopback; a missing program is a failure (``require_tool``).
"""

from __future__ import annotations

import contextlib
import filecmp
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit
from xml.etree import ElementTree

import pytest

from tests.conftest import PASSWORD, Gateway, Instance, ProcessGateway, require_tool, start_gateway


@pytest.fixture
def gateway(process_gateway: ProcessGateway) -> ProcessGateway:
    """The clients talk to ``clindav serve`` as deployed: a process of its own."""
    return process_gateway


# --------------------------------------------------------------------------- litmus

# litmus 0.13: tests per suite (each count includes the suite's init/begin/finish steps).
LITMUS_SUITES = {"basic": 16, "copymove": 13, "props": 30, "locks": 41, "http": 4}
SUMMARY = re.compile(r"<- summary for `(\w+)': of (\d+) tests run: (\d+) passed, (\d+) failed")
RESULT_LINE = re.compile(r"^\s*\d+\.\s+\S+?\.*\s+\d+\.\s+\S+?\.*\s+(.*)$")


def _run_litmus(
    url: str, cwd: Path
) -> tuple[subprocess.CompletedProcess[str], dict[str, tuple[int, int, int]]]:
    litmus = require_tool("litmus")
    proc = subprocess.run(
        [litmus, f"{url}/documents/", "alice", PASSWORD],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        env={**os.environ, "HOME": str(cwd)},
    )
    summaries = {m[1]: (int(m[2]), int(m[3]), int(m[4])) for m in SUMMARY.finditer(proc.stdout)}
    return proc, summaries


def _non_pass_lines(output: str) -> str:
    """Every line of litmus output that is not a plain per-test ``pass``."""
    keep = []
    for line in output.splitlines():
        m = RESULT_LINE.match(line)
        if m and m[1].strip() == "pass":
            continue
        keep.append(line)
    return "\n".join(keep)


def test_litmus_all_suites_pass_over_http(gateway: Gateway, tmp_path: Path) -> None:
    """litmus basic/copymove/props/locks/http: 104 of 104 pass, nothing skipped (expect100 runs)."""
    proc, summaries = _run_litmus(gateway.url, tmp_path)
    report = (
        f"litmus exit {proc.returncode}\n{_non_pass_lines(proc.stdout)}\n{proc.stderr}\n"
        f"--- gateway log ---\n{gateway.log()[-3000:]}"
    )
    assert set(summaries) == set(LITMUS_SUITES), report
    for suite, expected in LITMUS_SUITES.items():
        run, passed, failed = summaries[suite]
        assert failed == 0, f"suite {suite}: {failed} failed\n{report}"
        assert (run, passed) == (expected, expected), f"suite {suite}: {passed}/{run}\n{report}"
    assert sum(p for _, p, _ in summaries.values()) == 104, report
    assert "SKIPPED" not in proc.stdout, report
    assert proc.returncode == 0, report
    assert (tmp_path / "debug.log").exists()


def test_litmus_all_suites_pass_over_https(instance: Instance, tmp_path: Path) -> None:
    """Same over TLS, with two worker processes (locks and properties shared through
    the database): 0 failures; only expect100 is skipped (litmus skips it for SSL servers)."""
    data = instance.settings()
    data["server"]["workers"] = 2
    instance.write_settings(data)
    gw = start_gateway(instance, tls=True)
    try:
        assert gw.url.startswith("https://")
        proc, summaries = _run_litmus(gw.url, tmp_path)
    finally:
        gw.stop()
    report = f"litmus exit {proc.returncode}\n{_non_pass_lines(proc.stdout)}\n{proc.stderr}"
    assert set(summaries) == set(LITMUS_SUITES), report
    for suite, (run, passed, failed) in summaries.items():
        assert failed == 0 and passed == run, (
            f"suite {suite}: {passed}/{run}, {failed} failed\n{report}"
        )
    expected = dict(LITMUS_SUITES, http=LITMUS_SUITES["http"] - 1)
    assert {s: v[1] for s, v in summaries.items()} == expected, report
    skipped = [line for line in proc.stdout.splitlines() if "SKIPPED" in line]
    assert len(skipped) == 1 and "expect100" in skipped[0], report
    assert proc.returncode == 0, report


# --------------------------------------------------------------------------- a tree of files


def make_tree(root: Path, seed: int = 1234) -> dict[str, bytes]:
    """Nested folders with ~30 non-image files of awkward sizes and names; returns relpath -> bytes."""
    rng = random.Random(seed)

    def blob(n: int) -> bytes:
        return rng.randbytes(n)

    files: dict[str, bytes] = {
        "empty.txt": b"",
        "one byte.txt": b"x",
        "64k-1.bin": blob(65535),
        "64k.bin": blob(65536),
        "64k+1.bin": blob(65537),
        "big random.bin": blob(3 * 1024 * 1024 + 17),
        "café ü.txt": "crème brûlée, Grüße\n".encode(),
        "notes with spaces.md": b"# heading\n\nsome text\n" * 40,
        "50% off.txt": b"percent\n",
        "hash#tag.txt": b"hash\n",
        "plus+and&amp.txt": b"plus and ampersand\n",
        "brackets [1] (copy).txt": b"brackets\n",
        "it's quoted.txt": b"apostrophe\n",
        "日本語のファイル.txt": "こんにちは\n".encode(),
        "UPPER.TXT": b"upper\n",
        "report.pdf": b"%PDF-1.4\n" + blob(5000) + b"\n%%EOF\n",
        "data.csv": b"a,b,c\n" + b"1,2,3\n" * 500,
        "letters/referral letter.docx": blob(12345),
        "letters/2026/jan/summary.txt": b"january\n",
        "letters/2026/feb/summary.txt": b"february\n",
        "letters/2026/feb/empty again.txt": b"",
        "deep/a/b/c/d/e/leaf.txt": b"leaf\n",
        "deep/a/b/c/d/e/leaf 2.bin": blob(1),
        "deep/a/sibling.bin": blob(4096),
        "deep/a/b/page-4095.bin": blob(4095),
        "deep/a/b/page-4097.bin": blob(4097),
        "Ordner mit Ümlaut/Datei ä.txt": "Ä Ö Ü ß\n".encode(),
        "Ordner mit Ümlaut/zeros.bin": b"\x00" * 70000,
        "spaces in folder/  two leading spaces.txt": b"odd name\n",
        "spaces in folder/medium.bin": blob(300_000),
        "dotted.name.with.many.dots.txt": b"dots\n",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def relative_files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}


def dav_url(gateway: Gateway, share: str, rel: str) -> str:
    return f"{gateway.url}/{share}/{quote(rel)}"


def server_tree(gateway: Gateway, share: str, folder: str) -> dict[str, int]:
    """relpath -> size of every file under share/folder, walked with PROPFIND Depth 1 over HTTP."""
    s = gateway.session()
    found: dict[str, int] = {}
    prefix = f"/{share}/{folder}/"
    pending = [prefix]
    while pending:
        path = pending.pop()
        r = s.request("PROPFIND", f"{gateway.url}{quote(path)}", headers={"Depth": "1"})
        assert r.status_code == 207, (path, r.status_code)
        for response in ElementTree.fromstring(r.content).iter("{DAV:}response"):
            href = unquote(urlsplit(response.findtext("{DAV:}href", "")).path)
            if href.rstrip("/") == path.rstrip("/"):
                continue
            assert href.startswith(prefix), href
            if response.find(".//{DAV:}resourcetype/{DAV:}collection") is not None:
                pending.append(href if href.endswith("/") else href + "/")
            else:
                found[href[len(prefix) :]] = int(
                    response.findtext(".//{DAV:}getcontentlength", "-1")
                )
    return found


# --------------------------------------------------------------------------- rclone


def test_rclone_round_trips_a_folder_tree(gateway: Gateway, tmp_path: Path) -> None:
    """rclone copy up, copy down, check --download: every byte and every name survives."""
    rclone = require_tool("rclone")
    src = tmp_path / "src"
    files = make_tree(src)
    config = tmp_path / "rclone.conf"
    config.write_text("")
    obscured = subprocess.run(
        [rclone, "obscure", PASSWORD], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "RCLONE_CONFIG": str(config),
        "RCLONE_CONFIG_CLINDAV_TYPE": "webdav",
        "RCLONE_CONFIG_CLINDAV_URL": f"{gateway.url}/documents",
        "RCLONE_CONFIG_CLINDAV_VENDOR": "other",
        "RCLONE_CONFIG_CLINDAV_USER": "alice",
        "RCLONE_CONFIG_CLINDAV_PASS": obscured,
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [rclone, *args, "--retries", "1", "--low-level-retries", "1"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert proc.returncode == 0, (
            f"rclone {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}\n"
            f"--- gateway log ---\n{gateway.log()[-4000:]}"
        )
        return proc

    run("copy", str(src), "clindav:tree")
    back = tmp_path / "back"
    run("copy", "clindav:tree", str(back))

    got = relative_files(back)
    assert sorted(got) == sorted(files)
    for rel, data in files.items():
        assert got[rel].read_bytes() == data, rel
    # rclone's own comparison in both directions, by content (WebDAV "other" has no hashes).
    check = run("check", "--download", str(src), "clindav:tree")
    assert f"{len(files)} matching files" in check.stderr, check.stderr
    # The listing the server gives rclone has every file with its size.
    listing = run("lsl", "clindav:tree").stdout
    for rel, data in files.items():
        assert re.search(rf"^\s*{len(data)} .* {re.escape(rel)}$", listing, re.M), (rel, listing)

    # Plain HTTP sees the same names (not rclone-encoded), sizes and bytes rclone stored.
    assert server_tree(gateway, "documents", "tree") == {
        rel: len(data) for rel, data in files.items()
    }
    s = gateway.session()
    for rel in (
        "café ü.txt",
        "50% off.txt",
        "hash#tag.txt",
        "big random.bin",
        "empty.txt",
        "Ordner mit Ümlaut/Datei ä.txt",
        "spaces in folder/  two leading spaces.txt",
    ):
        r = s.get(dav_url(gateway, "documents", f"tree/{rel}"))
        assert r.status_code == 200, (rel, r.status_code)
        assert r.content == files[rel], rel


# --------------------------------------------------------------------------- cadaver


def test_cadaver_put_get_ls(gateway: Gateway, tmp_path: Path) -> None:
    """cadaver with credentials from ~/.netrc: mkcol, put, get, ls, delete, all in one session."""
    cadaver = require_tool("cadaver")
    netrc = tmp_path / ".netrc"
    netrc.write_text(f'machine 127.0.0.1\nlogin alice\npassword "{PASSWORD}"\n')
    netrc.chmod(0o600)
    local = tmp_path / "local.bin"
    data = random.Random(7).randbytes(100_003)
    local.write_bytes(data)
    (tmp_path / "gone.txt").write_bytes(b"short-lived\n")
    script = "\n".join(
        [
            "mkcol cadfolder",
            "cd cadfolder",
            "put local.bin remote.bin",
            "put gone.txt gone.txt",
            "get remote.bin local2.bin",
            "ls",
            "delete gone.txt",
            "ls",
            "quit",
            "",
        ]
    )
    proc = subprocess.run(
        [cadaver, f"{gateway.url}/documents/"],
        input=script,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    out = proc.stdout + proc.stderr
    assert "Authentication" not in out and "failed" not in out, out
    assert proc.returncode == 0, out
    assert (tmp_path / "local2.bin").read_bytes() == data, out
    # First ls shows both files with sizes, the second only remote.bin.
    listings = out.split("Listing collection `/documents/cadfolder/': succeeded.")
    assert len(listings) == 3, out
    assert re.search(r"remote\.bin\s+100003\s", listings[1]), out
    assert re.search(r"gone\.txt\s+12\s", listings[1]), out
    assert "remote.bin" in listings[2] and "gone.txt" not in listings[2], out
    s = gateway.session()
    assert s.get(f"{gateway.url}/documents/cadfolder/remote.bin").content == data
    assert s.get(f"{gateway.url}/documents/cadfolder/gone.txt").status_code == 404


# --------------------------------------------------------------------------- davfs2


@contextlib.contextmanager
def davfs_mount(
    gateway: Gateway, work: Path, name: str, *, use_locks: int = 1, extra_conf: str = ""
) -> Iterator[Path]:
    """Mount <gateway>/documents/ with davfs2, non-interactively; always unmounts.

    Settings this machine needs (davfs2 1.6.1, kernel 6.x):
    - no ``username=`` mount option: with it davfs2 ignores the secrets file and reads
      the password from stdin; credentials come from ``secrets`` in our conf instead;
    - ``buf_size 64``: with the default 16 KiB buffer, davfs2 1.6.1 answers the kernel's
      32 KiB FUSE READDIR with EINVAL ("ls: reading directory: Invalid argument");
    - ``cache_dir`` owned by root, group davfs2, mode 0770, outside pytest's 0700 tmp
      tree: the daemon drops to the davfs2 user and must reach it.
    - ``delay_upload 0`` so files go up on close; umount still waits for any pending upload.
    """
    require_tool("mount.davfs")
    url = f"{gateway.url}/documents/"
    mountpoint = work / f"mnt-{name}"
    mountpoint.mkdir()
    secrets = work / f"secrets-{name}"
    secrets.write_text(f'{url} alice "{PASSWORD}"\n')
    secrets.chmod(0o600)
    cache = Path(tempfile.mkdtemp(prefix="clindav-davfs-cache-"))
    shutil.chown(cache, "root", "davfs2")
    cache.chmod(0o770)
    conf = work / f"davfs2-{name}.conf"
    conf.write_text(
        f"secrets {secrets}\n"
        f"cache_dir {cache}\n"
        "ask_auth 0\n"
        f"use_locks {use_locks}\n"
        "buf_size 64\n"
        "delay_upload 0\n" + extra_conf
    )
    proc = subprocess.run(
        ["mount", "-t", "davfs", url, str(mountpoint), "-o", f"conf={conf}"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    if proc.returncode != 0:
        shutil.rmtree(cache, ignore_errors=True)
        pytest.fail(
            f"mount -t davfs {url} failed ({proc.returncode}): {proc.stdout}{proc.stderr}\n"
            f"--- gateway log ---\n{gateway.log()[-3000:]}"
        )
    try:
        yield mountpoint
    finally:
        try:
            _umount(mountpoint)
        finally:
            shutil.rmtree(cache, ignore_errors=True)


def _umount(mountpoint: Path) -> None:
    if not os.path.ismount(mountpoint):
        return
    try:
        proc = subprocess.run(
            ["umount", str(mountpoint)], capture_output=True, text=True, timeout=60
        )
        problem = (
            "" if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stdout}{proc.stderr}"
        )
    except subprocess.TimeoutExpired:
        problem = "timed out after 60 s (uploads pending?)"
    if problem or os.path.ismount(mountpoint):
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, timeout=30)
        raise AssertionError(
            f"umount {mountpoint} failed ({problem or 'still mounted'}); lazily unmounted"
        )


def _lock_count(gateway: Gateway, rel: str) -> int:
    r = gateway.session().request(
        "PROPFIND",
        dav_url(gateway, "documents", rel),
        headers={"Depth": "0"},
        data='<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop>'
        "<D:lockdiscovery/></D:prop></D:propfind>",
    )
    assert r.status_code == 207, r.text
    return r.text.count("activelock>") // 2


def test_davfs2_mapped_drive_copy_in_and_read_back(gateway: Gateway, tmp_path: Path) -> None:
    """A real mount: cp a tree in, unmount (uploads), check over HTTP; edit under a lock; read back."""
    src = tmp_path / "src"
    files = make_tree(src)
    s = gateway.session()

    with davfs_mount(gateway, tmp_path, "first") as mnt:
        assert (mnt / "lost+found").is_dir()  # davfs2's own local folder: the mount is live
        subprocess.run(["cp", "-r", str(src), str(mnt / "drive")], check=True, timeout=120)
        subprocess.run(["sync"], check=True, timeout=60)
    # umount returned: davfs2 has uploaded everything, under the same names.
    assert server_tree(gateway, "documents", "drive") == {
        rel: len(data) for rel, data in files.items()
    }
    for rel, data in files.items():
        r = s.get(dav_url(gateway, "documents", f"drive/{rel}"))
        assert r.status_code == 200, (rel, r.status_code, gateway.log()[-3000:])
        assert r.content == data, rel
    listing = s.request(
        "PROPFIND", f"{gateway.url}/documents/drive/letters/2026/", headers={"Depth": "1"}
    )
    assert listing.status_code == 207 and "/documents/drive/letters/2026/feb/" in listing.text

    # Second mount with a fresh cache: reads come from the server, edits go back under a LOCK.
    with davfs_mount(gateway, tmp_path, "second") as mnt:
        drive = mnt / "drive"
        assert sorted(relative_files(drive)) == sorted(files)
        assert filecmp.cmp(drive / "big random.bin", src / "big random.bin", shallow=False)
        assert (drive / "café ü.txt").read_bytes() == files["café ü.txt"]

        # A change made on the server after a read is seen through the mount (new ETag).
        assert (drive / "data.csv").read_bytes() == files["data.csv"]
        assert (
            s.put(
                dav_url(gateway, "documents", "drive/data.csv"), data=b"changed,on,server\n"
            ).status_code
            == 204
        )
        deadline = time.monotonic() + 10
        while (drive / "data.csv").read_bytes() != b"changed,on,server\n":
            assert time.monotonic() < deadline, "server-side change never visible through the mount"
            time.sleep(0.5)

        # Editing through the mount holds a WebDAV lock (use_locks 1) that keeps others out.
        with open(drive / "letters/2026/jan/summary.txt", "r+b") as fh:
            fh.seek(0, os.SEEK_END)
            fh.write(b"edited through davfs2\n")
            fh.flush()
            assert _lock_count(gateway, "drive/letters/2026/jan/summary.txt") == 1
            other = gateway.session("ivy")
            assert (
                other.put(
                    dav_url(gateway, "documents", "drive/letters/2026/jan/summary.txt"),
                    data=b"intruder",
                ).status_code
                == 423
            )
    assert s.get(dav_url(gateway, "documents", "drive/letters/2026/jan/summary.txt")).content == (
        b"january\nedited through davfs2\n"
    )
    assert _lock_count(gateway, "drive/letters/2026/jan/summary.txt") == 0
