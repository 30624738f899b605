"""A real PACS for tests: Orthanc on loopback, with free ports and its storage in a temp folder.

`Orthanc` writes a configuration, starts Debian's ``Orthanc`` (with the DICOMweb plugin), waits
for ``/system`` and stops it again; its small REST helpers upload files and list what the server
holds.  `free_port` picks a free TCP port on 127.0.0.1.  Tests import them as
``from .pacs import Orthanc`` and get servers from the ``orthanc`` fixture in conftest.py, which
stops every server it started.  `StoreSCP` runs dcmtk's ``storescp`` as a recording destination.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def load_commented_json(path: Path) -> dict[str, Any]:
    """A JSON file with Orthanc's comments (``//`` lines and ``/* */`` blocks) as a dict.

    Comments are removed outside strings only, so a URL's ``//`` inside a string is kept.
    """
    text = Path(path).read_text(encoding="utf-8")
    kept: list[str] = []
    index, in_string = 0, False
    while index < len(text):
        character = text[index]
        if in_string:
            kept.append(character)
            if character == "\\":
                kept.append(text[index + 1])
                index += 1
            elif character == '"':
                in_string = False
        elif character == '"':
            in_string = True
            kept.append(character)
        elif text.startswith("//", index):
            index = text.find("\n", index)
            if index < 0:
                break
            continue
        elif text.startswith("/*", index):
            end = text.find("*/", index + 2)
            if end < 0:
                raise ValueError(f"{path}: unterminated /* comment")
            index = end + 2
            continue
        else:
            kept.append(character)
        index += 1
    return dict(json.loads("".join(kept)))


def log_tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file, or a note that there is none."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def stop_process(process: subprocess.Popen[Any] | None, timeout: float = STOP_TIMEOUT_S) -> None:
    """Terminate a process this test started, wait for it, kill it if it does not stop."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def wait_for(condition, *, timeout: float, interval: float = 0.2, what: str = "a condition"):
    """Poll `condition()` until it returns something true; that value, or AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def orthanc_binary() -> str | None:
    """Where ``Orthanc`` is: on PATH, or in /usr/sbin (Debian's place, often not on PATH)."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
    return shutil.which("Orthanc", path=search)


class Orthanc:
    """One Orthanc server with free HTTP and DICOM ports, used on 127.0.0.1; a context manager.

    Orthanc 1.10 has no bind-address option: its ports listen on every interface, and
    ``RemoteAccessAllowed`` false refuses HTTP clients other than localhost.

    Parameters
    ----------
    folder
        Where its configuration, storage, index and log go (a test's tmp_path sub-folder).
    aet
        Its DICOM AE title (default ORTHANC, or the base configuration's).
    modalities
        ``DicomModalities``: name -> ``[AET, host, port]`` (or Orthanc's object form).
    lua
        Paths of Lua scripts (``LuaScripts``).
    users
        ``RegisteredUsers`` (name -> password); authentication is enabled when given, and the
        REST helpers use the first user.
    stable_age
        Seconds without a new instance before a series is stable (``StableAge``).
    base
        A configuration to start from (e.g. examples/orthanc/orthanc.json, comments removed
        with `load_commented_json`); the test's storage, ports and StableAge replace its own.
    extra
        More configuration options, applied last.
    """

    def __init__(
        self,
        folder: Path,
        *,
        aet: str | None = None,
        modalities: Mapping[str, Any] | None = None,
        lua: Sequence[Path] = (),
        users: Mapping[str, str] | None = None,
        stable_age: int = 2,
        base: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.aet = aet
        self.modalities = dict(modalities or {})
        self.lua = [Path(path) for path in lua]
        self.users = dict(users or {})
        self.stable_age = stable_age
        self.base = dict(base or {})
        self.extra = dict(extra or {})
        self.config_path = self.folder / "orthanc.json"
        self.log_path = self.folder / "orthanc.log"
        self.http_port = 0
        self.dicom_port = 0
        self.process: subprocess.Popen[bytes] | None = None

    # --- life cycle ---

    @property
    def url(self) -> str:
        """The REST root, e.g. ``http://127.0.0.1:8042``."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb root (QIDO-RS, WADO-RS, STOW-RS)."""
        return f"{self.url}/dicom-web"

    def configuration(self) -> dict[str, Any]:
        """The configuration written to orthanc.json (ports included).

        Test defaults, then `base` (a deployable configuration under test), then what a test
        needs whatever the base says (storage, ports, the plugin, StableAge), then the
        caller's AE title, modalities, Lua scripts and users when given, then `extra`.
        """
        storage = self.folder / "storage"
        config: dict[str, Any] = {
            "Name": "meddenoise-test",
            "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpServerEnabled": True,
            "DicomServerEnabled": True,
            # Any calling AE may echo and store, whatever AE title it calls.
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomCheckCalledAet": False,
            "DicomCheckModalityHost": False,
            "DicomModalities": {},
            "DicomScuTimeout": 10,
            "DicomAssociationCloseDelay": 0,
            "LuaScripts": [],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
            "HttpDescribeErrors": True,
            "MaximumStorageCacheSize": 0,
            "SaveJobs": False,
        }
        config.update(self.base)
        config.update(
            {
                "StorageDirectory": str(storage),
                "IndexDirectory": str(storage),
                "HttpPort": self.http_port,
                "DicomPort": self.dicom_port,
                "Plugins": [str(DICOMWEB_PLUGIN)],
                "StableAge": self.stable_age,
            }
        )
        if self.aet is not None:
            config["DicomAet"] = self.aet
        if self.modalities:
            config["DicomModalities"] = self.modalities
        if self.lua:
            config["LuaScripts"] = [str(path) for path in self.lua]
        if self.users:
            config.update({"AuthenticationEnabled": True, "RegisteredUsers": self.users})
        config.update(self.extra)
        return config

    def start(self, *, binary: str | None = None, attempts: int = 3) -> Orthanc:
        """Start the server and wait for ``/system``.

        A port taken between `free_port` and Orthanc's bind makes Orthanc exit ("already in
        use"): it is started again on new ports, up to `attempts` times.  Raises AssertionError
        with the log's tail when it exits or does not answer within `START_TIMEOUT_S`.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        failure = ""
        for _ in range(attempts):
            self.http_port, self.dicom_port = free_port(), free_port()
            while self.dicom_port == self.http_port:
                self.dicom_port = free_port()
            self.config_path.write_text(json.dumps(self.configuration(), indent=2))
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    [binary or orthanc_binary() or "Orthanc", str(self.config_path)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.folder,
                )
            deadline = time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    self.request("GET", "/system", timeout=1.0)
                    return self
                except (urllib.error.URLError, OSError):
                    time.sleep(0.1)
            exited = self.process.poll() is not None
            self.stop()
            failure = "exited" if exited else f"did not answer within {START_TIMEOUT_S:.0f} s"
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                port_taken = b"already in use" in log.read()
            if not (exited and port_taken):
                break  # only a port lost to a race is worth another try
        raise AssertionError(
            f"Orthanc {failure} (config {self.config_path}); log tail:\n{log_tail(self.log_path)}"
        )

    def stop(self) -> None:
        """Stop the server (terminate, wait, kill); safe to call twice."""
        stop_process(self.process)

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- REST helpers ---

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        content_type: str = "application/octet-stream",
        timeout: float = REQUEST_TIMEOUT_S,
    ) -> bytes:
        """One REST call; the response body, or urllib's HTTPError."""
        headers = {"Content-Type": content_type} if body is not None else {}
        if self.users:
            user, password = next(iter(self.users.items()))
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        call = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        with urllib.request.urlopen(call, timeout=timeout) as response:
            return bytes(response.read())

    def get_json(self, path: str) -> Any:
        """GET a REST resource as JSON."""
        return json.loads(self.request("GET", path))

    def upload(self, path: Path) -> dict[str, Any]:
        """POST /instances: store one DICOM file; Orthanc's answer (ID, ParentSeries, Status)."""
        return json.loads(self.request("POST", "/instances", Path(path).read_bytes()))

    def upload_folder(self, folder: Path) -> list[dict[str, Any]]:
        """Upload every file of a folder, in name order."""
        return [self.upload(path) for path in sorted(Path(folder).iterdir()) if path.is_file()]

    def instance_tags(self, instance_id: str) -> dict[str, Any]:
        """An instance's tags by keyword (Orthanc's simplified form: multi-values joined by \\)."""
        return dict(self.get_json(f"/instances/{instance_id}/simplified-tags"))

    def list_series(self) -> list[dict[str, Any]]:
        """Every series with its main tags, one of its instances' ImageType and its size.

        Returns
        -------
        list of dict
            ``id``, ``SeriesInstanceUID``, ``StudyInstanceUID``, ``ImageType`` (as a list),
            ``DerivationDescription``, ``instances`` (Orthanc IDs), ``count``, ``stable``.
        """
        found = []
        for series in self.get_json("/series?expand"):
            instances = list(series.get("Instances", []))
            tags = self.instance_tags(instances[0]) if instances else {}
            image_type = str(tags.get("ImageType", ""))
            found.append(
                {
                    "id": series["ID"],
                    "SeriesInstanceUID": series["MainDicomTags"].get("SeriesInstanceUID", ""),
                    "StudyInstanceUID": tags.get("StudyInstanceUID", ""),
                    "ImageType": [part for part in image_type.split("\\") if part],
                    "DerivationDescription": str(tags.get("DerivationDescription", "")),
                    "instances": instances,
                    "count": len(instances),
                    "stable": bool(series.get("IsStable", False)),
                }
            )
        return found

    def instance_file(self, instance_id: str) -> bytes:
        """An instance's DICOM file as stored."""
        return self.request("GET", f"/instances/{instance_id}/file")

    def jobs(self) -> list[dict[str, Any]]:
        """Every job Orthanc knows (sends to modalities included), expanded."""
        return list(self.get_json("/jobs?expand"))

    def log(self) -> str:
        """The server's log so far."""
        return log_tail(self.log_path, lines=100000)


class StoreSCP:
    """dcmtk's ``storescp`` on a free port of 127.0.0.1, writing what it receives to `folder`.

    A recording destination: every received instance is one file in `folder`.
    """

    def __init__(self, folder: Path, *, aet: str = "STORESCP", port: int = 0) -> None:
        self.folder = Path(folder)
        self.aet = aet
        # A port chosen before it starts lets a test point a sender at a destination that is
        # down, then start it.
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.folder.parent / f"{self.folder.name}-storescp.log"

    def start(self, *, binary: str = "storescp", timeout: float = 10.0) -> StoreSCP:
        """Start it and wait until its port accepts connections."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        command = [binary, "--aetitle", self.aet, "--output-directory", str(self.folder)]
        command += ["--verbose", str(self.port)]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

        def listening() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"storescp exited:\n{log_tail(self.log_path)}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                return False

        wait_for(listening, timeout=timeout, interval=0.1, what="storescp to listen")
        return self

    def received(self) -> list[Path]:
        """The files it has written so far; the last may still be being written.

        A sender's C-STORE succeeds once storescp has written the file: wait for the sender
        (an Orthanc job's success) before reading them.
        """
        return sorted(path for path in self.folder.iterdir() if path.is_file())

    def stop(self) -> None:
        """Stop it (terminate, wait, kill)."""
        stop_process(self.process)

    def __enter__(self) -> StoreSCP:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
