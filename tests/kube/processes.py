"""Child processes of the tests: each in its own process group, its output in a log file.

Shared by the kmock harness (tests/operator/harness.py) and the cluster tier: the
operator runs the same way against both.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tail(path: Path, chars: int = 4000) -> str:
    """The end of a log file ("" when there is none yet)."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return ""


class Process:
    """A child process with its output in a log file."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        log: Path,
        cwd: Path = ROOT,
    ) -> None:
        self.argv = list(argv)
        self.log = log
        self.handle = log.open("ab")
        # Its own process group, like a pod: killing it kills the worker's children too
        # (`taskiq worker` runs the tasks in a forked child).
        self.proc = subprocess.Popen(
            self.argv,
            env=dict(env),
            cwd=cwd,
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self) -> None:
        """SIGTERM to the leader only, as a kubelet signals a container's main process."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to the whole group, as the kubelet kills a pod's cgroup (also what
        a leader that exited left behind). Once only: the group id is free after that."""
        if self.handle.closed:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.handle.close()

    def stop(self, timeout: float = 10) -> None:
        """``terminate``, then ``kill`` after ``timeout`` seconds (or at once once the
        leader has exited: whatever it leaves behind goes with the pod)."""
        if self.alive:
            self.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Operator:
    """``python -m taskiq_flow_operator`` watching one namespace.

    The arguments are what the chart gives an operator limited to named namespaces
    (``--no-scanning``), plus quick status updates and a short worker idle timeout so
    that the tests do not wait for the production defaults.
    """

    def __init__(
        self,
        kubeconfig: Path,
        redis_url: str,
        logs: Path,
        *,
        namespace: str,
        verbose: bool = True,
        name: str = "operator",
        args: tuple[str, ...] = (),
    ) -> None:
        """``name`` names the logs and, as ``$POD_ID``, kopf's peering identity (which
        is also the operator's events consumer in HA mode); ``args`` are added."""
        self.name = name
        self.namespace = namespace
        self.args = args
        self.verbose = verbose
        self.kubeconfig = kubeconfig
        self.redis_url = redis_url
        self.logs = logs
        self.metrics_port = free_port()
        self.process: Process | None = None
        self.starts = 0

    def start(self) -> None:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["TASKIQ_FLOW_REDIS_URL"] = self.redis_url
        env["POD_ID"] = self.name
        self.starts += 1
        self.process = Process(
            [
                sys.executable,
                "-m",
                "taskiq_flow_operator",
                "--namespace",
                self.namespace,
                "--metrics-port",
                str(self.metrics_port),
                "--status-interval",
                "0.5",
                "--worker-idle-timeout-ms",
                "3000",
                "--no-scanning",
                *(["--verbose"] if self.verbose else []),
                *self.args,
            ],
            env,
            self.logs / f"{self.name}-{self.starts}.log",
        )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.alive

    def kill(self) -> None:
        """SIGKILL: no cleanup, no finalizer or status written on the way out."""
        assert self.process is not None
        self.process.kill()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def output(self) -> str:
        """Every start's log, in order."""
        logs = sorted(
            self.logs.glob(f"{self.name}-*.log"), key=lambda p: int(p.stem.rsplit("-", 1)[1])
        )
        return "\n".join(p.read_text(errors="replace") for p in logs)
