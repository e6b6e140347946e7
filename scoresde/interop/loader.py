"""diffusers folders and objects read and checked into a :class:`~scoresde.interop.adapter.DiffusersModel`.

:func:`load_diffusers` turns a local diffusers folder, or in-memory ``UNet2DModel`` and
scheduler objects, into the adapter. The SDE is the exact discrete VP-SDE of the scheduler's own
``betas`` (whatever ``beta_schedule`` or ``trained_betas`` built them): ``VPSDE(DiscreteSchedule(betas))``.

What cannot work is refused with one ``ValueError`` naming what was found: a conditional
UNet (``UNet2DConditionModel``; class embeddings other than integer labels), a latent-diffusion pipeline (``vae``/
``vqvae``: the UNet models latents, not images), a scheduler without a VP ``betas`` schedule
(VE/EDM sigma schedules, zero terminal SNR), missing files.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from scoresde.core.schedules import DiscreteSchedule
from scoresde.core.sde import VPSDE
from scoresde.interop.adapter import PREDICTION_TYPES, DiffusersModel
from scoresde.training.bounds import check_scheduler_config, check_unet_config

__all__ = ["load_diffusers", "is_diffusers_folder", "diffusers_module", "NULL_CLASS_KEY"]

NULL_CLASS_KEY = "scoresde_null_class"  # unet/config.json: the class-embedding row of the null label
_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
_LATENT_PARTS = ("vae", "vqvae", "text_encoder")
_SAMPLING_ONLY = ("timestep_spacing", "steps_offset", "clip_sample", "thresholding", "use_karras_sigmas",
                  "set_alpha_to_one", "variance_type")  # scheduler options that do not change the model


def diffusers_module():
    try:
        import diffusers  # optional dependency, imported only when used
    except ImportError:
        raise ValueError("loading a diffusers model needs the diffusers package: "
                         "pip install 'scoresde[diffusers]'") from None
    return diffusers


# --- checks ---------------------------------------------------------------------------------

def _check_unet(unet, where: str) -> None:
    name = type(unet).__name__
    d = diffusers_module()
    if isinstance(unet, getattr(d, "UNet2DConditionModel", ())) or name == "UNet2DConditionModel":
        raise ValueError(f"{where}: found a conditional UNet ({name}, cross-attention on text or other "
                         f"embeddings): expected an unconditional UNet2DModel")
    if not isinstance(unet, d.UNet2DModel):
        raise ValueError(f"{where}: found {name}: expected a diffusers UNet2DModel")
    cfg = unet.config
    kind, n = cfg.get("class_embed_type"), cfg.get("num_class_embeds")
    if kind not in (None, "timestep") or (kind == "timestep" and n is None):
        raise ValueError(f"{where}: UNet2DModel with class embeddings class_embed_type={kind!r}, num_class_embeds="
                         f"{n!r}: expected integer class labels (class_embed_type None or 'timestep' with "
                         f"num_class_embeds, the number of classes) or an unconditional UNet2DModel")
    if cfg.get("time_embedding_type", "positional") == "fourier":
        raise ValueError(f"{where}: UNet2DModel with time_embedding_type='fourier' is a VE (noise-level) "
                         f"network: expected a DDPM-type UNet with positional time embedding")


def _schedule(scheduler, where: str) -> tuple[VPSDE, str, bool, dict]:
    """The exact discrete VP-SDE of ``scheduler.betas``, its prediction type and learned variance."""
    name = type(scheduler).__name__
    cfg = dict(getattr(scheduler, "config", {}) or {})
    betas = getattr(scheduler, "betas", None)
    if not isinstance(betas, torch.Tensor) or "num_train_timesteps" not in cfg:
        extra = ", ".join(k for k in ("sigma_min", "sigma_max", "sigma_data") if k in cfg)
        raise ValueError(f"{where}: scheduler {name} has no VP noise schedule (betas"
                         f"{'; found ' + extra if extra else ''}): expected a DDPM-type scheduler with "
                         f"beta_schedule or trained_betas (e.g. DDPMScheduler, DDIMScheduler)")
    if cfg.get("rescale_betas_zero_snr"):
        raise ValueError(f"{where}: scheduler {name} has rescale_betas_zero_snr=True (ᾱ_N = 0, β_N = 1): "
                         f"expected every β in (0, 1)")
    pred = cfg.get("prediction_type", "epsilon")
    if pred not in PREDICTION_TYPES:
        raise ValueError(f"{where}: scheduler prediction_type={pred!r}: expected one of "
                         f"{', '.join(PREDICTION_TYPES)}")
    b = betas.detach().to("cpu", torch.float64)
    if b.numel() != int(cfg["num_train_timesteps"]):
        raise ValueError(f"{where}: scheduler has {b.numel()} betas but num_train_timesteps="
                         f"{cfg['num_train_timesteps']}: expected one β per training step")
    bad = ~((b > 0) & (b < 1))
    if bad.any():
        i = int(bad.nonzero()[0])
        raise ValueError(f"{where}: scheduler betas[{i}]={float(b[i])!r}: expected every β in (0, 1)")
    learned = str(cfg.get("variance_type", "")) in ("learned", "learned_range")
    info = {"scheduler": name, "beta_schedule": "trained_betas" if cfg.get("trained_betas") is not None
            else cfg.get("beta_schedule", "betas")}
    return VPSDE(DiscreteSchedule(b)), pred, learned, info


def _check_channels(unet, learned: bool, where: str) -> None:
    c_in, c_out = int(unet.config.in_channels), int(unet.config.out_channels)
    if c_out != c_in and not (learned and c_out == 2 * c_in):
        raise ValueError(f"{where}: UNet has in_channels={c_in}, out_channels={c_out}: expected equal "
                         f"(or 2·in_channels with a learned-variance scheduler)")


# --- folders --------------------------------------------------------------------------------

def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: JSON nested thousands deep
        raise ValueError(f"{str(path)!r} cannot be read as JSON ({type(e).__name__}): expected a "
                         f"diffusers config file") from None
    if not isinstance(value, dict):
        raise ValueError(f"{str(path)!r}: expected a JSON object (a diffusers config)")
    return value


def is_diffusers_folder(path) -> bool:
    """True for a folder with ``model_index.json`` or a ``unet/`` subfolder (a diffusers layout)."""
    path = Path(path)
    return path.is_dir() and ((path / "model_index.json").is_file() or (path / "unet").is_dir())


def _listing(folder: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir()) if folder.is_dir() else []
    return ", ".join(names[:12]) + (", …" if len(names) > 12 else "") if names else "nothing"


def _load_folder(folder: Path, device, dtype, null_class=None) -> DiffusersModel:
    d = diffusers_module()
    index = _read_json(folder / "model_index.json") if (folder / "model_index.json").is_file() else {}
    latent = [p for p in _LATENT_PARTS if p in index or (folder / p).is_dir()]
    if latent:
        raise ValueError(f"{str(folder)!r}: found {', '.join(p + '/' for p in latent)} of a latent-diffusion "
                         f"pipeline ({index.get('_class_name', 'pipeline')}): its UNet models latents, and "
                         f"scoresde has no VAE/text-encoder support; expected a pixel-space DDPM folder")
    unet_dir, sched_dir = folder / "unet", folder / "scheduler"
    for sub, file in ((unet_dir, "config.json"), (sched_dir, "scheduler_config.json")):
        if not (sub / file).is_file():
            raise ValueError(f"{str(folder)!r}: no {sub.name}/{file} (found {_listing(folder)}): expected a "
                             f"diffusers folder with unet/config.json + weights and scheduler/scheduler_config.json")
    unet_cfg = _read_json(unet_dir / "config.json")
    unet_class = unet_cfg.get("_class_name", "?")
    if unet_class != "UNet2DModel":
        if unet_class == "UNet2DConditionModel":
            raise ValueError(f"{str(unet_dir)!r}: found a conditional UNet (UNet2DConditionModel, "
                             f"cross-attention on text or other embeddings): expected an unconditional UNet2DModel")
        raise ValueError(f"{str(unet_dir)!r}: found _class_name={unet_class!r}: expected UNet2DModel")
    check_unet_config(unet_cfg, str(unet_dir / "config.json"))
    files = [p.name for p in unet_dir.iterdir()]
    variant, safe = None, _WEIGHTS[0] in files
    if not any(f in files for f in _WEIGHTS):
        variants = sorted({f.split(".")[1] for f in files if f.startswith("diffusion_pytorch_model.")
                           and f.endswith((".safetensors", ".bin")) and f.count(".") == 2})
        if not variants:
            raise ValueError(f"{str(unet_dir)!r}: no weights (found {_listing(unet_dir)}): expected "
                             f"{' or '.join(_WEIGHTS)}")
        variant = variants[0]
        safe = f"diffusion_pytorch_model.{variant}.safetensors" in files
    sched_cfg = _read_json(sched_dir / "scheduler_config.json")
    check_scheduler_config(sched_cfg, str(sched_dir / "scheduler_config.json"))
    sched_class = sched_cfg.get("_class_name", "?")
    cls = getattr(d, sched_class, None)
    if not (isinstance(cls, type) and hasattr(cls, "from_config")):
        raise ValueError(f"{str(sched_dir)!r}: found scheduler _class_name={sched_class!r}, unknown to "
                         f"diffusers {d.__version__}: expected a DDPM-type scheduler")
    scheduler = cls.from_config(sched_cfg)
    sde, pred, learned, info = _schedule(scheduler, str(sched_dir))
    try:
        unet = d.UNet2DModel.from_pretrained(unet_dir, local_files_only=True, variant=variant,
                                             use_safetensors=safe, torch_dtype=dtype, low_cpu_mem_usage=False)
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0].replace(str(unet_dir), "unet")[:160]
        raise ValueError(f"{str(unet_dir)!r}: weights cannot be loaded ({first}): expected complete "
                         f"UNet2DModel weights matching unet/config.json") from None
    _check_unet(unet, str(unet_dir))
    _check_channels(unet, learned, str(unet_dir))
    info.update(unet=type(unet).__name__, pipeline=index.get("_class_name"))
    info["null_class"] = unet_cfg.get(NULL_CLASS_KEY) if null_class is None else null_class
    return _finish(unet, sde, pred, learned, folder, info, device, dtype)


def _classes(unet, null_class, where: str) -> tuple[int, int | None]:
    """``(num_classes, null table row)`` of a UNet: 0 without class embeddings; with a null row
    (``null_class``) the classes are the other ``num_class_embeds - 1`` rows, which must come first."""
    n = unet.config.get("num_class_embeds")
    if n is None:
        if null_class is not None:
            raise ValueError(f"{where}: null class {null_class!r} given for a UNet2DModel without class embeddings")
        return 0, None
    if null_class is None:
        return int(n), None
    if isinstance(null_class, bool) or not isinstance(null_class, int) or null_class != n - 1:
        raise ValueError(f"{where}: null class {null_class!r}: expected the last of num_class_embeds={n} rows "
                         f"({n - 1})")
    return int(n) - 1, int(null_class)


def _finish(unet, sde, pred, learned, source, info, device, dtype) -> DiffusersModel:
    """The adapter (eval mode, frozen); ``info["null_class"]``: the null label's class-embedding row."""
    if dtype is not None and unet.dtype != dtype:
        unet = unet.to(dtype=dtype)
    if device is not None:
        unet = unet.to(device)
    k, null = _classes(unet, info.pop("null_class", None), "unet" if source is None else str(source))
    if k:
        info.update(num_classes=k, null_class=null)
    model = DiffusersModel(unet, sde, pred, learned_variance=learned, source=source, info=info,
                           num_classes=k, null_class=null)
    return model.eval().requires_grad_(False)


def load_diffusers(source, scheduler=None, *, device=None, dtype: torch.dtype | None = None,
                   null_class: int | None = None) -> DiffusersModel:
    """A diffusers DDPM as a scoresde model (eval mode, weights frozen).

    Args:
        source: a local folder, either a pipeline (``model_index.json``) or any folder holding
            ``unet/`` (``config.json`` + ``diffusion_pytorch_model.safetensors`` or ``.bin``) and
            ``scheduler/`` (``scheduler_config.json``); or an in-memory ``UNet2DModel`` (then
            ``scheduler`` is its scheduler object), or a ``(unet, scheduler)`` pair.
        scheduler: the scheduler object when ``source`` is a UNet module.
        device: where the UNet runs (default: where it is; ``cpu`` for a folder).
        dtype: the UNet's parameter dtype (e.g. ``torch.float16``; default: as stored). Time
            stays float64/float32 whatever it is, and ``eps`` returns its input's dtype.
        null_class: a class-conditional UNet's (``num_class_embeds``) null-label row, the last one
            (default: a folder's ``unet/config.json`` key ``scoresde_null_class``, else none: then
            its ``num_class_embeds`` rows are all classes and guidance is not possible).

    Raises ``ValueError`` (one line naming what was found) for anything listed in the module doc.
    """
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype={dtype!r}: expected a floating torch dtype such as torch.float16")
    if isinstance(source, (tuple, list)):
        if len(source) != 2 or scheduler is not None:
            raise ValueError("source: expected a folder, a UNet2DModel with scheduler=..., or a "
                             "(unet, scheduler) pair")
        source, scheduler = source
    if isinstance(source, (str, Path)):
        if scheduler is not None:
            raise ValueError("scheduler: give it only with an in-memory UNet2DModel, not with a folder")
        folder = Path(source)
        if not folder.is_dir():
            raise ValueError(f"{str(folder)!r} not found: expected a diffusers folder (model_index.json, "
                             f"unet/, scheduler/)")
        return _load_folder(folder, device, dtype, null_class)
    if not isinstance(source, nn.Module):
        raise ValueError(f"source={type(source).__name__}: expected a folder path or a diffusers UNet2DModel")
    if scheduler is None:
        raise ValueError("scheduler: expected the UNet's diffusers scheduler object (e.g. DDPMScheduler)")
    _check_unet(source, "unet")
    sde, pred, learned, info = _schedule(scheduler, "scheduler")
    _check_channels(source, learned, "unet")
    info.update(unet=type(source).__name__, null_class=null_class)
    return _finish(source, sde, pred, learned, None, info, device, dtype)
