"""Config schema: every shipped config loads and builds its model; overrides; validation errors
name the key and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scoresde.nets import count_parameters
from scoresde.training.build import build_model, build_sde
from scoresde.training.config import (
    DEFAULT_CONFIG,
    config_from_dict,
    config_to_dict,
    config_to_yaml,
    load_config,
    model_keys,
    parse_overrides,
)

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


def test_the_shipped_configs_are_the_documented_eight():
    assert {p.stem for p in CONFIGS} == {"toy2d", "digits", "digits_cond", "digits_subvp", "digits_ve", "digits_export",
                                         "mnist", "cifar10_ddpmpp"}
    assert DEFAULT_CONFIG.name == "digits.yaml"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_loads_and_builds_a_model_that_runs(path):
    cfg = load_config(path)
    model = build_model(cfg).eval()
    x = torch.randn(1, *cfg.data.shape)
    with torch.no_grad():
        eps = model.eps(x, torch.tensor([0.5]))
    assert eps.shape == x.shape and torch.isfinite(eps).all()
    # the resolved config round-trips through YAML (what the run folder stores)
    import yaml
    assert config_from_dict(yaml.safe_load(config_to_yaml(cfg))) == cfg


def test_cifar10_config_has_ddpm_network_size():
    cfg = load_config(CONFIGS[[p.stem for p in CONFIGS].index("cifar10_ddpmpp")])
    m, t = cfg.model, cfg.train
    assert (m.channels, m.channel_mult, m.num_res_blocks, m.attn_resolutions, m.dropout) == \
        (128, [1, 2, 2, 2], 2, [16], 0.1)
    assert (t.batch_size, t.lr, t.ema_decay, t.steps) == (128, 2e-4, 0.9999, 1_300_000)
    n = count_parameters(build_model(cfg))
    assert abs(n - 35.7e6) < 0.1e6  # Ho et al. 2020 report 35.7M parameters


def test_overrides_are_typed_and_nested():
    cfg = load_config(None, ["train.steps=7", "model.channel_mult=[1,2]", "loss.t_eps=1e-4",
                             "data.dequantize=true", "sample.sampler=ddim"])
    assert cfg.train.steps == 7 and cfg.model.channel_mult == [1, 2]
    assert cfg.loss.t_eps == 1e-4 and cfg.data.dequantize is True and cfg.sample.sampler == "ddim"
    assert parse_overrides(["a.b=1", "a.c=x"]) == {"a": {"b": 1, "c": "x"}}


def test_data_shape_is_resolved_and_model_keys_name_architecture_only():
    cfg = load_config(None)
    assert cfg.data.shape == [1, 8, 8]
    keys = model_keys(cfg)
    assert keys["model.channels"] == cfg.model.channels and "train.lr" not in keys
    assert "model.hidden" not in keys  # an MLP key does not matter to a U-Net


@pytest.mark.parametrize("schedule, beta", [("linear", 0.1), ("ddpm", None), ("cosine", None)])
def test_build_sde_by_schedule(schedule, beta):
    sde = build_sde(load_config(None, [f"sde.schedule={schedule}"]))
    if schedule == "ddpm":  # β_1 = β_min/N = 1e-4 (Ho et al.): ᾱ(1/N) = 1 - 1e-4 exactly
        assert sde.discrete_steps == 1000
        assert torch.isclose(sde.alpha_bar(1 / 1000), torch.tensor(1 - 1e-4, dtype=torch.float64))
    elif schedule == "linear":
        assert torch.isclose(sde.beta(0.0), torch.tensor(beta, dtype=torch.float64))
    else:
        assert sde.alpha_bar(0.0) == 1.0


@pytest.mark.parametrize("override, key, expected", [
    (["trian.steps=1"], "trian", "expected one of"),
    (["train.stepz=1"], "train.stepz", "train.steps"),
    (["train.steps=abc"], "train.steps", "an integer"),
    (["train.steps=1.5"], "train.steps", "an integer"),
    (["train.lr=fast"], "train.lr", "a number"),
    (["train.compile=maybe"], "train.compile", "true or false"),
    (["model.channel_mult=[1,x]"], "model.channel_mult", "integers"),
    (["train=3"], "train", "a section"),
    (["train.steps=0"], "train.steps", "≥ 1"),
    (["train.steps=-5"], "train.steps", "≥ 1"),
    (["train.lr=0"], "train.lr", "(0, 1)"),
    (["train.ema_decay=1.0"], "train.ema_decay", "[0, 1)"),
    (["model.dropout=1.5"], "model.dropout", "[0, 1)"),
    (["loss.t_eps=2"], "loss.t_eps", "(0, 1)"),
    (["data.name=imagenet"], "data.name", "digits"),
    (["model.kind=transformer"], "model.kind", "unet"),
    (["loss.weighting=snr"], "loss.weighting", "likelihood"),
    (["sample.sampler=euler_maruyama"], "sample.sampler", "ode"),
    (["device=tpu"], "device", "cuda"),
    (["model.channel_mult=[1,2,2,2,2]"], "model.channel_mult", "8x8"),
    (["data.name=ring"], "model.kind", "mlp"),
    (["sde.beta_max=0.01"], "sde.beta_max", "sde.beta_min"),
    (["train.steps"], "train.steps", "KEY=VALUE"),
])
def test_bad_values_name_the_key_and_what_was_expected(override, key, expected):
    with pytest.raises(ValueError) as err:
        load_config(None, override)
    msg = str(err.value)
    assert key in msg and expected in msg and "\n" not in msg


@pytest.mark.parametrize("text, expected", [
    ("train: {steps: 1}\nbogus: 1\n", "bogus"),
    ("- a\n- b\n", "mapping"),
    ("train: [1, 2\n", "not valid YAML"),
])
def test_bad_files(tmp_path, text, expected):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=expected):
        load_config(path)
    with pytest.raises(ValueError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_config_dict_is_plain():
    d = config_to_dict(load_config(None))
    assert isinstance(d["model"]["channel_mult"], list) and d["data"]["name"] == "digits"


def test_toy_quick_start_config_is_the_measured_one():
    """Pinned (issue 26, item 6): the toy quick start that reached sliced W1 1.85× its floor in 60 s of
    CPU (docs/benchmarks.md, "Toy quick start") — VE σ 0.01…4, MLP hidden 64 × 3, lr 3e-3, 3200 steps."""
    from scoresde.training.config import load_config
    c = load_config(Path(__file__).resolve().parents[1] / "configs" / "toy2d.yaml")
    assert (c.sde.kind, c.sde.sigma_min, c.sde.sigma_max) == ("ve", 0.01, 4.0)
    assert (c.model.kind, c.model.hidden, c.model.depth) == ("mlp", 64, 3)
    assert (c.train.lr, c.train.steps, c.train.batch_size, c.train.ema_decay) == (3e-3, 3200, 256, 0.995)
    assert (c.sample.sampler, c.sample.n) == ("ode", 2000)
