"""Core layer: the SDEs and their schedules, models and exact oracles, the probability-flow solver,
bits/dim scaling and the denoising score-matching loss (docs/architecture.md)."""
