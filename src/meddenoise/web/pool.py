"""Worker processes for the server: a fixed number, a cap on work in flight, a time limit each.

Each worker is ``python -m meddenoise.web.worker`` talking JSON lines over its stdin and stdout
(no pickling).  A request waits for a free worker; when `size` are busy and `queue` more wait,
`WorkerPool.run` refuses at once (`PoolFullError`: the server answers 503 with Retry-After) instead
of letting requests pile up in memory.  A request that runs past `timeout_s` kills its worker
(a thread could not be stopped mid-computation) and a fresh one takes its place
(`WorkerTimeoutError`: 504).  So does a request whose caller went away while it ran: an answer that
arrives for nobody would be read by the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from typing import Any

__all__ = ["PoolFullError", "WorkerFailedError", "WorkerPool", "WorkerTimeoutError"]

# How long a new worker may take to import numpy, scipy and meddenoise and say it is ready.
START_TIMEOUT_S = 120.0
# The longest answer line (JSON metadata; arrays travel as files).
MAX_ANSWER_BYTES = 16 * 1024 * 1024


class PoolFullError(Exception):
    """Every worker is busy and the queue is full: try again later."""


class WorkerTimeoutError(Exception):
    """A request ran past the time limit; its worker was ended."""


class WorkerFailedError(Exception):
    """A worker ended without answering (killed for memory, a crash in a native library)."""


class WorkerPool:
    """`size` worker processes serving requests one at a time each.

    Parameters
    ----------
    size
        Worker processes (each denoises one image at a time).
    queue
        Requests that may wait for a free worker beyond those being served.
    timeout_s
        Longest time one request may run in a worker.
    """

    def __init__(self, size: int, queue: int, timeout_s: float) -> None:
        if size < 1 or queue < 0 or not timeout_s > 0:
            raise ValueError("the pool needs at least one worker, a queue >= 0, a timeout > 0")
        self.size = size
        self.queue = queue
        self.timeout_s = timeout_s
        self.admitted = 0
        self.busy = 0
        self.restarts = 0
        self._idle: asyncio.Queue[asyncio.subprocess.Process] = asyncio.Queue()
        self._all: set[asyncio.subprocess.Process] = set()
        self._starting: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def capacity(self) -> int:
        """Requests admitted at most: those served and those waiting."""
        return self.size + self.queue

    async def start(self) -> None:
        """Start every worker and wait until each is ready."""
        workers = await asyncio.gather(*(self._spawn() for _ in range(self.size)))
        for worker in workers:
            self._idle.put_nowait(worker)

    async def _spawn(self) -> asyncio.subprocess.Process:
        environment = dict(os.environ)
        # One thread per worker: the pool, not each library, decides how many cores are used.
        for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            environment.setdefault(variable, "1")
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "meddenoise.web.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=environment,
            limit=MAX_ANSWER_BYTES,
        )
        self._all.add(worker)
        try:
            assert worker.stdout is not None
            line = await asyncio.wait_for(worker.stdout.readline(), START_TIMEOUT_S)
            if not json.loads(line or b"{}").get("ready"):
                raise WorkerFailedError("a worker did not start")
        except BaseException:
            await self._end(worker)
            raise
        return worker

    async def _end(self, worker: asyncio.subprocess.Process) -> None:
        self._all.discard(worker)
        if worker.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                worker.kill()
        with contextlib.suppress(ProcessLookupError, asyncio.CancelledError):
            await worker.wait()

    def _replace(self, worker: asyncio.subprocess.Process) -> None:
        """End `worker` and start another in its place, in the background."""
        self.restarts += 1

        async def replace() -> None:
            await self._end(worker)
            if self._closed:
                return
            try:
                self._idle.put_nowait(await self._spawn())
            except Exception:  # tried again when the next worker is replaced
                self.restarts += 1

        task = asyncio.get_running_loop().create_task(replace())
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    async def run(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send `request` to a free worker and return its answer.

        Raises
        ------
        PoolFullError
            At once, when `capacity` requests are already admitted.
        WorkerTimeoutError
            When the request ran past `timeout_s` (its worker was ended).
        WorkerFailedError
            When the worker ended without answering.
        """
        if self._closed or self.admitted >= self.capacity:
            raise PoolFullError
        self.admitted += 1
        try:
            worker = await self._idle.get()
            self.busy += 1
            healthy = False
            try:
                answer = await self._ask(worker, request)
                healthy = True
                return answer
            finally:
                self.busy -= 1
                if healthy:
                    self._idle.put_nowait(worker)
                else:  # timed out, failed, or its caller was cancelled mid-request
                    self._replace(worker)
        finally:
            self.admitted -= 1

    async def _ask(
        self, worker: asyncio.subprocess.Process, request: dict[str, Any]
    ) -> dict[str, Any]:
        assert worker.stdin is not None and worker.stdout is not None
        try:
            worker.stdin.write(json.dumps(request).encode("utf-8") + b"\n")
            await worker.stdin.drain()
            line = await asyncio.wait_for(worker.stdout.readline(), self.timeout_s)
        except TimeoutError:
            raise WorkerTimeoutError from None
        except (ConnectionError, BrokenPipeError):
            raise WorkerFailedError("the worker ended") from None
        if not line:
            raise WorkerFailedError("the worker ended without answering")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def close(self) -> None:
        """End every worker (waiting requests get `PoolFullError` or `WorkerFailedError`)."""
        self._closed = True
        for task in list(self._starting):
            task.cancel()
        for worker in list(self._all):
            await self._end(worker)
