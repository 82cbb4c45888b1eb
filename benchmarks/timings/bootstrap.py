"""Time the bootstrap of clinical_report: 2,000 resamples of 624 cases, one core.

Prints one JSON line. The target (issue 5) is under 2 s.
"""

import os

# One core: set before numpy loads its BLAS.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import json
import time

import numpy as np

from cxrkit.metrics import clinical_report


def main() -> None:
    rng = np.random.default_rng(0)
    y = np.array(["NORMAL"] * 234 + ["PNEUMONIA"] * 390)  # the Kermany test split
    p = np.clip(rng.normal(0.35 + 0.3 * (y == "PNEUMONIA"), 0.2), 0, 1)
    clinical_report(y, p, n_bootstrap=100)  # warm up imports
    times = []
    for _ in range(5):
        start = time.perf_counter()
        clinical_report(y, p, n_bootstrap=2000)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    clinical_report(y, p, n_bootstrap=0)
    point_only = time.perf_counter() - start
    print(
        json.dumps(
            {
                "benchmark": "clinical_report bootstrap",
                "n_cases": len(y),
                "n_bootstrap": 2000,
                "threads": 1,
                "seconds_median": round(float(np.median(times)), 3),
                "seconds_min": round(min(times), 3),
                "seconds_point_estimates_only": round(point_only, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
