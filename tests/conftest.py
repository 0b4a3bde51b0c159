"""Fixtures that run the real gateway on loopback and talk to it for real.

``instance`` makes a fresh instance with ``clindav init`` (SQLite, or a fresh
PostgreSQL database for the ``postgres`` parameter) and local users.  Two
kinds of running gateway (docs/TESTING.md):

- ``gateway`` (:func:`start_in_process`): the real app and cheroot server,
  built by the code ``clindav serve`` runs, in a thread of the test process
  (tests/servers.py).  No process start: the default.
- ``process_gateway`` (:func:`start_gateway`): ``clindav serve --port 0`` as a
  subprocess, for tests that kill or signal it, count its processes or read
  its exit status, or start it with other options or in another folder.

``run_cli`` runs a command through ``gateway.cli.main`` in this process, or
as a real subprocess where that matters.  Nothing is mocked: HTTP goes over
a socket, the database is real, the backing folder is a real folder.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import urllib3
import yaml

from tests.servers import InProcessServing, run_cli_in_process, serve_in_process

REPO = Path(__file__).resolve().parent.parent
CLINDAV = [sys.executable, "-m", "gateway.cli"]
PASSWORD = "correct horse battery staple"
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

# Users every instance gets: name -> groups.
USERS = {
    "alice": ["clinicians"],
    "root-admin": ["admins"],
    "audrey": ["auditors"],
    "ivy": ["clinicians", "intimate-access"],
}

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)


# Commands that always run as a subprocess: they serve, fork worker processes or
# replace the installed code.
PROCESS_COMMANDS = frozenset({"serve", "migrate", "upgrade"})


def run_cli(
    *args: str,
    config: Path | None = None,
    stdin: str = "",
    cwd: Path | None = None,
    check: bool = True,
    timeout: float = 120,
    process: bool = False,
) -> subprocess.CompletedProcess[str]:
    """``clindav ARGS``: through its ``main`` in this process (tests/servers.py), or as a
    real process with ``process=True`` (exit statuses, stdin, start-up), when ``cwd`` is
    given and for the commands in :data:`PROCESS_COMMANDS`."""
    argv = [*args, *(["--config", str(config)] if config is not None else [])]
    if process or cwd is not None or args[0] in PROCESS_COMMANDS:
        proc = subprocess.run(
            [*CLINDAV, *argv],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=cwd or REPO,
            timeout=timeout,
            env=_env(),
        )
    else:
        proc = run_cli_in_process(argv, stdin)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{proc.args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def _env() -> dict[str, str]:
    """The environment for clindav subprocesses: this checkout first on the path."""
    extra = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{extra}" if extra else str(REPO)}


@dataclass
class Instance:
    folder: Path
    config: Path
    database: str

    def settings(self) -> dict:
        return yaml.safe_load(self.config.read_text())

    def write_settings(self, data: dict) -> None:
        self.config.write_text(yaml.safe_dump(data, sort_keys=False))

    def share_dir(self, share: str) -> Path:
        return self.folder / "shares" / share

    def add_user(self, name: str, *groups: str) -> None:
        self.add_users({name: list(groups)})

    def add_users(self, users: dict[str, list[str]]) -> None:
        """Accounts with :data:`PASSWORD`, written to the database in this process.

        For speed: one transaction, and one scrypt hash per test process
        (:func:`_password_hash`).  ``clindav user add`` and the console's
        users page have their own tests (test_cli.py, test_user_lifecycle.py).
        """
        from gateway.db import LocalUser, make_engine, make_sessions
        from gateway.settings import load_settings

        engine = make_engine(load_settings(self.config).sqlalchemy_url())
        try:
            with make_sessions(engine).begin() as session:
                for name, groups in users.items():
                    session.add(LocalUser(name=name, password_hash=_password_hash(), groups=groups))
        finally:
            engine.dispose()


@functools.cache
def _password_hash() -> str:
    """The scrypt hash of :data:`PASSWORD`, made once: each costs a quarter of a second,
    and test accounts that share a salt weaken nothing."""
    from gateway.auth.base import hash_password

    return hash_password(PASSWORD)


def _postgres_database() -> str:
    import sqlalchemy

    name = f"clindav_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sqlalchemy.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is required for these tests: {exc}")
    finally:
        engine.dispose()
    return name


def _drop_postgres_database(name: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    engine.dispose()


def make_instance(root: Path, database: str = "sqlite") -> Instance:
    from gateway.admin.instance import init_instance
    from gateway.db import migrate
    from gateway.settings import load_settings

    folder = root / "instance"
    inst = Instance(folder, init_instance(folder), database)
    # One serving process per test gateway keeps the suite within its CI time;
    # tests/integration/test_workers.py and the README test run several.
    data = inst.settings()
    data["server"]["workers"] = 1
    inst.write_settings(data)
    if database == "postgres":
        name = _postgres_database()
        data = inst.settings()
        data["database_url"] = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        inst.write_settings(data)
        migrate(load_settings(inst.config).sqlalchemy_url())
    inst.add_users(USERS)
    return inst


@pytest.fixture(params=["sqlite"])
def instance(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Instance]:
    inst = make_instance(tmp_path, request.param)
    yield inst
    if inst.database == "postgres":
        _drop_postgres_database(inst.settings()["database_url"].rsplit("/", 1)[1])


@dataclass
class Gateway:
    """A running gateway: in this process (:class:`InProcessGateway`) or its own
    (:class:`ProcessGateway`)."""

    instance: Instance
    url: str
    log_path: Path
    sessions: list[requests.Session] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].strip("/"))

    def session(self, user: str | None = "alice", password: str = PASSWORD) -> requests.Session:
        s = requests.Session()
        # Loopback only: no proxy or CA bundle from the environment may apply.
        s.trust_env = False
        s.verify = not self.url.startswith("https")
        if user is not None:
            s.auth = (user, password)
        self.sessions.append(s)
        return s

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self._halt()
        for s in self.sessions:
            s.close()

    def _halt(self) -> None:
        raise NotImplementedError


@dataclass
class ProcessGateway(Gateway):
    """A running ``clindav serve`` process."""

    process: subprocess.Popen[str] = field(kw_only=True)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def _halt(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class InProcessGateway(Gateway):
    """The gateway served from threads of the test process (tests/servers.py)."""

    serving: InProcessServing = field(kw_only=True)

    def _halt(self) -> None:
        self.serving.close()


def _log_path(inst: Instance) -> Path:
    return inst.folder.parent / f"gateway-{uuid.uuid4().hex[:6]}.log"


def start_in_process(inst: Instance, *, tls: bool = False) -> InProcessGateway:
    """The gateway of ``inst`` served from this process (what ``clindav serve`` runs)."""
    log_path = _log_path(inst)
    url, serving = serve_in_process(inst.config, log_path, tls=tls)
    return InProcessGateway(inst, url, log_path, serving=serving)


def start_gateway(
    inst: Instance, *, tls: bool = False, cwd: Path | None = None, extra: tuple[str, ...] = ()
) -> ProcessGateway:
    """``clindav serve`` as its own process."""
    log_path = _log_path(inst)
    cmd = [*CLINDAV, "serve", "--config", str(inst.config), "--port", "0", *extra]
    if not tls:
        cmd.append("--no-tls")
    log_file = open(log_path, "w")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=log_file,
        text=True,
        cwd=cwd or inst.folder,
        env=_env(),
    )
    url = _read_url(process, log_path)
    return ProcessGateway(inst, url, log_path, process=process)


def _read_url(process: subprocess.Popen[str], log_path: Path) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("clindav serving "):
            return line.split()[-1].rstrip("/")
        if not line and process.poll() is not None:
            break
    process.kill()
    raise AssertionError(f"gateway did not start:\n{log_path.read_text()}")


@pytest.fixture
def gateway(instance: Instance) -> Iterator[Gateway]:
    """The instance's gateway, served from this process."""
    gw = start_in_process(instance)
    yield gw
    gw.stop()


@pytest.fixture
def process_gateway(instance: Instance) -> Iterator[ProcessGateway]:
    """The instance's gateway as a ``clindav serve`` process."""
    gw = start_gateway(instance)
    yield gw
    gw.stop()


def read_answer(sock: socket.socket) -> bytes:
    """One HTTP answer from a raw socket: up to its Content-Length, or until the server
    closes, resets or goes quiet (the socket's timeout)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
            head, separator, body = data.partition(b"\r\n\r\n")
            length = [h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")]
            if separator and length and len(body) >= int(length[0].split(b":")[1]):
                break
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def require_tool(name: str) -> str:
    """Path of a client program the suite needs; its absence is a failure, not a skip."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run the README's test command, which installs it")
    return path


@dataclass
class InstanceClock:
    """The instance's clock (gateway/clock.py ``CLINDAV_TEST_CLOCK``): moved, never waited for."""

    path: Path

    def advance(self, offset: str) -> None:
        """From now on the gateway and every command see the system time plus ``offset``."""
        self.path.write_text(offset)


@pytest.fixture
def clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> InstanceClock:
    """Set before the gateway starts: the subprocesses inherit the environment."""
    from gateway.clock import TEST_CLOCK

    path = tmp_path / "clock-offset"
    path.write_text("")
    monkeypatch.setenv(TEST_CLOCK, str(path))
    return InstanceClock(path)
