"""Pretrained diffusers DDPMs as ``scoresde`` models (and the dispatch every program uses).

:func:`load_diffusers` turns a local diffusers folder, or in-memory ``UNet2DModel`` and
scheduler objects, into a :class:`DiffusersModel`: a :class:`~scoresde.core.model.ScoreModel` with
``.sde`` and ``.eps(x, t)`` that every sampler, :func:`~scoresde.likelihood.ode.log_likelihood`,
:func:`~scoresde.likelihood.ode.bits_per_dim` and the DDPM bound accept. Conventions
(docs/interop.md):

- **SDE.** The exact discrete VP-SDE of the scheduler's own ``betas`` (whatever
  ``beta_schedule`` or ``trained_betas`` built them): ``VPSDE(DiscreteSchedule(betas))``.
- **Time.** diffusers' timestep index ``k ∈ {0..N-1}`` is the project's time ``t = (k+1)/N``:
  their ``ᾱ_k = Π_{j≤k}(1-β_j)`` is our ``ᾱ((k+1)/N)``. The network is called at the float
  timestep ``k = tN - 1``; times within ``1e-4`` steps of a grid time are called at that
  integer (so a sampler on DDPM's grid feeds exactly diffusers' integers, whatever rounding
  ``t`` went through); between grid times (adaptive ODE solvers) ``k`` is fractional. ``t``
  stays float64 until it becomes the float32 timestep (diffusers embeds it in float32).
- **Prediction types**, with ``x_t = α x_0 + σ ε``, ``α² + σ² = 1``, α and σ of the SDE at t:
  ``epsilon`` as is; ``v_prediction`` (``v = α ε - σ x_0``): ``ε = σ x_t + α v``;
  ``sample``: ``ε = (x_t - α x̂_0)/σ``. A learned-variance output (``out_channels = 2·in``)
  contributes its first half (the ε part).
- **Data** live in ``[-1, 1]`` (diffusers' DDPM convention), of shape
  ``(in_channels, sample_size, sample_size)`` from the UNet config.

What cannot work is refused with one ``ValueError`` naming what was found: a conditional
UNet (``UNet2DConditionModel``, class embeddings), a latent-diffusion pipeline (``vae``/
``vqvae``: the UNet models latents, not images), a scheduler without a VP ``betas`` schedule
(VE/EDM sigma schedules, zero terminal SNR), missing files.

:func:`load_model` is the one place the programs turn ``--ckpt`` into a model: a scoresde run
(folder, checkpoint, ``ema.safetensors``) or a diffusers folder. :func:`export_diffusers` goes
the other way: a U-Net run as a ``DDPMPipeline`` folder, where ``UNet2DModel`` can express it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from scoresde.core.model import ScoreModel, batch_time
from scoresde.core.schedules import DiscreteSchedule
from scoresde.core.sde import VPSDE, append_dims
from scoresde.nets.unet import AttnBlock, Downsample, UNet, Upsample, group_norm
from scoresde.training.checkpoint import LoadedRun, load_run

__all__ = ["DiffusersModel", "load_diffusers", "is_diffusers_folder", "load_model", "export_diffusers",
           "PREDICTION_TYPES", "GRID_SNAP"]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
GRID_SNAP = 1e-4  # |tN - 1 - k| below this (in steps): the network is called at the integer k
_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
_LATENT_PARTS = ("vae", "vqvae", "text_encoder")
_SAMPLING_ONLY = ("timestep_spacing", "steps_offset", "clip_sample", "thresholding", "use_karras_sigmas",
                  "set_alpha_to_one", "variance_type")  # scheduler options that do not change the model


def _diffusers():
    try:
        import diffusers  # optional dependency, imported only when used
    except ImportError:
        raise ValueError("loading a diffusers model needs the diffusers package: "
                         "pip install 'scoresde[diffusers]'") from None
    return diffusers


class _UNetEps(nn.Module):
    """A diffusers ``UNet2DModel`` as an ε-network of the project's time ``t`` (float64, ``(B,)``)."""

    def __init__(self, unet: nn.Module, sde: VPSDE, prediction_type: str, learned_variance: bool):
        super().__init__()
        self.unet = unet
        self.sde, self.prediction_type, self.learned_variance = sde, prediction_type, learned_variance
        self.N = sde.discrete_steps
        size = unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        self.data_shape = (int(unet.config.in_channels), *map(int, size))

    def timestep(self, t: torch.Tensor) -> torch.Tensor:
        """diffusers' timestep ``k = tN - 1`` (float32), snapped to the integer within ``GRID_SNAP``."""
        k = t.to(torch.float64) * self.N - 1.0
        near = torch.round(k)
        return torch.where((k - near).abs() <= GRID_SNAP, near, k).to(torch.float32)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.unet(x, self.timestep(t)).sample
        if self.learned_variance:
            out = out[:, : x.shape[1]]
        if self.prediction_type == "epsilon":
            return out
        dtype = torch.promote_types(out.dtype, torch.float32)  # conversions in ≥ float32
        alpha = append_dims(self.sde.alpha(t), x.ndim).to(x.device, dtype)
        sigma = append_dims(self.sde.sigma(t), x.ndim).to(x.device, dtype)
        xt, out = x.to(dtype), out.to(dtype)
        if self.prediction_type == "v_prediction":
            return sigma * xt + alpha * out
        return (xt - alpha * out) / sigma  # "sample": the network predicts x_0


class DiffusersModel(ScoreModel):
    """A diffusers ``UNet2DModel`` and scheduler as a score model on the scheduler's exact VP-SDE.

    Attributes: ``unet`` (the diffusers module), ``sde`` (``VPSDE(DiscreteSchedule(betas))``),
    ``prediction_type``, ``data_shape`` ``(C, H, W)``, ``source`` (folder or ``None``) and
    ``info`` (what was loaded, for printing). ``eps``, ``score`` and ``x0`` as every ScoreModel.
    """

    def __init__(self, unet: nn.Module, sde: VPSDE, prediction_type: str, *, learned_variance: bool = False,
                 source: Path | None = None, info: dict | None = None):
        super().__init__(_UNetEps(unet, sde, prediction_type, learned_variance), sde)
        self.prediction_type, self.source, self.info = prediction_type, source, dict(info or {})

    @property
    def unet(self) -> nn.Module:
        return self.net.unet

    @property
    def data_shape(self) -> tuple:
        return self.net.data_shape

    def eps(self, x: torch.Tensor, t) -> torch.Tensor:
        """``ε(x, t)``: ``t`` float64 until it becomes diffusers' float32 timestep; ``x`` is cast to
        the UNet's dtype and the result back to ``x``'s dtype."""
        t = batch_time(t, x)
        dtype = self.unet.dtype
        return self.net(x.to(dtype), t).to(x.dtype)

    def describe(self) -> str:
        """One line: what was loaded."""
        i = self.info
        return (f"diffusers {i.get('unet', 'UNet2DModel')} + {i.get('scheduler', 'scheduler')} "
                f"({i.get('beta_schedule', 'betas')}, N = {self.sde.discrete_steps}, {self.prediction_type}, "
                f"{'×'.join(map(str, self.data_shape))}, {self.unet.dtype})"
                + (f" from {self.source}" if self.source is not None else ""))


# --- checks ---------------------------------------------------------------------------------

def _check_unet(unet, where: str) -> None:
    name = type(unet).__name__
    d = _diffusers()
    if isinstance(unet, getattr(d, "UNet2DConditionModel", ())) or name == "UNet2DConditionModel":
        raise ValueError(f"{where}: found a conditional UNet ({name}, cross-attention on text or other "
                         f"embeddings): expected an unconditional UNet2DModel")
    if not isinstance(unet, d.UNet2DModel):
        raise ValueError(f"{where}: found {name}: expected a diffusers UNet2DModel")
    cfg = unet.config
    if cfg.get("class_embed_type") is not None or cfg.get("num_class_embeds") is not None:
        raise ValueError(f"{where}: UNet2DModel with class embeddings (class_embed_type="
                         f"{cfg.get('class_embed_type')!r}, num_class_embeds={cfg.get('num_class_embeds')!r}) "
                         f"needs class labels: expected an unconditional UNet2DModel")
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
    except (OSError, ValueError) as e:
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


def _load_folder(folder: Path, device, dtype) -> DiffusersModel:
    d = _diffusers()
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
    return _finish(unet, sde, pred, learned, folder, info, device, dtype)


def _finish(unet, sde, pred, learned, source, info, device, dtype) -> DiffusersModel:
    if dtype is not None and unet.dtype != dtype:
        unet = unet.to(dtype=dtype)
    if device is not None:
        unet = unet.to(device)
    model = DiffusersModel(unet, sde, pred, learned_variance=learned, source=source, info=info)
    return model.eval().requires_grad_(False)


def load_diffusers(source, scheduler=None, *, device=None, dtype: torch.dtype | None = None) -> DiffusersModel:
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
        return _load_folder(folder, device, dtype)
    if not isinstance(source, nn.Module):
        raise ValueError(f"source={type(source).__name__}: expected a folder path or a diffusers UNet2DModel")
    if scheduler is None:
        raise ValueError("scheduler: expected the UNet's diffusers scheduler object (e.g. DDPMScheduler)")
    _check_unet(source, "unet")
    sde, pred, learned, info = _schedule(scheduler, "scheduler")
    _check_channels(source, learned, "unet")
    info.update(unet=type(source).__name__)
    return _finish(source, sde, pred, learned, None, info, device, dtype)


def load_model(path, *, device="cpu"):
    """What ``--ckpt`` names, loaded for sampling or evaluation: a
    :class:`~scoresde.training.checkpoint.LoadedRun` whose ``model`` is a scoresde run's EMA model, or a
    :class:`DiffusersModel` for a diffusers folder (then ``config`` and ``step`` are ``None``)."""
    if is_diffusers_folder(path):
        return LoadedRun(load_diffusers(path, device=device), None, None, Path(path))
    if (Path(path) / "config.json").is_file() or (Path(path) / "scheduler_config.json").is_file():
        raise ValueError(f"{str(path)!r} is one part of a diffusers folder: expected the folder holding "
                         f"unet/ and scheduler/ (or model_index.json)")
    return load_run(path, device=device, ema=True)



# --- export: a scoresde U-Net run as a diffusers folder ----------------------------------------

EXPORT_N = 1000  # the project's networks embed 1000·t: diffusers' timestep k = 1000 t - 1 needs N = 1000


def _export_config(net, config) -> dict:
    """``UNet2DModel`` config of the project's U-Net, or ``ValueError`` naming what has no counterpart."""
    if not isinstance(net, UNet):
        raise ValueError(f"model.kind: found {type(net).__name__}: only the U-Net has a UNet2DModel counterpart")
    if net.time.kind != "sinusoidal":
        raise ValueError(f"time embedding {net.time.kind!r}: expected 'sinusoidal' (UNet2DModel's positional)")
    m = config.model
    c_img, height, width = net.data_shape
    if height != width:
        raise ValueError(f"image size {height}x{width}: expected square images (UNet2DModel's sample_size)")
    widths = {mod.num_channels for mod in net.modules() if isinstance(mod, torch.nn.GroupNorm)}
    groups = {group_norm(w).num_groups for w in widths}
    if len(groups) != 1:
        raise ValueError(f"group norms of {len(groups)} sizes ({', '.join(map(str, sorted(groups)))} groups for "
                         f"widths {', '.join(map(str, sorted(widths)))}): UNet2DModel has one norm_num_groups; "
                         f"expected widths that all give 32 groups (model.channels a multiple of 128)")
    attended = {mod.qkv.in_channels for mod in net.modules() if isinstance(mod, AttnBlock)}
    if m.num_heads == 1:
        head_dim = None  # UNet2DModel: one head of the block's width
    elif len({w // m.num_heads for w in attended}) == 1:
        head_dim = next(iter(attended)) // m.num_heads
    else:
        raise ValueError(f"num_heads={m.num_heads} over widths {sorted(attended)}: UNet2DModel has one head size")
    mult = [int(v) for v in m.channel_mult]
    attn = {int(r) for r in m.attn_resolutions}
    att = [(height >> i) in attn for i in range(len(mult))]
    return dict(
        sample_size=height, in_channels=c_img, out_channels=c_img, center_input_sample=False,
        time_embedding_type="positional", flip_sin_to_cos=False, freq_shift=1,
        down_block_types=["AttnDownBlock2D" if a else "DownBlock2D" for a in att],
        up_block_types=["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(att)],
        mid_block_type="UNetMidBlock2D", block_out_channels=[m.channels * v for v in mult],
        layers_per_block=int(m.num_res_blocks), mid_block_scale_factor=1, downsample_padding=1,
        downsample_type="conv", upsample_type="conv", dropout=float(m.dropout), act_fn="silu",
        attention_head_dim=head_dim, norm_num_groups=groups.pop(), norm_eps=1e-6, add_attention=True,
        resnet_time_scale_shift="default")


def _export_weights(net) -> dict:
    """The project's U-Net state as ``UNet2DModel`` state-dict entries (float64 where folded)."""
    out: dict = {}

    def put(prefix, module):
        for k, v in module.state_dict().items():
            out[f"{prefix}.{k}"] = v

    def res(prefix, b):
        for ours, theirs in (("norm1", "norm1"), ("conv1", "conv1"), ("temb", "time_emb_proj"),
                             ("norm2", "norm2"), ("conv2", "conv2")):
            put(f"{prefix}.{theirs}", getattr(b, ours))
        if isinstance(b.skip, torch.nn.Conv2d):
            put(f"{prefix}.conv_shortcut", b.skip)

    def attn(prefix, a):
        c = a.qkv.in_channels
        put(f"{prefix}.group_norm", a.norm)
        w, bias = a.qkv.weight[:, :, 0, 0], a.qkv.bias  # rows: q, k, v, each heads × head_dim
        for i, name in enumerate(("to_q", "to_k", "to_v")):
            out[f"{prefix}.{name}.weight"], out[f"{prefix}.{name}.bias"] = w[i * c:(i + 1) * c], bias[i * c:(i + 1) * c]
        out[f"{prefix}.to_out.0.weight"], out[f"{prefix}.to_out.0.bias"] = a.proj.weight[:, :, 0, 0], a.proj.bias

    # Time: our sinusoids of k+1 (= 1000 t) are a rotation R of diffusers' sinusoids of k, so the first
    # MLP layer becomes W R: [sin ω(k+1); cos ω(k+1)] = [[C, S], [-S, C]] [sin ωk; cos ωk].
    lin1 = net.time.mlp[0]
    half = lin1.in_features // 2
    omega = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / (half - 1))
    cos, sin = torch.diag(torch.cos(omega)), torch.diag(torch.sin(omega))
    rot = torch.cat([torch.cat([cos, sin], 1), torch.cat([-sin, cos], 1)], 0)
    out["time_embedding.linear_1.weight"] = (lin1.weight.double() @ rot).to(lin1.weight.dtype)
    out["time_embedding.linear_1.bias"] = lin1.bias
    put("time_embedding.linear_2", net.time.mlp[2])
    put("conv_in", net.conv_in)
    for path, blocks in (("down_blocks", net.down), ("up_blocks", net.up)):
        level, j = 0, 0
        for layer in blocks:
            if isinstance(layer[0], (Downsample, Upsample)):
                kind = "downsamplers" if path == "down_blocks" else "upsamplers"
                put(f"{path}.{level}.{kind}.0.conv", layer[0].conv)
                level, j = level + 1, 0
                continue
            res(f"{path}.{level}.resnets.{j}", layer[0])
            if len(layer) > 1 and isinstance(layer[1], AttnBlock):
                attn(f"{path}.{level}.attentions.{j}", layer[1])
            j += 1
    res("mid_block.resnets.0", net.mid[0])
    attn("mid_block.attentions.0", net.mid[1])
    res("mid_block.resnets.1", net.mid[2])
    put("conv_norm_out", net.norm_out)
    put("conv_out", net.conv_out)
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in out.items()}


def export_diffusers(run_dir, out=None):
    """Write a trained scoresde U-Net run (its EMA weights) as a diffusers ``DDPMPipeline`` folder.

    The ``UNet2DModel`` at timestep ``k`` computes the run's ε at ``t = (k+1)/1000`` (to float32
    round-off of the time embedding); the scheduler is a ``DDPMScheduler`` with
    ``trained_betas = 1 - ᾱ(i/N)/ᾱ((i-1)/N)``, ``N = 1000``, so its ``ᾱ_k`` is the run's
    ``ᾱ((k+1)/N)`` on every schedule (only those 1000 times exist for diffusers). Default folder:
    ``RUN/diffusers``. ``ValueError`` for runs without a counterpart (docs/interop.md).
    """
    d = _diffusers()
    run = load_run(run_dir, device="cpu", ema=True)
    model, cfg = run.model, run.config
    if type(model) is not ScoreModel:
        raise ValueError(f"model.base={cfg.model.base!r}: the lattice base has no diffusers counterpart; "
                         f"expected model.base=none")
    n = model.sde.discrete_steps
    if n is not None and n != EXPORT_N:
        raise ValueError(f"sde.n_steps={n}: expected {EXPORT_N} (the network embeds 1000·t, diffusers the index k)")
    unet_cfg = _export_config(model.net, cfg)
    unet = d.UNet2DModel(**unet_cfg)
    missing = unet.load_state_dict(_export_weights(model.net), strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys
    t = torch.arange(EXPORT_N + 1, dtype=torch.float64) / EXPORT_N
    betas = -torch.expm1(-model.sde.schedule.integrated_beta_between(t[:-1], t[1:]))
    scheduler = d.DDPMScheduler(num_train_timesteps=EXPORT_N, trained_betas=betas.tolist(), clip_sample=False,
                                prediction_type="epsilon", variance_type="fixed_small")
    if out is None:  # RUN/diffusers, for a run folder, its ema.safetensors or one of its checkpoints
        src = Path(run_dir)
        root = src if src.is_dir() else src.parent.parent if src.parent.name == "checkpoints" else src.parent
        out = root / "diffusers"
    folder = Path(out)
    if folder.exists():
        raise ValueError(f"{str(folder)!r} exists: expected a new folder for the export (nothing is overwritten)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:  # written beside, then renamed: a killed export leaves no half folder under the final name
        d.DDPMPipeline(unet=unet.eval(), scheduler=scheduler).save_pretrained(tmp)
        os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
