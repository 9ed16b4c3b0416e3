"""compose/lifeline.py: a process that asked to die with its parent is gone soon after the
parent is killed with SIGKILL (no chance to stop anything itself)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]

# the parent starts the child, says its pid, and waits to be killed
_PARENT = textwrap.dedent(
    """
    import os, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid())])
    print(child.pid, flush=True)
    time.sleep(300)
    """
)
_CHILD = textwrap.dedent(
    """
    import sys, time
    from compose.lifeline import die_with_parent
    die_with_parent(int(sys.argv[1]))
    print("armed", flush=True)
    time.sleep(300)
    """
)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; only its exit status waits to be read


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_the_child_ends_when_its_parent_is_killed() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, _CHILD],
        stdout=subprocess.PIPE,
        text=True,
        cwd=PROJECT,
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == "armed"  # the child's, same pipe
        assert _alive(child)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 5
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child)
    finally:
        parent.kill()
        parent.wait()


def test_a_child_whose_parent_is_already_gone_exits() -> None:
    # pid 1 (or a subreaper) is not the parent the child was told about
    run = subprocess.run(
        [sys.executable, "-c", _CHILD, str(os.getpid() + 999_999)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=PROJECT,
    )
    assert run.returncode == 0
    assert "armed" not in run.stdout
