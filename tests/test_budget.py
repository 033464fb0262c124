"""The build's budget: what a training record says about its own time and work, and how
:mod:`wma_study.budget` reads records, executed notebooks and pretraining folders.

References are computed in the test: the number of samples and steps from the split size and
the batch size, the FLOP estimate from the model's parameters counted here by module type, the
per-process rates from the record's own seconds. The fused AdamW that training uses is
compared with PyTorch's per-parameter AdamW loop (``foreach=False``)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from wma_study import budget
from wma_core import optim as O
from wma_core import train as T
from wma_core.store import ResultsStore


@pytest.fixture(scope="module")
def hm_dir(hm_twin):
    return hm_twin(120, 5)


def _dense_params(model: nn.Module) -> int:
    """Parameters of every Linear, LayerNorm and Conv2d (the ``N`` of 6 N T), counted by module."""
    n = 0
    for mod in model.modules():
        if isinstance(mod, (nn.Linear, nn.LayerNorm, nn.Conv2d)):
            n += sum(p.numel() for p in mod.parameters(recurse=False))
    return n


def test_record_accounts_for_its_time_samples_and_flops(hm_dir, tmp_path):
    cfg = T.TrainConfig(dataset="hateful_memes", data_dir=str(hm_dir), epochs=2, patience=5, batch_size=16,
                        alpha=1.0, beta=1.0, progress=False, device="cpu", ot_iters=10, eval_batch_size=32)
    rec = T.fit(cfg, ResultsStore(tmp_path / "results"))
    t = rec["timings"]
    splits = json.loads((hm_dir / "manifest.json").read_text())["splits"]
    n_train, n_dev, n_test = splits["train"], splits["dev"], splits["test"]
    assert t["train_samples"] == 2 * n_train
    assert t["steps"] == 2 * math.ceil(n_train / 16)
    n_cases = len(rec["metrics"])  # normal + noise and missing per modality
    assert n_cases == 5
    # per-epoch dev passes and the test cases; the best epoch's dev metrics are read from its own pass
    assert t["eval_samples"] == 2 * n_dev + n_cases * n_test
    from data_prep.dataset import PreparedDataset, make_loader, task_info

    model = T.build_model(task_info(json.loads((hm_dir / "manifest.json").read_text())), cfg)
    n_dense = _dense_params(model)

    def patches(b):  # the batch's largest valid grid (its image part: each sample's valid patches, padded)
        m = b["pixel_mask"]
        return max(int(m[i, :, 0].sum()) // 16 * (int(m[i, 0, :].sum()) // 16) for i in range(len(m)))

    def tokens(loader):  # samples x sequence length, summed over batches (text and images padded per batch)
        return sum(b["input_ids"].shape[0] * (b["input_ids"].shape[1] + 1 + patches(b)) for b in loader)

    train_ds = PreparedDataset(hm_dir, "train")
    train_tokens = sum(tokens(make_loader(train_ds, 16, shuffle=True, seed=0, epoch=e)) for e in range(2))
    dev_tokens = tokens(make_loader(PreparedDataset(hm_dir, "dev"), 32))
    test_tokens = tokens(make_loader(PreparedDataset(hm_dir, "test"), 32))
    assert t["train_tokens"] == train_tokens
    assert t["eval_tokens"] == 2 * dev_tokens + n_cases * test_tokens
    assert t["train_flops"] == 6 * n_dense * train_tokens
    assert t["eval_flops"] == 2 * n_dense * t["eval_tokens"]
    assert 0 < t["train_seconds"] and 0 < t["dev_eval_seconds"] and 0 < t["test_seconds"]
    assert t["train_samples_per_second"] == pytest.approx(t["train_samples"] / t["train_seconds"])
    assert t["eval_samples_per_second"] == pytest.approx(t["eval_samples"] / (t["dev_eval_seconds"] + t["test_seconds"]))

    runs = budget.runs_frame([rec])
    row = runs.iloc[0]
    assert row["total_s"] == pytest.approx(t["train_seconds"] + t["dev_eval_seconds"] + t["test_seconds"])
    assert row["train_gflops_per_s"] == pytest.approx(t["train_flops"] / t["train_seconds"] / 1e9)
    assert row["eval_gflops_per_s"] == pytest.approx(t["eval_flops"] / (t["dev_eval_seconds"] + t["test_seconds"]) / 1e9)
    assert (row["dataset"], row["method"]) == ("hateful_memes", "wma")


def test_budget_reads_chapters_pretraining_and_old_records(tmp_path):
    build = tmp_path / "build"
    (build / "executed").mkdir(parents=True)
    (build / "timings.json").write_text(json.dumps({"notebooks": {"02_hateful_memes": 99.0, "03_mmimdb": 50.0}}))
    nb = {"cells": [], "metadata": {"papermill": {"duration": 12.5}}, "nbformat": 4, "nbformat_minor": 5}
    (build / "executed" / "02_hateful_memes.ipynb").write_text(json.dumps(nb))
    (build / "executed" / "broken.ipynb").write_text("{not json")
    ch = budget.chapter_seconds(build).set_index("chapter")
    assert ch.loc["02_hateful_memes", "seconds"] == 12.5  # this build's papermill time wins
    assert ch.loc["02_hateful_memes", "source"].startswith("this build")
    assert ch.loc["03_mmimdb", "seconds"] == 50.0 and "broken" not in ch.index

    home = tmp_path / "home"
    (home / "pretrained" / "abc").mkdir(parents=True)
    (home / "pretrained" / "abc" / "pretrain.json").write_text(json.dumps(
        {"timings": {"corpus_seconds": 3.0, "train_seconds": 40.0, "eval_seconds": 2.0, "steps": 100, "threads": 2}}))
    pre = budget.pretraining_seconds(home)
    assert pre.to_dict("records") == [{"folder": "abc", "corpus_s": 3.0, "train_s": 40.0, "eval_s": 2.0, "steps": 100, "threads": 2}]

    old = {"config": {"dataset": "mosei", "method": "baseline"}, "timings": {"train_seconds": 10.0, "test_seconds": 2.0}}
    row = budget.runs_frame([old]).iloc[0]
    assert row["train_s"] == 10.0 and math.isnan(row["dev_eval_s"]) and math.isnan(row["train_gflops_per_s"])

    bench = {"a.json": {"benchmark": "train_step", "gemm_peak_gflops_per_s": 300.0, "threads": 2, "machine": {"cpu": "X"}},
             "b.json": {"benchmark": "train_step", "gemm_peak_gflops_per_s": 500.0, "threads": 2, "machine": {"cpu": "Y"}},
             "c.json": {"benchmark": "ipot"}}
    assert budget.machine_rate(bench, cpu="X")["file"] == "a.json"  # the same CPU first
    assert budget.machine_rate(bench)["gflops_per_s"] == 500.0
    assert budget.machine_rate({"c.json": bench["c.json"]}) is None


def test_fused_adamw_matches_the_reference_loop():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 1))
    ref = __import__("copy").deepcopy(model)
    cfg = T.TrainConfig(lr=1e-2)
    opt = T.make_optimizer(model, cfg, torch.device("cpu"))
    assert opt.defaults["fused"] is True
    ref_opt = torch.optim.AdamW(O.param_groups(ref, cfg.weight_decay), lr=cfg.lr, betas=cfg.adam_betas, foreach=False)
    x = torch.randn(32, 8)
    for _ in range(20):
        for m, o in ((model, opt), (ref, ref_opt)):
            o.zero_grad()
            m(x).pow(2).mean().backward()
            o.step()
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_head_learning_rate_multiplier_matches_two_reference_optimisers():
    """``head_lr_mult``: the head trains at ``lr * mult`` and the backbone at ``lr``, each with
    its own weight-decay rule; checked against one plain AdamW per part, on the same schedule."""
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16))
            self.head = nn.Sequential(nn.Linear(16, 16), nn.LayerNorm(16), nn.Linear(16, 1))

        def forward(self, x):
            return self.head(self.backbone(x))

    model = Net()
    ref = __import__("copy").deepcopy(model)
    cfg = T.TrainConfig(lr=1e-3, head_lr_mult=10.0)
    opt = T.make_optimizer(model, cfg, torch.device("cpu"))
    params = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(params) == sorted(id(p) for p in model.parameters())  # each parameter exactly once
    refs = [torch.optim.AdamW(O.param_groups(part, cfg.weight_decay), lr=lr, betas=cfg.adam_betas, foreach=False)
            for part, lr in ((ref.backbone, 1e-3), (ref.head, 1e-2))]
    scheds = [O.warmup_schedule(o, 20, 0.25) for o in [opt] + refs]
    x = torch.randn(32, 8)
    for _ in range(20):
        for m, os_ in ((model, [opt]), (ref, refs)):
            for o in os_:
                o.zero_grad()
            m(x).pow(2).mean().backward()
            for o in os_:
                o.step()
        for s in scheds:
            s.step()
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    with pytest.raises(ValueError, match="head_lr_mult"):
        T.TrainConfig(head_lr_mult=0.0)
