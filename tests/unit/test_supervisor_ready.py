"""`vna up` says "up" (and `vna up --detach` returns) only once the gateway listens too."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from compose.settings import load_settings
from deploy.supervisor import _wait_for_gateway
from security.errors import VnaError


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_waits_until_the_gateway_listens(tmp_path: Path) -> None:
    port = _free_port()
    settings = load_settings(home=tmp_path, http_port=port)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    listener = socket.socket()
    listening = threading.Event()

    def listen_later() -> None:
        time.sleep(0.5)  # the gateway's imports, as on a loaded machine
        listener.bind(("127.0.0.1", port))
        listener.listen()
        listening.set()

    thread = threading.Thread(target=listen_later)
    thread.start()
    try:
        _wait_for_gateway(settings, sleeper)
        assert listening.is_set(), "returned before the gateway listened"
    finally:
        thread.join()
        listener.close()
        sleeper.kill()
        sleeper.wait()


def test_a_gateway_that_dies_during_start_names_its_log(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, http_port=_free_port())
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    dead.wait()
    with pytest.raises(VnaError, match=r"exited with code 3.*gateway\.log"):
        _wait_for_gateway(settings, dead)
