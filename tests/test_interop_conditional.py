"""Class-conditional diffusers UNet2DModel folders both ways (issue 22), tested as tests/test_interop.py
tests the unconditional case: tiny random networks saved in the real format, ε against diffusers'
own forward with the same labels (float32 round-off), export and reload of a conditional run."""

from __future__ import annotations

import json

import pytest
import torch

from scoresde.core.conditional import condition
from scoresde.interop import load_diffusers

from .test_interop import N, _random_run, save_pipeline, tiny_unet

diffusers = pytest.importorskip("diffusers")


@pytest.mark.parametrize("kind", [None, "timestep"])
def test_class_embeddings_load_as_a_conditional_model(tmp_path, kind):
    """``num_class_embeds = 10`` without a named null row: 10 classes, ``ε(x, t, y)`` is diffusers'
    forward with ``class_labels=y``; guidance (which needs a null label) is one clear error."""
    unet = tiny_unet(3, num_class_embeds=10, class_embed_type=kind)
    with torch.no_grad():  # a table far from zero, so that labels matter
        for p in unet.class_embedding.parameters():
            p.normal_()
    model = load_diffusers(save_pipeline(tmp_path / "pipe", unet, diffusers.DDPMScheduler(num_train_timesteps=N)))
    assert model.num_classes == 10 and model.net.null_class is None
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    k, y = torch.tensor([0, 10, 500, 999]), torch.tensor([0, 3, 9, 3])
    with torch.no_grad():
        theirs = unet(x, k, class_labels=y).sample
    ours = model.eps(x, (k + 1).double() / N, y)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(ours, model.eps(x, (k + 1).double() / N, (y + 1) % 10))
    torch.testing.assert_close(condition(model, y).eps(x, (k + 1).double() / N), ours)
    with pytest.raises(ValueError, match="no null label"):
        condition(model, 3, guidance=1.0).eps(x, 0.5)
    with pytest.raises(ValueError, match=r"y holds 11"):
        model.eps(x, 0.5, torch.full((4,), 11))


def test_a_named_null_row_gives_guidance(tmp_path):
    """``null_class`` (the last row): ``K = num_class_embeds - 1`` classes and guided ε
    ``(1 + w) ε(y) − w ε(null row)`` of diffusers' own forwards."""
    unet = tiny_unet(4, num_class_embeds=6)
    with torch.no_grad():
        unet.class_embedding.weight.normal_()
    model = load_diffusers(unet, diffusers.DDPMScheduler(num_train_timesteps=N), null_class=5)
    assert model.num_classes == 5
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    k = torch.tensor([5, 400, 900])
    with torch.no_grad():
        cond = unet(x, k, class_labels=torch.full((3,), 2)).sample
        null = unet(x, k, class_labels=torch.full((3,), 5)).sample
    guided = condition(model, 2, guidance=1.5).eps(x, (k + 1).double() / N)
    torch.testing.assert_close(guided, 2.5 * cond - 1.5 * null, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"null class 2: expected the last of num_class_embeds=6 rows \(5\)"):
        load_diffusers(unet, diffusers.DDPMScheduler(num_train_timesteps=N), null_class=2)


def test_identity_class_embeddings_are_refused():
    unet = tiny_unet(5, class_embed_type="identity")
    with pytest.raises(ValueError, match="class_embed_type='identity'"):
        load_diffusers(unet, diffusers.DDPMScheduler(num_train_timesteps=N))


def test_export_of_a_conditional_run_round_trips(tmp_path):
    """A conditional U-Net run exported: diffusers' UNet with ``class_labels`` computes the run's
    ``ε(x, t, y)`` (the null label: row K), and the folder loads back as the same conditional model."""
    from scoresde.interop import export_diffusers
    from scoresde.training.checkpoint import load_run

    run_dir = _random_run(tmp_path / "run", channels=128, num_classes=10)
    folder = export_diffusers(run_dir)
    cfg = json.loads((folder / "unet" / "config.json").read_text())
    assert cfg["num_class_embeds"] == 11 and cfg["scoresde_null_class"] == 10
    pipe = diffusers.DDPMPipeline.from_pretrained(folder)
    run = load_run(run_dir)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    k, y = torch.tensor([0, 17, 500, 999]), torch.tensor([1, 10, 4, 9])
    with torch.no_grad():
        theirs = pipe.unet(x, k, class_labels=y).sample
    t = (k + 1).double() / 1000
    ours = run.model.eps(x, t, y)
    assert ours.abs().max() > 0.3
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    loaded = load_diffusers(folder)
    assert loaded.num_classes == 10
    guided = condition(loaded, 4, guidance=2.0).eps(x, t)
    torch.testing.assert_close(guided, condition(run.model, 4, guidance=2.0).eps(x, t), rtol=1e-5, atol=1e-5)
