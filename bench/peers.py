"""Starting the servers under test on loopback, each as its own process.

* ``wsgidav``: the WsgiDAV CLI (filesystem provider, CLI defaults) with a
  generated config file that only adds the listen address, the root folder
  and one user, so it does Basic auth like every other peer.
* ``clindav``: ``clindav init`` + ``clindav user add`` + ``clindav serve
  --no-tls --port 0``, the full pipeline as configured by default.
* ``rclone`` (optional): ``rclone serve webdav`` over a crypt remote
  (names and content encrypted) on a local folder.
* ``apache`` (optional, never installed by the bench): Apache httpd with
  mod_dav/mod_dav_fs and Basic auth from a generated config.
"""

from __future__ import annotations

import base64
import grp
import hashlib
import os
import pwd
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bench.client import DavClient

REPO = Path(__file__).resolve().parent.parent
USER = "bench"
PASSWORD = "bench horse battery staple"
CLINDAV = [sys.executable, "-m", "gateway.cli"]
APACHE_HINT = (
    "Apache is not installed; to include it run: sudo apt-get install apache2 "
    "(the bench loads mod_dav and mod_dav_fs from its own generated config)"
)
RCLONE_HINT = "rclone is not installed; to include it run: sudo apt-get install rclone"
OPTIONAL_PEERS = ("rclone", "apache")


class PeerUnavailable(Exception):
    """An optional peer cannot run here (not installed); the message says how to add it."""


@dataclass
class Peer:
    """A running server under test."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    version: str
    notes: str
    auth: tuple[str, str] = (USER, PASSWORD)
    config_path: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], log_path: Path, timeout: float) -> None:
    """Poll with OPTIONS until the server answers at all (any status)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited ({process.returncode}):\n{_tail(log_path)}")
        client = DavClient(url, None, timeout=2)
        reply = client.request("OPTIONS", "/")
        client.close()
        if reply.status:
            return
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"server at {url} did not answer within {timeout} s:\n{_tail(log_path)}")


def _tail(path: Path) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-30:])
    except OSError:
        return ""


def _spawn(
    cmd: list[str], log_path: Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` with stdout piped (read by the caller) and stderr to ``log_path``."""
    log = open(log_path, "wb")  # noqa: SIM115 - the child keeps it; closed by the OS at exit
    try:
        return subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=log, cwd=cwd, env=env or dict(os.environ)
        )
    finally:
        log.close()


def _serve(
    cmd: list[str], log_path: Path, cwd: Path, port: int, timeout: float
) -> tuple[subprocess.Popen[bytes], str]:
    """Start a peer that listens on ``port`` of loopback; its process and URL once it answers."""
    process = _spawn(cmd, log_path, cwd)
    _drain(process, log_path)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, process, log_path, timeout)
    return process, url


def _drain(process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Copy the rest of the child's stdout to its log so the pipe never fills."""

    def pump() -> None:
        assert process.stdout is not None
        with open(log_path, "ab") as log:
            for line in process.stdout:
                log.write(line)

    threading.Thread(target=pump, name="stdout-drain", daemon=True).start()


# --- plain WsgiDAV ---------------------------------------------------------


def start_wsgidav(work: Path) -> Peer:
    """The WsgiDAV CLI with its defaults plus a listen address, a root and one user."""
    import wsgidav

    root = work / "wsgidav-root"
    root.mkdir(exist_ok=True)
    port = free_port()
    config = work / "wsgidav.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "host": "127.0.0.1",
                "port": port,
                "provider_mapping": {"/": str(root)},
                "simple_dc": {"user_mapping": {"*": {USER: {"password": PASSWORD}}}},
            }
        )
    )
    exe = Path(sys.executable).parent / "wsgidav"
    cmd = [str(exe), "--config", str(config)]
    log_path = work / "wsgidav.log"
    process, url = _serve(cmd, log_path, work, port, 60)
    return Peer(
        "wsgidav",
        url,
        process,
        log_path,
        wsgidav.__version__,
        "WsgiDAV CLI defaults (FilesystemProvider, cheroot, 8 KiB blocks, verbose 3) + Basic user",
        config_path=config,
    )


# --- clindav ---------------------------------------------------------------


def _clindav_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def init_clindav(work: Path, name: str = "clindav") -> Path:
    """``clindav init`` a fresh instance and add the bench user (clinicians); returns its yaml."""
    folder = work / name
    _run([*CLINDAV, "init", str(folder)], work)
    config = folder / "clindav.yaml"
    _run(
        [
            *CLINDAV,
            "user",
            "add",
            USER,
            "--group",
            "clinicians",
            "--password-stdin",
            "--config",
            str(config),
        ],
        work,
        stdin=PASSWORD + "\n",
    )
    return config


def new_instance(work: Path, name: str) -> Path:
    """A fresh instance with the bench user, in this process (what ``clindav init`` and
    ``clindav user add`` run, without two interpreter start-ups); returns its yaml."""
    from gateway.admin.instance import init_instance
    from gateway.auth.users import UserStore
    from gateway.db import make_engine, make_sessions
    from gateway.settings import load_settings

    config = init_instance(work / name)
    engine = make_engine(load_settings(config).sqlalchemy_url())
    try:
        UserStore(make_sessions(engine)).add(USER, PASSWORD, ["clinicians"])
    finally:
        engine.dispose()
    return config


def start_many(instances: list[tuple[Path, str, tuple[str, str]]]) -> list[Peer]:
    """Start several clindav instances at once: ``(config, name, auth)`` each, in order.

    If one fails to start, the others are stopped and the error is raised.
    """
    from concurrent.futures import ThreadPoolExecutor

    def start(item: tuple[Path, str, tuple[str, str]]) -> Peer:
        config, name, auth = item
        return start_clindav(config, tag=name[len("clindav") :], name=name, auth=auth)

    with ThreadPoolExecutor(len(instances)) as pool:
        futures = [pool.submit(start, item) for item in instances]
    started, errors = [], []
    for future in futures:
        try:
            started.append(future.result())
        except Exception as exc:
            errors.append(exc)
    if errors:
        for peer in started:
            peer.stop()
        raise errors[0]
    return started


def _run(cmd: list[str], cwd: Path, stdin: str = "") -> None:
    proc = subprocess.run(
        cmd, input=stdin, capture_output=True, text=True, cwd=cwd, env=_clindav_env(), timeout=180
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def set_server_setting(config: Path, key: str, value: int) -> None:
    """Edit ``server.<key>`` in an instance's clindav.yaml (e.g. block_size, threads)."""
    update_settings(config, {"server": {key: value}})


def update_settings(config: Path, patch: dict[str, object]) -> None:
    """Merge ``patch`` into an instance's clindav.yaml (nested mappings merged key by key)."""
    data = yaml.safe_load(config.read_text())
    _merge(data, patch)
    config.write_text(yaml.safe_dump(data, sort_keys=False))


def _merge(into: dict[str, object], patch: dict[str, object]) -> None:
    for key, value in patch.items():
        current = into.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            _merge(current, value)
        else:
            into[key] = value


def server_settings(config: Path) -> dict[str, object]:
    """The effective server settings of an instance (defaults filled in by clindav)."""
    from gateway.settings import load_settings

    return load_settings(config).server.model_dump(mode="json")


def start_clindav(
    config: Path, tag: str = "", name: str = "clindav", auth: tuple[str, str] = (USER, PASSWORD)
) -> Peer:
    """``clindav serve --config CONFIG --port 0 --no-tls``; reads the URL it prints.

    ``name`` labels the peer in results (extra instances: ``clindav-ldap``, ...);
    ``auth`` is the account the load logs in with.
    """
    from gateway import __version__

    log_path = config.parent.parent / f"clindav{tag}.log"
    cmd = [*CLINDAV, "serve", "--config", str(config), "--port", "0", "--no-tls"]
    process = _spawn(cmd, log_path, config.parent, _clindav_env())
    url = _read_clindav_url(process, log_path)
    _drain(process, log_path)
    wait_ready(url, process, log_path, 30)
    return Peer(
        name,
        url,
        process,
        log_path,
        __version__,
        "clindav serve --no-tls: Basic auth (local users), policy, filetype stage, "
        "AES-GCM content + AES-SIV names, audit row per request",
        auth=auth,
        config_path=config,
    )


def _read_clindav_url(process: subprocess.Popen[bytes], log_path: Path) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline().decode(errors="replace")
        if line.startswith("clindav serving "):
            return line.split()[-1].rstrip("/")
        if not line and process.poll() is not None:
            break
    process.kill()
    raise RuntimeError(f"clindav did not start:\n{_tail(log_path)}")


# --- rclone crypt -----------------------------------------------------------


def rclone_version() -> str | None:
    exe = shutil.which("rclone")
    if exe is None:
        return None
    out = subprocess.run([exe, "version"], capture_output=True, text=True, timeout=30).stdout
    return out.splitlines()[0].strip() if out else "unknown"


def _obscure(text: str) -> str:
    """rclone's reversible obscuring of a password for its config file."""
    proc = subprocess.run(
        ["rclone", "obscure", text], capture_output=True, text=True, check=True, timeout=30
    )
    return proc.stdout.strip()


def start_rclone(work: Path) -> Peer:
    """``rclone serve webdav`` over a crypt remote (standard name encryption) on a local folder."""
    version = rclone_version()
    if version is None:
        raise PeerUnavailable(RCLONE_HINT)
    backing = work / "rclone-backing"
    backing.mkdir(exist_ok=True)
    config = work / "rclone.conf"
    config.write_text(
        "[benchlocal]\ntype = local\n\n"
        f"[benchcrypt]\ntype = crypt\nremote = benchlocal:{backing}\n"
        "filename_encryption = standard\ndirectory_name_encryption = true\n"
        f"password = {_obscure('bench crypt password')}\npassword2 = {_obscure('bench salt')}\n"
    )
    port = free_port()
    cmd = [
        "rclone",
        "--config",
        str(config),
        "serve",
        "webdav",
        "benchcrypt:",
        "--addr",
        f"127.0.0.1:{port}",
        "--user",
        USER,
        "--pass",
        PASSWORD,
    ]
    log_path = work / "rclone.log"
    process, url = _serve(cmd, log_path, work, port, 30)
    return Peer(
        "rclone",
        url,
        process,
        log_path,
        version,
        "rclone serve webdav over crypt (standard name encryption, vfs-cache-mode off)",
        config_path=config,
    )


# --- Apache mod_dav ---------------------------------------------------------

_APACHE_MODULES = (
    "mpm_event",
    "authz_core",
    "authn_core",
    "authn_file",
    "auth_basic",
    "authz_user",
    "dav",
    "dav_fs",
    "mime",
)


# Debian's mime.conf points mod_mime here (the compiled-in default is under /etc/apache2).
_MIME_TYPES = "/etc/mime.types"


def apache_binary() -> str | None:
    return shutil.which("apache2") or (
        "/usr/sbin/apache2" if Path("/usr/sbin/apache2").exists() else None
    )


def start_apache(work: Path) -> Peer:
    """Apache httpd (event MPM) with mod_dav_fs and Basic auth, from a generated config."""
    exe = apache_binary()
    if exe is None:
        raise PeerUnavailable(APACHE_HINT)
    home = work / "apache"
    root = work / "apache-root"
    for folder in (home, root):
        folder.mkdir(exist_ok=True)
    digest = base64.b64encode(hashlib.sha1(PASSWORD.encode()).digest()).decode()
    (home / "htpasswd").write_text(f"{USER}:{{SHA}}{digest}\n")
    user = _apache_user(home, root)
    port = free_port()
    config = home / "httpd.conf"
    config.write_text(_apache_config(home, root, port, user))
    log_path = work / "apache.log"
    process, url = _serve([exe, "-f", str(config), "-DFOREGROUND"], log_path, home, port, 30)
    version = subprocess.run([exe, "-v"], capture_output=True, text=True).stdout.splitlines()
    return Peer(
        "apache",
        url,
        process,
        log_path,
        version[0] if version else "apache2",
        "Apache httpd event MPM, mod_dav_fs, Basic auth (AuthUserFile)",
        config_path=config,
    )


def _apache_user(home: Path, root: Path) -> tuple[str, str]:
    """User and group Apache's children run as; as root, www-data owning the bench folders."""
    if os.getuid() != 0:
        return pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    entry = pwd.getpwnam("www-data")
    os.chmod(home.parent, 0o711)  # the work folder (mkdtemp: 0700) must be traversable
    for folder in (home, root):
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    return "www-data", grp.getgrgid(entry.pw_gid).gr_name


def _apache_config(home: Path, root: Path, port: int, user: tuple[str, str]) -> str:
    modules = "\n".join(
        f"LoadModule {m}_module /usr/lib/apache2/modules/mod_{m}.so" for m in _APACHE_MODULES
    )
    return f"""{modules}
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
User {user[0]}
Group {user[1]}
PidFile {home}/httpd.pid
DefaultRuntimeDir {home}
ErrorLog {home}/error.log
LogLevel warn
DocumentRoot {root}
DavLockDB {home}/DavLock
TypesConfig {_MIME_TYPES if Path(_MIME_TYPES).exists() else "/dev/null"}
LimitRequestBody 0
<Directory {root}>
    Dav On
    AuthType Basic
    AuthName bench
    AuthUserFile {home}/htpasswd
    Require valid-user
</Directory>
"""


def restart(peer: Peer, work: Path) -> Peer:
    """Stop ``peer`` and start a fresh process of the same server on the same data."""
    peer.stop()
    if peer.name == "clindav":
        assert peer.config_path is not None
        return start_clindav(peer.config_path, tag="-fresh")
    starters = {"wsgidav": start_wsgidav, "rclone": start_rclone, "apache": start_apache}
    return starters[peer.name](work)
