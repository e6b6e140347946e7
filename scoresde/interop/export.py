"""A trained scoresde U-Net run written as a diffusers ``DDPMPipeline`` folder (weight surgery included).

The inverse of :mod:`scoresde.interop.loader`: :func:`export_diffusers` maps the project's U-Net
onto ``UNet2DModel`` where that can express it (docs/interop.md). A class-conditional run's label
table (``K`` classes + the null label) becomes ``num_class_embeds = K + 1`` (diffusers'
``class_embedding``, added to the time embedding as ours is), and ``unet/config.json`` names the
null label's row (``scoresde_null_class = K``) for :func:`~scoresde.interop.loader.load_diffusers`.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

from scoresde.core.model import ScoreModel
from scoresde.interop.loader import NULL_CLASS_KEY, diffusers_module
from scoresde.nets.unet import AttnBlock, Downsample, UNet, Upsample
from scoresde.training.checkpoint import load_run
from scoresde.util.atomic import current_umask, remove_empty

__all__ = ["export_diffusers", "EXPORT_N"]

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
    norms = [mod for mod in net.modules() if isinstance(mod, torch.nn.GroupNorm)]
    widths, groups = {mod.num_channels for mod in norms}, {mod.num_groups for mod in norms}
    if len(groups) != 1:
        raise ValueError(f"group norms of {len(groups)} sizes ({', '.join(map(str, sorted(groups)))} groups for "
                         f"widths {', '.join(map(str, sorted(widths)))}): UNet2DModel has one norm_num_groups; "
                         f"expected model.norm_groups set (e.g. configs/digits_export.yaml), or widths that "
                         f"all give 32 groups (model.channels a multiple of 128)")
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
        resnet_time_scale_shift="default",
        **({"num_class_embeds": net.num_classes + 1} if net.num_classes else {}))  # + the null label's row


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
    if net.num_classes:  # our label table (row K: the null label) is diffusers' class_embedding
        out["class_embedding.weight"] = net.label.table.weight
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in out.items()}


def export_diffusers(run_dir, out=None):
    """Write a trained scoresde U-Net run (its EMA weights) as a diffusers ``DDPMPipeline`` folder.

    The ``UNet2DModel`` at timestep ``k`` computes the run's ε at ``t = (k+1)/1000`` (to float32
    round-off of the time embedding); the scheduler is a ``DDPMScheduler`` with
    ``trained_betas = 1 - ᾱ(i/N)/ᾱ((i-1)/N)``, ``N = 1000``, so its ``ᾱ_k`` is the run's
    ``ᾱ((k+1)/N)`` on every schedule (only those 1000 times exist for diffusers). Default folder:
    ``RUN/diffusers``. ``ValueError`` for runs without a counterpart (docs/interop.md).
    """
    d = diffusers_module()
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
    _write_beside(folder, d.DDPMPipeline(unet=unet.eval(), scheduler=scheduler), model.net.num_classes)
    return folder


def _write_beside(folder: Path, pipeline, num_classes: int) -> None:
    """``pipeline.save_pretrained`` into a temporary folder beside ``folder``, then renamed to it: a
    killed export leaves no half folder under the final name (and the next export removes the
    temporary one), a failed one leaves nothing (the temporary folder and the parents it made
    are removed); the files follow the umask; a full disk is an ``OSError``."""
    made = [p for p in (folder.parent, *folder.parent.parents) if not p.exists()]  # innermost first
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in folder.parent.glob(f".{glob.escape(folder.name)}.*.tmp"):  # left by a killed export
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        try:
            pipeline.save_pretrained(tmp)
        except Exception as e:
            raise _os_error(e, tmp) from None
        if num_classes:  # name the null label's row, for load_diffusers (diffusers ignores the key)
            unet_json = tmp / "unet" / "config.json"
            unet_json.write_text(json.dumps({**json.loads(unet_json.read_text()), NULL_CLASS_KEY: num_classes},
                                            indent=2, sort_keys=True))
        _follow_umask(tmp)
        os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_empty(made)
        raise


def _follow_umask(root: Path) -> None:
    """Folders ``0o777`` and files ``0o666`` less the umask, as if created plainly (``mkdtemp``
    makes ``0o700`` and safetensors writes its weights ``0o600``)."""
    mask = current_umask()
    for path in (root, *root.rglob("*")):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def _os_error(e: Exception, where: Path) -> Exception:
    """A failed write as the ``OSError`` it is: diffusers, safetensors and torch report a full disk
    or a file-size limit as their own types (``SafetensorError: ... (os error 27)``, a
    ``RuntimeError``); other exceptions are returned unchanged."""
    cause = e
    while cause is not None:
        if isinstance(cause, OSError):
            return cause
        cause = cause.__cause__ or cause.__context__
    found = re.search(r"Os \{ code: (\d+)|\(os error (\d+)\)|\[Errno (\d+)\]", str(e))
    if found:
        code = int(next(g for g in found.groups() if g))
        return OSError(code, os.strerror(code), str(where))
    return e
