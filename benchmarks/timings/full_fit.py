"""Fit a named recipe on every image of a folder; print fit time and peak RSS as JSON.

    python benchmarks/timings/full_fit.py --train chest_xray/train \
        [--recipe efficientnet_lite0_frozen] [--set preprocess='"equalize"'] \
        [--save model.cxrkit]

The budget check of a recipe: all 5,216 Kermany training images on 2 CPU
cores (by default the recommended recipe, ``cxrkit.recipes.RECOMMENDED``). Run it on a
quiet machine (``uptime`` before and after is printed too): on shared cores
the time measures the neighbours as much as the recipe.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from cxrkit import load_image_folder
from cxrkit.recipes import RECIPES, RECOMMENDED, make_classifier

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import peak_rss_mb


def param_override(text: str) -> tuple[str, Any]:
    """``--set`` item ``PARAM=JSON`` as ``(PARAM, value)``; argparse's ``type``.

    >>> param_override('precision="bf16"')
    ('precision', 'bf16')
    """
    key, sep, value = text.partition("=")
    try:
        if not (key and sep):
            raise ValueError
        return key, json.loads(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not PARAM=JSON; quote strings as JSON, e.g. "
            "precision='\"bf16\"' or augment=null"
        ) from None


def cpu_features() -> dict:
    """What decides CPU training speed here: torch's ATen kernels and bf16 support.

    bfloat16 autocast (``precision="bf16"``) pays on CPUs with AMX tiles and
    not on those with AVX-512 BF16 alone (docs page *Training*); torch's own
    checks say which this one has (private helpers, for the record only).
    """
    return {
        "capability": torch.backends.cpu.get_cpu_capability(),
        "avx512_bf16": torch.cpu._is_avx512_bf16_supported(),
        "amx_tile": torch.cpu._is_amx_tile_supported(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True)
    parser.add_argument("--recipe", default=RECOMMENDED, choices=sorted(RECIPES))
    parser.add_argument(
        "--set", nargs="*", default=[], type=param_override, metavar="PARAM=JSON"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", help="write the fitted model here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = dict(args.set)
    load_before = os.getloadavg()
    paths, y = load_image_folder(args.train)
    clf = make_classifier(
        args.recipe, random_state=args.seed, device="cpu", verbose=0, **overrides
    )
    start = time.perf_counter()
    clf.fit(paths, y)
    fit_s = time.perf_counter() - start
    if args.save:
        clf.save(args.save)
    print(
        json.dumps(
            {
                "recipe": args.recipe,
                "overrides": overrides,
                "n_images": len(paths),
                "n_per_class": {str(c): int((y == c).sum()) for c in set(y)},
                "fit_s": round(fit_s, 1),
                "peak_rss_mb": round(peak_rss_mb()),
                "threads": args.threads,
                "loadavg_before": load_before,
                "loadavg_after": os.getloadavg(),
                "torch": torch.__version__,
                "cpu": cpu_features(),
            }
        )
    )


if __name__ == "__main__":
    main()
