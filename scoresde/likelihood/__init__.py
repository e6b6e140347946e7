"""Likelihood layer: probability-flow log-likelihood and bits/dim, the DDPM variational bound, the
classical baseline; estimators import neither samplers nor the data loader (docs/architecture.md)."""
