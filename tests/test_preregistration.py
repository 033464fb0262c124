"""The pre-registration file says what the code does: every frozen choice is compared with the
profile, the pretraining recipe and the digests of the files it names, so that a choice changed
in the code without the file (or the other way round) fails here."""

from __future__ import annotations

import hashlib
import re

from data_prep.synth import code_digest
from wma_study.profiles import DATASETS
from wma_core.pretrain import SCALES
from wma_study import preregistration as PR
from wma_study.profiles import ROOT, get_profile


def _choices():
    return PR.load()["choices"]


def test_the_world_is_the_registered_one():
    registered = _choices()["world"]["generators"]["value"]
    assert registered.endswith(code_digest()), f"{registered!r} but the generators' code digest is {code_digest()}"
    prof = get_profile("default")
    assert list(prof.twin_splits) == _choices()["world"]["twin splits"]["value"]


def test_the_pretraining_recipe_is_the_registered_one():
    cfg = SCALES["default"]
    for field, value in _choices()["pretraining"]["recipe"]["value"].items():
        assert getattr(cfg, field) == value, field
    rep = _choices()["pretraining"]["replication"]["value"]
    assert list(get_profile("default").backbones) == rep["backbones"]


def test_the_fine_tuning_recipe_is_the_registered_one():
    prof, ft = get_profile("default"), _choices()["fine-tuning"]
    assert prof.epochs == ft["epochs"]["value"] and prof.patience == ft["patience"]["value"]
    assert prof.batch_size == ft["batch size"]["value"]
    lr = ft["learning rate"]["value"]
    assert prof.lr == lr["pretrained"] and {d: prof.random_init_lr.get(d, prof.lr[d]) for d in DATASETS} == lr["random init"]
    assert {d: prof.head_lr_mult.get(d, 1.0) for d in DATASETS} == ft["head learning rate"]["value"]
    assert prof.head_bias == ft["head bias"]["value"]


def test_alpha_scaling_and_noise_are_the_registered_ones():
    prof, c = get_profile("default"), _choices()
    assert list(prof.alpha_grid) == c["alpha scaling"]["grid"]["value"]["alpha"]
    assert list(prof.beta_grid) == c["alpha scaling"]["grid"]["value"]["beta"]
    assert prof.max_first_step_ratio == c["alpha scaling"]["chapter cap"]["value"]["max_first_step_ratio"]
    path, want = re.fullmatch(r"(\S+) sha256 ([0-9a-f]{16})", c["noise"]["calibration"]["value"]).groups()
    assert path == prof.noise_calibration
    assert hashlib.sha256((ROOT / path).read_bytes()).hexdigest()[:16] == want, f"{path} changed since it was registered"
