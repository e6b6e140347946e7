"""Trainer details the resume tests pass over: the linear warm-up of the learning rate, the
epoch length, and the first-batch range check's boundaries. (Mutation kills; docs/testing.md.)"""

import pytest
import torch

from scoresde.data.loader import load_dataset
from scoresde.training.build import build_model
from scoresde.training.config import config_from_dict
from scoresde.training.distributed import DistInfo
from scoresde.training.trainer import Trainer, check_batch

from .train_util import TINY_TOY


def _trainer(**train):
    cfg = config_from_dict(TINY_TOY | {"train": {**TINY_TOY["train"], **train}})
    data = load_dataset(cfg.data.name, "train", n=cfg.data.n, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    return Trainer(cfg, build_model(cfg, data), data, torch.device("cpu"), DistInfo())


def test_learning_rate_warms_up_linearly_then_stays():
    tr = _trainer(lr=1e-3, warmup_steps=4)
    lrs = [tr.train_step()["lr"] for _ in range(6)]  # the rate each step used: lr·min(1, (i+1)/4)
    assert lrs == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3], rel=1e-12)
    no_warmup = _trainer(lr=1e-3, warmup_steps=0)
    assert no_warmup.train_step()["lr"] == 1e-3
    assert tr.opt.param_groups[0]["weight_decay"] == tr.cfg.train.weight_decay


def test_an_epoch_is_the_whole_batches_in_the_data():
    tr = _trainer(batch_size=32)  # 256 examples: 8 steps per epoch, then a new permutation
    assert tr.steps_per_epoch == 8 and isinstance(tr.steps_per_epoch, int)
    assert (tr.step, tr.epoch, tr.position, tr.window) == (0, 0, 0, [0.0, 0])
    for _ in range(8):
        tr.train_step()
    assert (tr.epoch, tr.position) == (1, 0)


def test_first_batch_range_check_boundaries():
    ok = torch.tensor([[-1.0, 1.0], [0.0, 0.5]])
    check_batch(ok, (2,), "digits")  # the closed interval [-1, 1] is fine; bounded by default
    for bad in ([[-1.0001, 0.0]], [[0.0, 1.0001]]):
        with pytest.raises(ValueError, match=r"^data set 'digits': the first batch spans \["):
            check_batch(torch.tensor(bad), (2,), "digits")
    with pytest.raises(ValueError, match=r"^data set 'digits': examples have shape \(3,\), expected \(2,\)"):
        check_batch(torch.zeros(4, 3), (2,), "digits")
