"""`meddenoise serve` and `meddenoise view` as real processes on 127.0.0.1 for tests, time-bounded.

`ServerProcess` starts the command on a free port (port 0: the server binds and prints its
address), waits for ``/healthz`` and stops it (terminate, wait, kill).  Its temporary folder is
set through TMPDIR, so a test can see every file the server leaves behind.  `request` is a small
urllib call that returns (status, headers, body) for any status.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .pacs import stop_process, wait_for

START_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 60.0
ADDRESS = re.compile(r"(http://127\.0\.0\.1:\d+)(/\?token=\S+)?")


class ServerProcess:
    """One `meddenoise serve` or `meddenoise view` process; a context manager.

    Parameters
    ----------
    arguments
        The command after ``meddenoise`` (``["serve", "--workers", "1"]``); ``--port 0`` is
        added.
    folder
        Its TMPDIR (scratch folders appear here) and the folder of its log.
    token
        The token its requests carry (a `view` prints its own, which replaces this).
    """

    def __init__(self, arguments: list[str], folder: Path, *, token: str | None = None) -> None:
        self.arguments = [*arguments, "--port", "0"]
        self.folder = Path(folder)
        self.token = token
        self.url = ""
        self.page = ""
        self.process: subprocess.Popen[str] | None = None
        self.log_path = self.folder / "server.log"

    def start(self) -> ServerProcess:
        """Start the command, read its address, wait for /healthz; AssertionError on failure."""
        self.folder.mkdir(parents=True, exist_ok=True)
        environment = {**os.environ, "TMPDIR": str(self.folder), "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "meddenoise.cli", *self.arguments],
            stdout=subprocess.PIPE,
            stderr=open(self.log_path, "w"),  # noqa: SIM115  (closed with the process)
            text=True,
            env=environment,
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], START_TIMEOUT_S)
        line = self.process.stdout.readline() if ready else ""
        found = ADDRESS.search(line)
        if found is None:
            self.stop()
            raise AssertionError(f"no address printed: {line!r}; log: {self.log()}")
        self.url = found.group(1)
        self.page = self.url + (found.group(2) or "/")
        if found.group(2):
            self.token = found.group(2).split("=", 1)[1]
        wait_for(self._healthy, timeout=START_TIMEOUT_S, what="the server's /healthz")
        return self

    def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"the server exited; log: {self.log()}")
        try:
            return self.request("GET", "/healthz", timeout=2.0)[0] == 200
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def scratch_files(self) -> list[Path]:
        """Every file and folder left in the server's scratch folders (its own folder aside)."""
        return sorted(
            path
            for scratch in self.folder.glob("meddenoise-serve-*")
            for path in scratch.rglob("*")
        )

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        token: str | None = "",
        headers: dict[str, str] | None = None,
        timeout: float = REQUEST_TIMEOUT_S,
    ) -> tuple[int, dict[str, str], bytes]:
        """One HTTP call; (status, headers, body) whatever the status.

        `token` "" sends the server's own token, None sends none, any other text sends that.
        """
        chosen = self.token if token == "" else token
        sent = dict(headers or {})
        if chosen:
            sent["Authorization"] = f"Bearer {chosen}"
        call = urllib.request.Request(self.url + path, data=body, method=method, headers=sent)
        try:
            with urllib.request.urlopen(call, timeout=timeout) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def json(self, method: str, path: str, body: bytes | None = None) -> Any:
        status, _, data = self.request(method, path, body)
        assert status == 200, (status, data)
        return json.loads(data)

    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        stop_process(self.process)
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def resident_memory_kb(pid: int) -> int:
    """VmRSS of a process in KiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def wait_until(condition, timeout: float, what: str) -> Any:
    """`pacs.wait_for` with a shorter poll, for server-side clean-up that takes milliseconds."""
    return wait_for(condition, timeout=timeout, interval=0.05, what=what)
