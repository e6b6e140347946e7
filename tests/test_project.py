"""Project-level facts: the public API, and CI running exactly the README's test command."""

import re
from pathlib import Path

import scoresde

ROOT = Path(__file__).resolve().parents[1]


def test_public_api():
    for name in ("VPSDE", "LinearSchedule", "CosineSchedule", "DiscreteSchedule", "GaussianMixture",
                 "ScoreModel", "EpsModel", "append_dims"):
        assert name in scoresde.__all__ and hasattr(scoresde, name)


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    test_cmds = [b for b in blocks if "pytest" in b]
    assert test_cmds, "README has no pytest command"
    pytest_part = test_cmds[0].split("&&")[-1].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(rf"^{re.escape(pytest_part)}$", ci, flags=re.M), (pytest_part, "not in .ci/run")


def test_ruff_lint_clean():
    """The tree passes the project's ruff configuration (pyproject.toml)."""
    import shutil
    import subprocess
    import sys

    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    done = subprocess.run([ruff, "check", "scoresde", "tests", "benchmarks", "--output-format", "concise"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
