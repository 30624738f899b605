"""An archive batch on Dask: the batch runner's items, run by a Dask cluster.

    settings = DenoiseSettings(method="default")
    results = run_batch_on_dask(plan_batch(["archive/"], "out/"), settings, "out/", "local:4")

The same plan (`meddenoise.batch.plan_batch`: one item per file or DICOM series) and the same
per-item work (`meddenoise.batch.denoise_item`) as `meddenoise denoise`, so the outputs are the
serial command's, pixel for pixel and UID for UID (the derived UIDs are deterministic).  What Dask
adds:

- a manifest of every item is written before any work (``OUT/.meddenoise/manifest.csv``);
- items are submitted in a bounded window (``window`` futures in flight), so an archive of
  hundreds of thousands of files does not become as many futures at once;
- each worker process builds its denoisers once per settings and keeps them (`_worker_denoisers`),
  so a network is loaded once per worker, not per item;
- an item whose outputs all exist is skipped (writers replace files atomically, so an existing
  file is complete): a rerun resumes and does no work twice;
- a worker that dies takes its running items with it; Dask runs them again elsewhere (up to
  ``distributed.scheduler.allowed-failures`` times), and since nothing is written but by
  `os.replace`, no output is ever half-written;
- the per-item result table (``OUT/.meddenoise/results.csv``: written / skipped / ignored / failed
  with the reason) is the run's record, rewritten atomically as results arrive.

Dask moves the items, settings and results between processes with pickle; they are this
process's own objects, never a file's content (weights are read with safetensors as always).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from meddenoise.batch import DenoiserPerKind, DenoiseSettings, Item, ItemResult, run_batch
from meddenoise.io.base import atomic_write_csv

__all__ = ["RECORD_FOLDER", "DenoiseSettings", "connect", "run_batch_on_dask"]

RECORD_FOLDER = ".meddenoise"


# One set of denoisers per settings in each worker process, built on first use and kept: the
# model is loaded once per worker.  A lock, because a worker may run several threads.
_DENOISERS: dict[DenoiseSettings, DenoiserPerKind] = {}
_DENOISERS_LOCK = threading.Lock()


def _worker_denoisers(settings: DenoiseSettings) -> DenoiserPerKind:
    with _DENOISERS_LOCK:
        if settings not in _DENOISERS:
            _DENOISERS[settings] = DenoiserPerKind(settings.build)
        return _DENOISERS[settings]


def denoise_one(item: Item, settings: DenoiseSettings, resume: bool) -> ItemResult:
    """The task a worker runs: the serial runner's work on one item (skipped if complete)."""
    # A worker killed while writing leaves its temporary file (".NAME.xxxxxxxx.part", beside the
    # output; os.replace never ran): the task Dask reruns for that item removes it.
    for output in item.outputs:
        for stale in output.parent.glob(f".{output.name}.*"):
            stale.unlink(missing_ok=True)
    (result,) = run_batch([item], settings.work(_worker_denoisers(settings)), resume=resume)
    return result


def connect(scheduler: str) -> tuple[Any, Callable[[], None]]:
    """A Dask client for ``local:N`` (a local cluster of N one-thread worker processes) or a
    scheduler address (``tcp://host:8786``); returns the client and a function closing it all.
    """
    from dask.distributed import Client, LocalCluster

    if scheduler.startswith("local:"):
        try:
            workers = int(scheduler.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"--dask {scheduler!r}: expected local:N, N a number") from None
        if workers < 1:
            raise ValueError(f"--dask {scheduler!r}: at least one worker")
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address="127.0.0.1:0",
            host="127.0.0.1",
        )
        client = Client(cluster)

        def close() -> None:
            client.close()
            cluster.close()

        return client, close
    client = Client(scheduler)
    return client, client.close


def _manifest_rows(items: Sequence[Item]) -> list[dict[str, str]]:
    return [
        {
            "index": str(item.index),
            "source": str(item.source),
            "output": "" if item.output is None else str(item.output),
            "inputs": str(len(item.inputs) or 1),
            "planned": "problem" if item.problem else "ignored" if item.ignored else "run",
        }
        for item in items
    ]


def run_batch_on_dask(
    items: Sequence[Item],
    settings: DenoiseSettings,
    outdir: str | os.PathLike[str],
    scheduler: str | Any,
    *,
    resume: bool = True,
    window: int | None = None,
    on_result: Callable[[ItemResult], object] | None = None,
    progress: bool = False,
) -> list[ItemResult]:
    """Run a plan on a Dask cluster; the results in plan order, as `batch.run_batch` returns.

    Parameters
    ----------
    items
        A plan from `meddenoise.batch.plan_batch`.
    settings
        The method and levels (every worker builds its denoisers from them, once).
    outdir
        The output folder; the manifest and the result table go to ``outdir/.meddenoise/``.
    scheduler
        ``"local:N"``, a scheduler address, or a connected `dask.distributed.Client`.
    resume
        Skip items whose outputs exist (default True: an archive run is meant to be rerun).
    window
        Items in flight at most (default four per worker thread).
    on_result
        Called with each result as it arrives (in completion order).
    progress
        Show a progress bar (tqdm) on stderr.

    Returns
    -------
    list of ItemResult
        One per item, in plan order.
    """
    record = Path(outdir) / RECORD_FOLDER
    atomic_write_csv(record / "manifest.csv", _manifest_rows(items))
    results: dict[int, ItemResult] = {}
    work: list[tuple[int, Item]] = []
    for index, item in enumerate(items):
        # What needs no worker is settled here: a complete item of a rerun, a planning
        # problem, a file that is not an image.  A rerun with nothing left starts no cluster.
        if item.ignored or item.problem or (resume and all(p.exists() for p in item.outputs)):
            results[index] = run_batch([item], _never, resume=resume)[0]
            if on_result is not None:
                on_result(results[index])
        else:
            # Workers may run elsewhere: every path absolute, on a file system they all see.
            work.append((index, _absolute(item)))
    if work:

        def save() -> None:  # the record stays current on a long run
            _write_results(record, items, results)

        run = (settings, scheduler, resume, window, results, on_result, progress, save)
        _run_on_cluster(work, *run)
    _write_results(record, items, results)
    return [results[index] for index in range(len(items))]


def _never(item: Item) -> Any:
    raise AssertionError("an item settled without a worker was run")


def _run_on_cluster(
    work: list[tuple[int, Item]],
    settings: DenoiseSettings,
    scheduler: str | Any,
    resume: bool,
    window: int | None,
    results: dict[int, ItemResult],
    on_result: Callable[[ItemResult], object] | None,
    progress: bool,
    save: Callable[[], None],
) -> None:
    """Submit `work` in a bounded window and put each result in `results` as it arrives."""
    from dask.distributed import as_completed

    if isinstance(scheduler, str):
        client, close = connect(scheduler)
    else:
        client, close = scheduler, (lambda: None)
    try:
        if window is None:
            window = 4 * (sum(client.nthreads().values()) or 1)
        pending = iter(work)
        position: dict[Any, int] = {}
        queue = as_completed()

        def submit_next() -> None:
            try:
                index, item = next(pending)
            except StopIteration:
                return
            # pure=False: the same item submitted twice (a rerun) is two tasks, not one cached.
            future = client.submit(denoise_one, item, settings, resume, pure=False)
            position[future] = index
            queue.add(future)

        for _ in range(min(window, len(work))):
            submit_next()
        bar = _progress_bar(len(work)) if progress else None
        for future in queue:
            index = position.pop(future)
            results[index] = future.result()
            if on_result is not None:
                on_result(results[index])
            if bar is not None:
                bar.update(1)
            submit_next()
            if len(position) and len(results) % 64 == 0:
                save()
        if bar is not None:
            bar.close()
    finally:
        close()


def _absolute(item: Item) -> Item:
    return dataclasses.replace(
        item,
        source=item.source.absolute(),
        output=None if item.output is None else item.output.absolute(),
        inputs=tuple(path.absolute() for path in item.inputs),
    )


def _write_results(record: Path, items: Sequence[Item], results: dict[int, ItemResult]) -> None:
    rows = [results[index].as_row() for index in sorted(results)]
    atomic_write_csv(
        record / "results.csv", rows, fields=list(ItemResult(Path(), None, "failed").as_row())
    )


def _progress_bar(total: int) -> Any:
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc="denoised", unit="image", file=sys.stderr,
                disable=not sys.stderr.isatty())  # fmt: skip


def settings_row(settings: DenoiseSettings) -> dict[str, str]:
    """The settings as text, for a report."""
    return {key: str(value) for key, value in asdict(settings).items()}
