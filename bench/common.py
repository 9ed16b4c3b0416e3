"""Shared pieces of the benchmarks that run the archive side by side with a plain Orthanc.

A *target* is one server under test, in its own home directory on free ports:
:class:`PlainOrthanc` (Debian's ``Orthanc`` with a minimal configuration and no plugins) or
:class:`VnaArchive` (``vna up --detach``). Targets are context managers that always stop their
processes. The rest are helpers every benchmark needs: free ports, DICOM sends with dcmtk's
``storescu``, disk usage of a directory tree, machine facts and the RESULTS.md section writer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from archive.api import credentials
from compose.api import load_settings

__all__ = [
    "BENCH_DIR",
    "PROJECT_ROOT",
    "BenchError",
    "DiskUsage",
    "PlainOrthanc",
    "SendResult",
    "Target",
    "VnaArchive",
    "dicom_env",
    "disk_breakdown",
    "disk_usage",
    "free_ports",
    "git_head",
    "machine_facts",
    "partition",
    "process_cpu_seconds",
    "send_parallel",
    "source_fingerprint",
    "stop_process",
    "storescu_command",
    "terminate_on_sigterm",
    "write_section",
]

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCH_DIR.parent
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A benchmark step failed; the message says which and where to look."""


# --------------------------------------------------------------------------- processes


def dicom_env(tcp_nodelay: bool) -> dict[str, str]:
    """This process's environment with dcmtk's ``TCP_NODELAY`` set explicitly.

    dcmtk (storescu, and Orthanc's DICOM server, which is built on it) leaves Nagle's
    algorithm on unless ``TCP_NODELAY=1``. With Nagle on at both ends, every C-STORE waits
    for a delayed ACK (about 40 ms on Linux, twice per instance): a send on loopback then
    measures that wait, not the server. Both the server and storescu get the same value.
    """
    return dict(os.environ, TCP_NODELAY="1" if tcp_nodelay else "0")


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that are free right now (chosen by the kernel)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("0.0.0.0", 0))  # noqa: S104 - only to learn a free port
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime


def _cpu_or_zero(pid: int) -> float:
    try:
        return process_cpu_seconds(pid)
    except (OSError, IndexError, ValueError):
        return 0.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_pid_if(pid: int, needle: str) -> None:
    """SIGKILL ``pid`` only if its command line mentions ``needle`` (guards pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return
    if needle in cmdline:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into SystemExit so ``finally`` blocks clean up as on Ctrl-C."""

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------- targets


def stop_process(proc: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Target:
    """A DICOM server under test in its own home directory; ``with`` stops it for sure."""

    kind = "target"

    def __init__(self, name: str, home: Path, aet: str, *, tcp_nodelay: bool = True) -> None:
        self.name = name
        self.home = home
        self.aet = aet
        self.tcp_nodelay = tcp_nodelay
        self.env = dicom_env(tcp_nodelay)
        ports = free_ports(3)
        self.dicom_port, self.http_port, self.gateway_port = ports
        self.auth: tuple[str, str] | None = None
        self.host = "127.0.0.1"

    # -- lifecycle, implemented by subclasses ----------------------------------------------

    def start(self, timeout: float = 120.0) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 90.0) -> None:
        raise NotImplementedError

    @property
    def server_pid(self) -> int | None:
        """Pid of the Orthanc process while it runs."""
        raise NotImplementedError

    def __enter__(self) -> Target:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- Orthanc REST ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def get(self, path: str, timeout: float = 30.0) -> Any:
        """GET a JSON resource of Orthanc's REST API."""
        answer = requests.get(self.url + path, auth=self.auth, timeout=timeout)
        answer.raise_for_status()
        return answer.json()

    def system(self) -> dict[str, Any]:
        return dict(self.get("/system"))

    def count_instances(self) -> int:
        """``CountInstances`` of Orthanc's ``/statistics``."""
        return int(self.get("/statistics")["CountInstances"])

    def cpu_seconds(self) -> float:
        """CPU seconds used by the Orthanc process so far (0 when not running)."""
        pid = self.server_pid
        return process_cpu_seconds(pid) if pid else 0.0

    def _wait_http(
        self, ready: Any, timeout: float, proc: subprocess.Popen[bytes] | None, log: Path
    ) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if ready(self.get("/system", timeout=2)):
                    return
            except (requests.RequestException, ValueError):
                pass
            if proc is not None and proc.poll() is not None:
                raise BenchError(
                    f"{self.name}: Orthanc exited with code {proc.returncode} "
                    f"during start; see {log}"
                )
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name}: not ready within {timeout:.0f} s; see {log}")
            time.sleep(0.1)


class PlainOrthanc(Target):
    """Debian's Orthanc with file storage, a minimal configuration and no plugins."""

    kind = "orthanc"

    def __init__(
        self,
        name: str,
        home: Path,
        *,
        compression: bool = False,
        aet: str = "ORTHANC",
        executable: str = "Orthanc",
        tcp_nodelay: bool = True,
    ) -> None:
        super().__init__(name, home, aet, tcp_nodelay=tcp_nodelay)
        self.compression = compression
        self.executable = executable
        self.proc: subprocess.Popen[bytes] | None = None
        self.home.mkdir(parents=True, exist_ok=True)
        self.config_path = self.home / "config.json"
        self.log_path = self.home / "orthanc.log"
        self.config_path.write_text(json.dumps(self.config(), indent=2))

    def config(self) -> dict[str, Any]:
        """The whole configuration: Orthanc defaults for everything not named here."""
        return {
            "Name": self.name,
            "StorageDirectory": str(self.home / "storage"),
            "IndexDirectory": str(self.home / "index"),
            "StorageCompression": self.compression,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "DicomAlwaysAllowStore": True,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpCompressionEnabled": False,
            "Plugins": [],
        }

    @property
    def server_pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self, timeout: float = 120.0) -> None:
        if self.server_pid is not None:
            return
        with open(self.log_path, "ab") as log:
            # own session: a Ctrl-C in the terminal reaches the benchmark, which stops this
            self.proc = subprocess.Popen(
                [self.executable, str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.home,
                env=self.env,
                start_new_session=True,
            )
        try:
            self._wait_http(lambda _s: True, timeout, self.proc, self.log_path)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 90.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        stop_process(proc, timeout)


class VnaArchive(Target):
    """The archive, started with ``vna up --detach`` and stopped with ``vna down``.

    Ports go to ``vna`` through ``VNA_DICOM_PORT``, ``VNA_ORTHANC_HTTP_PORT`` and
    ``VNA_HTTP_PORT``; every other inherited ``VNA_*`` variable is dropped, so a developer's
    own archive settings never leak into the benchmark.
    """

    kind = "vna"

    def __init__(
        self, name: str, home: Path, *, aet: str = "VNA", tcp_nodelay: bool = True
    ) -> None:
        super().__init__(name, home, aet, tcp_nodelay=tcp_nodelay)
        self.home.mkdir(parents=True, exist_ok=True)
        self.env = {k: v for k, v in self.env.items() if not k.startswith("VNA_")}
        self.env.update(
            VNA_HOME=str(self.home),
            VNA_DICOM_AET=aet,
            VNA_DICOM_PORT=str(self.dicom_port),
            VNA_ORTHANC_HTTP_PORT=str(self.http_port),
            VNA_HTTP_PORT=str(self.gateway_port),
            # plain HTTP, as the Orthanc it is compared with (the gateway's default is HTTPS)
            VNA_GATEWAY__TLS="false",
        )
        self._started = False

    @staticmethod
    def command() -> list[str]:
        """How to run the ``vna`` CLI of this interpreter's environment."""
        script = Path(sys.executable).parent / "vna"
        return [str(script)] if script.exists() else [sys.executable, "-m", "deploy.cli"]

    def vna(self, *args: str, timeout: float = 180.0) -> str:
        """Run ``vna ARGS --home HOME``; returns stdout, raises with stderr on failure."""
        argv = [*self.command(), *args, "--home", str(self.home)]
        done = subprocess.run(
            argv,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=PROJECT_ROOT,
            check=False,
        )
        if done.returncode != 0:
            raise BenchError(
                f"{self.name}: `{' '.join(argv)}` failed ({done.returncode}): "
                f"{done.stderr.strip() or done.stdout.strip()}"
            )
        return done.stdout

    @property
    def server_pid(self) -> int | None:
        try:
            pid = int(json.loads((self.home / "run" / "ready").read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return None
        return pid if _pid_alive(pid) else None

    def start(self, timeout: float = 120.0) -> None:
        if self.server_pid is not None:
            return
        self._started = True
        self.vna("up", "--detach", timeout=timeout + 30)
        creds = credentials(load_settings(self.home))
        self.auth = (creds.username, creds.password)
        self._wait_http(
            lambda s: bool(s.get("StorageAreaPlugin")), timeout, None, self.home / "log"
        )
        self._wait_settled(timeout)

    def _process_tree(self) -> list[int]:
        """The supervisor (``vna up``) and every process below it."""
        try:
            root = int((self.home / "run" / "vna.pid").read_text().strip())
        except (OSError, ValueError):
            return []
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                    children.setdefault(ppid, []).append(int(entry.name))
        tree, todo = [], [root]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(children.get(pid, []))
        return tree

    def _wait_settled(self, timeout: float) -> None:
        """Wait until the gateway answers and the archive's processes are idle (workers
        import and prepare on start): a measurement then sees the running archive, as it
        sees a plain Orthanc that is up, not its start-up."""
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.gateway_port}/healthz"
        while True:
            with contextlib.suppress(requests.RequestException):
                if requests.get(url, timeout=5).ok:
                    break
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name}: the gateway did not answer {url}")
            time.sleep(0.2)
        while time.monotonic() < deadline:
            pids = self._process_tree()
            before = sum(_cpu_or_zero(pid) for pid in pids)
            time.sleep(0.5)
            if sum(_cpu_or_zero(pid) for pid in pids) - before < 0.05:  # < 10 % of a core
                return

    def stop(self, timeout: float = 90.0) -> None:
        if not self._started:
            return
        self._started = False
        pids: list[tuple[int, str]] = []
        for name, key in (("vna.pid", None), ("ready", "pid")):
            with contextlib.suppress(OSError, ValueError, KeyError):
                text = (self.home / "run" / name).read_text()
                # both command lines name the home: the supervisor's --home, Orthanc's config
                pids.append((int(json.loads(text)[key] if key else text.strip()), str(self.home)))
        try:
            self.vna("down", timeout=timeout)
        except (BenchError, subprocess.TimeoutExpired):
            for pid, needle in pids:  # last resort, and only our own processes
                _kill_pid_if(pid, needle)
            raise
        finally:
            deadline = time.monotonic() + 30
            while any(_pid_alive(p) for p, _ in pids) and time.monotonic() < deadline:
                time.sleep(0.1)

    def add_institution(self, name: str, ae: str) -> None:
        # the benchmark's senders run on this machine: the AE is bound to loopback
        self.vna("institution", "add", name, "--ae", ae, "--host", "127.0.0.1")

    def stats(self) -> dict[str, Any]:
        """``vna stats --json``."""
        return dict(json.loads(self.vna("stats", "--json")))


# --------------------------------------------------------------------------- DICOM sends


@dataclass(frozen=True, slots=True)
class SendResult:
    """One timed send: wall seconds from the first storescu start to the last exit."""

    seconds: float
    files: int
    bytes: int
    associations: int

    @property
    def instances_per_s(self) -> float:
        return self.files / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds


def storescu_command(
    inputs: Sequence[Path], *, calling_aet: str, called_aet: str, port: int, host: str = "127.0.0.1"
) -> list[str]:
    """dcmtk ``storescu`` sending files and (recursively) directories over one association.

    No ``-nh`` (``--no-halt``): with it, storescu 3.6.7 exits 0 even when the server refuses
    every instance; without it, the first failed C-STORE stops the send with exit code 1.
    """
    return [
        "storescu",
        "-aet",
        calling_aet,
        "-aec",
        called_aet,
        "+sd",
        "+r",
        host,
        str(port),
        *(str(p) for p in inputs),
    ]


def partition(files: Sequence[Path], parts: int, root: Path) -> list[Path]:
    """Split ``files`` into ``parts`` contiguous disjoint sets, as hard-link directories."""
    if root.exists():
        shutil.rmtree(root)
    size, extra = divmod(len(files), parts)
    dirs: list[Path] = []
    start = 0
    for k in range(parts):
        end = start + size + (1 if k < extra else 0)
        directory = root / f"part{k}"
        directory.mkdir(parents=True)
        for i, path in enumerate(files[start:end]):
            link = directory / f"{i:06d}.dcm"
            try:
                os.link(path, link)
            except OSError:
                shutil.copyfile(path, link)
        dirs.append(directory)
        start = end
    return dirs


def _tree_files(inputs: Sequence[Path]) -> list[Path]:
    found: list[Path] = []
    for item in inputs:
        found.extend(sorted(p for p in item.rglob("*") if p.is_file()) if item.is_dir() else [item])
    return found


def send_parallel(
    groups: Sequence[Sequence[Path]], *, calling_aet: str, target: Target, log_dir: Path
) -> SendResult:
    """Send each group over its own storescu association, all at once; time the whole send.

    Raises :class:`BenchError` if any storescu exits non-zero (its log is kept in
    ``log_dir``). Every storescu still running on the way out (Ctrl-C) is killed.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    files = [f for group in groups for f in _tree_files(group)]
    total = sum(f.stat().st_size for f in files)
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        start = time.perf_counter()
        for k, group in enumerate(groups):
            log = log_dir / f"storescu-{calling_aet}-{len(groups)}x-{k}.log"
            with open(log, "wb") as handle:
                procs.append(
                    (
                        subprocess.Popen(
                            storescu_command(
                                group,
                                calling_aet=calling_aet,
                                called_aet=target.aet,
                                port=target.dicom_port,
                                host=target.host,
                            ),
                            stdout=handle,
                            stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL,
                            env=target.env,
                        ),
                        log,
                    )
                )
        for proc, _log in procs:
            proc.wait()
        seconds = time.perf_counter() - start
    finally:
        for proc, _log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    failed = [(p.returncode, log) for p, log in procs if p.returncode != 0]
    if failed:
        code, log = failed[0]
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise BenchError(
            f"{target.name}: storescu -aet {calling_aet} exited {code}; {log}: " + " | ".join(tail)
        )
    return SendResult(seconds, len(files), total, len(groups))


# --------------------------------------------------------------------------- disk usage


@dataclass(frozen=True, slots=True)
class DiskUsage:
    """Bytes a tree takes: allocated (``st_blocks * 512``) and apparent (``st_size``)."""

    allocated: int
    apparent: int
    files: int

    def __add__(self, other: DiskUsage) -> DiskUsage:
        return DiskUsage(
            self.allocated + other.allocated,
            self.apparent + other.apparent,
            self.files + other.files,
        )


def disk_usage(root: Path) -> DiskUsage:
    """Walk ``root`` (not following links); directories count too, like ``du``."""
    allocated = apparent = files = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in (*dirnames, *filenames):
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            allocated += st.st_blocks * 512
            apparent += st.st_size
            files += name in filenames
    st = os.lstat(root)
    return DiskUsage(allocated + st.st_blocks * 512, apparent + st.st_size, files)


def disk_breakdown(root: Path) -> dict[str, DiskUsage]:
    """:func:`disk_usage` of each entry directly under ``root``."""
    out: dict[str, DiskUsage] = {}
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            out[entry.name] = disk_usage(entry)
        else:
            st = entry.lstat()
            out[entry.name] = DiskUsage(st.st_blocks * 512, st.st_size, 1)
    return out


# --------------------------------------------------------------------------- reporting


def _first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def _mount_of(path: Path) -> str:
    best, fstype = "", "unknown"
    resolved = str(path.resolve())
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if (
                len(fields) >= 3
                and (resolved == fields[1] or resolved.startswith(fields[1].rstrip("/") + "/"))
                and len(fields[1]) >= len(best)
            ):
                best, fstype = fields[1], f"{fields[2]} ({fields[0]} on {fields[1]})"
    return fstype


SOURCE_DIRS = (
    "archive",
    "security",
    "tiering",
    "deploy",
    "query",
    "dimse",
    "dicomweb",
    "compose",
    "sharing",
)


def source_fingerprint(dirs: Sequence[str] = SOURCE_DIRS, root: Path = PROJECT_ROOT) -> str:
    """Short hash of the project's Python sources, to tell which code a run measured.

    Taken before and after a run, it shows whether someone edited the code meanwhile.
    """
    digest = hashlib.sha256()
    for name in dirs:
        for path in sorted((root / name).rglob("*.py")):
            with contextlib.suppress(OSError):
                digest.update(str(path.relative_to(root)).encode() + b"\0")
                digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def command_line(module: str, argv: Sequence[str]) -> str:
    """The command that reproduces a run, for RESULTS.md (the venv's python, relative)."""
    python = Path(sys.executable)
    with contextlib.suppress(ValueError):
        python = python.relative_to(PROJECT_ROOT)
    return shlex.join([str(python), "-m", module, *argv])


def git_head(root: Path = PROJECT_ROOT) -> str | None:
    """The commit HEAD names, read from ``.git`` (no git command runs)."""
    git = root / ".git"
    try:
        if git.is_file():  # a worktree: HEAD in its own git dir, refs in the common one
            own = Path(git.read_text().split(":", 1)[1].strip())
            head = (own / "HEAD").read_text().strip()
            common = own / "commondir"
            git = (own / common.read_text().strip()).resolve() if common.exists() else own
        else:
            head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        if (git / ref).exists():
            return (git / ref).read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        return None
    return None


def machine_facts(work_dir: Path, orthanc_version: str | None = None) -> dict[str, str]:
    """What a reader needs to compare numbers across machines."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = match.group(1).strip() if match else cpu
    mem = "unknown"
    with contextlib.suppress(OSError):
        match = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        mem = f"{int(match.group(1)) / 1024**2:.1f} GiB" if match else mem
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "nproc": str(usable or os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "orthanc": orthanc_version or "unknown",
        "dcmtk": _first_line(["storescu", "--version"]).strip("$ ").strip(),
        "filesystem": _mount_of(work_dir),
    }


def write_section(path: Path, key: str, body: str, title: str = "# Benchmark results") -> None:
    """Write ``body`` between ``<!-- BEGIN key -->`` and ``<!-- END key -->`` markers.

    The section replaces an earlier one with the same key; other sections stay as they are.
    """
    begin, end = f"<!-- BEGIN {key} -->", f"<!-- END {key} -->"
    block = f"{begin}\n{body.strip()}\n{end}\n"
    text = path.read_text() if path.exists() else f"{title}\n\n"
    i = text.find(begin)
    j = text.find(end, i) if i >= 0 else -1
    if i >= 0 and j > i:
        rest = text[j + len(end) :].lstrip("\n")
        text = text[:i] + block + ("\n" + rest if rest else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
