"""Run records → frames: the runs table and the helpers every report builds on.

- :func:`runs_frame`: one row per (run, split, test case, metric) of a results store
  (:data:`RUN_COLUMNS`); :func:`records_frame`: the same, restricted to some records;
- :func:`is_collapsed`: a run that predicts a constant (reported as "collapsed run", never as a
  loss); :func:`stayed_at_prior`: a constant run that predicts the label prior (reported as
  "never left the prior"); :func:`failure_kind`: which of the two, if any;
  :func:`target_reachable`: whether WMA's target β·D0 can be reached;
- selections on the frame (``_filter``, ``_one_data``, ``_as_runs``), the dataset's
  :func:`headline` metric, :func:`greater_is_better`, :func:`test_case_order`, :func:`format_ci`;
- best-cell selection (``_cell_scores``, ``_best_cell``, ``_cell_label``: the best configuration
  up to its seed on the dev or the test split), shared by :mod:`.comparisons` and :mod:`.grids`.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path

import numpy as np
import pandas as pd

from wma_core.metrics import GREATER_IS_BETTER
from wma_core.store import ResultsStore

CONFIG_COLUMNS = ["dataset", "method", "alpha", "beta", "target", "lr", "l2sp", "seed", "epochs", "batch_size", "model",
                  "backbone", "data"]
RUN_COLUMNS = ["key"] + CONFIG_COLUMNS + ["init", "split", "test_case", "metric", "value", "collapsed", "feasible",
                                          "at_prior"]
# a configuration up to its seed and its backbone (what a "cell" of a sweep is): the replicated
# backbones of the pretrained miniature are one initialisation, "pretrained" (see init_of)
CELL = ["dataset", "method", "alpha", "beta", "target", "lr", "l2sp", "epochs", "batch_size", "init", "data"]
#: the ``init`` of the replicated pretrained backbones (:func:`init_of`)
PRETRAINED_INIT = "pretrained"
HEADLINE = {"hateful_memes": "auroc", "mmimdb": "f1_macro", "ur_funny": "auroc", "mosei": "mae"}
MODALITY_ORDER = ["text", "image", "video", "audio"]


# --------------------------------------------------------------------------- runs


def _matches(value, wanted) -> bool:
    if isinstance(wanted, (list, tuple, set, frozenset)):
        return any(_matches(value, w) for w in wanted)
    if value is None or wanted is None:
        return value is None and wanted is None
    if isinstance(wanted, (bool, np.bool_)) or isinstance(value, (bool, np.bool_)):
        return value == wanted
    if isinstance(wanted, numbers.Real) and isinstance(value, numbers.Real):
        return math.isclose(float(value), float(wanted), rel_tol=1e-9, abs_tol=1e-12)
    return value == wanted


#: the headline of a constant predictor: AUROC of a constant score, macro-F1 of predicting no genre
CONSTANT_HEADLINE = {"auroc": 0.5, "f1_macro": 0.0}


def is_collapsed(record: dict, test_case: str = "normal") -> bool:
    """Whether a run predicts a constant on ``test_case`` (a *collapsed run*).

    True when the record's prediction summary (``record["predictions"][test_case]``, written at
    evaluation by :func:`wma_core.metrics.prediction_summary`) has one distinct prediction for the
    whole test set, or when its headline metric equals the constant predictor's exactly
    (:data:`CONSTANT_HEADLINE`: AUROC 0.5, macro-F1 0; an MAE has no label-free constant value,
    so regression runs rely on the prediction summary).
    """
    summary = (record.get("predictions") or {}).get(test_case)
    if summary is not None and int(summary.get("distinct", 2)) <= 1:
        return True
    metric = record.get("headline_metric")
    value = (record.get("metrics") or {}).get(test_case, {}).get(metric)
    const = CONSTANT_HEADLINE.get(metric)
    return const is not None and value is not None and value == value and abs(float(value) - const) < 1e-12


#: :func:`stayed_at_prior`'s default tolerance on ``prior_gap`` (logits; label units for regression)
PRIOR_TOL = 1.0


def stayed_at_prior(record: dict, test_case: str = "normal", tol: float = PRIOR_TOL) -> bool:
    """Whether a run is a constant predictor (:func:`is_collapsed`) that predicts the label prior.

    True when the run is collapsed on ``test_case`` and its prediction summary's ``prior_gap``
    (:func:`wma_core.metrics.prediction_summary`: the mean over test samples and output columns of
    ``|output - prior|``, the prior being the training split's label log-odds, or label mean for
    regression) is below ``tol``. Such a run never left the prior the task head starts at
    (``head_bias="prior"``): it learned nothing about the inputs, which is a different failure from
    a run that moved and collapsed onto some other constant (e.g. under a too-strong regulariser).
    Records written before ``prior_gap`` existed are never at the prior (they read as collapsed,
    as before).

    The tolerance, :data:`PRIOR_TOL` = 1 logit: even an untrained model is not exactly at the
    prior. ``head_bias="prior"`` sets only the last bias; the last layer's random weights
    (:class:`wma_core.model.TaskHead`, std 0.02 on ``2h`` GELU activations with E[GELU(z)²] = 0.43)
    add an offset, nearly the same for every sample, of standard deviation
    ``0.02 * sqrt(2h * 0.43)``: 0.21 logits for the tiny model (h = 128; measured 0.12, 0.24 and
    0.56 on the Hateful Memes twin at initialisation, seeds 0-2), 0.51 for ViLT-B (h = 768).
    Training then pulls a constant predictor towards the prior (the constant that minimises the
    training BCE), so a run that learned nothing sits between its initial offset and the prior:
    within 1 logit at about 2 standard deviations of ViLT-B's offset. A run that collapsed
    elsewhere sits at some other constant, typically a saturated one several logits away (e.g. a
    multi-label head pushed far below its rare labels' log-odds of about -3). 1 logit moves a
    probability by at most 0.25 (the sigmoid's slope is at most 1/4). For regression the same 1
    is in label units (MOSEI's sentiment on [-3, 3]); its head starts at 0, not at the prior, and
    its L1 loss pulls a constant towards the training median, which the mean only approximates.

    What it cannot tell: a run whose features collapsed and whose head then re-learned the prior
    (the BCE optimum of a constant input) also ends at the prior; ``prior_gap`` says where the
    outputs are, not how they got there.
    """
    if not is_collapsed(record, test_case):
        return False
    summary = (record.get("predictions") or {}).get(test_case) or {}
    gap = summary.get("prior_gap")
    return gap is not None and gap == gap and float(gap) < tol


def failure_kind(record: dict, test_case: str = "normal") -> str | None:
    """``"never left the prior"`` (:func:`stayed_at_prior`), ``"collapsed"`` (any other constant
    predictor, :func:`is_collapsed`) or ``None`` (a run whose predictions vary) on ``test_case``."""
    if not is_collapsed(record, test_case):
        return None
    return "never left the prior" if stayed_at_prior(record, test_case) else "collapsed"


def init_of(config: dict) -> str:
    """The initialisation a run's cell is grouped by: :data:`PRETRAINED_INIT` for a replicated
    backbone of the pretrained miniature (its ``backbone`` field is set; the backbones differ as
    seeds do), otherwise the model's identity (``"tiny"``, a hub name, ``folder:<digest>``)."""
    return PRETRAINED_INIT if config.get("backbone") else config.get("model")


def records_frame(records: list, store_or_dir) -> pd.DataFrame:
    """:func:`runs_frame` restricted to the runs of ``records`` (what a chapter just trained or reused)."""
    runs = runs_frame(store_or_dir)
    return runs[runs["key"].isin({r["key"] for r in records})]


def target_reachable(rec: dict) -> bool:
    """False for a WMA run (``init`` target) whose target β·D0 exceeds, on some modality pair, the
    largest OT distance the cosine cost allows (:data:`wma_core.losses.D_MAX` = 2); True otherwise.

    Read from the record's ``infeasible`` flag, or recomputed from its config and D0 for records
    written before the flag existed.
    """
    if "infeasible" in rec:
        return not rec["infeasible"]
    from wma_core.losses import WMAConfig, target_feasible

    cfg = rec.get("config", {})
    wma = WMAConfig(alpha=float(cfg.get("alpha", 0.0)), beta=float(cfg.get("beta", 1.0)), target=cfg.get("target", "init"))
    return all(target_feasible(wma, rec.get("d0")).values())


def runs_frame(store_or_dir, *, data_dir=None, **where) -> pd.DataFrame:
    """All runs of a results store as a long table.

    One row per (run, split, test case, metric); columns :data:`RUN_COLUMNS`: ``key``, the config
    fields ``dataset, method, alpha, beta, target, lr, l2sp, seed, epochs, batch_size, model,
    backbone, data`` (``backbone`` ``""`` and ``l2sp`` 0 for records written before they
    existed), ``init`` (:func:`init_of`),
    ``split`` (``"test"``: every test case of the best checkpoint; ``"dev"``: the dev split,
    unperturbed, best checkpoint, with ``test_case="normal"``), ``test_case``, ``metric``, ``value``,
    ``collapsed`` (:func:`is_collapsed` on that test case; always False on dev), ``feasible``
    (:func:`target_reachable`: False when WMA's target β·D0 cannot be reached), ``at_prior``
    (:func:`stayed_at_prior` on that test case, a collapsed run that never left the prior; always
    False on dev).

    Args:
        store_or_dir: a :class:`ResultsStore` or its folder.
        data_dir: keep only runs trained on this prepared folder (their config's ``data`` equals
            :func:`wma_core.record.manifest_digest` of it), so smoke, default and paper runs never mix.
        **where: keep only runs whose config field equals the value (floats compared with a
            relative tolerance of 1e-9; a list/tuple/set means "any of").
    """
    store = store_or_dir if isinstance(store_or_dir, ResultsStore) else ResultsStore(store_or_dir)
    if data_dir is not None:
        from wma_core.record import manifest_digest

        where = {**where, "data": manifest_digest(data_dir)}
    rows = []
    for rec in store.records():
        cfg = rec.get("config", {})
        if any(k not in cfg or not _matches(cfg[k], v) for k, v in where.items()):
            continue
        base = {"key": rec["key"], **{c: cfg.get(c) for c in CONFIG_COLUMNS}, "feasible": target_reachable(rec)}
        base["backbone"] = cfg.get("backbone") or ""
        base["l2sp"] = cfg.get("l2sp") or 0.0
        base["init"] = init_of(cfg)
        for case, metrics in (rec.get("metrics") or {}).items():
            dead, prior = is_collapsed(rec, case), stayed_at_prior(rec, case)
            for metric, value in metrics.items():
                rows.append({**base, "split": "test", "test_case": case, "metric": metric, "value": value, "collapsed": dead,
                             "at_prior": prior})
        for metric, value in (rec.get("dev_metrics") or {}).items():
            rows.append({**base, "split": "dev", "test_case": "normal", "metric": metric, "value": value, "collapsed": False,
                         "at_prior": False})
    df = pd.DataFrame(rows, columns=RUN_COLUMNS)
    df["collapsed"] = df["collapsed"].astype(bool)
    df["feasible"] = df["feasible"].astype(bool)
    df["at_prior"] = df["at_prior"].astype(bool)
    for c in ("alpha", "beta", "lr", "l2sp", "value"):
        df[c] = df[c].astype(float)
    return df


def _as_runs(runs) -> pd.DataFrame:
    if isinstance(runs, pd.DataFrame):
        return _with_defaults(runs)
    if isinstance(runs, (ResultsStore, str, Path)):
        return runs_frame(runs)
    raise TypeError(f"runs must be a runs_frame DataFrame, a ResultsStore or its folder; got {type(runs).__name__}")


def _with_defaults(df: pd.DataFrame) -> pd.DataFrame:
    """A runs frame built elsewhere (or before the columns existed) with ``backbone``, ``l2sp``
    and ``init`` filled as :func:`runs_frame` fills them: ``""``, 0 and the model."""
    missing = {c: df.get(c) is None or df[c].isna().all() for c in ("backbone", "l2sp", "init")}
    if not any(missing.values()):
        return df
    df = df.copy()
    if missing["backbone"]:
        df["backbone"] = ""
    if missing["l2sp"]:
        df["l2sp"] = 0.0
    if missing["init"]:
        df["init"] = [PRETRAINED_INIT if b else m for b, m in zip(df["backbone"].fillna(""), df["model"])]
    return df


def _filter(df: pd.DataFrame, sel: dict) -> pd.DataFrame:
    mask = np.ones(len(df), dtype=bool)
    for k, v in sel.items():
        if k not in df.columns:
            raise KeyError(f"cannot select on {k!r}: not a column of the runs frame")
        mask &= _column_matches(df[k], v)
    return df[mask]


def _column_matches(col: pd.Series, wanted) -> np.ndarray:
    if isinstance(wanted, (list, tuple, set, frozenset)):
        out = np.zeros(len(col), dtype=bool)
        for w in wanted:
            out |= _column_matches(col, w)
        return out
    num = isinstance(wanted, (int, float, np.integer, np.floating)) and not isinstance(wanted, (bool, np.bool_))
    if num and pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        return np.isclose(col.to_numpy(dtype=float), float(wanted), rtol=1e-9, atol=1e-12)
    return np.array([_matches(x, wanted) for x in col], dtype=bool)


def _one_data(df: pd.DataFrame, dataset: str) -> None:
    """Refuse to mix runs on different prepared data (e.g. the smoke and the default twin)."""
    digests = sorted(set(df.loc[df["dataset"] == dataset, "data"].dropna()))
    if len(digests) > 1:
        raise ValueError(
            f"{dataset} runs on {len(digests)} different prepared data sets ({', '.join(digests)}): "
            "select one with runs_frame(store, data_dir=...) or runs_frame(store, data=...)"
        )


def headline(dataset: str) -> str:
    if dataset not in HEADLINE:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(HEADLINE)}")
    return HEADLINE[dataset]


def greater_is_better(metric: str) -> bool:
    return GREATER_IS_BETTER.get(metric, metric != "mae")


def test_case_order(cases) -> list[str]:
    """``normal``, then ``<m>_noise`` for each modality, then ``<m>_missing`` (text, image, video, audio)."""
    cases = list(dict.fromkeys(cases))

    def rank(c):
        if c == "normal":
            return (0, 0, c)
        m, _, kind = c.rpartition("_")
        group = {"noise": 1, "missing": 2}.get(kind, 3)
        mi = MODALITY_ORDER.index(m) if m in MODALITY_ORDER else len(MODALITY_ORDER)
        return (group, mi, c)

    return sorted(cases, key=rank)


def format_ci(mean: float, lo: float, hi: float, digits: int = 3) -> str:
    """``"0.712 ± 0.014"`` (half-width of the interval); ``"0.712"`` when there is no interval."""
    if mean != mean:
        return "–"
    if lo != lo or hi != hi:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {(hi - lo) / 2:.{digits}f}"


# --------------------------------------------------------------------------- best cell (shared by comparisons and grids)


def _cell_scores(df: pd.DataFrame, split: str, metric: str) -> pd.DataFrame:
    """Mean over seeds of ``metric`` on ``split``/normal, one row per cell (config up to its seed)."""
    sub = df[(df["split"] == split) & (df["test_case"] == "normal") & (df["metric"] == metric)]
    if sub.empty:
        return pd.DataFrame(columns=CELL + ["score", "n"])
    g = sub.groupby(CELL, sort=True, dropna=False)["value"]
    out = g.mean().rename("score").to_frame()
    out["n"] = g.count()
    return out.reset_index()


def _best_cell(df: pd.DataFrame, by: str, metric: str) -> tuple[dict | None, float, int]:
    """The cell with the best mean ``metric`` on the ``by`` split; ties → the first in sorted order."""
    split = {"dev": "dev", "test": "test"}.get(by)
    if split is None:
        raise ValueError(f"by must be 'dev' (clean) or 'test' (the paper's way), got {by!r}")
    scores = _cell_scores(df, split, metric).dropna(subset=["score"])
    if scores.empty:
        return None, float("nan"), 0
    vals = scores["score"].to_numpy()
    i = int(np.argmax(vals) if greater_is_better(metric) else np.argmin(vals))
    row = scores.iloc[i]
    return {c: row[c] for c in CELL}, float(row["score"]), len(scores)


def _cell_label(cell: dict | None) -> str:
    if cell is None:
        return ""
    s = f"{cell['method']} lr={cell['lr']:g}"
    if cell["method"] == "l2sp":
        return s + f" λ={cell['l2sp']:g}"
    if cell["method"] != "baseline":
        s += f" α={cell['alpha']:g} β={cell['beta']:g} target={cell['target']}"
    return s
