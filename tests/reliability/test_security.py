"""Security checks on the real CLI entry point: where ``recsys serve`` listens by default,
and who may switch the live model.

``recsys serve`` runs as an operator runs it (the console script, in a process of its own)
with API keys configured, which is exactly when nothing else stops a public bind: then the
listening socket must still be on 127.0.0.1 unless ``--host`` says otherwise. The socket is
found in ``/proc/net/tcp``/``tcp6`` through the process's own file descriptors, and a
connection to a non-loopback address of this machine (when it has one) is refused.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from recsys.vectors.edge import EdgeStore
from tests.reliability.service import (
    API_KEYS,
    READ_KEY,
    WRITE_KEY,
    Service,
    bearer,
    child_pids,
    clean_env,
    copy_home,
    free_port,
    stop_service,
    wait_ready,
)

pytestmark = pytest.mark.skipif(
    not Path("/proc/net/tcp").exists(), reason="reads the socket table from /proc (Linux)"
)
RECSYS = Path(sys.executable).with_name("recsys")
LISTEN = "0A"


def listening_sockets(pid: int, port: int) -> list[tuple[str, str]]:
    """(family, address) of every socket listening on ``port`` held by process ``pid`` or
    its children (the workers of ``recsys serve``, one socket each)."""
    inodes = set()
    for member in [pid, *child_pids(pid)]:
        for fd in Path(f"/proc/{member}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
    found = []
    for family in ("tcp", "tcp6"):
        table = Path(f"/proc/net/{family}")
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            address, _, hex_port = local.rpartition(":")
            if state == LISTEN and int(hex_port, 16) == port and inode in inodes:
                found.append((family, decode_address(address)))
    return found


def decode_address(hex_address: str) -> str:
    """An address from /proc/net/tcp*: little-endian 32-bit words, as the kernel prints."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def local_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback, from the routing table."""
    found: list[str] = []
    with contextlib.suppress(OSError):
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
        for previous, line in itertools.pairwise(lines):
            if "/32 host LOCAL" in line:
                address = previous.split()[-1]
                if not ipaddress.ip_address(address).is_loopback:
                    found.append(address)
    return sorted(set(found))


@pytest.fixture(scope="module")
def cli_service(
    world_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Service, int, Path]]:
    """``recsys serve --port P`` (no --host), API keys set, over a copy of a trained home."""
    root = tmp_path_factory.mktemp("cli-serve")
    home = copy_home(world_template, root / "home")
    port = free_port()
    log = root / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(RECSYS), "serve", "--port", str(port)],
            cwd=root,
            env=clean_env(RECSYS_HOME=str(home), RECSYS_API_KEYS=API_KEYS),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    service = Service(f"http://127.0.0.1:{port}", process, log)
    wait_ready(service, 180)
    yield service, port, home
    stop_service(service)


def test_recsys_serve_listens_on_loopback_only_by_default(
    cli_service: tuple[Service, int, Path],
) -> None:
    service, port, _ = cli_service
    sockets = listening_sockets(service.pid, port)
    # One per worker (a socket each on the same port), every one on loopback.
    assert sockets and set(sockets) == {("tcp", "127.0.0.1")}, sockets
    assert httpx.get(f"{service.base}/healthz", timeout=10).status_code == 200
    others = local_addresses()
    for address in others:
        with pytest.raises(OSError), socket.create_connection((address, port), timeout=3):
            pass
    if not others:
        print("no non-loopback address on this machine: checked the socket table only")


def test_recsys_serve_refuses_a_public_address_without_keys(tmp_path: Path) -> None:
    port = free_port()
    # A service that did start would never return: the timeout is the failure.
    result = subprocess.run(
        [str(RECSYS), "serve", "--host", "0.0.0.0", "--port", str(port)],
        cwd=tmp_path,
        env=clean_env(RECSYS_HOME=str(tmp_path / "home")),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "refusing to serve on '0.0.0.0': no API keys are configured" in output
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        (bearer("not-" + WRITE_KEY), 401),
        ({"Authorization": f"Basic {WRITE_KEY}"}, 401),
        (bearer(READ_KEY), 403),
    ],
)
def test_activating_a_model_needs_the_write_scope(
    cli_service: tuple[Service, int, Path], headers: dict[str, str], status: int
) -> None:
    service, _, home = cli_service
    vectors = EdgeStore(home / "vectors")
    live = vectors.live_version()
    assert live is not None
    with httpx.Client(base_url=service.base, timeout=30) as http:
        for version in (live, "20990101T000000Z-ffffff"):
            refused = http.post(f"/v1/models/{version}/activate", headers=headers)
            assert refused.status_code == status, refused.text
            assert refused.headers["content-type"] == "application/json"
            assert refused.json()["detail"]
            if status == 401:
                assert refused.headers["www-authenticate"].startswith("Bearer")
    assert vectors.live_version() == live


def test_activating_with_the_write_scope(cli_service: tuple[Service, int, Path]) -> None:
    service, _, home = cli_service
    live = EdgeStore(home / "vectors").live_version()
    with httpx.Client(base_url=service.base, timeout=30, headers=bearer(WRITE_KEY)) as http:
        same = http.post(f"/v1/models/{live}/activate")
        assert same.status_code == 200, same.text
        fields = ("live_version", "previous_version", "model_version")
        assert same.json() == dict.fromkeys(fields, live)
        for unknown in ("20990101T000000Z-ff", "CURRENT", "%2E%2E", f"{live}.partial", "x" * 65):
            missing = http.post(f"/v1/models/{unknown}/activate")
            assert missing.status_code == 404, (unknown, missing.text)
            assert missing.headers["content-type"] == "application/json"
            assert missing.json()["detail"]
