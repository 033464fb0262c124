"""The book's tables: pandas frames of comparisons, endpoints, claims, runs and datasets, and
their styled versions (the paper beside ours, p-values to 3 digits, verdict cells shaded).

- :func:`show_table`: any frame as a captioned ``Styler``;
- :func:`comparison_frame`, :func:`comparison_table`: a :func:`wma_study.report.comparison`;
- :func:`endpoints_frame`, :func:`endpoints_table`: the primary endpoints;
- :func:`claims_table`: the summary's claims with their verdicts;
- :func:`runs_table`, :func:`target_text`: one row per training run, its target β·D0;
- :func:`data_summary`: a prepared dataset and its profile.

The cell texts (:func:`p_text`, intervals and gains) are shared with :mod:`.verdicts`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .style import DATASET_LABELS, case_label, metric_label


def show_table(df: pd.DataFrame, *, caption: str | None = None, precision: int = 3, hide_index: bool = True):
    """A pandas ``Styler``: numbers to ``precision`` digits, an optional caption, no index."""
    sty = df.style.format(precision=precision, na_rep="–")
    if hide_index:
        sty = sty.hide(axis="index")
    if caption:
        sty = sty.set_caption(caption)
    return sty.set_table_styles([{"selector": "caption", "props": "caption-side: top; font-weight: bold; text-align: left;"}])


def _interval_text(m, lo, hi, digits, interval) -> str:
    """``m`` with ``interval(lo, hi)`` after it; ``–`` for a missing mean, the mean alone without an interval."""
    if m != m:
        return "–"
    if lo != lo or hi != hi:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} {interval(lo, hi)}"


def _ci_text(m, lo, hi, digits=3) -> str:
    return _interval_text(m, lo, hi, digits, lambda a, b: f"[{a:.{digits}f}, {b:.{digits}f}]")


def _pm_text(m, lo, hi, digits=3) -> str:
    return _interval_text(m, lo, hi, digits, lambda a, b: f"± {(b - a) / 2:.{digits}f}")


def comparison_frame(cmp: pd.DataFrame, *, a_label: str = "baseline", b_label: str = "WMA", paper: bool = True) -> pd.DataFrame:
    """A :func:`wma_study.report.comparison` frame as display columns (paper beside ours).

    Columns: test case, the paper's a and b and its gain, our a and b (mean ± 95% CI half-width), our
    gain (mean [95% CI], positive = b better), our minimum detectable effect at 80% power, the paired
    p-value and its Holm-corrected value (secondary test cases), seeds, and the verdict
    (:func:`wma_study.report.verdict`). With fewer than 2 paired seeds no interval is printed: the
    gain column says so. A collapsed run shows no gain at all (it is no measurement of the method).
    ``paper=False`` drops the paper's columns (comparisons the paper did not make).
    """
    rows = []
    for r in cmp.itertuples(index=False):
        dead = getattr(r, "collapsed_a", 0) + getattr(r, "collapsed_b", 0)
        if dead:
            gain = f"collapsed run ({r.collapsed_a} of {a_label}, {r.collapsed_b} of {b_label})"
        elif r.n_seeds < 2:
            gain = (f"{r.diff_mean:+.3f} ({report_min_seeds()})" if r.diff_mean == r.diff_mean else "–")
        else:
            gain = _ci_text(r.diff_mean, r.diff_lo, r.diff_hi)
        rows.append({
            "test case": case_label(r.test_case),
            f"paper {a_label}": r.paper_a,
            f"paper {b_label}": r.paper_b,
            "paper gain": r.paper_gain,
            f"ours {a_label}": _pm_text(r.a_mean, r.a_lo, r.a_hi),
            f"ours {b_label}": _pm_text(r.b_mean, r.b_lo, r.b_hi),
            "ours gain [95% CI]": gain,
            "MDE (80% power)": getattr(r, "mde", np.nan),
            "p (paired t)": r.p_value,
            "p (Holm)": getattr(r, "p_holm", np.nan),
            "seeds": r.n_seeds,
            "verdict": getattr(r, "verdict", ""),
            **_backbone_columns(r),
        })
    df = _drop_empty_backbones(pd.DataFrame(rows))
    if not paper:
        df = df.drop(columns=[c for c in df.columns if c.startswith("paper")])
    return df


def report_min_seeds() -> str:
    from ..report import MIN_SEEDS_TEXT

    return MIN_SEEDS_TEXT


VERDICT_COLORS = {"detected": "#cfe8cf", "detected (opposite sign)": "#f6c9c4", "ruled out at the paper's size": "#f6c9c4",
                  "inconclusive": "#fde2c4", "collapsed run": "#d9d9d9", "never left the prior": "#d9d9d9"}


def _shade_verdict(v) -> str:
    from ..report import VERDICTS, verdict_category

    if not isinstance(v, str) or not v.startswith(VERDICTS):
        return ""
    return f"background-color: {VERDICT_COLORS[verdict_category(v)]}"


def p_text(p) -> str:
    """A p-value for a table: 3 decimals, ``< 0.001`` below that, ``–`` when undefined (NaN)."""
    if p is None or p != p:
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def comparison_table(cmp: pd.DataFrame, *, a_label: str = "baseline", b_label: str = "WMA", caption: str | None = None,
                     paper: bool = True, dataset_column: bool = False):
    """:func:`comparison_frame` styled: p-values to 3 digits, the verdict cells shaded by category.

    ``dataset_column``: ``cmp`` has a ``dataset`` column (several datasets concatenated) to show first.
    """
    df = comparison_frame(cmp, a_label=a_label, b_label=b_label, paper=paper)
    if dataset_column and "dataset" in cmp.columns:
        df.insert(0, "dataset", [DATASET_LABELS.get(d, d) for d in cmp["dataset"]])
    sty = show_table(df, caption=caption, precision=3).format(p_text, subset=["p (paired t)", "p (Holm)"])
    return sty.map(_shade_verdict, subset=["verdict"])


def endpoints_frame(ep: pd.DataFrame, *, a_label: str = "baseline", b_label: str = "WMA") -> pd.DataFrame:
    """The primary endpoints (:func:`wma_study.report.endpoints`) as display columns, one row each.

    A half-width above 0.02 is what it is: the MDE column beside the paper's gain says what our
    seeds could have detected.
    """
    rows = []
    for r in ep.itertuples(index=False):
        dead = r.collapsed_a + r.collapsed_b
        if dead:
            gain = f"collapsed run ({r.collapsed_a} of {a_label}, {r.collapsed_b} of {b_label})"
        elif r.n_seeds < 2:
            gain = f"{r.diff_mean:+.3f} ({report_min_seeds()})" if r.diff_mean == r.diff_mean else "–"
        else:
            gain = _ci_text(r.diff_mean, r.diff_lo, r.diff_hi)
        rows.append({
            "endpoint": r.endpoint, "test cases": r.test_cases.replace("_", " "), "paper gain": r.paper_gain,
            f"ours {a_label}": _pm_text(r.a_mean, r.a_lo, r.a_hi), f"ours {b_label}": _pm_text(r.b_mean, r.b_lo, r.b_hi),
            "ours gain [95% CI]": gain, "CI half-width": r.half_width, "MDE (80% power)": r.mde,
            "p (paired t)": r.p_value, "seeds": r.n_seeds, "verdict": r.verdict,
            **_backbone_columns(r),
        })
    return _drop_empty_backbones(pd.DataFrame(rows))


#: the per-backbone columns of the comparison and endpoint tables
BACKBONE_COLUMNS = ("holds on backbones", "per backbone: gain [95% CI] verdict")


def _backbone_columns(r) -> dict:
    """Whether the verdict holds on each replicated backbone: ``"2/2"`` and each backbone's own
    gain, interval and verdict category (empty for runs that are not replicated)."""
    k = int(getattr(r, "n_backbones", 0) or 0)
    return {BACKBONE_COLUMNS[0]: getattr(r, "holds_on", "") if k else "",
            BACKBONE_COLUMNS[1]: (getattr(r, "by_backbone", "") or "") if k else ""}


def compact_backbones(text: str) -> str:
    """A ``by_backbone`` text without its intervals, one backbone per line (the summary's claims
    table; the chapters' tables keep the intervals): ``"b0: -0.012 inconclusive<br>b1: ..."``."""
    import re

    parts = [re.sub(r" \[[^\]]*\]", "", p.strip()) for p in str(text or "").split(";") if p.strip()]
    return "<br>".join(parts)


def _drop_empty_backbones(df: pd.DataFrame) -> pd.DataFrame:
    """Without replicated backbones the two backbone columns say nothing: drop them."""
    if df.empty or not all(c in df for c in BACKBONE_COLUMNS):
        return df
    if (df[list(BACKBONE_COLUMNS)] == "").all().all():
        return df.drop(columns=list(BACKBONE_COLUMNS))
    return df


def endpoints_table(ep: pd.DataFrame, *, a_label: str = "baseline", b_label: str = "WMA", caption: str | None = None):
    """:func:`endpoints_frame` styled, verdicts shaded by category."""
    sty = show_table(endpoints_frame(ep, a_label=a_label, b_label=b_label), caption=caption, precision=3)
    return sty.format(p_text, subset=["p (paired t)"]).map(_shade_verdict, subset=["verdict"])


def claims_table(df: pd.DataFrame, caption: str):
    """A claims frame as the summary shows it: the gain with its interval ("collapsed run" or
    "never left the prior" where a run failed to fit), the paper's gain, our MDE and the verdict,
    shaded by verdict."""
    from ..report import FAILED_FIT

    def failed(v):
        return next((f for f in FAILED_FIT if str(v).startswith(f)), None)

    show = df.assign(**{
        "ours [95% CI]": [failed(v) or _fmt_gain(g, lo, hi)
                          for g, lo, hi, v in zip(df["gain"], df["lo"], df["hi"], df["verdict"])],
    })
    cols = ["claim", "paper", "ours [95% CI]", "mde", "verdict", "evidence"]
    if "by_backbone" in df and df["by_backbone"].fillna("").ne("").any():
        show = show.assign(**{BACKBONE_COLUMNS[0]: df["holds_on"].fillna(""),
                              "per backbone: gain, verdict": df["by_backbone"].fillna("").map(compact_backbones)})
        cols = cols[:5] + [BACKBONE_COLUMNS[0], "per backbone: gain, verdict"] + cols[5:]
    show = show[cols].rename(columns={"paper": "paper's gain", "mde": "our MDE (80% power)"})
    return show_table(show, caption=caption, precision=3).map(_shade_verdict, subset=["verdict"])


def data_summary(manifest: dict, profile=None) -> pd.DataFrame:
    """A prepared dataset (and the profile that trains on it) as a two-column table."""
    ds = manifest["dataset"]
    dropped = manifest.get("dropped") or {}
    n_dropped = sum(sum(v.values()) if isinstance(v, dict) else int(v) for v in dropped.values())

    def counts(section: dict) -> str:  # "3 × unknown genre News; 1 × missing image" over all splits
        total: dict = {}
        for v in section.values():
            for r, n in (v.items() if isinstance(v, dict) else ()):
                total[r] = total.get(r, 0) + int(n)
        return "; ".join(f"{n} × {r}" for r, n in sorted(total.items()))

    def per_dataset(v):
        return v.get(ds) if isinstance(v, dict) else v

    rows = {
        "dataset": DATASET_LABELS.get(ds, ds),
        "task": f"{manifest['task']['kind']} ({manifest['task']['n_out']} outputs)",
        "modalities": ", ".join(manifest["modalities"]),
        "samples train / dev / test": " / ".join(str(manifest["splits"][s]) for s in ("train", "dev", "test")),
        "samples dropped by the converter": f"{n_dropped} ({counts(dropped)})" if n_dropped else "0",
        "headline metric": metric_label(manifest["task"]["headline_metric"]),
    }
    overlap = manifest.get("split_overlap")
    if isinstance(overlap, dict):  # the converter's split-integrity check (ids and content across splits)
        found = sum(sum(c.values()) for c in (overlap.get("found") or {}).values())
        compared = sum((overlap.get("records_compared") or {}).values())
        rows["records in two splits (same id or content)"] = (
            f"none among {compared} compared" if not found
            else f"{found} found, {sum((overlap.get('dropped') or {}).values())} dropped ({overlap.get('policy')})")
    if manifest.get("dropped_genres"):  # MM-IMDb: labels outside the label set, dropped from kept movies
        rows["genre labels dropped (movies kept)"] = counts(manifest["dropped_genres"])
    if n_dropped or manifest.get("dropped_genres"):
        rows["converter log"] = "prepare.log in the prepared folder names every record left out"
    if manifest.get("feature_dims"):  # MultiBench features: where our converter departs from MultiBench
        n_nonfinite = sum(n for v in dropped.values() if isinstance(v, dict)
                          for r, n in v.items() if r.startswith("non-finite"))
        rows["non-finite features"] = (
            f"samples with NaN or +inf features on a valid time step are dropped and counted "
            f"({n_nonfinite} here); MultiBench keeps them. Audio -inf becomes 0, as in MultiBench."
        )
    if profile is not None:
        rows.update({
            "scale": profile.name, "model": profile.model, "max epochs": per_dataset(profile.epochs),
            "batch size": per_dataset(profile.batch_size), "learning rate": per_dataset(profile.lr),
            "seeds": ", ".join(str(x) for x in profile.seeds),
        })
    return pd.DataFrame({"": list(rows), "value": [str(v) for v in rows.values()]})


def target_text(rec: dict) -> str:
    """WMA's target β·D0 (largest over pairs) as text, flagged when it cannot be reached:
    ``"1.35"``, ``"2.70 ✗ unreachable (> 2)"``; ``"–"`` for the baseline and the batch target."""
    from wma_core.losses import D_MAX
    from ..report import target_reachable

    c = rec["config"]
    if c["method"] == "baseline" or c.get("target", "init") != "init" or not rec.get("d0"):
        return "–"
    t = c["beta"] * max(rec["d0"].values())
    return f"{t:.2f}" if target_reachable(rec) else f"{t:.2f} ✗ unreachable (> {D_MAX:g})"


def runs_table(records) -> pd.DataFrame:
    """One row per training run: method, α, β, target, the L2-SP strength, backbone, seed, epochs,
    D0, the target β·D0 (flagged when unreachable), dev and test headline metric, time."""
    rows = []
    for rec in records:
        c = rec["config"]
        m = rec.get("headline_metric")
        rows.append({
            "method": c["method"], "α": f"{c['alpha']:g}" if c["method"] != "l2sp" else "–",
            "β": f"{c['beta']:g}" if c["method"] not in ("baseline", "l2sp") else "–",
            "target": c.get("target", "init") if c["method"] not in ("baseline", "l2sp") else "",
            "λ (L2-SP)": f"{c['l2sp']:g}" if c.get("l2sp") else "",
            "backbone": c.get("backbone") or "", "seed": c["seed"], "best epoch": f"{rec.get('best_epoch')} of {rec.get('epochs_run')}",
            "D0 (mean over pairs)": float(np.mean(list(rec["d0"].values()))) if rec.get("d0") else np.nan,
            "target β·D0": target_text(rec),
            f"dev {m}": (rec.get("dev_metrics") or {}).get(m, np.nan),
            f"test {m} (normal)": rec["metrics"]["normal"].get(m, np.nan),
            "train s": (rec.get("timings") or {}).get("train_seconds", np.nan),
            "key": rec["key"],
        })
    return pd.DataFrame(rows)


def _fmt_gain(m, lo, hi) -> str:
    if m != m:
        return "n/a"
    if lo != lo or hi != hi:
        return f"{m:+.3f}"
    return f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]"
