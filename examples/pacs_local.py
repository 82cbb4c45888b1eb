"""cxrkit as a DICOM node, tried end to end on this machine with a real PACS.

    python examples/pacs_local.py                    # 4 sample radiographs
    python examples/pacs_local.py --model-file model.cxr --n 20
    python examples/pacs_local.py --screenshot docs/images   # the guide's images

Needs ``pip install "cxrkit[pacs]"`` and Orthanc with its DICOMweb plugin
(``apt-get install orthanc orthanc-dicomweb``). It starts a throwaway Orthanc
on loopback, a listener that sends its reports to it, sends sample
radiographs to the listener as a modality would, and reads the reports back
from Orthanc over DICOMweb. ``--keep-running`` leaves both up to look at
Orthanc's web interface; ``--screenshot DIR`` saves pictures of it with
headless Chromium. The sections between ``--8<--`` marks are shown in the
user guide ("PACS integration").
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from PIL import Image

from cxrkit import PneumoniaClassifier
from cxrkit.datasets import load_sample_cxr


def _model(model_file: str | None) -> str:
    """A model file: the one given, or a small CNN trained on half the sample
    (the even-numbered images; the radiographs sent are odd-numbered)."""
    if model_file:
        return model_file
    sample = load_sample_cxr()
    clf = PneumoniaClassifier(
        model="cnn4", image_size=64, max_epochs=8, random_state=0
    ).fit(sample.data[::2], sample.target[::2])
    return str(clf.save(Path(tempfile.mkdtemp()) / "model.cxr", threshold=0.5))


def _screenshot(url: str, out: Path, size: str = "1200,800") -> None:
    for browser in ("chromium", "chromium-browser", "google-chrome"):
        try:
            subprocess.run(
                [
                    browser,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--hide-scrollbars",
                    f"--window-size={size}",
                    "--virtual-time-budget=5000",
                    f"--screenshot={out}",
                    url,
                ],
                check=True,
                capture_output=True,
                timeout=120,
            )
        except FileNotFoundError:
            continue
        # a page of text and flat colours: a palette keeps the file small
        image = Image.open(out).convert("RGB").quantize(colors=64)
        image.save(out, optimize=True)
        return
    raise SystemExit("--screenshot needs Chromium (apt-get install chromium)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-file", help="a model file (default: train one)")
    parser.add_argument("--n", type=int, default=4, help="radiographs to send")
    parser.add_argument("--screenshot", metavar="DIR", help="save pictures here")
    parser.add_argument("--keep-running", action="store_true")
    args = parser.parse_args()
    model_file = _model(args.model_file)
    folder = Path(tempfile.mkdtemp(prefix="cxrkit-pacs-example-"))

    # --8<-- [start:orthanc]
    from cxrkit.pacs import DicomNode, LocalOrthanc

    # A PACS on loopback; it accepts C-STOREs from the AE titles it knows.
    known = {
        "cxrkit": DicomNode("CXRKIT", "127.0.0.1", 11112),
        "modality": DicomNode("MODALITY", "127.0.0.1", 104),
    }
    orthanc = LocalOrthanc(known).start()
    print(f"Orthanc: {orthanc.http_url}/app/explorer.html")
    # --8<-- [end:orthanc]

    # --8<-- [start:listener]
    from cxrkit.pacs import DimseDestination, Listener

    listener = Listener(
        model_file,
        DimseDestination(orthanc.node, calling_ae_title="CXRKIT"),
        ae_title="CXRKIT",
        port=0,  # any free port; the CLI's default is 11112
        spool=folder / "spool",
        overlay=True,  # a heatmap capture too
    ).start()
    host, port = listener.address
    # --8<-- [end:listener]

    # --8<-- [start:send]
    from pydicom.uid import generate_uid
    from pynetdicom import AE

    from cxrkit.pacs import image_to_dicom

    sample = load_sample_cxr()
    study, series = generate_uid(), generate_uid()
    held_out = sample.data[1::2]  # not trained on; both classes
    radiographs = [
        image_to_dicom(
            path,
            study_instance_uid=study,
            series_instance_uid=series,
            instance_number=k + 1,
        )
        for k, path in enumerate(held_out[:: len(held_out) // args.n][: args.n])
    ]
    modality = AE("MODALITY")  # what storescu does; see the guide
    modality.add_requested_context(radiographs[0].SOPClassUID)
    for destination in (orthanc.node, DicomNode("CXRKIT", host, port)):
        assoc = modality.associate(
            destination.host, destination.port, ae_title=destination.ae_title
        )
        for ds in radiographs:
            status = assoc.send_c_store(ds)
            print(f"C-STORE to {destination.ae_title}: 0x{status.Status:04X}")
        assoc.release()
    listener.wait_idle(120)
    # --8<-- [end:send]

    # --8<-- [start:read]
    from dicomweb_client import DICOMwebClient

    from cxrkit.pacs import read_report

    client = DICOMwebClient(orthanc.dicomweb_url)
    for series in client.search_for_series(study, search_filters={"Modality": "SR"}):
        series_uid = series["0020000E"]["Value"][0]
        for found in client.search_for_instances(study, series_uid):
            sop = found["00080018"]["Value"][0]
            report = read_report(client.retrieve_instance(study, series_uid, sop))
            print(
                f"{report['label']:>10}  P({report['probability_of']}) = "
                f"{report['probability']:.3f}  threshold {report['threshold']}  "
                f"source ...{report['source_sop_instance_uid'][-8:]}"
            )
    # --8<-- [end:read]

    if args.screenshot:
        out = Path(args.screenshot)
        out.mkdir(parents=True, exist_ok=True)
        explorer = f"{orthanc.http_url}/app/explorer.html"
        studies = orthanc.get("/studies")
        _screenshot(
            f"{explorer}#study?uuid={studies[0]}", out / "orthanc_study.png", "1200,740"
        )
        reports = orthanc.post(
            "/tools/find", {"Level": "Instance", "Query": {"Modality": "SR"}}
        )
        _screenshot(
            f"{explorer}#instance?uuid={reports[0]}",
            out / "orthanc_report.png",
            "1200,1000",
        )
        if shutil.which("dsr2html"):  # DCMTK renders the report as a document
            html = folder / "report.html"
            (folder / "report.dcm").write_bytes(
                orthanc.get(f"/instances/{reports[0]}/file")
            )
            with open(html, "wb") as fh:
                command = ["dsr2html", folder / "report.dcm"]
                subprocess.run(command, stdout=fh, check=True)
            _screenshot(html.as_uri(), out / "pacs_report_dsr2html.png", "900,900")
        captures = orthanc.post(
            "/tools/find", {"Level": "Instance", "Query": {"Modality": "OT"}}
        )
        (out / "orthanc_heatmap.png").write_bytes(
            orthanc.get(f"/instances/{captures[0]}/preview")
        )
        print(f"screenshots in {out}")
    if args.keep_running:
        print("Ctrl-C stops Orthanc and the listener")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    listener.stop()
    orthanc.stop()


if __name__ == "__main__":
    main()
