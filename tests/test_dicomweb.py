"""The DICOMweb round trip against a real archive: Orthanc with its DICOMweb plugin (Debian's orthanc and
orthanc-dicomweb), started by the test on a free local port with its own storage and authentication on, and stopped
at the end. Made (synthetic) DICOM studies are stored in it, `run inference` retrieves them (by UID and by query),
scores them and stores its SEG and Parametric Maps back under the right study. A server that is down or does not
answer ends the run with one line naming it; credentials never show up in the outputs."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from dicom_made import write_dicom_study
from runner import TINY_ARGS, run_bundle, tiny_dataset, tiny_weights

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = "andi", "s3cret-Pa55word"
SEG_CLASS, PM_CLASS = "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.30"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def orthanc(tmp_path):
    """A running Orthanc (authentication on, DICOMweb at /dicom-web) and its URL; stopped afterwards."""
    if not shutil.which("Orthanc") or not PLUGIN.is_file():
        pytest.skip("Debian's orthanc and orthanc-dicomweb are not installed (.ci/run installs them)")
    port = free_port()
    home = tmp_path / "orthanc"
    (home / "storage").mkdir(parents=True)
    config = {
        "Name": "andi-test",
        "StorageDirectory": str(home / "storage"),
        "IndexDirectory": str(home / "storage"),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [str(PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (home / "orthanc.json").write_text(json.dumps(config))
    log = (home / "orthanc.log").open("w")
    proc = subprocess.Popen(["Orthanc", str(home / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/dicom-web"
    import requests

    deadline = time.time() + 30
    while True:
        try:
            if requests.get(f"http://127.0.0.1:{port}/system", auth=(USER, PASSWORD), timeout=1).ok:
                break
        except requests.exceptions.ConnectionError:
            pass
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            raise AssertionError(f"Orthanc did not start: {(home / 'orthanc.log').read_text()[-2000:]}")
        time.sleep(0.3)
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def client(url: str):
    from dicomweb_client.api import DICOMwebClient
    from dicomweb_client.session_utils import create_session_from_user_pass

    return DICOMwebClient(url, session=create_session_from_user_pass(USER, PASSWORD))


def made_dicom_studies(tmp: Path, n: int) -> list[Path]:
    datalist = tiny_dataset(tmp / "nifti", n_healthy=0, n_anomalous=n, seed=11)
    folders = []
    for i, item in enumerate(json.loads(datalist.read_text())["testing"]):
        nifti = {k: datalist.parent / item[k] for k in ("t1", "t1c", "t2", "flair")}
        folders.append(write_dicom_study(nifti, tmp / "dicom" / f"s{i}", enhanced=i == 1, name=f"s{i}"))
    return folders


def series_classes(web, study_uid: str) -> set[str]:
    return {str(i["00080016"]["Value"][0]) for i in web.search_for_instances(study_instance_uid=study_uid)}


@pytest.mark.slow
def test_orthanc_round_trip_with_authentication(orthanc, tmp_path):
    import pydicom

    web = client(orthanc)
    folders = made_dicom_studies(tmp_path, 2)
    uids = []
    for folder in folders:
        datasets = [pydicom.dcmread(p) for p in sorted(folder.rglob("*.dcm"))]
        web.store_instances(datasets)
        uids.append(str(datasets[0].StudyInstanceUID))
    weights = tiny_weights(tmp_path / "tiny.pt")
    args = ["--weights", str(weights), *TINY_ARGS, "--t_stride", "125", "--dicomweb_url", orthanc]
    env_plain = {k: v for k, v in os.environ.items() if not k.startswith("ANDI_DICOMWEB")}

    # wrong credentials: one line naming the server, nothing scored or stored
    bad = run_bundle("inference", "inference.yaml", "--output_dir", str(tmp_path / "bad"), *args, check=False,
                     env={**env_plain, "ANDI_DICOMWEB_USER": USER, "ANDI_DICOMWEB_PASSWORD": "wrong"})  # fmt: skip
    assert bad.returncode != 0
    lines = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert lines == [f"error: {orthanc}: the DICOMweb server refused the credentials (HTTP 401)"], bad.stderr[-2000:]
    assert "Traceback" not in bad.stderr

    # the right ones from a file: the first study by UID, the second by a QIDO-RS query
    secret = tmp_path / "credentials.json"
    secret.write_text(json.dumps({"username": USER, "password": PASSWORD}))
    out = tmp_path / "out"
    query = json.dumps({"PatientID": "MADE-s1"})
    proc = run_bundle("inference", "inference.yaml", "--output_dir", str(out), *args, "--dicomweb_studies",
                      f"['{uids[0]}']", "--dicomweb_query", query, "--dicomweb_credentials_file", str(secret),
                      env=env_plain)  # fmt: skip
    assert f"stored 4 DICOM objects of 2 studies on {orthanc}" in proc.stdout
    for uid in uids:
        assert (out / uid / "segmentation.nii.gz").is_file()
        classes = series_classes(web, uid)
        assert SEG_CLASS in classes and PM_CLASS in classes, classes
    texts = [proc.stdout, proc.stderr, *(p.read_text(errors="ignore") for p in out.rglob("*") if p.suffix in
             (".json", ".html", ".log", ".csv"))]  # fmt: skip
    assert not any(PASSWORD in t for t in texts), "the password leaked into an output"


def test_dicomweb_server_down_or_silent_is_one_line(tmp_path):
    """A closed port (down) and a port that accepts but never answers (timeout): one line each, nothing written."""
    weights = tiny_weights(tmp_path / "tiny.pt")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)
        cases = {
            f"http://127.0.0.1:{free_port()}/dicom-web": "cannot be reached (connection refused or the server is down)",
            f"http://127.0.0.1:{silent.getsockname()[1]}/dicom-web": "did not answer in time (timeout)",
        }
        for url, what in cases.items():
            out = tmp_path / "out"
            proc = run_bundle("inference", "inference.yaml", "--output_dir", str(out), "--weights", str(weights),
                              *TINY_ARGS, "--dicomweb_url", url, "--dicomweb_timeout", "2", check=False)  # fmt: skip
            lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
            assert proc.returncode != 0 and lines == [f"error: {url}: the DICOMweb server {what}"], proc.stderr[-2000:]
            assert not list(out.glob("*/segmentation*")), "nothing scored"


def test_credentials_never_from_the_url(tmp_path):
    from scripts.dicomweb import DicomWebSource
    from scripts.errors import StudyError

    with pytest.raises(StudyError) as err:
        DicomWebSource(f"http://{USER}:{PASSWORD}@127.0.0.1:8042/dicom-web", tmp_path)
    assert PASSWORD not in str(err.value) and "environment or a file" in str(err.value)
