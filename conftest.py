"""pytest at the repository root: the fenced bash and python blocks of README.md and docs/*.md are
tests too (collected by Sybil: tests/docs_blocks.py; docs/testing.md, "Documentation tested as code")."""

from tests.docs_blocks import docs_digits_run, docs_stand_ins, docs_workdir, pytest_collect_file  # noqa: F401
