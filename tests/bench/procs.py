"""Processes of a benchmark run: start, pin, wait for, measure, and always stop.

Every process the harness starts is registered in one ``Procs`` and lives in its own process group, so that
``close()`` (called from a ``finally`` and on SIGINT/SIGTERM) can stop each one and its children (nginx's
worker, a gateway's helpers) by id: first SIGTERM, then SIGKILL after a grace period.

Measurements read ``/proc`` directly:

- CPU: utime + stime (clock ticks) of a process and all its descendants, sampled before and after a measured
  run; the difference divided by the request count is the CPU cost per request.
- Memory: VmRSS (now) and VmHWM (peak). Writing ``5`` to ``/proc/PID/clear_refs`` resets the peak, so the peak
  read after a transfer is the transfer's own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dead_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    return free_port()


def wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what or 'process'} exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what or 'process'} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, lines: int = 20) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Procs:
    workdir: Path
    cpus: tuple[set[int] | None, set[int] | None] = (None, None)   # (proxy CPUs, load-generator CPUs)
    running: list[Proc] = field(default_factory=list)
    all_cpus: set[int] = field(default_factory=lambda: set(os.sched_getaffinity(0)))   # taken before pinning

    def start(self, name: str, argv: list[str], *, role: str, env: dict[str, str] | None = None,
              cwd: Path | None = None, cpus: set[int] | None = None) -> Proc:
        """Start ``argv`` in its own process group, output to ``workdir/name.log``, pinned by ``role``
        ("proxy", "load", or "any": every CPU, for the scenario that shows scaling over cores), or to ``cpus``
        when a scenario lays the CPUs out itself."""
        log = self.workdir / f"{name}.log"
        out = open(log, "wb")  # noqa: SIM115 - owned by the child; closed below once it has it
        try:
            popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=cwd or REPO, env={**os.environ, **(env or {})}, start_new_session=True)
        finally:
            out.close()
        proc = Proc(name, popen, log)
        self.running.append(proc)
        self.pin(popen.pid, role, cpus)
        return proc

    def pin(self, pid: int, role: str, cpus: set[int] | None = None) -> None:
        if cpus is None:
            cpus = self.all_cpus if role == "any" else self.cpus[0] if role == "proxy" else self.cpus[1]
        if cpus:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(pid, cpus)

    def stop(self, proc: Proc, grace: float = 5.0) -> None:
        if proc not in self.running:
            return
        self.running.remove(proc)
        _terminate(proc.popen, grace)

    def close(self) -> None:
        while self.running:
            self.stop(self.running[-1], grace=3.0)


def _terminate(popen: subprocess.Popen[bytes], grace: float) -> None:
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGTERM)
        try:
            popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # The group may outlive its leader (a worker that ignored SIGTERM): kill what is left of it, by group id.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        popen.wait(timeout=grace)


# ----------------------------------------------------------------------------------------------------------------
# /proc readings
# ----------------------------------------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (nginx master + worker, a supervisor + its workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes, in seconds (fields 14 and 15 of /proc/PID/stat)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    return cpu_seconds(descendants(pid))


def status_kib(pid: int, key: str) -> int:
    """A ``Vm*`` line of /proc/PID/status in KiB (0 if the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak_rss(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def python() -> str:
    return sys.executable
