"""The DICOM listener: a Storage SCP that reports every radiograph it receives.

Three kinds of threads, joined by bounded queues:

* the associations (pynetdicom's threads) check each C-STORE, write the
  instance to the spool and fsync it, put it in the queue and only then
  answer success. When the queue stays full for ``queue_timeout`` seconds,
  the answer is ``A700`` (out of resources) and the sender tries again
  later: memory stays bounded, and the sender slows to the model's pace.
  An instance sent again while its first copy waits in the spool is
  acknowledged without being written again: that copy is reported;
* the model thread takes instances from the queue in batches, predicts and
  builds the results, and hands them to the sender thread (a queue of one
  batch), so that the model works while the destination stores;
* the sender thread stores the results; an instance leaves the spool only
  once its results are stored. A destination that cannot be reached is
  retried with a growing pause, the instances waiting on disk.

At start the model thread first reports what the spool holds from before
(a stop, a crash, a kill): nothing acknowledged is lost.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import queue
import signal
import ssl
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from cxrkit.images._reading import read_image
from cxrkit.pacs._destinations import DeliveryError
from cxrkit.pacs._model import ReportingModel
from cxrkit.pacs._radiographs import (
    ACCEPTED_SOP_CLASSES,
    STATUS_CANNOT_UNDERSTAND,
    STATUS_OUT_OF_RESOURCES,
    NotARadiographError,
    check_radiograph,
    decodable_transfer_syntaxes,
    instance_key,
)
from cxrkit.pacs._reporting import Report, Reporter
from cxrkit.pacs._spool import Spool

__all__ = ["Listener", "ListenerStats", "listen"]

_log = logging.getLogger("cxrkit.pacs")

#: Longest pause between two tries to reach an unreachable destination.
_MAX_RETRY_S = 60.0


@dataclass
class ListenerStats:
    """Counts since the listener started, and recent latencies.

    Attributes
    ----------
    received : int
        Instances acknowledged (written to the spool).
    duplicates : int
        C-STOREs of an instance already acknowledged and not reported yet,
        acknowledged without writing it again: its copy in the spool is
        reported.
    refused : int
        C-STOREs answered with a failure status.
    reported : int
        Instances whose results were stored at the destination.
    failed : int
        Acknowledged instances that could not be reported (in
        ``failed/`` of the spool).
    resumed : int
        Instances found in the spool at start.
    latency_s : deque of float
        Seconds from acknowledgement to results stored, for the last
        10,000 instances received since start.
    """

    received: int = 0
    duplicates: int = 0
    refused: int = 0
    reported: int = 0
    failed: int = 0
    resumed: int = 0
    latency_s: deque = field(default_factory=lambda: deque(maxlen=10_000))


@dataclass
class _Item:
    path: Path
    received_at: float | None = None
    image: np.ndarray | None = None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _status(code: int, comment: str) -> Dataset:
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment[:64]
    return status


class Listener:
    """A DICOM Storage SCP that classifies chest radiographs and reports them.

    Needs ``pip install "cxrkit[pacs]"``. ``start()`` returns at once
    (threads do the work); ``stop()`` ends it; ``with Listener(...)``
    does both. [`listen`][cxrkit.pacs.listen] runs one until interrupted.

    Parameters
    ----------
    model : PneumoniaClassifier, str, path-like or ReportingModel
        A fitted classifier or a model file.
    destination : destination
        Where results go: [`DimseDestination`][cxrkit.pacs.DimseDestination]
        (C-STORE), [`DicomwebDestination`][cxrkit.pacs.DicomwebDestination]
        (STOW-RS) or [`FolderDestination`][cxrkit.pacs.FolderDestination].
    ae_title : str, default="CXRKIT"
        The listener's AE title; associations must call it.
    host : str, default="127.0.0.1"
        The address to bind. Only this machine can connect to the default;
        any other warns (see ``tls`` and ``allowed_ae_titles``).
    port : int, default=11112
        0 picks a free port (see ``address``).
    spool : str or path-like, default="cxrkit-spool"
        Where acknowledged instances wait (see the spool's layout in the
        user guide); holds patient data, created readable by its owner only.
    keep : bool, default=False
        Keep reported instances in ``spool/done/`` instead of deleting them.
    overlay : bool, default=False
        Also send a heatmap Secondary Capture per instance.
    threshold : float, optional
        Override the model's operating threshold (two classes).
    queue_size : int, default=32
        Instances acknowledged but not yet taken by the worker, at most.
    queue_timeout : float, default=10
        Seconds a C-STORE waits for room in the queue before the answer is
        ``A700`` (out of resources; the sender retries later).
    batch_size : int, default=16
        Instances predicted together, at most.
    allowed_ae_titles : sequence of str, optional
        Accept associations only from these calling AE titles.
    ssl_context : ssl.SSLContext, optional
        Accept DICOM over TLS only, with this server context (give it a CA
        and ``CERT_REQUIRED`` to require client certificates).
    log_identifiers : bool, default=False
        Name instances in logs by their SOP Instance UID, patient ID and
        accession number instead of by the hash of the UID.
    device : str, default="auto"
        Where a model file's weights go.

    Attributes
    ----------
    stats : ListenerStats
    address : tuple of (host, port)
        Where it listens, once started.

    Examples
    --------
    >>> import tempfile
    >>> from cxrkit import PneumoniaClassifier
    >>> from cxrkit.datasets import make_synthetic_cxr
    >>> from cxrkit.pacs import FolderDestination
    >>> X, y, _ = make_synthetic_cxr(20, image_size=32, random_state=0)
    >>> clf = PneumoniaClassifier(model="simple_cnn", image_size=32,
    ...                           max_epochs=1, validation_fraction=None,
    ...                           random_state=0).fit(X, y)
    >>> tmp = tempfile.mkdtemp()
    >>> with Listener(clf, FolderDestination(tmp + "/results"), port=0,
    ...               spool=tmp + "/spool") as listener:
    ...     host, port = listener.address
    >>> host
    '127.0.0.1'
    """

    def __init__(
        self,
        model: Any,
        destination: Any,
        *,
        ae_title: str = "CXRKIT",
        host: str = "127.0.0.1",
        port: int = 11112,
        spool: str | os.PathLike = "cxrkit-spool",
        keep: bool = False,
        overlay: bool = False,
        threshold: float | None = None,
        queue_size: int = 32,
        queue_timeout: float = 10.0,
        batch_size: int = 16,
        allowed_ae_titles: Sequence[str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        log_identifiers: bool = False,
        device: str = "auto",
    ) -> None:
        if not 0 < len(ae_title.strip()) <= 16:
            raise ValueError(
                f"ae_title {ae_title!r}: an AE title has 1 to 16 characters"
            )
        if queue_size < 1 or batch_size < 1:
            raise ValueError(
                f"queue_size ({queue_size}) and batch_size ({batch_size}) must be "
                "1 or more"
            )
        if not isinstance(model, ReportingModel):
            model = ReportingModel(model, threshold=threshold, device=device)
        elif threshold is not None:
            raise ValueError(
                "give threshold to the ReportingModel, not to the Listener"
            )
        self.model = model
        self.reporter = Reporter(model, overlay=overlay)
        self.destination = destination
        self.ae_title = ae_title.strip()
        self.host, self.port = host, port
        self.spool = Spool(spool)
        self.keep = keep
        self.queue_timeout = queue_timeout
        self.batch_size = batch_size
        self.allowed_ae_titles = (
            None
            if allowed_ae_titles is None
            else [a.strip() for a in allowed_ae_titles]
        )
        self.ssl_context = ssl_context
        self.log_identifiers = log_identifiers
        self.stats = ListenerStats()
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=queue_size)
        # reports built, waiting to be sent: the model works while the
        # destination stores the previous batch
        self._outbox: queue.Queue[tuple[_Item, Report]] = queue.Queue(
            maxsize=batch_size
        )
        # keys of the instances being received, from the spool's write to
        # the queue: another C-STORE of one of them meanwhile is answered A700
        self._receiving: set[str] = set()
        self._receiving_lock = threading.Lock()
        self._stop = threading.Event()
        self._server: Any = None
        self._threads: list[threading.Thread] = []
        self.address: tuple[str, int] | None = None

    # ------------------------------------------------------------- running
    def _application_entity(self) -> Any:
        from pynetdicom import AE
        from pynetdicom.sop_class import Verification

        ae = AE(self.ae_title)
        ae.require_called_aet = True
        if self.allowed_ae_titles:
            ae.require_calling_aet = self.allowed_ae_titles
        syntaxes = decodable_transfer_syntaxes()
        for sop_class in ACCEPTED_SOP_CLASSES:
            ae.add_supported_context(sop_class, syntaxes)
        ae.add_supported_context(Verification)
        return ae

    def start(self) -> Listener:
        """Bind, resume from the spool, and accept associations (returns at once)."""
        from pynetdicom import evt

        if self._server is not None:
            raise RuntimeError("the listener is already started")
        if not _is_loopback(self.host):
            warnings.warn(
                f"listening on {self.host}, reachable from other machines"
                + (
                    ""
                    if self.ssl_context and self.allowed_ae_titles
                    else " without TLS and an AE-title allow-list"
                )
                + ": anyone who can connect can send images. See the user guide, "
                "'PACS integration', for TLS and allowed AE titles.",
                UserWarning,
                stacklevel=2,
            )
        dropped = self.spool.clear_incoming()
        if dropped:
            _log.info("removed %d partial instance(s) never acknowledged", dropped)
        self._stop.clear()
        self._threads = [
            threading.Thread(target=target, name=name, daemon=True)
            for target, name in (
                (self._work, "cxrkit-listen-model"),
                (self._send, "cxrkit-listen-sender"),
            )
        ]
        for thread in self._threads:
            thread.start()
        handlers = [(evt.EVT_C_STORE, self._on_store)]
        self._server = self._application_entity().start_server(
            (self.host, self.port),
            block=False,
            evt_handlers=handlers,
            ssl_context=self.ssl_context,
        )
        self.address = tuple(self._server.server_address[:2])
        _log.info(
            "listening as %s on %s:%d (model %s, sha256 %s); results to %s",
            self.ae_title,
            *self.address,
            self.model.identity.name,
            self.model.identity.sha256[:12],
            self.destination,
        )
        return self

    def stop(self, timeout: float | None = 30) -> None:
        """Stop accepting, let the worker finish its batch, release the destination.

        Instances still queued stay in the spool; the next start reports them.
        """
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []
        self.destination.close()
        self.address = None

    def __enter__(self) -> Listener:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_idle(self, timeout: float = 60) -> bool:
        """Wait until nothing is queued, pending or being reported.

        Returns whether that happened within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            busy = self._queue.unfinished_tasks + self._outbox.unfinished_tasks
            if not busy and not self.spool.pending():
                return True
            time.sleep(0.05)
        return False

    # ------------------------------------------------------------- C-STORE
    def _name(self, ds: Dataset, key: str) -> str:
        if not self.log_identifiers:
            return f"instance {key[:16]}"
        return (
            f"instance {ds.get('SOPInstanceUID', '?')} (patient "
            f"{ds.get('PatientID', '?')}, accession {ds.get('AccessionNumber', '?')})"
        )

    def _refuse(self, code: int, comment: str, who: str) -> Dataset:
        self.stats.refused += 1
        _log.warning("refused %s: %s (status 0x%04X)", who, comment, code)
        return _status(code, comment)

    def _on_store(self, event: Any) -> Dataset | int:
        """Answer one C-STORE: success only once the instance is on disk."""
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            uid = ds.SOPInstanceUID
        except Exception:  # undecodable data set
            return self._refuse(
                STATUS_CANNOT_UNDERSTAND, "the data set cannot be decoded", "a C-STORE"
            )
        key = instance_key(uid)
        who = self._name(ds, key)
        try:
            check_radiograph(ds)
        except NotARadiographError as exc:
            return self._refuse(exc.status, str(exc), who)
        except Exception:  # a damaged element in the header
            return self._refuse(
                STATUS_CANNOT_UNDERSTAND, "the header cannot be decoded", who
            )
        with self._receiving_lock:
            if key in self._receiving:
                claimed = False
            elif self.spool.pending_path(key).exists():
                # Already acknowledged and not reported yet: queued, being
                # reported, or left from before a restart (the start reports
                # it). Its copy in the spool will be reported, so this one
                # is acknowledged too, and neither written over that copy
                # nor queued twice (a full queue would then delete the
                # acknowledged copy). A PACS sends the same instance again
                # when it retries or re-routes; a SOP Instance UID names one
                # instance, so the copies are the same.
                self.stats.duplicates += 1
                _log.debug("acknowledged %s: already in the spool", who)
                return 0x0000
            else:
                claimed = True
                self._receiving.add(key)
        if not claimed:
            # another association is receiving it now, and may yet answer
            # A700 and delete its copy: this one cannot be acknowledged
            return self._refuse(
                STATUS_OUT_OF_RESOURCES,
                "the same instance is being received; send again later",
                who,
            )
        try:
            return self._receive(event, key, who)
        finally:
            with self._receiving_lock:
                self._receiving.discard(key)

    def _receive(self, event: Any, key: str, who: str) -> Dataset | int:
        """Spool, decode and queue one instance (no other copy is pending)."""
        try:
            part = self.spool.receive(key, event.encoded_dataset())
        except OSError as exc:  # a full or unwritable disk: the sender retries
            _log.error("cannot write to the spool %s: %s", self.spool.root, exc)
            return self._refuse(
                STATUS_OUT_OF_RESOURCES, "cannot write to the spool", who
            )
        try:
            image = read_image(part, size=self.model.identity.image_size)
        except (ValueError, ImportError, OSError) as exc:
            part.unlink(missing_ok=True)
            comment = "the pixel data cannot be decoded"
            _log.debug("%s: %s", who, str(exc).replace(str(part), key[:16]))
            return self._refuse(STATUS_CANNOT_UNDERSTAND, comment, who)
        try:
            path = self.spool.commit(part, key)
        except OSError as exc:
            part.unlink(missing_ok=True)
            _log.error("cannot write to the spool %s: %s", self.spool.root, exc)
            return self._refuse(
                STATUS_OUT_OF_RESOURCES, "cannot write to the spool", who
            )
        try:
            self._queue.put(
                _Item(path, time.monotonic(), image), timeout=self.queue_timeout
            )
        except queue.Full:
            # never acknowledged, and the only copy (checked above): deleting
            # it loses nothing the sender was told is stored
            path.unlink(missing_ok=True)
            return self._refuse(
                STATUS_OUT_OF_RESOURCES, "the queue is full; send again later", who
            )
        self.stats.received += 1
        _log.debug("acknowledged %s", who)
        return 0x0000

    # ------------------------------------------------------------- threads
    def _work(self) -> None:
        """The model's thread: batches from the queue to reports in the outbox."""
        resumed = self.spool.pending()
        if resumed:
            self.stats.resumed = len(resumed)
            _log.info(
                "resuming %d instance(s) acknowledged before the last stop",
                len(resumed),
            )
        for start in range(0, len(resumed), self.batch_size):
            if self._stop.is_set():
                return
            self._process([_Item(p) for p in resumed[start : start + self.batch_size]])
        while not self._stop.is_set():
            try:
                batch = [self._queue.get(timeout=0.2)]
            except queue.Empty:
                continue
            while len(batch) < self.batch_size:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._process(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _process(self, items: list[_Item]) -> None:
        # gone: reported already (received while the start resumed the spool)
        items = [item for item in items if item.path.exists()]
        if not items:
            return
        try:
            reports = self.reporter.report_files(
                [item.path for item in items], [item.image for item in items]
            )
        except Exception as exc:  # a bug: keep the instances, keep listening
            _log.exception("could not report a batch of %d instance(s)", len(items))
            reports = [
                Report(
                    item.path.stem,
                    None,
                    error=f"internal error ({type(exc).__name__})",
                    detail=f"internal error ({type(exc).__name__}: {exc})",
                )
                for item in items
            ]
        for item, report in zip(items, reports):
            while not self._stop.is_set():
                try:
                    self._outbox.put((item, report), timeout=0.2)
                    break
                except queue.Full:
                    continue

    def _send(self) -> None:
        """The sender's thread: reports from the outbox to the destination."""
        while not self._stop.is_set():
            try:
                item, report = self._outbox.get(timeout=0.2)
            except queue.Empty:
                self.destination.release_if_idle()
                continue
            try:
                self._deliver(item, report)
            except Exception:  # a bug: the instance stays pending, for the next start
                _log.exception("could not deliver the results of an instance")
            finally:
                self._outbox.task_done()

    def _fail(self, item: _Item, reason: str) -> None:
        self.spool.fail(item.path, reason)
        self.stats.failed += 1

    def _deliver(self, item: _Item, report: Report) -> None:
        who = (
            self._name(report.header, report.key)
            if report.header is not None
            else f"instance {report.key[:16]}"
        )
        if report.error is not None:
            _log.error("%s not reported: %s", who, report.error)
            self._fail(item, report.detail or report.error)
            return
        pause = 1.0
        while True:
            try:
                self.destination.store(report.results)
                break
            except DeliveryError as exc:
                if not exc.transient:
                    _log.error("%s not reported: %s", who, exc)
                    self._fail(item, str(exc))
                    return
                _log.warning(
                    "%s: %s; trying again in %.0f s (the instance waits on disk)",
                    who,
                    exc,
                    pause,
                )
                if self._stop.wait(pause):
                    return
                pause = min(2 * pause, _MAX_RETRY_S)
        self.spool.finish(item.path, keep=self.keep)
        self.stats.reported += 1
        if item.received_at is not None:
            self.stats.latency_s.append(time.monotonic() - item.received_at)
        finding = report.finding
        _log.info(
            "%s: %s, P(%s)=%.3f%s%s; %d result(s) stored",
            who,
            finding.label,
            finding.probability_of,
            finding.probability,
            "" if finding.threshold is None else f" at threshold {finding.threshold:g}",
            " [unlike the training images]" if finding.ood else "",
            len(report.results),
        )


def listen(listener: Listener, *, stop_signals: Iterable[int] | None = None) -> None:
    """Run a listener until SIGINT or SIGTERM, then stop it cleanly.

    Parameters
    ----------
    listener : Listener
        Started or not (``start()`` raises ``OSError`` when the port is
        taken: start it first to tell that apart).
    stop_signals : iterable of int, optional
        The signals that stop it (default: SIGINT and SIGTERM). Handlers are
        installed in the main thread only.
    """
    stopping = threading.Event()
    signals = (
        (signal.SIGINT, signal.SIGTERM) if stop_signals is None else tuple(stop_signals)
    )
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for number in signals:
            previous[number] = signal.signal(number, lambda *_: stopping.set())
    if listener.address is None:
        listener.start()
    try:
        while not stopping.wait(0.5):
            pass
        _log.info("stopping: instances not reported yet stay in the spool")
    finally:
        listener.stop()
        for number, handler in previous.items():
            signal.signal(number, handler)
