"""Policy reload: SIGHUP to the running gateway, or ``clindav reload``.

``clindav serve`` writes its process id to ``clindav.pid`` in the instance
folder (the supervisor's, with ``server.workers``); it forwards SIGHUP to
every worker, and each process reloads the policy file for itself.  A policy
that does not validate is refused and the running one kept; the log says
why.  A valid one takes effect for the next request: requests already
decided finish under the policy that decided them.  What a reload cannot
change (how a share stores names, which needs the name codec built at
start-up) is refused like an invalid file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
from pathlib import Path

from gateway.app import load_checked_policy
from gateway.errors import ConfigError, ConfigProblem
from gateway.policy import Policy
from gateway.services import Services
from gateway.settings import Settings

log = logging.getLogger("clindav")
PID_FILE = "clindav.pid"


def reload_policy(services: Services) -> bool:
    """Load the policy file again and adopt it if it is valid; True when adopted."""
    settings = services.settings
    path = settings.resolve(settings.policy)
    try:
        new = load_checked_policy(settings)
        _check_unchanged_names(services, new, str(path))
    except ConfigError as exc:
        problems = "; ".join(str(problem) for problem in exc.problems)
        log.error("policy reload refused, the running policy is kept: %s", problems)
        return False
    except Exception:  # a reload must never take the serving process down
        log.exception("policy reload failed, the running policy is kept")
        return False
    new.attach(services)
    services.policy.adopt(new)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    log.info("policy reloaded from %s (sha256 %s, pid %d)", path, digest, os.getpid())
    return True


def _check_unchanged_names(services: Services, new: Policy, file: str) -> None:
    problems = [
        ConfigProblem(file, f"shares.{name}.names", "changes only with a restart")
        for name in services.shares
        if services.policy.share(name).names != new.share(name).names
    ]
    if problems:
        raise ConfigError(problems)


def pid_file(settings: Settings) -> Path:
    return settings.base_dir / PID_FILE


def write_pid_file(settings: Settings) -> Path:
    """Record this process as the instance's running gateway (for ``clindav reload``)."""
    path = pid_file(settings)
    temp = path.with_name(f".{PID_FILE}.{os.getpid()}")
    temp.write_text(f"{os.getpid()}\n", encoding="ascii")
    os.replace(temp, path)
    return path


def remove_pid_file(settings: Settings) -> None:
    """Remove the pid file if it still names this process (another gateway may own it now)."""
    path = pid_file(settings)
    with contextlib.suppress(OSError, ValueError):
        if int(path.read_text(encoding="ascii")) == os.getpid():
            path.unlink()


def signal_reload(settings: Settings) -> int:
    """Send SIGHUP to the instance's running gateway; its process id."""
    path = pid_file(settings)
    try:
        pid = int(path.read_text(encoding="ascii"))
    except FileNotFoundError:
        raise ConfigError.single(str(path), "(file)", "no gateway is running here") from None
    except (OSError, ValueError) as exc:
        raise ConfigError.single(str(path), "(file)", f"cannot be read: {exc}") from None
    if not _is_gateway(pid):
        # A stale file whose number now belongs to another process: SIGHUP would end it.
        raise ConfigError.single(str(path), "(file)", f"process {pid} is not a running gateway")
    os.kill(pid, signal.SIGHUP)
    return pid


def _is_gateway(pid: int) -> bool:
    """Whether ``pid`` runs ``clindav serve`` (read from /proc)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    program = any(b"clindav" in a or b"gateway.cli" in a for a in args)
    return program and b"serve" in args
