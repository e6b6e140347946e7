"""What a newcomer meets (issue 28): a quick run that exports to diffusers, and programs that leave
nothing in folders they do not own.

- ``configs/digits_export.yaml`` (the digits default with one GroupNorm group count) trains, exports
  with :func:`scoresde.interop.export_diffusers` and loads with diffusers' ``DDPMPipeline``: the
  exported ``UNet2DModel`` at timestep ``k`` is the run's ε at ``t = (k+1)/1000`` (float32 round-off).
- The digits default's network is unchanged by that option (same parameters, same bytes).
- ``sample`` on a diffusers folder writes ``./samples/``, never into the model's folder.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from scoresde.training.build import build_model
from scoresde.training.config import load_config
from tests.train_util import snapshot

diffusers = pytest.importorskip("diffusers")

ROOT = Path(__file__).resolve().parents[1]


def _digest(module) -> str:
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode() + v.numpy().tobytes())
    return h.hexdigest()


def test_the_export_config_is_the_default_but_for_its_group_norms():
    default, export = (load_config(ROOT / "configs" / f"{name}.yaml") for name in ("digits", "digits_export"))
    assert default.model.norm_groups is None and export.model.norm_groups == 4
    for section in ("data", "sde", "loss", "train"):
        assert getattr(default, section) == getattr(export, section), section
    torch.manual_seed(0)
    a = build_model(default)
    torch.manual_seed(0)
    b = build_model(export)
    groups = {m.num_groups for m in b.net.modules() if isinstance(m, torch.nn.GroupNorm)}
    assert groups == {4} and len({m.num_groups for m in a.net.modules() if isinstance(m, torch.nn.GroupNorm)}) > 1
    # the same parameters in the same order: GroupNorm's group count has no weights of its own
    assert [(k, v.shape) for k, v in a.state_dict().items()] == [(k, v.shape) for k, v in b.state_dict().items()]
    assert _digest(a) == _digest(b)


def test_norm_groups_must_divide_every_width():
    cfg = load_config(ROOT / "configs" / "digits_export.yaml", ["model.norm_groups=3"])
    with pytest.raises(ValueError, match=r"^norm_groups=3: expected a divisor of every normalized width"):
        build_model(cfg)


def test_the_quick_run_exports_and_diffusers_loads_it(tmp_path, monkeypatch):
    from scoresde.interop import export_diffusers
    from scoresde.train import main as train_main
    from scoresde.training.checkpoint import load_run

    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "digits_export"
    assert train_main(["--config", ROOT / "configs" / "digits_export.yaml", "--out", run,
                       "--set", "train.steps=3", "sample.n=0"]) == 0
    folder = export_diffusers(run)
    assert folder == run / "diffusers"
    pipe = diffusers.DDPMPipeline.from_pretrained(folder)
    model = load_run(run).model
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    k = torch.tensor([0, 499, 999])
    with torch.no_grad():
        theirs = pipe.unet(x, k).sample
        ours = model.eps(x, (k + 1).double() / 1000)
    torch.testing.assert_close(theirs, ours.float(), rtol=0, atol=2e-5)
    images = pipe(batch_size=2, num_inference_steps=3, output_type="np",
                  generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (2, 8, 8, 1) and bool(torch.isfinite(torch.as_tensor(images)).all())


def test_sample_on_a_diffusers_folder_writes_to_the_working_folder(tmp_path, monkeypatch):
    """The folder is someone else's model (downloaded): it stays byte for byte as it was."""
    from scoresde.sample import main as sample_main
    from tests.test_interop import save_pipeline, tiny_unet

    pipe = save_pipeline(tmp_path / "model", tiny_unet(3), diffusers.DDPMScheduler(num_train_timesteps=1000))
    before = snapshot(pipe)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert sample_main(["--ckpt", pipe, "--sampler", "ddim", "--steps", "3", "--n", "2"]) == 0
    assert snapshot(pipe) == before
    assert sorted(p.name for p in (work / "samples").iterdir()) == ["ddim_seed0.npz", "ddim_seed0.png"]
