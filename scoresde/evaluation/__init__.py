"""Evaluation layer: the one likelihood-evaluation path, sample metrics, pictures and the run report
(docs/architecture.md)."""
