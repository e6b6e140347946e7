"""The figures the README quotes come from one source, docs/benchmarks.md.

Every number in the README's Results table, on a row that cites the benchmarks (a link to
docs/benchmarks.md, or "same", "same run", "default run", "default run section" after one),
appears in docs/benchmarks.md as the same token: a README that rounds differently (9.25 for a
recorded 9.246) or keeps a figure the benchmarks no longer hold fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_NUMBER = re.compile(r"(?<![\w.,])\d+(?:,\d{3})*(?:\.\d+)?(?:e-?\d+)?(?![\w])")


def numbers(text: str) -> list[str]:
    return _NUMBER.findall(text)


def test_numbers_are_whole_tokens():
    assert numbers("9.246 (floor 5.526), 176,849 parameters, 3.1e-4, 0.99–1.17, x2, 1.2–4.8 %") == \
        ["9.246", "5.526", "176,849", "3.1e-4", "0.99", "1.17", "1.2", "4.8"]
    assert "9.25" not in numbers("9.246 and 9.257")


def test_readme_results_come_from_the_benchmarks():
    readme = (ROOT / "README.md").read_text()
    bench = set(numbers((ROOT / "docs/benchmarks.md").read_text()))
    table = readme.split("## Results", 1)[1].split("\n## ", 1)[0]
    cited, checked, missing = False, 0, []
    for row in table.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] in ("what", "---"):
            continue
        where = cells[2]
        cited = "docs/benchmarks.md" in where or (cited and where in ("same", "same run", "default run",
                                                                       "default run section"))
        if cited:
            checked += 1
            missing += [f"{cells[0][:40]}: {n}" for n in numbers(cells[1]) if n not in bench]
    assert checked >= 10 and not missing, missing
