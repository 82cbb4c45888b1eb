"""cxrkit listen against a real PACS: throughput and latency per instance; JSON.

    python benchmarks/timings/pacs.py  # both scenarios, 100 instances
    python benchmarks/timings/pacs.py --n 40 --scenarios sample --overlay

What runs, all on this machine (so the PACS, the sender and the listener
share its cores):

* Orthanc on loopback (``cxrkit.pacs.LocalOrthanc``; Debian's ``orthanc``)
  as the PACS the reports go to, by C-STORE;
* a ``cxrkit.pacs.Listener`` in this process, as ``cxrkit listen`` runs it
  (spool, bounded queue, model thread, sender thread);
* DCMTK's ``storescu`` as the modality, sending the ``--n`` instances over
  one association (with ``TCP_NODELAY=1``: without it DCMTK waits for
  delayed acknowledgements between instances).

Scenarios: ``sample``, the sample's 128 px images as DX instances read by a
simple CNN at 32 px (the tests' setting); ``fullres``, full-resolution
Kermany originals (``../shared/data/chest_xray_fullres``, 8-bit DX of
about 1,000 to 2,900 px) read by a cnn4 at 128 px. The models are trained
for one epoch: weights do not change the speed.

Reported per scenario, for ``--n`` instances sent at once (a burst):
``throughput_per_s`` (from the first byte storescu sends to the last report
stored in Orthanc), ``ack_per_s`` (storescu's own rate: how fast instances
are acknowledged, back-pressure included), and the latency from
acknowledgement to report stored (median, 95th percentile, max; in a
burst, mostly time waiting in the queue). ``one_at_a_time``: 10 instances,
each sent when the last was reported: the latency of one instance with no
queue, from acknowledgement and from storescu's start. Beside them, the
model's own time per image: ``predict_proba`` on one file (decoding
included, image cache cleared), on a batch of 16 files, and the time
highdicom takes to build one report, measured in a thread of their own as
the listener runs them (``OMP_NUM_THREADS`` sets their torch threads; on
a small, busy machine one thread is faster than several).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from cxrkit import PneumoniaClassifier, load_image_folder
from cxrkit.datasets import load_sample_cxr
from cxrkit.images import clear_image_cache, read_image
from cxrkit.pacs import (
    DicomNode,
    DimseDestination,
    Listener,
    LocalOrthanc,
    ReportingModel,
    image_to_dicom,
    structured_report,
)
from cxrkit.pacs._orthanc import find_dcmtk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import SHARED

#: DCMTK's storescu as the modality (not pynetdicom's script of that name)
STORESCU = find_dcmtk("storescu")

FULLRES = SHARED / "chest_xray_fullres"


def _ms(seconds: float) -> float:
    return round(1000 * seconds, 1)


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _write_instances(paths, folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        ds = image_to_dicom(paths[i % len(paths)], instance_number=i + 1)
        files.append(folder / f"{i:04d}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
    return files


def _model(scenario: str, X, y) -> PneumoniaClassifier:
    if scenario == "sample":
        params = {"model": "simple_cnn", "image_size": 32}
    else:
        params = {"model": "cnn4", "image_size": 128}
    return PneumoniaClassifier(
        **params, max_epochs=1, validation_fraction=None, random_state=0
    ).fit(X, y)


def _model_times(clf: PneumoniaClassifier, files: list[Path]) -> dict:
    paths = [str(f) for f in files[:32]]
    single = []
    for path in paths:
        clear_image_cache()
        start = time.perf_counter()
        clf.predict_proba([path])
        single.append(time.perf_counter() - start)
    clear_image_cache()
    start = time.perf_counter()
    clf.predict_proba(paths[:16])
    batch = (time.perf_counter() - start) / 16
    model = ReportingModel(clf)
    source = read_image(paths[0], size=clf.image_size)
    finding = model.assess(source[None])[0]
    import pydicom

    header = pydicom.dcmread(paths[0], stop_before_pixels=True)
    builds = []
    for _ in range(20):
        start = time.perf_counter()
        structured_report(header, finding, model.identity)
        builds.append(time.perf_counter() - start)
    clear_image_cache()
    return {
        "predict_proba_one_file_ms": _ms(statistics.median(single)),
        "predict_proba_batch16_ms_per_image": _ms(batch),
        "build_report_ms": _ms(statistics.median(builds)),
    }


def _in_thread(function, *args):
    """``function(*args)`` in a new thread, as the listener's model thread.

    torch's intra-op threads in a new thread follow ``OMP_NUM_THREADS``,
    not ``torch.set_num_threads`` of the main thread: timing the model in
    the main thread would time another configuration than the listener's.
    """
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("r", function(*args)))
    thread.start()
    thread.join()
    return result["r"]


def _run(clf, files, orthanc, folder: Path, *, overlay: bool) -> dict:
    destination = DimseDestination(orthanc.node, calling_ae_title="CXRKIT")
    with Listener(
        clf, destination, port=0, spool=folder / "spool", overlay=overlay
    ) as listener:
        host, port = listener.address
        command = [STORESCU, "-aec", "CXRKIT", host, str(port)]
        start = time.perf_counter()
        sent = subprocess.run(
            [*command, *map(str, files)],
            capture_output=True,
            text=True,
            env={**os.environ, "TCP_NODELAY": "1"},
        )
        acknowledged = time.perf_counter() - start
        if sent.returncode != 0:
            raise RuntimeError(f"storescu failed: {sent.stderr[-2000:]}")
        if not listener.wait_idle(1800):
            raise RuntimeError("the listener did not finish within 30 minutes")
        total = time.perf_counter() - start
        stats = listener.stats
    latency = list(stats.latency_s)
    n = len(files)
    return {
        "instances": n,
        "reported": stats.reported,
        "refused": stats.refused,
        "failed": stats.failed,
        "overlay": overlay,
        "throughput_per_s": round(n / total, 2),
        "seconds": round(total, 2),
        "ack_per_s": round(n / acknowledged, 2),
        "latency_ms": {
            "p50": _ms(statistics.median(latency)),
            "p95": _ms(_percentile(latency, 95)),
            "max": _ms(max(latency)),
        },
        "results_in_orthanc": orthanc.get("/statistics")["CountInstances"],
    }


def _one_at_a_time(clf, files, orthanc, folder: Path, *, n: int = 10) -> dict:
    """Latency without a queue: each instance sent when the last is reported."""
    destination = DimseDestination(orthanc.node, calling_ae_title="CXRKIT")
    end_to_end = []
    with Listener(clf, destination, port=0, spool=folder / "spool") as listener:
        host, port = listener.address
        for k, path in enumerate(files[:n]):
            start = time.perf_counter()
            subprocess.run(
                [STORESCU, "-aec", "CXRKIT", host, str(port), str(path)],
                capture_output=True,
                check=True,
                env={**os.environ, "TCP_NODELAY": "1"},
            )
            while listener.stats.reported <= k:
                time.sleep(0.001)
            end_to_end.append(time.perf_counter() - start)
        latency = list(listener.stats.latency_s)
    return {
        "instances": n,
        "ack_to_stored_ms_p50": _ms(statistics.median(latency)),
        "storescu_start_to_stored_ms_p50": _ms(statistics.median(end_to_end)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100, help="instances per run")
    scenarios = ["sample", "fullres"]
    parser.add_argument("--scenarios", nargs="+", default=scenarios, choices=scenarios)
    parser.add_argument(
        "--overlay", action="store_true", help="also a run with heatmap captures"
    )
    args = parser.parse_args(argv)
    if STORESCU is None:
        raise SystemExit(
            "needs DCMTK's storescu (pynetdicom's script of that name has other "
            "options): apt-get install dcmtk"
        )
    out: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "torch": torch.__version__,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
        },
        "scenarios": {},
    }
    sample = load_sample_cxr()
    with tempfile.TemporaryDirectory(prefix="cxrkit-bench-pacs-") as tmp:
        tmp = Path(tmp)
        for scenario in args.scenarios:
            if scenario == "sample":
                X, y = sample.data, sample.target
                train = (X[::15], y[::15])
            else:
                if not FULLRES.exists():
                    out["scenarios"][scenario] = f"skipped: {FULLRES} not found"
                    continue
                X, y = load_image_folder(FULLRES / "train")
                train = (sample.data[::15], sample.target[::15])
            clf = _model(scenario, *train)
            files = _write_instances(X, tmp / scenario / "dx", args.n)
            sizes = [read_image(files[i]).shape for i in range(min(len(files), 20))]
            result = {
                "model": f"{clf.model} at {clf.image_size} px",
                "instance_pixels_median": int(np.median([h * w for h, w in sizes])),
                "model_alone": _in_thread(_model_times, clf, files),
                "runs": [],
            }
            with LocalOrthanc(
                {"cxrkit": DicomNode("CXRKIT", "127.0.0.1", 104)},
                folder=tmp / scenario / "orthanc-single",
            ) as orthanc:
                result["one_at_a_time"] = _one_at_a_time(
                    clf, files, orthanc, tmp / scenario / "single"
                )
            for overlay in (False, True) if args.overlay else (False,):
                with LocalOrthanc(
                    {"cxrkit": DicomNode("CXRKIT", "127.0.0.1", 104)},
                    folder=tmp / scenario / f"orthanc{overlay}",
                ) as orthanc:
                    result["runs"].append(
                        _run(
                            clf,
                            files,
                            orthanc,
                            tmp / scenario / f"run{overlay}",
                            overlay=overlay,
                        )
                    )
            out["scenarios"][scenario] = result
    out["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
