"""A DICOM node: C-STORE in, denoise each complete series, C-STORE the derived series out.

    node = Node(load_node_config("node.yaml"))
    node.start()          # listens; returns at once
    ...
    node.stop()

Threads, each doing one thing:

- pynetdicom's association threads run `_on_store`: check the caller's rights and the spool's
  room, check the instance (UIDs, SOP class, pixels decodable), move it into the spool and commit
  its row, and only then answer success.  Nothing heavier runs there.
- the scheduler queues series with no new instance for ``processing.quiet_seconds``;
- ``processing.workers`` workers each keep one denoiser (one model load) and turn a queued series
  into a derived series in the outbox, through the batch runner `meddenoise denoise` uses;
- the sender sends derived series with retries and exponential backoff: an unreachable
  destination is retried without limit (the series waits in the spool), a destination that
  refuses instances fails the series after ``delivery.max_rejections`` tries.

The state lives in `meddenoise.pacs.spool.Spool`, so a restart resumes where the node stopped.
Logs name series by UID and count instances; they never carry patient names or IDs.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meddenoise.io.dicom import is_meddenoise_derived
from meddenoise.pacs.spool import Spool, valid_uid

if TYPE_CHECKING:
    from meddenoise.batch import DenoiserPerKind
    from meddenoise.pacs.config import AccessConfig, NodeConfig

__all__ = ["DELIVERY_OK", "Node", "send_files"]

LOG = logging.getLogger("meddenoise.node")

# C-STORE statuses (PS3.4 Annex B.2.3 and GG): success, the warnings that still mean "stored",
# and the failures this node answers with.
SUCCESS = 0x0000
DELIVERY_OK = frozenset({0x0000, 0xB000, 0xB006, 0xB007})
OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000


def image_storage_contexts() -> list[tuple[str, list[str]]]:
    """(SOP class, transfer syntaxes) the node accepts: image storage, every decodable syntax."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID, AllTransferSyntaxes
    from pynetdicom import AllStoragePresentationContexts

    syntaxes = []
    for syntax in AllTransferSyntaxes:
        try:
            if get_decoder(syntax).is_available:
                syntaxes.append(str(syntax))
        except (NotImplementedError, ValueError):
            continue
    classes = [str(context.abstract_syntax) for context in AllStoragePresentationContexts]
    return [(uid, syntaxes) for uid in classes if "Image Storage" in UID(uid).name]


def _server_class(access: AccessConfig) -> Any:
    """pynetdicom's threaded server, closing connections from addresses `access` does not allow.

    The check runs on the TCP connection, before any DICOM is read (socketserver's
    ``verify_request``).
    """
    from pynetdicom.transport import ThreadedAssociationServer

    class Server(ThreadedAssociationServer):
        def verify_request(self, request: Any, client_address: Any) -> bool:
            allowed = access.allows_address(str(client_address[0]))
            if not allowed:
                LOG.warning("a connection from an address not allowed was closed")
            return allowed

    return Server


class Node:
    """The DICOM node of one configuration: `start`, then `stop` (or `serve_forever`).

    Parameters
    ----------
    config
        The validated configuration (`meddenoise.pacs.config.load_node_config`).
    """

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.spool = Spool(config.spool)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: Any = None
        self._wake_sender = threading.Event()

    # --- life ---

    def start(self) -> None:
        """Recover the spool's state, start the workers and sender, and listen."""
        from pynetdicom import AE, _config, evt
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        # Received datasets go to a temporary file, not memory: a large instance, or many at
        # once, cannot exhaust the node's memory, and its size is known before it is read.
        _config.STORE_RECV_CHUNKED_DATASET = True
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        requeued = self.spool.recover()
        if requeued:
            LOG.info("resumed: %d series interrupted while processing are queued again", requeued)
        listen = self.config.listen
        ae = AE(ae_title=listen.ae_title)
        ae.maximum_associations = 32
        ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = 60
        if self.config.access.calling_ae_titles != ["*"]:
            ae.require_calling_aet = list(self.config.access.calling_ae_titles)
        ae.add_supported_context(Verification)
        for sop_class, syntaxes in image_storage_contexts():
            ae.add_supported_context(sop_class, syntaxes)
        handlers: list[Any] = [
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
        ]
        self._server = ae.make_server(
            (listen.host, listen.port),
            evt_handlers=handlers,
            server_class=_server_class(self.config.access),
        )
        threading.Thread(
            target=self._server.serve_forever, name="node-listener", daemon=True
        ).start()
        self._spawn("scheduler", self._schedule)
        for index in range(self.config.processing.workers):
            self._spawn(f"worker-{index}", self._work)
        self._spawn("sender", self._send_loop)
        LOG.info(
            "listening on %s:%d as %s; sending to %s:%d (%s)",
            listen.host,
            self.port,
            listen.ae_title,
            self.config.destination.host,
            self.config.destination.port,
            self.config.destination.ae_title,
        )

    @property
    def port(self) -> int:
        """The port listened on (the configured one, or the one the system chose for 0)."""
        if self._server is None:
            return self.config.listen.port
        return int(self._server.server_address[1])

    def stop(self) -> None:
        """Stop listening and let the threads finish what they are doing."""
        self._stop.set()
        self._wake_sender.set()
        if self._server is not None:
            self._server.shutdown()
        for thread in self._threads:
            thread.join(timeout=60)
        self.spool.close()

    def serve_forever(self) -> None:
        """Start and run until interrupted (SIGINT or SIGTERM)."""
        import signal

        def interrupted(signum: int, frame: object) -> None:
            self._stop.set()

        signal.signal(signal.SIGTERM, interrupted)
        signal.signal(signal.SIGINT, interrupted)
        self.start()
        while not self._stop.wait(0.5):
            pass
        self.stop()

    def _spawn(self, name: str, target: Any) -> None:
        thread = threading.Thread(target=self._guarded(target), name=f"node-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _guarded(self, loop: Any) -> Any:
        def run() -> None:
            while not self._stop.is_set():
                try:
                    loop()
                except Exception:  # a bug in one pass must not stop the node
                    LOG.exception("%s failed; carrying on", threading.current_thread().name)
                    self._stop.wait(1.0)

        return run

    # --- receiving ---

    def _on_echo(self, event: Any) -> int:
        return SUCCESS

    def _on_store(self, event: Any) -> int:
        try:
            return self._receive(event)
        except Exception:  # never let one instance stop the association or the node
            LOG.exception("an instance could not be stored")
            return CANNOT_UNDERSTAND

    def _has_room(self, size: int) -> bool:
        limits = self.config.limits
        if self.spool.used_bytes() + size > limits.spool_limit_gib * 2**30:
            LOG.warning("spool limit reached: instance refused (out of resources)")
            return False
        free = shutil.disk_usage(self.spool.root).free
        if free - size < limits.min_free_disk_gib * 2**30:
            LOG.warning("disk nearly full: instance refused (out of resources)")
            return False
        return True

    def _receive(self, event: Any) -> int:
        import pydicom
        from pydicom.errors import InvalidDicomError

        from meddenoise.io import ImageError, read_image

        received = Path(event.dataset_path)
        size = received.stat().st_size
        if size > self.config.limits.max_instance_mib * 2**20:
            LOG.warning("instance of %.0f MiB refused: over the size limit", size / 2**20)
            return OUT_OF_RESOURCES
        if not self._has_room(size):
            return OUT_OF_RESOURCES
        checked = self.spool.temporary_path()
        try:
            shutil.copyfile(received, checked)
            try:
                dataset = pydicom.dcmread(checked, stop_before_pixels=True)
                uids = {
                    "study_uid": valid_uid(dataset.get("StudyInstanceUID")),
                    "series_uid": valid_uid(dataset.get("SeriesInstanceUID")),
                    "sop_uid": valid_uid(dataset.get("SOPInstanceUID")),
                }
            except (InvalidDicomError, ValueError, TypeError, AttributeError, EOFError, OSError):
                LOG.warning("instance refused: unreadable header or invalid UIDs")
                return CANNOT_UNDERSTAND
            request = event.request
            if str(dataset.get("SOPClassUID", "")) != str(request.AffectedSOPClassUID) or uids[
                "sop_uid"
            ] != str(request.AffectedSOPInstanceUID):
                LOG.warning("instance refused: its SOP class or UID differs from the request's")
                return DOES_NOT_MATCH_SOP_CLASS
            if is_meddenoise_derived(
                dataset.get("ImageType"), dataset.get("DerivationDescription")
            ):
                LOG.info(
                    "series %s: a meddenoise derived instance, not processed again",
                    uids["series_uid"],
                )
                return SUCCESS
            try:
                # Decoding now refuses a corrupt instance while its sender can still be told.
                read_image(checked, max_pixels=self.config.limits.max_pixels)
            except ImageError as error:
                reason = str(error).split(": ", 1)[-1]
                LOG.warning("series %s: instance refused: %s", uids["series_uid"], reason)
                return CANNOT_UNDERSTAND
            self.spool.accept(checked, **uids)
            return SUCCESS
        finally:
            checked.unlink(missing_ok=True)

    # --- processing ---

    def _schedule(self) -> None:
        quiet = self.config.processing.quiet_seconds
        for uid in self.spool.queue_quiet_series(quiet):
            LOG.info("series %s: complete, queued", uid)
        self._stop.wait(min(0.5, quiet / 4))

    def _denoisers(self) -> DenoiserPerKind:
        from meddenoise.batch import DenoiserPerKind
        from meddenoise.methods import resolve

        processing = self.config.processing
        sigma = None if processing.sigma is None else processing.sigma / 255.0

        def build(colour: bool) -> Any:
            return resolve(
                processing.method, colour=colour, sigma=sigma, precision=processing.precision
            )

        denoisers = DenoiserPerKind(build)
        denoisers(False)  # an unknown method fails when the node starts, not at a first series
        return denoisers

    def check_method(self) -> None:
        """Raise ValueError now if the configured method cannot be built."""
        self._denoisers()

    def _work(self) -> None:
        denoisers = getattr(threading.current_thread(), "denoisers", None)
        if denoisers is None:
            denoisers = self._denoisers()
            threading.current_thread().denoisers = denoisers  # type: ignore[attr-defined]
        claimed = self.spool.claim_queued()
        if claimed is None:
            self._stop.wait(0.2)
            return
        uid, generation, files = claimed
        started = time.monotonic()
        try:
            count, size = self._denoise_series(uid, generation, files, denoisers)
        except Exception as error:  # the series fails with its reason; the node carries on
            reason = str(error) or type(error).__name__
            if self.spool.fail(uid, generation, reason):
                LOG.warning("series %s: failed: %s", uid, reason)
            return
        if self.spool.processed(uid, generation, instances=count, size=size):
            LOG.info(
                "series %s: %d instances denoised in %.1f s",
                uid,
                count,
                time.monotonic() - started,
            )
            self._wake_sender.set()
        else:
            LOG.info("series %s: changed while it was processed; it will be processed again", uid)

    def _denoise_series(
        self, uid: str, generation: int, files: list[Path], denoisers: DenoiserPerKind
    ) -> tuple[int, int]:
        from meddenoise.batch import Item, denoise_item, run_batch

        outbox = self.spool.outbox(uid, generation)
        shutil.rmtree(outbox, ignore_errors=True)  # what a crash left half-written
        if not files:
            raise RuntimeError("no instance of the series is in the spool")
        if len(files) == 1:
            item = Item(0, files[0], outbox / files[0].name)
        else:
            item = Item(0, files[0].parent, outbox, tuple(files), folder=True)
        work = denoise_item(denoisers, max_pixels=self.config.limits.max_pixels)
        (result,) = run_batch([item], work)
        if result.status != "written":
            raise RuntimeError(result.reason or result.status)
        written = [path for path in outbox.iterdir() if not path.name.startswith(".")]
        return len(written), sum(path.stat().st_size for path in written)

    # --- sending ---

    def _send_loop(self) -> None:
        due = self.spool.due_for_sending()
        if not due:
            self._wake_sender.wait(0.5)
            self._wake_sender.clear()
            return
        for uid, generation in due:
            if self._stop.is_set():
                return
            self._send(uid, generation)

    def _backoff(self, attempts: int) -> float:
        delivery = self.config.delivery
        return float(min(delivery.retry_max_seconds, delivery.retry_initial_seconds * 2**attempts))

    def _send(self, uid: str, generation: int) -> None:
        record = next((row for row in self.spool.series() if row.uid == uid), None)
        attempts = record.attempts if record is not None else 0
        folder = self.spool.outbox(uid, generation)
        files = (
            sorted(path for path in folder.iterdir() if not path.name.startswith("."))
            if folder.is_dir()
            else []
        )
        if not files:
            self.spool.fail(uid, generation, "the derived series is missing from the outbox")
            return
        outcome, reason = send_files(files, self.config)
        if outcome == "sent":
            if self.spool.delivered(uid, generation):
                LOG.info("series %s: %d derived instances sent", uid, len(files))
            return
        delay = self._backoff(attempts)
        rejections = self.spool.retry_later(
            uid, generation, reason, delay=delay, rejected=outcome == "rejected"
        )
        if rejections >= self.config.delivery.max_rejections:
            self.spool.fail(uid, generation, f"the destination refused it: {reason}")
            LOG.warning("series %s: failed after %d refusals: %s", uid, rejections, reason)
        else:
            LOG.warning("series %s: not sent (%s); next try in %.0f s", uid, reason, delay)


def send_files(files: list[Path], config: NodeConfig) -> tuple[str, str]:
    """C-STORE `files` to the configured destination in one association.

    Returns
    -------
    tuple
        ``("sent", "")``; ``("unreachable", why)`` when no association could be made or it
        broke (retried without limit); ``("rejected", why)`` when the destination refused the
        association or an instance.
    """
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE

    classes = sorted(
        {str(pydicom.dcmread(path, stop_before_pixels=True).SOPClassUID) for path in files}
    )
    destination, delivery = config.destination, config.delivery
    ae = AE(ae_title=config.listen.ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = delivery.timeout_seconds
    ae.connection_timeout = delivery.timeout_seconds
    for sop_class in classes:
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    association = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if association.is_rejected:
        return "rejected", "association rejected by the destination"
    if not association.is_established:
        return "unreachable", "destination unreachable"
    try:
        for path in files:
            status = association.send_c_store(path)
            if not status or "Status" not in status:
                return "unreachable", "the association broke during the send"
            if int(status.Status) not in DELIVERY_OK:
                return "rejected", f"status 0x{int(status.Status):04X} for an instance"
    finally:
        if association.is_established:
            association.release()
    return "sent", ""
