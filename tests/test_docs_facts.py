"""One value per fact: figures that several pages quote live once in
``docs/facts/`` and are included there (``--8<--``); no page, the README, a
docstring or a help text states another value of them.

A *statement* of a fact is a sentence (or a table row) that names what the
fact is about and a value of the kind the fact has: minutes of the recipe,
a speed-up of ``reuse_large_buffers``, a figure of the official test split.
Every value such a statement gives must be one the fact file gives. The
benchmark pages (``docs/benchmarks/``) are left out: they hold the
measurements that the facts round.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FACTS = ROOT / "docs" / "facts"

_NUMBER = r"(\d+(?:\.\d+)?)"


def _numbers(text: str, pattern: str) -> set[float]:
    """The numbers that ``pattern``'s groups capture in ``text``."""
    found = set()
    for match in re.finditer(pattern, text):
        found |= {float(g) for g in match.groups() if g is not None}
    return found


#: (fact, what a statement of it mentions, what it must not mention (another
#: model's figures), the values it states); all case-blind
RULES: list[tuple[str, str, str, str]] = [
    # minutes and peak memory of a fit of the cpu recipe
    (
        "recipe-cost",
        r"\brecipe\b|5,216",
        r"lite0|efficientnet|frozen|vgg|simple_cnn|cnn4|128 px|cxrkit 0\.1|0\.1's"
        r"|reuse_large_buffers|reference",
        rf"{_NUMBER}\s*(?:to|\u2013|-)\s*{_NUMBER}\s*min(?:utes?)?\b"
        rf"|{_NUMBER}\s*min(?:utes?)?\b(?!-)"
        rf"|(?:peak|memory|RSS)[^.;|]{{0,30}}?{_NUMBER}\s*GB",
    ),
    # how much faster bfloat16 trains the cpu recipe
    ("recipe-cost", r"bf16|bfloat16", r"lite0|efficientnet", rf"{_NUMBER}x faster"),
    # cxrkit 0.1's recipe on the official Kermany test split
    (
        "test-split",
        r"^(?=.*\bofficial\b.*\btest\b)(?=.*(cxrkit|0\.1\b|recipe))",
        r"projects|published",  # other models' figures on the same split
        r"\b(0\.\d+)\b",
    ),
    # ONNX Runtime against torch
    ("onnx-speed", r"onnx ?runtime", r"^$", rf"{_NUMBER}(?:-{_NUMBER})?x\b"),
    # reuse_large_buffers against glibc's default
    (
        "allocator-speedup",
        r"reuse_large_buffers|CXRKIT_REUSE_BUFFERS",
        r"^$",
        rf"{_NUMBER}(?:-{_NUMBER})?x\b",
    ),
]
NAMES = sorted({rule[0] for rule in RULES})


def fact_values(name: str) -> set[float]:
    """Every value, of the kinds its rules look for, that the fact file states."""
    text = (FACTS / f"{name}.md").read_text()
    return set().union(*(_numbers(text, v) for n, _, _, v in RULES if n == name))


def _sentences(text: str) -> list[str]:
    """Paragraphs joined into lines, then split into sentences; every table
    row (and every line of a code block) is one sentence of its own."""
    pieces = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.splitlines()
        if any(line.lstrip().startswith(("|", "```", ">>>")) for line in lines):
            pieces += lines
        else:
            pieces += re.split(r"(?<=[.!?])\s+(?=[A-Z`*(])", " ".join(lines))
    return pieces


def _cli_help() -> str:
    import argparse

    from cxrkit.cli import _build_parser

    parser = _build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    texts = [parser.format_help()]
    for command in sub.choices.values():
        texts.append(
            "\n\n".join(f"{a.help}." for a in command._actions if a.help)
            + "\n\n"
            + (command.description or "")
        )
    return "\n\n".join(texts)


def sources() -> dict[str, str]:
    """What a user reads, by name: the README, the pages (not the benchmark
    pages nor the facts themselves), cxrkit's source, the CLI's help."""
    texts = {"README.md": (ROOT / "README.md").read_text()}
    for page in sorted((ROOT / "docs").rglob("*.md")):
        relative = page.relative_to(ROOT / "docs").parts[0]
        if relative not in ("facts", "benchmarks"):
            texts[str(page.relative_to(ROOT))] = page.read_text()
    for module in sorted((ROOT / "cxrkit").rglob("*.py")):
        texts[str(module.relative_to(ROOT))] = module.read_text()
    texts["cxrkit --help"] = _cli_help()
    return texts


def statement_problems(texts: dict[str, str]) -> list[str]:
    """Each statement of a fact whose value the fact file does not give."""
    problems = []
    for name, about, unless, values in RULES:
        allowed = fact_values(name)
        for where, text in texts.items():
            for sentence in _sentences(text):
                if not re.search(about, sentence, re.I) or re.search(
                    unless, sentence, re.I
                ):
                    continue
                stated = _numbers(sentence, values)
                wrong = sorted(stated - allowed)
                if wrong:
                    problems.append(
                        f"{where}: {name} states {wrong} (docs/facts/{name}.md "
                        f"has {sorted(allowed)}): {sentence.strip()[:160]}"
                    )
    return problems


@pytest.mark.parametrize("name", NAMES)
def test_every_fact_has_a_file_with_values_and_is_included(name):
    assert fact_values(name), f"docs/facts/{name}.md states no value"
    marker = f'--8<-- "docs/facts/{name}.md"'
    including = [
        page for page in (ROOT / "docs").rglob("*.md") if marker in page.read_text()
    ]
    assert including, f"no page includes docs/facts/{name}.md"


def test_no_page_states_another_value_of_a_fact():
    assert statement_problems(sources()) == []


@pytest.mark.parametrize(
    "text",
    [
        "The measured [training recipe](recipe.md) (about 15 minutes per 4,200 "
        "images on 2 CPU cores):",
        "A fit of the cpu recipe takes 13 to 35 minutes on two cores.",
        "All 5,216 images within 30 minutes on 2 CPU cores.",
        "| `cpu` recipe | 28 min | peak RSS 1.6 GB |",
        "cxrkit 0.1: threshold 0.084, specificity 0.60 on the official test split.",
        "With `reuse_large_buffers`, cnn4 ran 1.2-2x faster.",
        "ONNX Runtime was 2.4x as fast as torch.",
        'On AMX, precision="bf16" trains the recipe 1.89x faster.',
    ],
)
def test_a_second_value_of_a_fact_is_caught(text):
    assert statement_problems({"page.md": text})


def test_the_facts_themselves_agree():
    texts = {"page.md": "\n\n".join(p.read_text() for p in FACTS.glob("*.md"))}
    assert statement_problems(texts) == []
