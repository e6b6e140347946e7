"""Data layer: the data-set table, file readers, toy 2-D sets and the loader (docs/architecture.md)."""
