"""Studies from a DICOMweb server and the DICOM outputs back to it, with ``dicomweb-client``.

``run inference --dicomweb_url URL`` takes its studies from the server instead of ``dataset_dir``: those named by
``dicomweb_studies`` (StudyInstanceUIDs) and/or found by the QIDO-RS query ``dicomweb_query`` (search filters such
as ``{PatientID: X, ModalitiesInStudy: MR}``), each retrieved with WADO-RS into ``<output_dir>/.dicomweb/<study
UID>/`` (a study retrieved completely once is not retrieved again) and then read as any DICOM study
(``scripts.dicom_series``), its outputs going to ``<output_dir>/<study UID>/``. After the batch, the DICOM SEG and
Parametric Maps of each study scored are stored back with STOW-RS (``dicomweb_store``), all of a study's objects in
one request; the server is asked first whether it answers, so a server that went away stores nothing.

Credentials come from the environment (``ANDI_DICOMWEB_TOKEN`` for a bearer token, or ``ANDI_DICOMWEB_USER`` and
``ANDI_DICOMWEB_PASSWORD`` for HTTP basic) or from a JSON file (``dicomweb_credentials_file`` or the environment's
``ANDI_DICOMWEB_CREDENTIALS_FILE``: ``{"token": ...}`` or ``{"username": ..., "password": ...}``), never from the
command line: a URL holding a user or password is refused. No message names them; a server that is down, refuses or
does not answer in ``dicomweb_timeout`` seconds ends the run with one line naming the server.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from scripts.dicom_objects import DICOM_FILES
from scripts.errors import StudyError
from scripts.files import atomic_write_bytes

logger = logging.getLogger(__name__)

CACHE_FOLDER = ".dicomweb"
COMPLETE_MARK = ".complete"
ENV_TOKEN, ENV_USER, ENV_PASSWORD = "ANDI_DICOMWEB_TOKEN", "ANDI_DICOMWEB_USER", "ANDI_DICOMWEB_PASSWORD"
ENV_FILE = "ANDI_DICOMWEB_CREDENTIALS_FILE"


def read_credentials(file: str | os.PathLike | None = None) -> dict[str, str]:
    """``{"token": ...}``, ``{"username": ..., "password": ...}`` or ``{}`` from the environment or a JSON file (the
    file first when one is named).

    Raises:
        StudyError: the file is unreadable or holds neither form (the message names the file, never its content).
    """
    file = file or os.environ.get(ENV_FILE)
    if file:
        try:
            content = json.loads(Path(file).read_text())
        except (OSError, ValueError) as err:
            raise StudyError(f"{file}: unreadable as a JSON credentials file ({type(err).__name__})") from err
        if isinstance(content, dict) and content.get("token"):
            return {"token": str(content["token"])}
        if isinstance(content, dict) and content.get("username") and "password" in content:
            return {"username": str(content["username"]), "password": str(content["password"])}
        raise StudyError(f'{file}: expected {{"token": ...}} or {{"username": ..., "password": ...}}')
    if os.environ.get(ENV_TOKEN):
        return {"token": os.environ[ENV_TOKEN]}
    if os.environ.get(ENV_USER):
        return {"username": os.environ[ENV_USER], "password": os.environ.get(ENV_PASSWORD, "")}
    return {}


def server_error(url: str, err: Exception) -> StudyError:
    """One line naming the server and what went wrong (never a credential: the URL holds none)."""
    import requests

    if isinstance(err, requests.exceptions.Timeout):
        what = "did not answer in time (timeout)"
    elif isinstance(err, requests.exceptions.ConnectionError):
        what = "cannot be reached (connection refused or the server is down)"
    elif isinstance(err, requests.exceptions.HTTPError) and err.response is not None:
        code = err.response.status_code
        what = {401: "refused the credentials (HTTP 401)", 403: "refused access (HTTP 403)"}.get(
            code, f"answered HTTP {code} {err.response.reason or ''}".strip()
        )
    else:
        what = f"failed ({type(err).__name__})"
    return StudyError(f"{url}: the DICOMweb server {what}")


class DicomWebSource:
    """The studies of a DICOMweb server (see the module docstring); inert when ``url`` is unset.

    Args:
        url: the DICOMweb root (e.g. ``http://host:8042/dicom-web``), or None.
        studies: StudyInstanceUIDs to retrieve.
        query: QIDO-RS search filters for studies to retrieve.
        output_dir: the run's output folder (the retrieved studies are kept in ``<output_dir>/.dicomweb``).
        store: store the DICOM outputs back (STOW-RS).
        credentials_file: a JSON credentials file (see :func:`read_credentials`).
        timeout: seconds to wait for the server in each request.
    """

    def __init__(
        self,
        url: str | None,
        output_dir: str | os.PathLike,
        studies: Sequence[str] | str | None = None,
        query: Mapping[str, object] | None = None,
        store: bool | str = True,
        credentials_file: str | os.PathLike | None = None,
        timeout: float = 60,
    ) -> None:
        from scripts import as_bool

        self.url = str(url).rstrip("/") if url else None
        self.output_dir = Path(output_dir)
        self.uids = [studies] if isinstance(studies, str) else [str(s) for s in (studies or [])]
        self.query = dict(query or {})
        self.store_outputs = as_bool(store)
        self.credentials_file = credentials_file
        self.timeout = float(timeout)
        self._client = None
        if self.url:
            parts = urlsplit(self.url)
            if parts.username or parts.password:
                safe = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")).geturl()
                raise StudyError(f"{safe}: put the DICOMweb credentials in the environment or a file, not the URL")
            if parts.scheme not in ("http", "https"):
                raise StudyError(f"{self.url}: a DICOMweb URL must start with http:// or https://")

    @property
    def client(self):
        """The ``DICOMwebClient``, with the credentials on its session (built once)."""
        if self._client is None:
            from dicomweb_client.api import DICOMwebClient
            from dicomweb_client.session_utils import create_session

            session = create_session()
            credentials = read_credentials(self.credentials_file)
            if "token" in credentials:
                session.headers["Authorization"] = f"Bearer {credentials['token']}"
            elif credentials:
                session.auth = (credentials["username"], credentials["password"])
            self._client = DICOMwebClient(self.url, session=session, timeout=self.timeout)
            self._client.set_http_retry_params(retry=False)
        return self._client

    def _call(self, what: str, fn, *args, **kwargs):
        import requests

        try:
            return fn(*args, **kwargs)
        except (requests.exceptions.RequestException, OSError) as err:
            logger.info("DICOMweb %s failed: %s", what, type(err).__name__)
            raise server_error(self.url, err) from err

    def study_uids(self) -> list[str]:
        """The StudyInstanceUIDs named and those the query finds, each once, in that order."""
        uids = list(self.uids)
        if self.query or not uids:
            found = self._call("QIDO-RS", self.client.search_for_studies, search_filters=self.query or None,
                               get_remaining=True)  # fmt: skip
            for study in found:
                uid = str(study.get("0020000D", {}).get("Value", [""])[0])
                if uid and uid not in uids:
                    uids.append(uid)
        if not uids:
            raise StudyError(f"{self.url}: the DICOMweb query {self.query or '(all studies)'} found no study")
        return uids

    def dataset(self, dataset_dir: str | os.PathLike) -> str:
        """``dataset_dir`` without a URL; with one, the folder of the retrieved studies (retrieving those not yet
        there)."""
        if not self.url:
            return str(dataset_dir)
        root = self.output_dir / CACHE_FOLDER
        for uid in self.study_uids():
            folder = root / uid
            if (folder / COMPLETE_MARK).is_file():
                continue
            datasets = self._call("WADO-RS", self.client.retrieve_study, uid)
            if not datasets:
                raise StudyError(f"{self.url}: the DICOMweb server has no study {uid}")
            for ds in datasets:
                buffer = io.BytesIO()
                ds.save_as(buffer, enforce_file_format=True)
                atomic_write_bytes(buffer.getvalue(), folder / str(ds.SeriesInstanceUID) / f"{ds.SOPInstanceUID}.dcm")
            atomic_write_bytes(b"", folder / COMPLETE_MARK)
            logger.info("retrieved study %s (%d instances) from %s", uid, len(datasets), self.url)
        return str(root)

    def store(self, done: Sequence[str]) -> int:
        """STOW-RS the DICOM outputs of the studies ``done`` (names = StudyInstanceUIDs); returns how many objects
        were stored. Nothing happens without a URL or with ``store`` off."""
        if not self.url or not self.store_outputs:
            return 0
        import pydicom

        batches = []
        for name in done:
            files = [self.output_dir / str(name) / f for f in DICOM_FILES]
            datasets = [pydicom.dcmread(f) for f in files if f.is_file()]
            if datasets:
                batches.append((str(datasets[0].StudyInstanceUID), datasets))
        if not batches:
            return 0
        self._call("QIDO-RS", self.client.search_for_studies, limit=1)  # answers before anything is stored
        for uid, datasets in batches:
            self._call("STOW-RS", self.client.store_instances, datasets, study_instance_uid=uid)
        stored = sum(len(d) for _, d in batches)
        print(f"stored {stored} DICOM objects of {len(batches)} studies on {self.url}", flush=True)
        return stored
