"""Denoise series held by a DICOMweb server: QIDO-RS to find, WADO-RS to fetch, STOW-RS to store.

`denoise_dicomweb` is ``meddenoise dicomweb``: it finds the series of a study (or one series of
it) with QIDO-RS, skips those that meddenoise derived itself (`is_meddenoise_derived`) and those
that hold no image (reports, presentation states), fetches each other series with WADO-RS into a
temporary folder (one file per instance, named by its validated SOPInstanceUID, written
atomically), denoises it with the batch runner (`meddenoise.batch.plan_batch`, `run_batch`,
`denoise_item`, one `DenoiserPerKind` for the whole run) and stores the derived series back with
STOW-RS, writes it to a folder, or both.  It returns one `SeriesResult` per series.

Credentials (`read_credentials`) come from the environment (``MEDDENOISE_DICOMWEB_TOKEN``, or
``MEDDENOISE_DICOMWEB_USER`` and ``MEDDENOISE_DICOMWEB_PASSWORD``) or from a token file; they are
never logged, printed or put in an exception message, and a URL carrying credentials is refused.

dicomweb-client and requests come with the ``pacs`` extra and are imported only when used.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from meddenoise.io.dicom import is_meddenoise_derived
from meddenoise.pacs.spool import valid_uid

if TYPE_CHECKING:
    from meddenoise.batch import DenoiserPerKind

__all__ = [
    "PASSWORD_VARIABLE",
    "TOKEN_VARIABLE",
    "USER_VARIABLE",
    "Credentials",
    "DicomWebError",
    "SeriesResult",
    "denoise_dicomweb",
    "read_credentials",
]

logger = logging.getLogger(__name__)

TOKEN_VARIABLE = "MEDDENOISE_DICOMWEB_TOKEN"
USER_VARIABLE = "MEDDENOISE_DICOMWEB_USER"
PASSWORD_VARIABLE = "MEDDENOISE_DICOMWEB_PASSWORD"
# How every DerivationDescription meddenoise writes begins (`io.dicom.describe_derivation`).
# Instances per STOW-RS request: bounds the memory a large series takes while it is stored.
STORE_BATCH = 32
# Seconds a single HTTP request may take (connect and each read), not the whole transfer.
DEFAULT_TIMEOUT_S = 60.0

SeriesStatus = Literal["written", "skipped", "failed"]

_IMAGE_TYPE = "00080008"
_DERIVATION_DESCRIPTION = "00082111"
_SERIES_INSTANCE_UID = "0020000E"
_SOP_INSTANCE_UID = "00080018"
_SOP_CLASS_UID = "00080016"


class DicomWebError(RuntimeError):
    """The whole run failed: the server cannot be reached, refuses the credentials, has no series.

    Its message never holds a credential.
    """


@dataclass(frozen=True)
class Credentials:
    """How to authenticate to the server: a bearer token, or a user and password (basic auth).

    The secrets are left out of ``repr``, so printing or logging the object shows none.

    Attributes
    ----------
    token
        A bearer token (``Authorization: Bearer ...``), or None.
    user, password
        HTTP basic authentication, or None.
    """

    token: str | None = field(default=None, repr=False)
    user: str | None = None
    password: str | None = field(default=None, repr=False)

    def secrets(self) -> tuple[str, ...]:
        """The values that must never appear in a message (token, password)."""
        return tuple(value for value in (self.token, self.password) if value)


@dataclass(frozen=True)
class SeriesResult:
    """What happened to one series.

    Attributes
    ----------
    series_uid
        The source SeriesInstanceUID.
    status
        "written" (denoised, and stored and/or written to the output folder), "skipped" (already
        derived by meddenoise, or not images: a report, a presentation state) or "failed".
    reason
        For "skipped" and "failed", one line saying why (never a credential); else empty.
    retrieved
        Instances fetched with WADO-RS.
    derived
        Derived instances written by the batch runner.
    stored
        Derived instances the server accepted with STOW-RS.
    output
        The folder holding the derived files when an output folder was given, else None.
    derived_series_uid
        SeriesInstanceUID of the derived series, when one was written.
    """

    series_uid: str
    status: SeriesStatus
    reason: str = ""
    retrieved: int = 0
    derived: int = 0
    stored: int = 0
    output: Path | None = None
    derived_series_uid: str = ""


def read_credentials(
    token_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Credentials | None:
    """The credentials to use: a token file, else the environment, else None (no auth).

    Parameters
    ----------
    token_file
        A file whose content (stripped) is a bearer token; it wins over the environment.
    environ
        Where to read ``MEDDENOISE_DICOMWEB_TOKEN``, ``MEDDENOISE_DICOMWEB_USER`` and
        ``MEDDENOISE_DICOMWEB_PASSWORD``; default `os.environ`.

    Returns
    -------
    Credentials or None

    Raises
    ------
    ValueError
        An unreadable or empty token file, a token and a user both set, or a user without a
        password (or the reverse).  The message names variables and files, never a value.
    """
    env = os.environ if environ is None else environ
    if token_file is not None:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "not text"
            raise ValueError(f"{token_file}: cannot read the token file ({reason})") from None
        if not token or any(character in token for character in "\r\n"):
            raise ValueError(f"{token_file}: the token file must hold one token on one line")
        return Credentials(token=token)
    token = env.get(TOKEN_VARIABLE, "").strip()
    user = env.get(USER_VARIABLE, "").strip()
    password = env.get(PASSWORD_VARIABLE, "")
    if token and (user or password):
        raise ValueError(
            f"set either {TOKEN_VARIABLE} or {USER_VARIABLE} and {PASSWORD_VARIABLE}, not both"
        )
    if token:
        return Credentials(token=token)
    if bool(user) != bool(password):
        raise ValueError(f"{USER_VARIABLE} and {PASSWORD_VARIABLE} must be set together")
    return Credentials(user=user, password=password) if user else None


def _redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _describe(error: BaseException, secrets: Iterable[str]) -> str:
    """One line for a failed request: status and reason, never headers or credentials."""
    import requests

    if isinstance(error, requests.HTTPError) and error.response is not None:
        status = error.response.status_code
        text = f"HTTP {status} {error.response.reason or ''}".strip()
        if status in (401, 403):
            text += " (the server refused the credentials, or none were given)"
    elif isinstance(error, requests.ConnectionError):
        text = "cannot connect to the server"
    elif isinstance(error, requests.Timeout):
        text = "the server did not answer in time"
    else:
        text = f"{type(error).__name__}: {error}"
    return _redact(" ".join(text.split()), secrets)


def check_url(url: str) -> str:
    """The DICOMweb base URL without a trailing slash, after checking it.

    Raises
    ------
    ValueError
        Not http(s), no host, or credentials in the URL (which would end up in logs and
        messages; give them in the environment or a token file).  The message does not repeat
        the URL.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("the DICOMweb URL must be http:// or https:// with a host")
    if "@" in parts.netloc:
        raise ValueError(
            f"credentials in the URL are refused: set {TOKEN_VARIABLE}, or {USER_VARIABLE} and "
            f"{PASSWORD_VARIABLE}, or give a token file"
        )
    return url.rstrip("/")


def _client(url: str, credentials: Credentials | None, timeout: float) -> Any:
    """A `DICOMwebClient` whose session carries the credentials (not logged by the client)."""
    import requests
    from dicomweb_client import DICOMwebClient

    class BearerAuth(requests.auth.AuthBase):
        """``Authorization: Bearer`` on every request (and no .netrc lookup)."""

        def __init__(self, token: str) -> None:
            self._token = token

        def __call__(self, request: Any) -> Any:
            request.headers["Authorization"] = f"Bearer {self._token}"
            return request

        def __repr__(self) -> str:
            return "BearerAuth(***)"

    session = requests.Session()
    if credentials is not None and credentials.token:
        session.auth = BearerAuth(credentials.token)
    elif credentials is not None and credentials.user:
        session.auth = requests.auth.HTTPBasicAuth(credentials.user, credentials.password or "")
    return DICOMwebClient(url, session=session, timeout=timeout)


def _value(element: Mapping[str, Any] | None, tag: str) -> list[Any]:
    """The values of `tag` in a DICOM JSON object (PS3.18 F.2), [] when absent."""
    entry = (element or {}).get(tag) or {}
    return list(entry.get("Value") or [])


def _first(element: Mapping[str, Any] | None, tag: str) -> str:
    values = _value(element, tag)
    return str(values[0]) if values else ""


def _find_series(client: Any, study: str, series: str | None, secrets: Sequence[str]) -> list[str]:
    """The SeriesInstanceUIDs QIDO-RS lists for the study (or the one series asked for)."""
    filters = {"SeriesInstanceUID": series} if series else None
    try:
        found = client.search_for_series(
            study_instance_uid=study, search_filters=filters, get_remaining=True
        )
    except Exception as error:  # any failure of the client or the server ends the run
        raise DicomWebError(
            f"QIDO-RS search for the series of study {study} failed: {_describe(error, secrets)}"
        ) from None
    uids: list[str] = []
    for entry in found:
        uid = _first(entry, _SERIES_INSTANCE_UID)
        if (series is None or uid == series) and uid not in uids:
            uids.append(uid)
    if not uids:
        what = f"series {series} of study {study}" if series else f"series of study {study}"
        raise DicomWebError(f"the server lists no {what}")
    return uids


def _skip_reason(client: Any, study: str, series_uid: str) -> str:
    """Why the series is skipped, from one instance's metadata; "" when it is to be denoised.

    Series that meddenoise derived, and series of objects that hold no image (structured
    reports, presentation states, key-object selections) are skipped.
    """
    from meddenoise.io.dicom import holds_images

    instances = client.search_for_instances(study, series_uid, limit=1)
    sop_uid = _first(instances[0], _SOP_INSTANCE_UID) if instances else ""
    if not sop_uid:
        return "the server lists no instance in it"
    metadata = client.retrieve_instance_metadata(study, series_uid, valid_uid(sop_uid))
    if isinstance(metadata, list):  # some servers answer with a one-element array
        metadata = metadata[0] if metadata else {}
    sop_class = _first(metadata, _SOP_CLASS_UID)
    if sop_class and not holds_images(sop_class):
        return f"not images (SOP class {valid_uid(sop_class)})"
    image_type = [str(value) for value in _value(metadata, _IMAGE_TYPE)]
    description = _first(metadata, _DERIVATION_DESCRIPTION)
    if is_meddenoise_derived(image_type, description):
        return "already derived by meddenoise (ImageType DERIVED, DerivationDescription says so)"
    return ""


def _retrieve(client: Any, study: str, series_uid: str, folder: Path) -> int:
    """Fetch the series with WADO-RS into `folder`, one ``SOP_UID.dcm`` per instance.

    Each file is written under a hidden temporary name and renamed, so a file that exists is
    complete.  An instance of another study or series, or without a valid SOPInstanceUID, fails
    the series (ValueError).
    """
    folder.mkdir(parents=True, exist_ok=True)
    names: set[str] = set()
    for dataset in client.iter_series(study, series_uid):
        try:
            sop_uid = valid_uid(dataset.get("SOPInstanceUID"))
        except ValueError:
            raise ValueError("an instance has no valid SOPInstanceUID") from None
        if str(dataset.get("SeriesInstanceUID", "")) != series_uid:
            raise ValueError(f"instance {sop_uid} belongs to another series")
        if str(dataset.get("StudyInstanceUID", "")) != study:
            raise ValueError(f"instance {sop_uid} belongs to another study")
        partial = folder / f".{sop_uid}.part"
        dataset.save_as(partial, enforce_file_format=True)
        os.replace(partial, folder / f"{sop_uid}.dcm")
        names.add(sop_uid)
    return len(names)


def _store(client: Any, study: str, paths: Sequence[Path]) -> tuple[int, list[str]]:
    """STOW-RS the files in batches; the number accepted and the server's failure reasons."""
    import pydicom

    stored, failures = 0, []
    for start in range(0, len(paths), STORE_BATCH):
        datasets = [pydicom.dcmread(path) for path in paths[start : start + STORE_BATCH]]
        response = client.store_instances(datasets, study_instance_uid=study)
        stored += len(response.get("ReferencedSOPSequence", []) or [])
        for failed in response.get("FailedSOPSequence", []) or []:
            reason = failed.get("FailureReason", "")
            failures.append(f"{failed.get('ReferencedSOPInstanceUID', '?')}: reason {reason}")
    return stored, failures


def _series_uid_of(path: Path) -> str:
    import pydicom

    header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
    return str(header.get("SeriesInstanceUID", ""))


def _denoise_one(
    client: Any,
    study: str,
    series_uid: str,
    *,
    work: Path,
    output: Path | None,
    store: bool,
    denoisers: DenoiserPerKind,
    secrets: Sequence[str],
) -> SeriesResult:
    """Skip, or fetch, denoise, store and/or write one series; never raises for its failures."""
    from meddenoise.batch import denoise_item, plan_batch, run_batch

    try:
        skip = _skip_reason(client, study, series_uid)
    except Exception as error:  # a failed request fails this series only
        reason = f"series {series_uid}: QIDO-RS/metadata failed: {_describe(error, secrets)}"
        return SeriesResult(series_uid, "failed", reason)
    if skip:
        return SeriesResult(series_uid, "skipped", f"series {series_uid}: {skip}")
    source = work / "source" / series_uid
    target = output / series_uid if output is not None else work / "derived" / series_uid
    try:
        retrieved = _retrieve(client, study, series_uid, source)
    except Exception as error:
        shutil.rmtree(source, ignore_errors=True)
        reason = f"series {series_uid}: WADO-RS retrieve failed: {_describe(error, secrets)}"
        return SeriesResult(series_uid, "failed", reason)
    if not retrieved:
        return SeriesResult(series_uid, "failed", f"series {series_uid}: WADO-RS gave no instance")
    try:
        results = run_batch(plan_batch([source], target), denoise_item(denoisers))
    finally:
        shutil.rmtree(source, ignore_errors=True)
    paths = sorted(path for result in results for path in result.paths)
    problems = [result.reason for result in results if result.status == "failed"]
    done = SeriesResult(
        series_uid,
        "failed",
        retrieved=retrieved,
        derived=len(paths),
        output=target if output is not None else None,
    )
    if problems or not paths:
        why = "; ".join(problems) or "no instance of it is an image"
        reason = f"series {series_uid}: denoising failed: {why}"
        return replace(done, reason=_redact(reason, secrets))
    derived_uid = _series_uid_of(paths[0])
    stored = 0
    if store:
        try:
            stored, failures = _store(client, study, paths)
        except Exception as error:
            reason = f"series {series_uid}: STOW-RS failed: {_describe(error, secrets)}"
            return replace(done, reason=reason)
        if failures or stored < len(paths):
            listed = "; ".join(failures[:3]) or "no failure reason given"
            reason = f"series {series_uid}: STOW-RS stored {stored} of {len(paths)} ({listed})"
            return replace(done, reason=_redact(reason, secrets), stored=stored)
    if output is None:
        shutil.rmtree(target, ignore_errors=True)
    return replace(done, status="written", stored=stored, derived_series_uid=derived_uid)


def denoise_dicomweb(
    url: str,
    study: str,
    series: str | None = None,
    *,
    output: str | os.PathLike[str] | None = None,
    store: bool = True,
    method: str = "default",
    sigma: float | None = None,
    precision: str = "auto",
    credentials: Credentials | None = None,
    token_file: str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    on_result: Callable[[SeriesResult], object] | None = None,
) -> list[SeriesResult]:
    """Denoise the series of a study held by a DICOMweb server, and store or write the result.

    Parameters
    ----------
    url
        The DICOMweb base URL (e.g. ``http://127.0.0.1:8042/dicom-web``); no credentials in it.
    study
        The StudyInstanceUID.
    series
        One SeriesInstanceUID of the study; None takes every series of it.
    output
        A folder that receives each derived series as ``OUTPUT/SERIES_UID/`` (the source series'
        UID; the files keep the names of the fetched instances, ``SOP_UID.dcm``).  The fetched
        instances wait in a hidden temporary folder inside it, removed at the end.  None writes
        nothing locally (a system temporary folder is used).
    store
        Store each derived series back into the same study with STOW-RS.
    method, sigma, precision
        As `meddenoise.methods.resolve`: the method name, the noise std in [0, 1] units (None
        estimates it), the network arithmetic.
    credentials
        How to authenticate; None reads them with `read_credentials` (`token_file`, then the
        environment).
    token_file
        A file holding a bearer token, used when `credentials` is None.
    timeout
        Seconds one HTTP request may wait for the server.
    on_result
        Called with each series' result as soon as it is known.

    Returns
    -------
    list of SeriesResult
        One per series found, in the server's order.

    Raises
    ------
    ValueError
        Bad arguments: a URL that is not http(s) or carries credentials, a study or series that
        is not a UID, neither `output` nor `store`, an unknown method or precision, bad
        credential settings.  Raised before anything is fetched.
    DicomWebError
        The series cannot be listed (server unreachable, credentials refused) or there are none.
    """
    from meddenoise.batch import DenoiserPerKind, check_output_folder
    from meddenoise.methods import resolve

    base = check_url(url)
    try:
        study = valid_uid(study)
    except ValueError:
        raise ValueError("the study is not a valid UID (digits and dots, 64 at most)") from None
    if series is not None:
        try:
            series = valid_uid(series)
        except ValueError:
            raise ValueError(
                "the series is not a valid UID (digits and dots, 64 at most)"
            ) from None
    if output is None and not store:
        raise ValueError("nothing to do: give an output folder, or store the result (STOW-RS)")
    folder = None if output is None else check_output_folder(output)
    if credentials is None:
        credentials = read_credentials(token_file)
    secrets = credentials.secrets() if credentials is not None else ()
    denoisers = DenoiserPerKind(
        lambda colour: resolve(method, colour=colour, sigma=sigma, precision=precision)
    )
    denoisers(False)  # an unknown method or a bad option fails before anything is fetched
    client = _client(base, credentials, timeout)
    uids = _find_series(client, study, series, secrets)
    logger.info("study %s: %d series found", study, len(uids))
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    work = Path(
        tempfile.mkdtemp(prefix=".meddenoise-dicomweb-", dir=None if folder is None else folder)
    )
    results: list[SeriesResult] = []
    try:
        for uid in uids:
            try:
                series_uid = valid_uid(uid)
            except ValueError:
                result = SeriesResult(
                    "?", "failed", "the server listed a SeriesInstanceUID that is not a valid UID"
                )
            else:
                result = _denoise_one(
                    client,
                    study,
                    series_uid,
                    work=work,
                    output=folder,
                    store=store,
                    denoisers=denoisers,
                    secrets=secrets,
                )
            logger.info("series %s: %s", result.series_uid, result.status)
            results.append(result)
            if on_result is not None:
                on_result(result)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results
