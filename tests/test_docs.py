"""Every Markdown file that code, docs, notebooks or configs name exists in the repository.

A reference is any file name or path ending in the Markdown suffix, in a ``.py``, Markdown, ``.ipynb``, ``.yaml``
or ``.yml`` file (URLs aside); it must resolve relative to the referring file or to the
repository root.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MD = "." + "md"  # spelled in two parts: this file names no Markdown file
SUFFIXES = {".py", MD, ".ipynb", ".yaml", ".yml"}
SKIP_DIRS = {".git", ".venv", "venv", "runs", "data", "build", "dist", "node_modules", "__pycache__"}
_URL = re.compile(r"[a-z]+://\S+")
_REF = re.compile(r"(?<![\w/.-])((?:\.{0,2}/)?(?:[\w.-]+/)*[\w-][\w.-]*" + re.escape(MD) + r")(?![\w])")


def _files():
    """The repository's files: tracked and untracked-but-not-ignored (``git ls-files``), so virtual
    environments and run folders inside the checkout are never read; outside git, a walk that skips
    hidden folders, ``SKIP_DIRS`` and ``site-packages``."""
    try:
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout.splitlines()
        paths = [ROOT / p for p in listed]
    except (OSError, subprocess.CalledProcessError):
        paths = [p for p in ROOT.rglob("*")
                 if not any(part.startswith(".") or part in SKIP_DIRS or part == "site-packages"
                            or part.endswith(".egg-info") for part in p.relative_to(ROOT).parts[:-1])]
    for path in sorted(paths):
        if path.suffix in SUFFIXES and path.is_file():
            yield path


def missing_references(text: str, where: Path) -> list[str]:
    """The Markdown names in ``text`` that resolve neither beside ``where`` nor at the root."""
    missing = []
    for ref in _REF.findall(_URL.sub(" ", text)):
        if not ((where.parent / ref).is_file() or (ROOT / ref).is_file()):
            missing.append(ref)
    return missing


def test_the_checker_finds_a_missing_file_and_accepts_existing_ones():
    here = ROOT / "docs" / ("x" + MD)
    ghost = "NOTES" + MD
    assert missing_references(f"see {ghost} and docs/{ghost}, `a/{ghost}`", here) == \
        [ghost, f"docs/{ghost}", f"a/{ghost}"]
    assert missing_references("see math.md, docs/math.md, README.md and ../README.md", here) == []
    assert missing_references("https://github.com/x/y/blob/main/" + ghost, here) == []


def test_every_referenced_markdown_file_exists():
    me = Path(__file__).resolve()
    bad = [f"{path.relative_to(ROOT)}: {ref}" for path in _files() if path != me
           for ref in missing_references(path.read_text(errors="replace"), path)]
    assert not bad, "references to Markdown files that are not in the repository:\n" + "\n".join(bad)
