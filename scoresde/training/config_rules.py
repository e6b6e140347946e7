"""Value checks of the training config: choices, ranges, consistency between sections, and the
keys that define the model (a checkpoint must agree with the config on them).

Every problem raises one ``ValueError`` naming the key, what was expected and what was given.
"""

from __future__ import annotations

import dataclasses
import math

from scoresde.data.table import DATASET_NAMES, dataset_info
from scoresde.util import choices

__all__ = ["validate", "model_keys", "RESUMABLE_KEYS", "run_identity_diff", "MAX_INTEGRATED_BETA"]

_CHOICES = {
    "data.name": DATASET_NAMES,
    "sde.kind": choices.SDE_KINDS,
    "sde.schedule": choices.SCHEDULES,
    "model.kind": choices.MODEL_KINDS,
    "model.base": choices.MODEL_BASES,
    "loss.weighting": choices.WEIGHTINGS,
    "loss.time_sampling": choices.TIME_SAMPLINGS,
    "eval.bpd_trace": choices.TRACES,
    "sample.sampler": choices.SAMPLERS,
    "train.compile_mode": choices.COMPILE_MODES,
}

# (key, test, what was expected); a None value passes (Optional keys).
_RANGES = [
    ("seed", lambda v: 0 <= v < 2**32, "an integer in [0, 2**32)"),
    ("data.n", lambda v: v >= 1, "an integer ≥ 1 or null"),
    ("data.shape", lambda v: len(v) in (1, 3) and all(d >= 1 for d in v), "[D] or [C, H, W], all ≥ 1"),
    ("sde.beta_min", lambda v: v > 0, "a number > 0"),
    ("sde.beta_max", lambda v: v > 0, "a number > 0"),
    ("sde.n_steps", lambda v: v >= 1, "an integer ≥ 1"),
    ("sde.cosine_s", lambda v: v > 0, "a number > 0"),
    ("sde.sigma_min", lambda v: 0 < v < float("inf"), "a finite number > 0"),
    ("sde.sigma_max", lambda v: 0 < v < float("inf"), "a finite number > 0"),
    ("model.dropout", lambda v: 0 <= v < 1, "a number in [0, 1)"),
    ("model.hidden", lambda v: v >= 1, "an integer ≥ 1"),
    ("model.depth", lambda v: v >= 1, "an integer ≥ 1"),
    ("model.time_dim", lambda v: v >= 2 and v % 2 == 0, "an even integer ≥ 2"),
    ("model.channels", lambda v: v >= 1, "an integer ≥ 1"),
    ("model.channel_mult", lambda v: len(v) >= 1 and all(m >= 1 for m in v),
     "a non-empty list of integers ≥ 1"),
    ("model.num_res_blocks", lambda v: v >= 1, "an integer ≥ 1"),
    ("model.attn_resolutions", lambda v: all(r >= 1 for r in v), "a list of integers ≥ 1"),
    ("model.num_heads", lambda v: v >= 1, "an integer ≥ 1"),
    ("model.norm_groups", lambda v: v >= 1, "an integer ≥ 1 or null"),
    ("model.num_classes", lambda v: v >= 0, "an integer ≥ 0 (0: unconditional)"),
    ("train.label_dropout", lambda v: 0 <= v < 1, "a number in [0, 1) or null"),
    ("loss.t_eps", lambda v: 0 < v < 1, "a number in (0, 1) or null"),
    ("train.steps", lambda v: v >= 1, "an integer ≥ 1"),
    ("train.batch_size", lambda v: v >= 1, "an integer ≥ 1"),
    ("train.grad_accum", lambda v: v >= 1, "an integer ≥ 1"),
    ("train.lr", lambda v: 0 < v < 1, "a number in (0, 1)"),
    ("train.weight_decay", lambda v: v >= 0, "a number ≥ 0"),
    ("train.warmup_steps", lambda v: v >= 0, "an integer ≥ 0"),
    ("train.grad_clip", lambda v: v >= 0, "a number ≥ 0 (0: no clipping)"),
    ("train.ema_decay", lambda v: 0 <= v < 1, "a number in [0, 1)"),
    ("train.log_every", lambda v: v >= 1, "an integer ≥ 1"),
    ("train.ckpt_every", lambda v: v >= 1, "an integer ≥ 1"),
    ("train.keep_last", lambda v: v >= 1, "an integer ≥ 1"),
    ("train.max_bad_steps", lambda v: v >= 0, "an integer ≥ 0"),
    ("train.threads", lambda v: v >= 1, "an integer ≥ 1 or null"),
    ("sample.steps", lambda v: v >= 1, "an integer ≥ 1"),
    ("sample.n", lambda v: v >= 0, "an integer ≥ 0"),
    ("eval.bpd_n", lambda v: v >= 0, "an integer ≥ 0"),
    ("eval.bpd_probes", lambda v: v >= 1, "an integer ≥ 1"),
    ("eval.vlb_terms", lambda v: v >= 1, "an integer ≥ 1 or null"),
    ("eval.ode_sigma", lambda v: 0 < v < 1, "a number in (0, 1) or null"),
    ("eval.vlb_sigma", lambda v: 0 < v < 1, "a number in (0, 1) or null"),
    ("eval.vlb_steps", lambda v: v >= 1, "an integer ≥ 1"),
    ("eval.batch_size", lambda v: v >= 1, "an integer ≥ 1"),
    ("eval.rtol", lambda v: 0 < v < float("inf"), "a finite number > 0"),
    ("eval.atol", lambda v: 0 < v < float("inf"), "a finite number > 0"),
]


def _get(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


# The largest integrated rate B(1) = (beta_min + beta_max)/2 of the linear and ddpm schedules:
# alpha(1)^2 = e^(-B(1)) must stay a normal float32 (e^-87 is the smallest); past B(1) ≈ 100 the
# samplers return NaN.
MAX_INTEGRATED_BETA = 80.0


def _non_finite(cfg, cls=None, prefix: str = ""):
    """The first float key holding inf or NaN, as ``(key, value)``; ``None`` if all are finite."""
    for f in dataclasses.fields(cls or cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            found = _non_finite(value, type(value), prefix + f.name + ".")
            if found:
                return found
        elif isinstance(value, float) and not math.isfinite(value):
            return prefix + f.name, value
    return None


def validate(cfg) -> None:
    """Ranges and choices; fills ``data.shape`` with the data set's shape when it is null."""
    bad = _non_finite(cfg)
    if bad is not None:
        raise ValueError(f"config key {bad[0]!r}: expected a finite number, got {bad[1]!r}")
    for key, allowed in _CHOICES.items():
        if _get(cfg, key) not in allowed:
            raise ValueError(f"config key {key!r}: expected one of {', '.join(allowed)}, "
                             f"got {_get(cfg, key)!r}")
    if not (cfg.device in ("auto", "cpu", "cuda") or
            (cfg.device.startswith("cuda:") and cfg.device[5:].isdigit())):
        raise ValueError(f"config key 'device': expected auto, cpu, cuda or cuda:K, got {cfg.device!r}")
    for key, ok, expected in _RANGES:
        value = _get(cfg, key)
        if value is not None and not ok(value):
            raise ValueError(f"config key {key!r}: expected {expected}, got {value!r}")
    if cfg.sde.beta_max < cfg.sde.beta_min:
        raise ValueError(f"config key 'sde.beta_max': expected ≥ sde.beta_min={cfg.sde.beta_min}, "
                         f"got {cfg.sde.beta_max}")
    schedules = choices.VE_SCHEDULES if cfg.sde.kind == "ve" else choices.VP_SCHEDULES
    if cfg.sde.schedule not in schedules:
        raise ValueError(f"config key 'sde.schedule': expected one of {', '.join(schedules)} for "
                         f"sde.kind={cfg.sde.kind}, got {cfg.sde.schedule!r}")
    if cfg.sde.kind == "ve" and cfg.sde.sigma_max <= cfg.sde.sigma_min:
        raise ValueError(f"config key 'sde.sigma_max': expected > sde.sigma_min={cfg.sde.sigma_min}, "
                         f"got {cfg.sde.sigma_max}")
    vp_like = cfg.sde.kind != "ve"
    if vp_like and cfg.sde.schedule in ("linear", "ddpm") and \
            (cfg.sde.beta_min + cfg.sde.beta_max) / 2 > MAX_INTEGRATED_BETA:
        raise ValueError(f"config key 'sde.beta_max': expected (sde.beta_min + sde.beta_max)/2 ≤ "
                         f"{MAX_INTEGRATED_BETA:g} (the integrated rate B(1); beyond it alpha(1)^2 = e^-B(1) "
                         f"underflows float32 and samples are NaN), got {cfg.sde.beta_max!r}")
    if vp_like and cfg.sde.schedule == "ddpm" and cfg.sde.beta_max / cfg.sde.n_steps >= 1:
        raise ValueError(f"config key 'sde.beta_max': the ddpm schedule's largest beta_i = sde.beta_max / "
                         f"sde.n_steps must be < 1, got {cfg.sde.beta_max!r} / {cfg.sde.n_steps}")
    shape = dataset_info(cfg.data.name).shape
    if cfg.data.shape is None:
        cfg.data.shape = list(shape)
    if (len(cfg.data.shape) == 1) != (len(shape) == 1):
        raise ValueError(f"config key 'data.shape': expected {len(shape)} "
                         f"entries for data set {cfg.data.name!r}, got {cfg.data.shape}")
    if len(cfg.data.shape) == 3 and cfg.model.kind == "unet":
        factor = 2 ** (len(cfg.model.channel_mult) - 1)
        if cfg.data.shape[1] % factor or cfg.data.shape[2] % factor:
            raise ValueError(f"config key 'model.channel_mult': {len(cfg.model.channel_mult)} levels "
                             f"downsample by {factor}, expected a factor dividing the image size "
                             f"{cfg.data.shape[1]}x{cfg.data.shape[2]}")
    classes = dataset_info(cfg.data.name).classes
    if cfg.model.num_classes and classes is None:
        raise ValueError(f"config key 'model.num_classes': data set {cfg.data.name!r} has no class labels, "
                         f"expected 0 (unconditional), got {cfg.model.num_classes}")
    if cfg.model.num_classes and cfg.model.num_classes != classes:
        raise ValueError(f"config key 'model.num_classes': data set {cfg.data.name!r} has {classes} classes, "
                         f"expected 0 (unconditional) or {classes}, got {cfg.model.num_classes}")
    if cfg.train.label_dropout is not None and not cfg.model.num_classes:
        raise ValueError(f"config key 'train.label_dropout': expected null for an unconditional model "
                         f"(model.num_classes=0), got {cfg.train.label_dropout!r}")
    if len(cfg.data.shape) == 1 and cfg.model.kind != "mlp":
        raise ValueError(f"config key 'model.kind': expected mlp for vector data "
                         f"{cfg.data.name!r}, got {cfg.model.kind!r}")


_RELEVANT = {
    "mlp": ("kind", "base", "dropout", "hidden", "depth", "time_dim"),
    "unet": ("kind", "base", "dropout", "channels", "channel_mult", "num_res_blocks", "attn_resolutions",
             "num_heads", "norm_groups"),
    "linear": ("schedule", "beta_min", "beta_max"),
    "ddpm": ("schedule", "beta_min", "beta_max", "n_steps"),
    "cosine": ("schedule", "cosine_s"),
    "ve linear": ("schedule", "sigma_min", "sigma_max"),
    "ve smld": ("schedule", "sigma_min", "sigma_max", "n_steps"),
}


def model_keys(cfg) -> dict:
    """The flattened keys that change the network or the SDE (``model.*``, ``sde.*``, ``data.shape``;
    ``model.num_classes`` when it is not 0)."""
    d = dataclasses.asdict(cfg)
    flat = {f"model.{k}": d["model"][k] for k in _RELEVANT[cfg.model.kind]}
    if cfg.model.num_classes:
        flat["model.num_classes"] = cfg.model.num_classes
    sde_key = f"ve {cfg.sde.schedule}" if cfg.sde.kind == "ve" else cfg.sde.schedule
    flat.update({f"sde.{k}": d["sde"][k] for k in ("kind",) + _RELEVANT[sde_key]})
    flat["data.shape"] = d["data"]["shape"]
    return flat


# Keys that may change when a run is resumed (where files are, how long, how often to log and
# save, how many threads/processes, what to sample and evaluate at the end). Every other key
# (seed, data, SDE, model, loss, optimizer, EMA) is the run's identity: a config that differs
# from the run folder's on one of them is refused.
RESUMABLE_KEYS = ("device", "data.root", "train.steps", "train.batch_size", "train.grad_accum",
                  "train.log_every", "train.ckpt_every", "train.keep_last", "train.max_bad_steps",
                  "train.amp", "train.compile", "train.compile_mode", "train.fused",
                  "train.channels_last", "train.tensorboard", "train.threads", "sample.*", "eval.*")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _resumable(key: str) -> bool:
    return any(key == r or (r.endswith(".*") and key.startswith(r[:-1])) for r in RESUMABLE_KEYS)


def run_identity_diff(old, new) -> list[tuple[str, object, object]]:
    """``(key, old value, new value)`` for each key outside :data:`RESUMABLE_KEYS` that differs."""
    a, b = _flat(dataclasses.asdict(old)), _flat(dataclasses.asdict(new))
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if not _resumable(k) and a.get(k) != b.get(k)]
