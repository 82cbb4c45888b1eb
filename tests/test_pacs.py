"""cxrkit.pacs without a PACS: the results, the checks, the listener's promises.

The listener runs in this process on a free loopback port and sends to a
folder (or to destinations made to fail); pynetdicom is the sender. The
tests against a real PACS (Orthanc, DCMTK) are in ``test_pacs_orthanc.py``.
"""

from __future__ import annotations

import logging
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pynetdicom", reason='needs pip install "cxrkit[pacs]"')
pytest.importorskip("highdicom", reason='needs pip install "cxrkit[pacs]"')
pytest.importorskip("dicomweb_client", reason='needs pip install "cxrkit[pacs]"')

import pydicom
from conftest import FAST, network_images
from pynetdicom import AE
from pynetdicom.sop_class import DigitalXRayImageStorageForPresentation, Verification

from cxrkit import PneumoniaClassifier
from cxrkit.cli import main
from cxrkit.pacs import (
    DeliveryError,
    Finding,
    FolderDestination,
    Listener,
    ModelIdentity,
    NotARadiographError,
    ReportingModel,
    check_radiograph,
    client_tls_context,
    image_to_dicom,
    overlay_capture,
    parse_dicom_node,
    process_dicomweb,
    read_report,
    server_tls_context,
    structured_report,
)


@pytest.fixture(scope="module")
def clf(sample_cxr) -> PneumoniaClassifier:
    """A simple CNN at 32 px, one epoch on 40 sample images."""
    return PneumoniaClassifier(model="simple_cnn", **FAST).fit(
        sample_cxr.data[::15], sample_cxr.target[::15]
    )


@pytest.fixture(scope="module")
def model(clf) -> ReportingModel:
    return ReportingModel(clf)


@pytest.fixture(scope="module")
def radiographs(tmp_path_factory, sample_cxr) -> list[Path]:
    """Six sample images as DX files in two studies, with made-up identifiers."""
    folder = tmp_path_factory.mktemp("dx")
    studies = [pydicom.uid.generate_uid() for _ in range(2)]
    files = []
    for i in range(6):
        ds = image_to_dicom(
            sample_cxr.data[i * 97],
            patient_id=f"SECRET-PATIENT-{i % 2}",
            study_instance_uid=studies[i % 2],
            accession_number=f"SECRET-ACC-{i % 2}",
            study_date="20240131",
        )
        files.append(folder / f"{i}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
    return files


def _send(address, files, *, calling="MODALITY", called="CXRKIT", tls=None):
    """C-STORE the files with pynetdicom; the statuses (None: no association)."""
    ae = AE(calling)
    ae.add_requested_context(DigitalXRayImageStorageForPresentation)
    ae.add_requested_context(Verification)
    kwargs = {} if tls is None else {"tls_args": (tls, "127.0.0.1")}
    assoc = ae.associate(*address, ae_title=called, **kwargs)
    if not assoc.is_established:
        return None
    try:
        return [int(assoc.send_c_store(pydicom.dcmread(f)).Status) for f in files]
    finally:
        assoc.release()


def _echo(address, **kwargs):
    ae = AE(kwargs.pop("calling", "MODALITY"))
    ae.add_requested_context(Verification)
    assoc = ae.associate(*address, ae_title="CXRKIT", **kwargs)
    if not assoc.is_established:
        return None
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


# -------------------------------------------------------------- radiographs
@pytest.mark.parametrize(
    ("changes", "refused"),
    [
        ({}, None),
        ({"BodyPartExamined": "THORAX"}, None),
        ({"BodyPartExamined": "HAND"}, "body part HAND"),
        ({"Manufacturer": "cxrkit"}, "cxrkit made"),
        ({"NumberOfFrames": 3}, "3 frames"),
        # frontal films are read; lateral and oblique views are not
        ({"ViewPosition": "PA"}, None),
        ({"ViewPosition": "AP"}, None),
        ({"ViewPosition": "LL"}, "view position LL, a lateral"),
        ({"ViewPosition": "RL"}, "view position RL"),
        ({"ViewPosition": "LATERAL"}, "view position LATERAL"),
        ({"ViewPosition": "RAO"}, "oblique view"),
        ({"ViewPosition": "left lateral"}, "view position LEFT LATERAL"),
        ({"ViewPosition": "L LAT"}, "view position L LAT"),
        ({"ViewPosition": "AP SUPINE"}, None),
        ({"ViewPosition": "LATERAL DECUBITUS"}, None),  # a frontal projection
        ({"ViewPosition": "LLD"}, None),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.88.33"}, "not a radiograph"),
        # a secondary capture is read when it says it is a chest radiograph
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.7", "Modality": "OT"}, None),
        (
            {
                "SOPClassUID": "1.2.840.10008.5.1.4.1.1.7",
                "Modality": "OT",
                "BodyPartExamined": "",
            },
            "secondary capture",
        ),
    ],
)
def test_check_radiograph(changes, refused):
    ds = image_to_dicom(np.zeros((4, 4), np.uint8))
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    if refused is None:
        check_radiograph(ds)
    else:
        with pytest.raises(NotARadiographError, match=refused) as info:
            check_radiograph(ds)
        assert info.value.status == 0xA900


def test_image_to_dicom_keeps_the_pixels(tmp_path, sample_cxr):
    from cxrkit.images import read_image

    path = tmp_path / "x.dcm"
    image_to_dicom(sample_cxr.data[0]).save_as(path, enforce_file_format=True)
    np.testing.assert_array_equal(read_image(path), read_image(sample_cxr.data[0]))


def test_parse_dicom_node():
    assert str(parse_dicom_node("PACS@[::1]:104")) == "PACS@[::1]:104"
    for bad in ("PACS@host", "host:104", "@host:104", "A" * 17 + "@h:1", "P@h:0"):
        with pytest.raises(ValueError, match="AE@HOST:PORT"):
            parse_dicom_node(bad)


# ------------------------------------------------------------------ results
def test_report_says_what_the_model_says(model, clf, radiographs):
    source = pydicom.dcmread(radiographs[0])
    finding = model.assess(_image(radiographs[0], clf.image_size)[None])[0]
    report = structured_report(source, finding, model.identity)
    # the report survives writing and reading as a file
    read = read_report(_roundtrip(report))
    p = clf.predict_proba([str(radiographs[0])])[0, 1]
    assert read["probability"] == pytest.approx(p, abs=1e-7)
    assert read["label"] == clf.predict([str(radiographs[0])])[0]
    assert read["probability_of"] == "PNEUMONIA"
    assert read["threshold"] == 0.5
    assert read["source_sop_instance_uid"] == source.SOPInstanceUID
    assert read["source_sop_class_uid"] == source.SOPClassUID
    assert read["model_sha256"] == model.identity.sha256
    assert "not for diagnosis" in read["statement"]
    # the model's own out-of-distribution flag and score, carried as they are
    expected_ood = bool(clf.is_ood([str(radiographs[0])])[0])
    assert read["ood"] is expected_ood
    assert read["ood_score"] == pytest.approx(
        float(clf.ood_score([str(radiographs[0])])[0]), rel=1e-5
    )
    # filed with the source: same patient and study, a series of its own
    assert report.PatientID == source.PatientID
    assert report.StudyInstanceUID == source.StudyInstanceUID
    assert report.SeriesInstanceUID != source.SeriesInstanceUID
    assert (report.Modality, report.Manufacturer) == ("SR", "cxrkit")
    assert report.VerificationFlag == "UNVERIFIED"
    evidence = report.CurrentRequestedProcedureEvidenceSequence[0]
    referenced = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert referenced.ReferencedSOPInstanceUID == source.SOPInstanceUID
    # the same model on the same instance makes the same result instance
    again = structured_report(source, finding, model.identity)
    assert again.SOPInstanceUID == report.SOPInstanceUID


def _image(path, size: int) -> np.ndarray:
    from cxrkit.images import read_image

    return read_image(path, size=size)


def _roundtrip(ds):
    import io

    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return pydicom.dcmread(buffer)


def test_a_recorded_threshold_decides_and_is_reported(clf, radiographs, tmp_path):
    path = clf.save(tmp_path / "m.cxr", threshold=0.2)
    model = ReportingModel(path)
    images = np.stack([_image(f, clf.image_size) for f in radiographs])
    findings = model.assess(images)
    proba = clf.predict_proba(images)[:, 1]
    assert [f.label for f in findings] == [
        "PNEUMONIA" if p >= 0.2 else "NORMAL" for p in proba
    ]
    assert {f.threshold for f in findings} == {0.2}
    assert "recorded with the model" in findings[0].threshold_source
    assert model.identity.name == "m.cxr"
    assert ReportingModel(path, threshold=0.9).assess(images)[0].threshold == 0.9


def test_what_a_result_says_of_its_model_is_the_model_card(
    model, clf, radiographs, tmp_path
):
    """The DICOM node shows the one model card: file, SHA-256, versions,
    parameters, threshold and positive class as ``model_card`` gives them."""
    from cxrkit.persistence import model_card

    path = clf.save(tmp_path / "card.cxr", threshold=0.2)
    loaded = PneumoniaClassifier.load(path)
    source = pydicom.dcmread(radiographs[0])
    image = _image(radiographs[0], clf.image_size)[None]
    cases = [
        (ReportingModel(path), model_card(loaded, path)),
        (ReportingModel(path, threshold=0.9), model_card(loaded, path, threshold=0.9)),
        (model, model_card(clf)),
    ]
    for reporting, card in cases:
        identity = reporting.identity
        assert reporting.card == card
        assert identity.name == (card["file"] or "in-memory")
        assert identity.sha256 == card["sha256"]
        assert identity.architecture == card["parameters"]["model"]
        assert identity.image_size == card["parameters"]["image_size"]
        finding = reporting.assess(image)[0]
        read = read_report(structured_report(source, finding, identity))
        assert read["model_sha256"] == card["sha256"]
        assert read["model_name"] == identity.name
        assert read["probability_of"] == card["positive_class"]
        # no threshold on the card: the most probable of two classes, 0.5
        assert read["threshold"] == (card["threshold"] or 0.5)
    saved = cases[0][1]["trained"]
    assert saved["saved_at"] and saved["cxrkit_version"]
    assert cases[0][0].identity.version.endswith(
        f"; model saved {saved['saved_at']} by cxrkit {saved['cxrkit_version']}"
    )
    assert cases[0][1]["threshold"] == 0.2
    assert cases[2][1]["file"] is None


def test_a_finding_costs_one_pass_of_the_network(model, clf, radiographs):
    images = np.stack([_image(f, clf.image_size) for f in radiographs[:3]])
    with network_images(clf) as seen:
        findings = model.assess(images)
    assert seen.n == 3  # the probability and the OOD score from one pass
    np.testing.assert_allclose(
        [f.ood_score for f in findings], clf.ood_score(images), rtol=1e-5
    )
    assert [f.ood for f in findings] == clf.is_ood(images).tolist()


class _WithDetector(PneumoniaClassifier):
    """A classifier with the out-of-distribution interface (ood_score, is_ood)."""

    def ood_score(self, X):
        return np.asarray(X, dtype=float).mean(axis=(1, 2)) / 255

    def is_ood(self, X):
        return self.ood_score(X) > 0.5


class _WithoutFittedDetector(PneumoniaClassifier):
    def ood_score(self, X):
        raise AttributeError("no out-of-distribution detector was fitted")

    is_ood = ood_score


def test_out_of_distribution_flag_is_reported_when_the_model_has_one(
    sample_cxr, radiographs
):
    X, y = sample_cxr.data[::15], sample_cxr.target[::15]
    images = np.stack([_image(f, FAST["image_size"]) for f in radiographs])
    with_detector = ReportingModel(_WithDetector(model="simple_cnn", **FAST).fit(X, y))
    finding = with_detector.assess(images[:1])[0]
    assert finding.ood_score == pytest.approx(images[0].mean() / 255)
    source = pydicom.dcmread(radiographs[0])
    read = read_report(structured_report(source, finding, with_detector.identity))
    assert read["ood_score"] == pytest.approx(finding.ood_score)
    assert read["ood"] is finding.ood
    unfitted = ReportingModel(
        _WithoutFittedDetector(model="simple_cnn", **FAST).fit(X, y)
    )
    assert unfitted.assess(images[:1])[0].ood is None
    assert not unfitted.has_ood


def test_overlay_capture(model, clf, radiographs):
    from cxrkit.images import read_image

    source = pydicom.dcmread(radiographs[0])
    image = _image(radiographs[0], clf.image_size)
    finding = model.assess(image[None])[0]
    heatmap = model.heatmaps(image[None], [finding])[0]
    capture = _roundtrip(
        overlay_capture(
            source, read_image(radiographs[0]), heatmap, finding, model.identity
        )
    )
    assert capture.PhotometricInterpretation == "RGB"
    assert capture.pixel_array.shape[1] == 512  # a 128 px image, enlarged
    assert capture.BurnedInAnnotation == "YES"
    assert capture.StudyInstanceUID == source.StudyInstanceUID
    assert capture.SourceImageSequence[0].ReferencedSOPInstanceUID == (
        source.SOPInstanceUID
    )


@pytest.mark.parametrize("label", ["肺炎", "Pneumonie-Ü"])
def test_results_are_utf8_whatever_the_source_encodes(label, tmp_path, sample_cxr):
    """cxrkit's own text (a class name, the model file's name) and the
    patient data copied from a Latin-1 source (in sequences too) read back
    as they were: the results are UTF-8, the copied values decoded first."""
    import warnings

    from pydicom.dataset import Dataset

    ds = image_to_dicom(sample_cxr.data[0], study_date="20240131")
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Müller^Zoë"
    ds.ReferringPhysicianName = "Señor^José"
    procedure = Dataset()
    procedure.CodeValue, procedure.CodingSchemeDesignator = "X1", "99LOCAL"
    procedure.CodeMeaning = "Thorax pâ"
    ds.ProcedureCodeSequence = [procedure]
    ds.save_as(tmp_path / "latin1.dcm", enforce_file_format=True)
    assert "Müller".encode("latin-1") in (tmp_path / "latin1.dcm").read_bytes()
    # as the listener and the DICOMweb path read a source
    source = pydicom.dcmread(tmp_path / "latin1.dcm", stop_before_pixels=True)
    finding = Finding(label, 0.8, label, 0.5, "given")
    identity = ModelIdentity("modèle-肺.cxr", "1", "ab" * 32, "simple_cnn", 32)
    image = np.full((64, 64), 100, np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no '?' replacing what cannot be encoded
        report = _roundtrip(structured_report(source, finding, identity))
        capture = _roundtrip(
            overlay_capture(source, image, np.zeros((8, 8)), finding, identity)
        )
    read = read_report(report)
    assert (read["label"], read["probability_of"]) == (label, label)
    assert read["model_name"] == "modèle-肺.cxr"
    for result in (report, capture):
        assert result.SpecificCharacterSet == "ISO_IR 192"
        assert result.PatientName == "Müller^Zoë"
        assert result.ReferringPhysicianName == "Señor^José"
        assert result.ManufacturerModelName == "modèle-肺.cxr"
    assert report.ProcedureCodeSequence[0].CodeMeaning == "Thorax pâ"
    assert "modèle-肺.cxr" in capture.DerivationDescription
    assert source.SpecificCharacterSet == "ISO_IR 100"  # the source unchanged


# ----------------------------------------------------------------- listener
@pytest.fixture
def folder_listener(clf, tmp_path):
    destination = FolderDestination(tmp_path / "results")
    with Listener(clf, destination, port=0, spool=tmp_path / "spool") as listener:
        yield listener


def _reports(folder: Path) -> dict[str, dict]:
    found = {}
    for path in folder.glob("*.dcm"):
        report = read_report(pydicom.dcmread(path))
        found[report["source_sop_instance_uid"]] = report
    return found


def test_listener_reports_what_it_receives(folder_listener, clf, radiographs, tmp_path):
    assert _echo(folder_listener.address) == 0
    assert _send(folder_listener.address, radiographs) == [0] * len(radiographs)
    assert folder_listener.wait_idle(60)
    reports = _reports(tmp_path / "results")
    proba = clf.predict_proba([str(f) for f in radiographs])[:, 1]
    for path, p in zip(radiographs, proba):
        uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        assert reports[uid]["probability"] == pytest.approx(p, abs=1e-6)
    assert not list((tmp_path / "spool" / "pending").iterdir())  # reported, gone
    assert folder_listener.stats.reported == len(radiographs)
    assert len(folder_listener.stats.latency_s) == len(radiographs)


def test_listener_refuses_bad_instances_and_goes_on(
    folder_listener, radiographs, tmp_path
):
    truncated = tmp_path / "truncated.dcm"
    ds = pydicom.dcmread(radiographs[0])
    ds.PixelData = ds.PixelData[:100]
    ds.save_as(truncated, enforce_file_format=True)
    hand = tmp_path / "hand.dcm"
    ds = pydicom.dcmread(radiographs[1])
    ds.BodyPartExamined = "HAND"
    ds.save_as(hand, enforce_file_format=True)
    statuses = _send(folder_listener.address, [truncated, hand, radiographs[2]])
    assert statuses == [0xC000, 0xA900, 0x0000]
    assert folder_listener.wait_idle(60)
    assert folder_listener.stats.refused == 2
    assert len(_reports(tmp_path / "results")) == 1
    assert not list((tmp_path / "spool" / "incoming").iterdir())  # nothing left


def test_listener_logs_no_identifiers_unless_asked(clf, radiographs, tmp_path, caplog):
    for log_identifiers in (False, True):
        destination = FolderDestination(tmp_path / f"results{log_identifiers}")
        caplog.clear()
        with (
            caplog.at_level(logging.DEBUG, logger="cxrkit.pacs"),
            Listener(
                clf,
                destination,
                port=0,
                spool=tmp_path / f"spool{log_identifiers}",
                log_identifiers=log_identifiers,
            ) as listener,
        ):
            _send(listener.address, radiographs[:2])
            assert listener.wait_idle(60)
        logged = caplog.text
        uid = str(pydicom.dcmread(radiographs[0]).SOPInstanceUID)
        assert ("SECRET-PATIENT" in logged) is log_identifiers
        assert ("SECRET-ACC" in logged) is log_identifiers
        assert (uid in logged) is log_identifiers
    # the files the listener writes are named by the hash of the UID
    assert all(len(p.stem) == 64 for p in (tmp_path / "resultsFalse").iterdir())


class _Gate:
    """A destination that waits for ``open`` before storing (or fails)."""

    def __init__(self, folder, *, fail: str | None = None):
        self.open = threading.Event()
        self.fail = fail
        self.inner = FolderDestination(folder)

    def store(self, datasets):
        if self.fail == "down":
            raise DeliveryError("the PACS is down", transient=True)
        if self.fail == "refuses":
            raise DeliveryError("the PACS refuses it", transient=False)
        self.open.wait(30)
        self.inner.store(datasets)

    def release_if_idle(self, idle_s=0):
        pass

    def close(self):
        pass


def test_a_full_queue_answers_out_of_resources(clf, radiographs, tmp_path):
    gate = _Gate(tmp_path / "results")
    with Listener(
        clf,
        gate,
        port=0,
        spool=tmp_path / "spool",
        queue_size=1,
        batch_size=1,
        queue_timeout=0.3,
    ) as listener:
        # one in the sender (blocked), one in the outbox, one in the queue:
        # then the queue is full and a C-STORE waits 0.3 s, then gets A700
        statuses = _send(listener.address, radiographs)
        assert statuses[0] == 0
        assert 0xA700 in statuses
        acknowledged = statuses.count(0)
        gate.open.set()
        assert listener.wait_idle(60)
    assert listener.stats.reported == acknowledged
    assert len(list((tmp_path / "results").iterdir())) == acknowledged


def test_an_instance_sent_again_while_queued_is_not_lost(clf, radiographs, tmp_path):
    """B acknowledged and queued, then sent again while the queue is full: the
    second copy must not replace the first and then be deleted with it."""
    listener = Listener(
        clf,
        FolderDestination(tmp_path / "results"),
        port=0,
        spool=tmp_path / "spool",
        queue_size=1,
        batch_size=1,
        queue_timeout=0.3,
    )
    busy, go_on = threading.Event(), threading.Event()
    report_files = listener.reporter.report_files

    def slow(paths, images=None):  # the model busy with a batch
        busy.set()
        go_on.wait(30)
        return report_files(paths, images)

    listener.reporter.report_files = slow
    a, b, c = radiographs[:3]
    with listener:
        assert _send(listener.address, [a]) == [0]
        assert busy.wait(30)  # the model has A; the queue is empty
        # B fills the queue; B again is acknowledged (its copy is queued);
        # C finds the queue full
        assert _send(listener.address, [b, b, c]) == [0, 0, 0xA700]
        go_on.set()
        assert listener.wait_idle(60)
    uids = {
        str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in (a, b)
    }
    assert set(_reports(tmp_path / "results")) == uids
    assert listener.stats.reported == listener.stats.received == 2
    assert (listener.stats.duplicates, listener.stats.refused) == (1, 1)
    assert not list((tmp_path / "spool" / "failed").iterdir())
    assert not list((tmp_path / "spool" / "pending").iterdir())


def test_a_listener_resumes_what_it_acknowledged(clf, radiographs, tmp_path):
    spool = tmp_path / "spool"
    down = _Gate(tmp_path / "results", fail="down")
    with Listener(clf, down, port=0, spool=spool) as listener:
        assert _send(listener.address, radiographs) == [0] * len(radiographs)
        time.sleep(0.5)
    # the PACS was down: everything acknowledged waits in the spool
    assert len(list((spool / "pending").iterdir())) == len(radiographs)
    with Listener(
        clf, FolderDestination(tmp_path / "results"), port=0, spool=spool
    ) as again:
        assert again.wait_idle(60)
    assert again.stats.resumed == len(radiographs)
    assert len(_reports(tmp_path / "results")) == len(radiographs)


def test_results_the_pacs_refuses_go_to_failed(clf, radiographs, tmp_path):
    spool = tmp_path / "spool"
    with Listener(
        clf, _Gate(tmp_path, fail="refuses"), port=0, spool=spool
    ) as listener:
        assert _send(listener.address, radiographs[:2]) == [0, 0]
        assert listener.wait_idle(60)
        assert _echo(listener.address) == 0  # still listening
    assert listener.stats.failed == 2
    reasons = sorted((spool / "failed").glob("*.txt"))
    assert len(reasons) == 2 and "refuses" in reasons[0].read_text()


def test_an_ae_title_allow_list(clf, tmp_path, radiographs):
    with Listener(
        clf,
        FolderDestination(tmp_path / "r"),
        port=0,
        spool=tmp_path / "s",
        allowed_ae_titles=["MODALITY"],
    ) as listener:
        assert _echo(listener.address) == 0
        assert _echo(listener.address, calling="INTRUDER") is None
        assert _send(listener.address, radiographs[:1], called="OTHER") is None


@pytest.mark.skipif(not Path("/usr/bin/openssl").exists(), reason="needs openssl")
def test_tls(clf, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
            "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    with Listener(
        clf,
        FolderDestination(tmp_path / "r"),
        port=0,
        spool=tmp_path / "s",
        ssl_context=server_tls_context(cert, key),
    ) as listener:
        assert (
            _echo(listener.address, tls_args=(client_tls_context(cert), "127.0.0.1"))
            == 0
        )
        assert _echo(listener.address) is None  # plain DICOM: refused
    with pytest.raises(FileNotFoundError, match="no such file"):
        server_tls_context(tmp_path / "missing.pem", key)
    assert isinstance(client_tls_context(cert), ssl.SSLContext)


def test_a_non_loopback_address_warns(clf, tmp_path):
    # 192.0.2.1 (TEST-NET-1) is on no machine: the warning comes before the
    # bind fails, and nothing is exposed
    listener = Listener(
        clf, FolderDestination(tmp_path / "r"), host="192.0.2.1", spool=tmp_path
    )
    with (
        pytest.warns(UserWarning, match="reachable from other machines"),
        pytest.raises(OSError),
    ):
        listener.start()
    listener.stop()


# ----------------------------------------------------------------- DICOMweb
class _FakeDicomweb:
    """A DICOMweb server in memory: one study, one DX series of ``instances``.

    ``page_cap``: the most results a QIDO-RS page holds (the server's own
    maximum, below the limit asked for); ``missing``: SOP Instance UIDs
    that WADO-RS answers 404 (deleted since the search)."""

    def __init__(self, instances, *, page_cap=None, missing=()):
        self.instances = {str(ds.SOPInstanceUID): ds for ds in instances}
        self.page_cap, self.missing = page_cap, set(missing)
        self.searches, self.stored = 0, []

    def _page(self, items, limit, offset):
        self.searches += 1
        return items[offset : offset + min(limit, self.page_cap or limit)]

    @staticmethod
    def _uid(tag, value):
        return {tag: {"vr": "UI", "Value": [value]}}

    def search_for_series(self, limit=None, offset=0, **_):
        series = {
            **self._uid("0020000E", "1.2.3.4"),
            "00080060": {"vr": "CS", "Value": ["DX"]},
        }
        return self._page([series], limit, offset)

    def search_for_instances(self, limit=None, offset=0, **_):
        found = [
            {**self._uid("00080018", uid), **self._uid("00080016", ds.SOPClassUID)}
            for uid, ds in self.instances.items()
        ]
        return self._page(found, limit, offset)

    def retrieve_instance(self, study, series, sop):
        import requests

        if sop in self.missing:
            response = requests.Response()
            response.status_code = 404
            raise requests.HTTPError(
                f"404 Client Error: Not Found for url: http://pacs/studies/{study}/"
                f"series/{series}/instances/{sop}",
                response=response,
            )
        return self.instances[sop]

    def store_instances(self, datasets):
        self.stored += [str(ds.SOPInstanceUID) for ds in datasets]
        return pydicom.Dataset()


@pytest.fixture(scope="module")
def one_study(sample_cxr) -> list:
    """Seven DX instances of one study and series."""
    return [
        image_to_dicom(
            sample_cxr.data[i * 50],
            study_instance_uid="1.2.3",
            series_instance_uid="1.2.3.4",
            study_date="20240131",
        )
        for i in range(7)
    ]


def test_dicomweb_reads_every_page_a_server_shortens(model, one_study):
    """A page shorter than the limit asked for is not the last one."""
    server = _FakeDicomweb(one_study, page_cap=3)
    results = process_dicomweb(
        model, "http://pacs", study_instance_uid="1.2.3", client=server, store=False
    )
    assert sorted(r.sop_instance_uid for r in results) == sorted(server.instances)
    assert all(r.error is None for r in results)
    # a server that ignores offset repeats its first page: that ends the search
    server._page = lambda items, limit, offset: items[:3]
    results = process_dicomweb(
        model, "http://pacs", study_instance_uid="1.2.3", client=server, store=False
    )
    assert len(results) == 3


def test_dicomweb_one_instance_failing_does_not_stop_the_rest(model, one_study):
    gone = str(one_study[4].SOPInstanceUID)
    server = _FakeDicomweb(one_study, missing=[gone])
    results = process_dicomweb(
        model, "http://pacs", study_instance_uid="1.2.3", client=server, batch_size=3
    )
    assert len(results) == len(one_study)
    failed = [r for r in results if r.error is not None]
    assert [r.sop_instance_uid for r in failed] == [gone]
    assert failed[0].error == "could not retrieve the instance (HTTP 404)"
    assert failed[0].finding is None and failed[0].stored == ()
    assert "1.2.3" not in failed[0].error  # the URL's identifiers stay out
    assert len(server.stored) == len(one_study) - 1
    assert all(
        r.finding is not None and r.stored for r in results if r is not failed[0]
    )


# ---------------------------------------------------------------------- CLI
def test_cli_listen_without_the_extra_names_it(monkeypatch, capsys, tmp_path):
    import cxrkit

    monkeypatch.setitem(sys.modules, "pynetdicom", None)
    for name in [m for m in sys.modules if m.startswith("cxrkit.pacs")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.delattr(cxrkit, "pacs", raising=False)
    code = main(["listen", str(tmp_path / "m.cxr"), "--results-dir", str(tmp_path)])
    assert code == 2
    assert 'pip install "cxrkit[pacs]"' in capsys.readouterr().err


def test_cli_pacs_needs_a_search_criterion(capsys, tmp_path):
    code = main(["pacs", str(tmp_path / "m.cxr"), "--url", "http://127.0.0.1:9"])
    assert code == 2
    assert "--date" in capsys.readouterr().err
