"""End-to-end training on a small twin generated inside the test: WMA pulls D toward β·D0,
runs resume after an interruption with the same result, the same seed repeats exactly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from wma_core import device as D
from wma_core import optim as O
from wma_core import record as R
from wma_core import train as T
from wma_core.model import TaskHead
from wma_core.store import ResultsStore, config_key


@pytest.fixture(scope="module")
def hm_dir(hm_twin):
    return hm_twin(200, 3)


def _cfg(data_dir, **kw):
    base = dict(
        dataset="hateful_memes", data_dir=str(data_dir), epochs=3, batch_size=16, lr=1e-3, seed=0,
        progress=False, device="cpu", ot_iters=30,
    )
    base.update(kw)
    return T.TrainConfig(**base)


def _final_dev_d(rec, pair="text-image"):
    dev = [d for d in rec["d_trajectory"] if d["split"] == "dev"]
    return dev[-1][pair]


def test_wma_pulls_distance_toward_target(hm_dir, tmp_path):
    beta = 1.0
    base = T.fit(_cfg(hm_dir, alpha=0.0), tmp_path / "store")
    wma = T.fit(_cfg(hm_dir, alpha=5.0, beta=beta), tmp_path / "store")
    # D0 is measured before any update on the same first batch with the same initial weights
    assert base["d0"]["text-image"] == pytest.approx(wma["d0"]["text-image"], rel=1e-6)
    target = beta * wma["d0"]["text-image"]
    gap_base = abs(_final_dev_d(base) - target)
    gap_wma = abs(_final_dev_d(wma) - target)
    print(f"D0={target:.4f} final dev D: baseline {_final_dev_d(base):.4f}, wma {_final_dev_d(wma):.4f}")
    assert gap_wma < 0.5 * gap_base
    # the record carries what the book reads
    for rec in (base, wma):
        assert set(rec["metrics"]) == {"normal", "text_noise", "image_noise", "text_missing", "image_missing"}
        assert rec["config"]["method"] == ("baseline" if rec is base else "wma")
        assert len(rec["history"]) == rec["epochs_run"] == 3
        n_test = len(rec["distances"]["normal"]["text-image"])
        assert n_test == _n_split(hm_dir, "test")
        assert all(np.isfinite(v) for m in rec["metrics"].values() for v in m.values())
    assert wma["history"][0]["reg_loss"] > 0 and base["history"][0]["reg_loss"] == 0


def _n_split(data_dir, split):
    from data_prep.dataset import read_manifest

    return read_manifest(data_dir)["splits"][split]


def test_store_reuses_finished_run(hm_dir, tmp_path, monkeypatch):
    cfg = _cfg(hm_dir, epochs=1)
    rec = T.fit(cfg, tmp_path / "s")

    def boom(*a, **k):
        raise AssertionError("a finished run must not train again")

    monkeypatch.setattr(T, "_fit_locked", boom)
    assert T.fit(cfg, tmp_path / "s") == rec
    # a changed hyper-parameter is another run
    with pytest.raises(AssertionError, match="must not train"):
        T.fit(dataclasses.replace(cfg, lr=5e-4), tmp_path / "s")


def test_interrupted_run_resumes_to_the_same_result(hm_dir, tmp_path, monkeypatch):
    cfg = _cfg(hm_dir, alpha=1.0, beta=2.0, epochs=3)
    full = T.fit(cfg, tmp_path / "full")

    real_eval = T.evaluate
    calls = {"n": 0}

    def interrupt_in_epoch_2(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # the dev evaluation closing epoch 2
            raise KeyboardInterrupt
        return real_eval(*a, **k)

    monkeypatch.setattr(T, "evaluate", interrupt_in_epoch_2)
    store = ResultsStore(tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        T.fit(cfg, store)
    key = config_key(R.run_config(cfg))
    assert store.get(key) is None
    ck = torch.load(store.run_dir(key) / "last.pt", weights_only=True)  # checkpoints hold tensors and plain values only
    assert ck["state"]["epoch"] == 1
    monkeypatch.setattr(T, "evaluate", real_eval)
    resumed = T.fit(cfg, store)
    assert resumed["metrics"] == full["metrics"]
    assert resumed["history"] == full["history"]
    assert resumed["d0"] == full["d0"]
    assert not (store.run_dir(key) / "last.pt").exists()


def test_same_seed_same_result_and_seed_matters(hm_dir, tmp_path):
    cfg = _cfg(hm_dir, epochs=1)
    a = T.fit(cfg, tmp_path / "a")
    b = T.fit(cfg, tmp_path / "b")
    c = T.fit(dataclasses.replace(cfg, seed=1), tmp_path / "c")
    assert a["metrics"] == b["metrics"] and a["history"] == b["history"]
    assert c["metrics"] != a["metrics"]


def _script_dev(monkeypatch, scores, losses=None):
    """Make the per-epoch dev evaluations of fit report these AUROCs (and dev losses)."""
    scores, losses = iter(scores), iter(losses) if losses is not None else None
    real_eval = T.evaluate

    def scripted(model, loader, kind, **k):
        res = real_eval(model, loader, kind, **k)
        if k.get("perturbation") is None and loader.dataset.split == "dev":
            res["metrics"]["auroc"] = next(scores)
            if losses is not None:
                res["loss"] = next(losses)
        return res

    monkeypatch.setattr(T, "evaluate", scripted)


def test_early_stopping_restores_best(hm_dir, tmp_path, monkeypatch):
    # dev AUROC sequence 0.6, 0.9, 0.7, 0.5, ...: best epoch 2, stop after `patience` bad epochs
    _script_dev(monkeypatch, [0.6, 0.9, 0.7, 0.5, 0.4, 0.3, 0.2])
    saved = {}
    real_save = T.checkpoint.save

    def spy_save(obj, path):
        if path.name == "best.pt":
            saved["best"] = {k: v.clone() for k, v in obj.items()}
        real_save(obj, path)

    monkeypatch.setattr(T.checkpoint, "save", spy_save)
    rec = T.fit(_cfg(hm_dir, epochs=7, patience=2, keep_best=True), tmp_path / "s")
    assert rec["best_epoch"] == 2
    assert rec["epochs_run"] == 4  # epochs 3 and 4 did not improve: stop
    assert [h["dev_auroc"] for h in rec["history"]] == [0.6, 0.9, 0.7, 0.5]
    best = torch.load(ResultsStore(tmp_path / "s").run_dir(rec["key"]) / "best.pt", weights_only=True)
    assert all(torch.equal(best[k], saved["best"][k]) for k in best)


def test_a_tied_dev_metric_goes_to_the_lower_dev_loss(hm_dir, tmp_path, monkeypatch):
    # a multi-label model sits at macro-F1 0 while it learns the label prior: ties on the metric
    # with a falling dev loss are progress (best epoch 3), a rising loss is not (stop after 5)
    _script_dev(monkeypatch, [0.0] * 7, losses=[0.50, 0.40, 0.30, 0.35, 0.31, 0.2, 0.1])
    rec = T.fit(_cfg(hm_dir, epochs=7, patience=2), tmp_path / "s")
    assert [h["dev_loss"] for h in rec["history"]] == [0.50, 0.40, 0.30, 0.35, 0.31]
    assert rec["best_epoch"] == 3
    assert rec["epochs_run"] == 5


def test_evaluate_reports_the_task_loss(hm_dir):
    # the dev loss of evaluate is the mean BCE of its outputs against sklearn's log loss
    from sklearn.metrics import log_loss

    from data_prep.dataset import PreparedDataset, make_loader, task_info

    ds = PreparedDataset(hm_dir, "dev")
    cfg = _cfg(hm_dir)
    torch.manual_seed(0)
    model = T.build_model(task_info(ds.manifest), cfg)
    res = T.evaluate(model, make_loader(ds, 32), "binary")
    p = 1 / (1 + np.exp(-res["output"].reshape(-1).astype(np.float64)))
    assert res["loss"] == pytest.approx(log_loss(res["labels"].reshape(-1), p, labels=[0, 1]), rel=1e-5)


def test_readout_reaches_the_model_and_the_key(hm_dir):
    from data_prep.dataset import read_manifest, task_info

    task = task_info(read_manifest(hm_dir))
    assert T.build_model(task, _cfg(hm_dir)).readout == "pooler"  # ViLT's, the default
    assert T.build_model(task, _cfg(hm_dir, readout="mean")).readout == "mean"
    key = lambda r: config_key(R.run_config(_cfg(hm_dir, readout=r)))  # noqa: E731
    assert key("pooler") != key("mean")
    with pytest.raises(ValueError, match="readout"):
        T.TrainConfig(readout="cls")


def test_eval_amp_resolution(hm_dir, monkeypatch):
    assert T.TrainConfig(amp="bf16").eval_autocast == "bf16"  # "same": as training
    assert T.TrainConfig(amp=None, eval_amp="bf16").eval_autocast == "bf16"
    assert T.TrainConfig(amp="bf16", eval_amp=None).eval_autocast is None
    monkeypatch.setattr(D, "native_bf16", lambda device="auto": False)
    assert D.resolve_eval_amp("auto", "cpu") is None
    monkeypatch.setattr(D, "native_bf16", lambda device="auto": True)
    assert D.resolve_eval_amp("auto", "cpu") == "bf16"
    assert D.resolve_eval_amp(None, "cpu") is None
    # the evaluation dtype changes test numbers, so it is part of the run's key
    key = lambda amp: config_key(R.run_config(_cfg(hm_dir, eval_amp=amp)))  # noqa: E731
    assert key(None) != key("bf16")


def test_schedule_and_weight_decay_groups():
    f = O.warmup_linear(100, 0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5) and f(100) == 0.0
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    decay, no_decay = O.param_groups(model, 0.01)
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 4])]
    assert len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0.0


def test_config_mismatch_is_a_clear_error(hm_dir, tmp_path):
    with pytest.raises(ValueError, match="holds 'hateful_memes'"):
        T.fit(_cfg(hm_dir, dataset="mmimdb"), tmp_path / "s")
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        T.fit(_cfg(tmp_path / "nowhere"), tmp_path / "s")


def test_prior_logit_against_scipy():
    from scipy.special import logit

    y = np.array([[1, 0, 0, 1], [0, 0, 0, 1], [1, 1, 0, 1], [0, 0, 0, 1]], dtype=np.float32)
    got = T.prior_logit(y, eps=1e-3).numpy()
    np.testing.assert_allclose(got, logit(np.clip(y.astype(np.float64).mean(0), 1e-3, 1 - 1e-3)), rtol=1e-6)
    assert np.isfinite(got).all()  # a label never (column 2) or always (column 3) present
    np.testing.assert_allclose(T.prior_logit(np.array([1, 0, 0, 0])).numpy(), [logit(0.25)], rtol=1e-6)


@pytest.mark.parametrize("kind,n_out,labels", [
    ("multilabel", 3, np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, 1]], dtype=np.float32)),
    ("binary", 1, np.array([1, 0, 0, 0, 0], dtype=np.float32)),
])
def test_prior_head_bias_predicts_the_label_rate_at_the_start(kind, n_out, labels):
    head = torch.nn.Module()
    head.head = TaskHead(8, n_out)
    T.init_head_bias(head, "zero", kind, labels)
    assert torch.count_nonzero(head.head[-1].bias) == 0
    T.init_head_bias(head, "prior", kind, labels)
    rates = labels.reshape(len(labels), -1).mean(0)
    np.testing.assert_allclose(torch.sigmoid(head.head[-1].bias).detach().numpy(), np.clip(rates, 1e-3, 1 - 1e-3), rtol=1e-5)
    # the first layer is untouched, so the head still starts near the prior for any input
    out = torch.sigmoid(head.head(torch.randn(4, 8))).mean(0).detach().numpy()
    np.testing.assert_allclose(out, np.clip(rates, 1e-3, 1 - 1e-3), atol=0.05)
    with pytest.raises(ValueError, match="head_bias"):
        T.init_head_bias(head, "mean", kind, labels)


def test_prior_head_bias_leaves_regression_alone_and_is_in_the_key(hm_dir):
    head = torch.nn.Module()
    head.head = TaskHead(8, 1)
    T.init_head_bias(head, "prior", "regression", np.array([0.5, -2.0, 3.0]))
    assert torch.count_nonzero(head.head[-1].bias) == 0
    key = lambda hb: config_key(R.run_config(_cfg(hm_dir, head_bias=hb)))  # noqa: E731
    assert key("zero") != key("prior")
