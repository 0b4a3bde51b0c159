"""What running clindav inside one process needs: commands and gateways leave nothing behind.

The suite runs most commands through ``gateway.cli.main`` and most gateways in
its own process (docs/TESTING.md); a command that kept its database open, or a
gateway whose background threads could not be joined, would leak into the
next test.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from gateway.app import build_services
from gateway.cli.serve import background_threads
from gateway.settings import load_settings
from tests.conftest import Gateway, Instance, run_cli, start_in_process


def _open_handles(path: Path) -> int:
    """This process's open file descriptors on ``path``."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                count += 1
        except OSError:  # closed while listing
            continue
    return count


def test_a_command_leaves_no_database_connection_open(instance: Instance) -> None:
    database = (instance.folder / "clindav.db").resolve()
    before = _open_handles(database)
    assert "alice" in run_cli("user", "list", config=instance.config).stdout  # the database
    assert "audit chain intact" in run_cli("audit", "verify", config=instance.config).stdout
    run_cli("fsck", config=instance.config)  # the running services
    assert _open_handles(database) == before


def test_a_command_leaves_the_logging_as_it_found_it(instance: Instance) -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    result = run_cli("check-config", config=instance.config)
    assert "valid" in result.stdout
    assert root.handlers == handlers and root.level == level


def test_the_background_threads_stop_and_join(instance: Instance) -> None:
    services = build_services(load_settings(instance.config))
    threads = background_threads(services)
    try:
        for thread in threads:
            thread.start()
    finally:
        for thread in threads:
            thread.stop()
        for thread in threads:
            thread.join(10)
        services.sessions.kw["bind"].dispose()
    assert not any(thread.is_alive() for thread in threads)


def test_a_gateway_log_holds_its_own_records(gateway: Gateway) -> None:
    logging.getLogger("clindav").warning("a line the test itself logs")
    refused = gateway.session().put(f"{gateway.url}/documents/CON", data=b"a")
    assert refused.status_code == 400
    logged = gateway.log()
    assert "audit chain head: seq=0" in logged  # the anchor's thread, at start
    assert f"request {refused.headers['X-Request-Id']}: refused PUT" in logged  # a request's
    assert "a line the test itself logs" not in logged


def test_two_gateways_in_one_process_stop_independently(instance: Instance) -> None:
    first, second = start_in_process(instance), start_in_process(instance)
    try:
        first.stop()
        ok = second.session().put(f"{second.url}/documents/b.txt", data=b"b")
        assert ok.status_code == 201
        assert second.session().get(f"{second.url}/metrics").status_code == 200
    finally:
        second.stop()
