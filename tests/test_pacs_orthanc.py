"""cxrkit as a DICOM node and a DICOMweb client, against a real PACS.

Orthanc (Debian's ``orthanc`` with ``orthanc-dicomweb``) runs on loopback as
the PACS, started here with its own configuration in a temporary folder;
DCMTK's ``storescu`` and ``echoscu`` (Debian's ``dcmtk``) are the modality.
The radiographs are sample images converted to DX instances at 128 px, the
model a simple CNN at 32 px: what is tested is the plumbing, not the model.
Everything skips, saying why, where Orthanc or DCMTK is not installed
(``.ci/run`` installs them with apt).
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("pynetdicom", reason='needs pip install "cxrkit[pacs]"')
pytest.importorskip("highdicom", reason='needs pip install "cxrkit[pacs]"')
pytest.importorskip("dicomweb_client", reason='needs pip install "cxrkit[pacs]"')

import pydicom
import requests
from dicomweb_client import DICOMwebClient

from cxrkit import PneumoniaClassifier
from cxrkit.pacs import (
    DicomNode,
    DimseDestination,
    Listener,
    LocalOrthanc,
    image_to_dicom,
    process_dicomweb,
    read_report,
)
from cxrkit.pacs._orthanc import find_dcmtk, find_orthanc, free_port

_BINARY, _PLUGIN = find_orthanc()
STORESCU, ECHOSCU = find_dcmtk("storescu"), find_dcmtk("echoscu")
_MISSING = [
    what
    for what, found in (
        ("Orthanc (apt-get install orthanc)", _BINARY),
        ("the Orthanc DICOMweb plugin (apt-get install orthanc-dicomweb)", _PLUGIN),
        ("DCMTK's storescu (apt-get install dcmtk)", STORESCU),
        ("DCMTK's echoscu (apt-get install dcmtk)", ECHOSCU),
    )
    if not found
]
pytestmark = pytest.mark.skipif(
    bool(_MISSING), reason="not installed: " + "; ".join(_MISSING)
)

N_RADIOGRAPHS = 100
N_STUDIES = 20
LISTENER_AE = "CXRKIT"
MODALITY_AE = "STORESCU"
ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _write_radiographs(folder: Path, paths, *, n: int, n_studies: int, date: str):
    """``n`` DX files from sample images, ``n / n_studies`` per study."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    studies = [pydicom.uid.generate_uid() for _ in range(n_studies)]
    for i in range(n):
        study = studies[i % n_studies]
        ds = image_to_dicom(
            paths[i],
            patient_id=f"CXRKIT-TEST-{i % n_studies:03d}",
            study_instance_uid=study,
            series_instance_uid=pydicom.uid.generate_uid(
                entropy_srcs=["series", study]
            ),
            study_date=date,
            accession_number=f"ACC{i % n_studies:05d}",
            instance_number=i // n_studies + 1,
        )
        path = folder / f"{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, sample_cxr) -> Path:
    """A simple CNN at 32 px trained for one epoch on 40 sample images."""
    clf = PneumoniaClassifier(
        model="simple_cnn", image_size=32, max_epochs=1, random_state=0
    ).fit(sample_cxr.data[::15], sample_cxr.target[::15])
    return clf.save(tmp_path_factory.mktemp("model") / "model.cxr", threshold=0.4)


@pytest.fixture(scope="module")
def listener_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory, listener_port):
    """Orthanc on loopback; knows the listener and storescu (from 127.0.0.1)."""
    modalities = {
        "cxrkit": DicomNode(LISTENER_AE, "127.0.0.1", listener_port),
        "modality": DicomNode(MODALITY_AE, "127.0.0.1", 104),
    }
    with LocalOrthanc(modalities, folder=tmp_path_factory.mktemp("orthanc")) as pacs:
        yield pacs


@pytest.fixture(scope="module")
def radiographs(tmp_path_factory, sample_cxr) -> list[Path]:
    return _write_radiographs(
        tmp_path_factory.mktemp("dx"),
        sample_cxr.data,
        n=N_RADIOGRAPHS,
        n_studies=N_STUDIES,
        date="20240131",
    )


@pytest.fixture(scope="module")
def session():
    """HTTP to Orthanc, never through a proxy from the environment."""
    with requests.Session() as s:
        s.trust_env = False
        yield s


def _storescu_env() -> dict[str, str]:
    # DCMTK leaves Nagle's algorithm on unless TCP_NODELAY is set; with it
    # on, each C-STORE waits for a delayed acknowledgement (measured here:
    # 65 ms an instance instead of 17 ms).
    return {**os.environ, "TCP_NODELAY": "1"}


def _storescu(node: DicomNode, files, *, verbose: bool = False, **popen):
    # --no-halt: go on after a refused instance, as a modality's queue does
    command = [STORESCU, "--no-halt", "-aet", MODALITY_AE, "-aec", node.ae_title]
    if verbose:
        command.append("-v")
    command += [node.host, str(node.port), *map(str, files)]
    if popen:
        return subprocess.Popen(command, text=True, env=_storescu_env(), **popen)
    return subprocess.run(
        command, capture_output=True, text=True, timeout=120, env=_storescu_env()
    )


def _reports_in_orthanc(orthanc: LocalOrthanc) -> dict[str, dict]:
    """The cxrkit reports stored in Orthanc, by their source SOP Instance UID."""
    found = orthanc.post(
        "/tools/find", {"Level": "Instance", "Query": {"Modality": "SR"}}
    )
    reports = {}
    for instance in found:
        ds = pydicom.dcmread(io.BytesIO(orthanc.get(f"/instances/{instance}/file")))
        report = read_report(ds)
        report["study_instance_uid"] = str(ds.StudyInstanceUID)
        report["sop_class_uid"] = str(ds.SOPClassUID)
        reports[report["source_sop_instance_uid"]] = report
    return reports


def _count(orthanc: LocalOrthanc, modality: str) -> int:
    query = {"Level": "Instance", "Query": {"Modality": modality}}
    return len(orthanc.post("/tools/find", query))


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def listener(model_file, orthanc, listener_port, tmp_path_factory):
    """``cxrkit listen``'s listener, in this process, sending to Orthanc."""
    destination = DimseDestination(orthanc.node, calling_ae_title=LISTENER_AE)
    with Listener(
        model_file,
        destination,
        ae_title=LISTENER_AE,
        port=listener_port,
        spool=tmp_path_factory.mktemp("spool"),
        allowed_ae_titles=[MODALITY_AE],
        device="cpu",
    ) as running:
        yield running


# ----------------------------------------------------------------- the node
def test_echoscu_gets_an_answer(listener):
    host, port = listener.address
    result = subprocess.run(
        [ECHOSCU, "-aet", MODALITY_AE, "-aec", LISTENER_AE, host, str(port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


def test_an_ae_title_not_allowed_is_rejected(listener):
    host, port = listener.address
    result = subprocess.run(
        [ECHOSCU, "-aet", "INTRUDER", "-aec", LISTENER_AE, host, str(port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "Rejected" in result.stderr + result.stdout


def test_100_radiographs_yield_100_reports_in_orthanc(
    listener, orthanc, radiographs, model_file
):
    # The modality sends the radiographs to cxrkit, and the first of each
    # study to the PACS too (for the DICOMweb test; all would cost 5 s more).
    to_pacs = _storescu(orthanc.node, radiographs[:N_STUDIES])
    assert to_pacs.returncode == 0, to_pacs.stderr
    host, port = listener.address
    to_cxrkit = _storescu(DicomNode(LISTENER_AE, host, port), radiographs)
    assert to_cxrkit.returncode == 0, to_cxrkit.stderr
    assert listener.wait_idle(120)
    # every count in the message: a refusal (A700 when the queue stays full
    # on a loaded machine), a duplicate or a failure reads as what it was
    counts = {
        k: getattr(listener.stats, k)
        for k in ("received", "duplicates", "refused", "failed")
    }
    assert listener.stats.reported == N_RADIOGRAPHS, counts
    assert listener.stats.failed == 0

    reports = _reports_in_orthanc(orthanc)
    assert len(reports) == N_RADIOGRAPHS
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in radiographs]
    assert set(reports) == {str(ds.SOPInstanceUID) for ds in sources}
    clf = PneumoniaClassifier.load(model_file, device="cpu")
    proba = clf.predict_proba([str(f) for f in radiographs])[:, 1]
    for ds, p in zip(sources, proba):
        report = reports[str(ds.SOPInstanceUID)]
        assert report["study_instance_uid"] == ds.StudyInstanceUID  # same study
        assert report["source_sop_class_uid"] == ds.SOPClassUID
        assert report["probability"] == pytest.approx(p, abs=1e-6)
        assert report["probability_of"] == "PNEUMONIA"
        assert report["threshold"] == pytest.approx(0.4)
        assert report["label"] == ("PNEUMONIA" if p >= 0.4 else "NORMAL")
        assert report["model_name"] == "model.cxr"
        assert len(report["model_sha256"]) == 64
        assert "Research use only" in report["statement"]


def test_malformed_instances_are_refused_and_the_listener_goes_on(
    listener, tmp_path, sample_cxr, orthanc
):
    good, truncated, hand = _write_radiographs(
        tmp_path, sample_cxr.data[200:], n=3, n_studies=3, date="20240201"
    )
    ds = pydicom.dcmread(truncated)
    ds.PixelData = ds.PixelData[:1000]  # rows x columns say 16384 bytes
    ds.save_as(truncated, enforce_file_format=True)
    ds = pydicom.dcmread(hand)
    ds.BodyPartExamined = "HAND"
    ds.save_as(hand, enforce_file_format=True)
    host, port = listener.address
    before = listener.stats.reported
    result = _storescu(
        DicomNode(LISTENER_AE, host, port), [truncated, hand, good], verbose=True
    )
    log = result.stdout + result.stderr
    # storescu names the statuses: C000 and A900
    assert "CannotUnderstand" in log and "DataSetDoesNotMatchSOPClass" in log, log
    assert listener.wait_idle(60)
    assert listener.stats.reported == before + 1  # the good one, sent last
    good_uid = str(pydicom.dcmread(good, stop_before_pixels=True).SOPInstanceUID)
    assert good_uid in _reports_in_orthanc(orthanc)


def _acknowledged(storescu_log: str) -> list[str]:
    """The files storescu saw acknowledged with success, from its -v log."""
    acknowledged, current = [], None
    for line in storescu_log.splitlines():
        sent = re.search(r"Sending file: (\S+)", line)
        if sent:
            current = sent.group(1)
        elif "Received Store Response (Success)" in line and current:
            acknowledged.append(current)
            current = None
    return acknowledged


def _start_cli_listener(model_file, orthanc, port, spool, log_path):
    command = [
        sys.executable,
        "-m",
        "cxrkit.cli",
        "listen",
        str(model_file),
        "--ae-title",
        LISTENER_AE,
        "--port",
        str(port),
        "--send-to",
        str(orthanc.node),
        "--spool",
        str(spool),
        "--queue-size",
        "4",
        "--batch-size",
        "4",
        "--queue-timeout",
        "60",
        "--device",
        "cpu",
    ]
    process = subprocess.Popen(
        command, stdout=log_path.open("w"), stderr=subprocess.STDOUT, env=_env()
    )

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(log_path.read_text())
        echo = subprocess.run(
            [ECHOSCU, "-to", "2", "-aec", LISTENER_AE, "127.0.0.1", str(port)],
            capture_output=True,
            timeout=30,
        )
        return echo.returncode == 0

    _wait_for(answers, 120, "cxrkit listen to answer C-ECHO")
    return process


def test_killing_the_listener_loses_no_acknowledged_instance(
    model_file, orthanc, tmp_path, sample_cxr
):
    files = _write_radiographs(
        tmp_path / "dx", sample_cxr.data[300:], n=40, n_studies=4, date="20240202"
    )
    uid_of = {
        str(f): str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
        for f in files
    }
    port, spool = free_port(), tmp_path / "spool"
    process = _start_cli_listener(
        model_file, orthanc, port, spool, tmp_path / "first.log"
    )
    reported_before = _count(orthanc, "SR")
    sender = _storescu(
        DicomNode(LISTENER_AE, "127.0.0.1", port),
        files,
        verbose=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    # Kill -9 mid-stream: once some reports have reached the PACS.
    _wait_for(lambda: _count(orthanc, "SR") >= reported_before + 10, 120, "10 reports")
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    log, _ = sender.communicate(timeout=60)
    acknowledged = {uid_of[f] for f in _acknowledged(log)}
    pending = list((spool / "pending").glob("*.dcm"))
    assert 10 <= len(acknowledged) < len(files), log[-2000:]
    assert pending, "nothing was waiting when the listener was killed"

    # Start again on the same spool (in this process: the spool is what a
    # second `cxrkit listen` would read).
    destination = DimseDestination(orthanc.node, calling_ae_title=LISTENER_AE)
    with Listener(
        model_file, destination, ae_title=LISTENER_AE, port=port, spool=spool
    ) as resumed:
        assert resumed.wait_idle(120)
    assert resumed.stats.resumed == len(pending)
    assert resumed.stats.failed == 0
    reports = _reports_in_orthanc(orthanc)
    assert acknowledged <= set(reports)
    clf = PneumoniaClassifier.load(model_file, device="cpu")
    proba = dict(zip(uid_of.values(), clf.predict_proba(list(uid_of))[:, 1]))
    for uid in acknowledged:
        assert reports[uid]["probability"] == pytest.approx(proba[uid], abs=1e-6)


# ----------------------------------------------------------------- DICOMweb
def test_dicomweb_path_gives_the_listeners_results(
    listener, orthanc, radiographs, model_file, session
):
    """QIDO-RS, WADO-RS and the model reproduce the listener's reports."""
    if len(_reports_in_orthanc(orthanc)) < N_RADIOGRAPHS:
        pytest.skip("needs the 100 radiographs sent by the listener test")
    client = DICOMwebClient(orthanc.dicomweb_url, session=session)
    results = process_dicomweb(
        model_file,
        orthanc.dicomweb_url,
        study_date="20240131",
        modality="DX",
        store=False,
        client=client,
        device="cpu",
    )
    assert len(results) == N_STUDIES  # the radiographs sent to the PACS
    reports = _reports_in_orthanc(orthanc)
    for result in results:
        report = reports[result.sop_instance_uid]
        assert result.error is None
        assert result.finding.probability == pytest.approx(
            report["probability"], abs=1e-6
        )
        assert result.finding.label == report["label"]


def test_dicomweb_stores_reports_back_with_stow(
    orthanc, tmp_path, sample_cxr, model_file, session
):
    files = _write_radiographs(
        tmp_path, sample_cxr.data[400:], n=8, n_studies=4, date="20240303"
    )
    client = DICOMwebClient(orthanc.dicomweb_url, session=session)
    client.store_instances([pydicom.dcmread(f) for f in files])  # STOW-RS in
    results = process_dicomweb(
        model_file,
        orthanc.dicomweb_url,
        study_date="20240303",
        overlay=True,
        client=client,
        device="cpu",
    )
    assert len(results) == 8 and all(r.error is None for r in results)
    assert all(len(r.stored) == 2 for r in results)  # the report and the capture
    clf = PneumoniaClassifier.load(model_file, device="cpu")
    proba = dict(
        zip(
            (str(pydicom.dcmread(f).SOPInstanceUID) for f in files),
            clf.predict_proba([str(f) for f in files])[:, 1],
        )
    )
    # read the reports back with QIDO-RS and WADO-RS
    studies = {r.study_instance_uid for r in results}
    found = 0
    for study in studies:
        for series in client.search_for_series(
            study, search_filters={"Modality": "SR"}
        ):
            series_uid = series["0020000E"]["Value"][0]
            for instance in client.search_for_instances(study, series_uid):
                sop = instance["00080018"]["Value"][0]
                report = read_report(client.retrieve_instance(study, series_uid, sop))
                source = report["source_sop_instance_uid"]
                assert report["probability"] == pytest.approx(proba[source], abs=1e-6)
                found += 1
    assert found == 8
    # the heatmap captures, each referencing its source, in its study
    captures = orthanc.post(
        "/tools/find",
        {"Level": "Instance", "Query": {"StudyDate": "20240303", "Modality": "OT"}},
    )
    assert len(captures) == 8
    for instance in captures:
        capture = pydicom.dcmread(
            io.BytesIO(orthanc.get(f"/instances/{instance}/file"))
        )
        assert capture.PhotometricInterpretation == "RGB"
        assert capture.BurnedInAnnotation == "YES"
        assert capture.Manufacturer == "cxrkit"
        assert capture.SourceImageSequence[0].ReferencedSOPInstanceUID in proba


@pytest.mark.slow  # about 15 s: a subprocess imports torch and starts Orthanc
def test_the_guides_example_runs(model_file):
    """``examples/pacs_local.py``, whose sections the guide shows."""
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "pacs_local.py"),
            "--model-file",
            str(model_file),
            "--n",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("C-STORE to CXRKIT: 0x0000") == 2
    assert len(re.findall(r"P\(PNEUMONIA\) = \d\.\d{3}", result.stdout)) == 2
