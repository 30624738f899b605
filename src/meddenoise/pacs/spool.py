"""The node's durable state: received instances, derived series and a SQLite table of series.

Layout under the spool folder::

    state.sqlite                       series and instances (WAL, synchronous=FULL)
    incoming/SERIES_UID/SOP_UID.dcm    received instances, each written atomically and synced
    outbox/SERIES_UID/GENERATION/      the derived series of one generation of a series
    tmp/                               instances being checked before they are accepted

Every path component is a UID checked by `valid_uid` (digits and dots), never another tag value,
so that no content of a dataset can name a file outside the spool.

A series moves through ``receiving -> queued -> processing -> sending -> sent`` (or ``failed``
with a reason).  Each instance received bumps the series' *generation*; a worker or sender only
moves a series on if its generation is still the one it started from, so an instance arriving
while the series is processed sends it round again instead of being left out.  On start,
`Spool.recover` puts series that were being processed back in the queue: after a crash the work
is redone, and delivery is at-least-once (the derived UIDs are deterministic, so a re-send
carries the same UIDs and a PACS stores it once).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["STATES", "SeriesRecord", "Spool", "valid_uid"]

STATES = ("receiving", "queued", "processing", "sending", "sent", "failed")

# PS3.5 9.1: components of digits separated by dots, no leading zero in a component of more
# than one digit, at most 64 characters.
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    state TEXT NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,
    instances INTEGER NOT NULL DEFAULT 0,
    derived_instances INTEGER NOT NULL DEFAULT 0,
    derived_bytes INTEGER NOT NULL DEFAULT 0,
    first_received REAL NOT NULL,
    last_received REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    rejections INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '',
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY,
    series_uid TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    received REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_by_series ON instances (series_uid);
"""


def valid_uid(value: object) -> str:
    """`value` as a UID string if it is one (PS3.5 9.1), else ValueError.

    Examples
    --------
    >>> valid_uid("1.2.840.10008.5.1.4.1.1.2")
    '1.2.840.10008.5.1.4.1.1.2'
    >>> valid_uid("../../x")
    Traceback (most recent call last):
    ...
    ValueError: not a valid UID
    """
    text = str(value or "").strip().rstrip("\x00")
    if len(text) > 64 or not _UID.match(text):
        raise ValueError("not a valid UID")
    return text


def _sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (the entry, not only the file's bytes)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@dataclass(frozen=True)
class SeriesRecord:
    """One row of the series table: what `meddenoise node status` prints."""

    uid: str
    study_uid: str
    state: str
    generation: int
    instances: int
    derived_instances: int
    attempts: int
    rejections: int
    next_attempt: float
    last_received: float
    reason: str
    updated: float


class Spool:
    """The spool folder and its state table; safe to share between the node's threads.

    Parameters
    ----------
    root
        The spool folder; created if missing.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        for name in ("incoming", "outbox", "tmp"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._connection = sqlite3.connect(
            self.root / "state.sqlite", check_same_thread=False, isolation_level=None, timeout=30
        )
        self._connection.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed row survives a power cut, which "acknowledged is never lost" needs.
        self._connection.execute("PRAGMA synchronous=FULL")
        self._connection.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the state table."""
        with self._lock:
            self._connection.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield self._connection
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")

    # --- paths ---

    def temporary_path(self) -> Path:
        """A fresh file name under tmp/ for an instance being checked."""
        return self.root / "tmp" / f"{time.time_ns()}-{threading.get_ident()}.dcm"

    def instance_path(self, series_uid: str, sop_uid: str) -> Path:
        """Where an accepted instance lives."""
        return self.root / "incoming" / valid_uid(series_uid) / f"{valid_uid(sop_uid)}.dcm"

    def outbox(self, series_uid: str, generation: int) -> Path:
        """The folder the derived series of one generation is written to."""
        return self.root / "outbox" / valid_uid(series_uid) / str(int(generation))

    def clear_tmp(self) -> None:
        """Remove instances left half-checked by a crash (none of them was acknowledged)."""
        for path in (self.root / "tmp").iterdir():
            with contextlib.suppress(OSError):
                path.unlink()

    # --- receiving ---

    def used_bytes(self) -> int:
        """Bytes of received instances and derived series kept in the spool."""
        with self._lock:
            received = self._connection.execute("SELECT COALESCE(SUM(bytes), 0) FROM instances")
            derived = self._connection.execute("SELECT COALESCE(SUM(derived_bytes), 0) FROM series")
            return int(received.fetchone()[0]) + int(derived.fetchone()[0])

    def accept(self, checked: Path, *, study_uid: str, series_uid: str, sop_uid: str) -> None:
        """Move a checked instance into the spool and record it, durably, before it is acked.

        The file is renamed into ``incoming/`` and the folder synced; then the row is committed.
        A crash between the two leaves a file without a row, which is never acknowledged: the
        sender sends it again, and the rename replaces it.
        """
        target = self.instance_path(series_uid, sop_uid)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(checked, target)
        _sync_folder(target.parent)
        size = target.stat().st_size
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO instances (sop_uid, series_uid, bytes, received) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (sop_uid) DO UPDATE SET bytes = excluded.bytes, "
                "received = excluded.received, series_uid = excluded.series_uid",
                (sop_uid, series_uid, size, now),
            )
            count = db.execute(
                "SELECT COUNT(*) FROM instances WHERE series_uid = ?", (series_uid,)
            ).fetchone()[0]
            db.execute(
                "INSERT INTO series (uid, study_uid, state, generation, instances, "
                "first_received, last_received, updated) VALUES (?, ?, 'receiving', 1, ?, ?, ?, ?) "
                "ON CONFLICT (uid) DO UPDATE SET state = 'receiving', "
                "generation = generation + 1, instances = excluded.instances, "
                "last_received = excluded.last_received, reason = '', attempts = 0, "
                "rejections = 0, updated = excluded.updated",
                (series_uid, study_uid, count, now, now, now),
            )

    # --- the series' life ---

    def queue_quiet_series(self, quiet_seconds: float, now: float | None = None) -> list[str]:
        """Move series with no instance for `quiet_seconds` from receiving to queued."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            rows = db.execute(
                "SELECT uid FROM series WHERE state = 'receiving' AND last_received <= ?",
                (now - quiet_seconds,),
            ).fetchall()
            db.execute(
                "UPDATE series SET state = 'queued', updated = ? "
                "WHERE state = 'receiving' AND last_received <= ?",
                (now, now - quiet_seconds),
            )
        return [row[0] for row in rows]

    def claim_queued(self) -> tuple[str, int, list[Path]] | None:
        """Take the oldest queued series for processing: (uid, generation, instance files)."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT uid, generation FROM series WHERE state = 'queued' "
                "ORDER BY last_received LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            uid, generation = row
            db.execute(
                "UPDATE series SET state = 'processing', updated = ? WHERE uid = ?",
                (time.time(), uid),
            )
            sops = db.execute(
                "SELECT sop_uid FROM instances WHERE series_uid = ? ORDER BY sop_uid", (uid,)
            ).fetchall()
        return uid, generation, [self.instance_path(uid, sop) for (sop,) in sops]

    def processed(self, uid: str, generation: int, *, instances: int, size: int) -> bool:
        """Record a derived series ready to send; False if the series changed meanwhile."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE series SET state = 'sending', derived_instances = ?, derived_bytes = ?, "
                "attempts = 0, rejections = 0, next_attempt = 0, reason = '', updated = ? "
                "WHERE uid = ? AND generation = ? AND state = 'processing'",
                (instances, size, time.time(), uid, generation),
            )
            return cursor.rowcount == 1

    def fail(self, uid: str, generation: int, reason: str) -> bool:
        """Mark a series failed with a one-line reason; False if it changed meanwhile."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE series SET state = 'failed', reason = ?, updated = ? "
                "WHERE uid = ? AND generation = ? AND state IN ('processing', 'sending')",
                (
                    reason.splitlines()[0][:500] if reason else "failed",
                    time.time(),
                    uid,
                    generation,
                ),
            )
            return cursor.rowcount == 1

    def due_for_sending(self, now: float | None = None) -> list[tuple[str, int]]:
        """Series whose derived series waits to be sent and whose retry time has come."""
        now = time.time() if now is None else now
        with self._lock:
            rows = self._connection.execute(
                "SELECT uid, generation FROM series WHERE state = 'sending' AND next_attempt <= ? "
                "ORDER BY next_attempt, last_received",
                (now,),
            ).fetchall()
        return [(uid, generation) for uid, generation in rows]

    def delivered(self, uid: str, generation: int) -> bool:
        """Record a series sent and drop its files; False if it changed meanwhile."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE series SET state = 'sent', reason = '', derived_bytes = 0, updated = ?, "
                "attempts = attempts + 1 WHERE uid = ? AND generation = ? AND state = 'sending'",
                (time.time(), uid, generation),
            )
            if cursor.rowcount != 1:
                return False
            db.execute("DELETE FROM instances WHERE series_uid = ?", (uid,))
        # Files go after the commit: a crash in between leaves files a restart ignores, never a
        # row pointing at a file that is gone.
        shutil.rmtree(self.root / "incoming" / valid_uid(uid), ignore_errors=True)
        shutil.rmtree(self.root / "outbox" / valid_uid(uid), ignore_errors=True)
        return True

    def retry_later(
        self, uid: str, generation: int, reason: str, *, delay: float, rejected: bool
    ) -> int:
        """Record a failed send and when to try again; returns the rejections so far."""
        with self._transaction() as db:
            db.execute(
                "UPDATE series SET attempts = attempts + 1, rejections = rejections + ?, "
                "next_attempt = ?, reason = ?, updated = ? "
                "WHERE uid = ? AND generation = ? AND state = 'sending'",
                (int(rejected), time.time() + delay, reason[:500], time.time(), uid, generation),
            )
            row = db.execute("SELECT rejections FROM series WHERE uid = ?", (uid,)).fetchone()
        return int(row[0]) if row else 0

    def recover(self) -> int:
        """After a restart: series that were being processed go back to the queue."""
        self.clear_tmp()
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE series SET state = 'queued', updated = ? WHERE state = 'processing'",
                (time.time(),),
            )
            db.execute("UPDATE series SET next_attempt = 0 WHERE state = 'sending'")
            return cursor.rowcount

    def series(self) -> list[SeriesRecord]:
        """Every series the node has seen, newest first."""
        with self._lock:
            rows = self._connection.execute(
                "SELECT uid, study_uid, state, generation, instances, derived_instances, "
                "attempts, rejections, next_attempt, last_received, reason, updated "
                "FROM series ORDER BY last_received DESC"
            ).fetchall()
        return [SeriesRecord(*row) for row in rows]

    def counts(self) -> dict[str, int]:
        """How many series are in each state."""
        counted = dict.fromkeys(STATES, 0)
        for record in self.series():
            counted[record.state] = counted.get(record.state, 0) + 1
        return counted
