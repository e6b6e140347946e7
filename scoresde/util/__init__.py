"""Base layer: argument checks, choice names, atomic writes, progress bars, device-following random draws.
Nothing here imports from the rest of the package (docs/architecture.md)."""
