"""Texts for the narrative: a comparison's verdict with its numbers, the values each chapter
glues (:func:`headline_glue`) and the note on collapsed runs (:func:`collapse_note`)."""

from __future__ import annotations

import pandas as pd

from .style import case_label
from .tables import _fmt_gain


def verdict(row, b_label: str = "WMA", a_label: str = "baseline") -> str:
    """The verdict of one comparison or endpoint row (:func:`wma_study.report.verdict`'s fixed
    vocabulary), followed by the numbers it rests on: ``"detected: +0.012 [+0.004, +0.020] vs the
    paper's +0.005"``; a collapsed run and fewer than 2 seeds get no interval."""
    from ..report import verdict as _verdict

    dead = int(getattr(row, "collapsed_a", 0)) + int(getattr(row, "collapsed_b", 0))
    prior = int(getattr(row, "prior_a", 0)) + int(getattr(row, "prior_b", 0))
    text = getattr(row, "verdict", None) or _verdict(row.diff_mean, row.diff_lo, row.diff_hi, int(row.n_seeds),
                                                     row.paper_gain, getattr(row, "mde", float("nan")), dead, prior)
    if dead or row.n_seeds < 2 or row.diff_lo != row.diff_lo:
        return text
    paper = "" if row.paper_gain != row.paper_gain else f" vs the paper's {row.paper_gain:+.3f}"
    mde = getattr(row, "mde", float("nan"))
    return f"{text}: {b_label} − {a_label} {_fmt_gain(row.diff_mean, row.diff_lo, row.diff_hi)}{paper}" + (
        f" (our MDE at 80% power {mde:.3f})" if mde == mde else "")


def headline_glue(cmp: pd.DataFrame, prefix: str = "", endpoints: pd.DataFrame | None = None,
                  a_label: str = "baseline", b_label: str = "WMA") -> dict:
    """Text values to glue from one comparison: the normal test case and the noise / missing averages.

    Keys (with ``prefix``): ``gain_normal``, ``paper_gain_normal``, ``verdict_normal``, ``n_seeds``,
    ``gain_noise``, ``paper_gain_noise``, ``gain_missing``, ``paper_gain_missing``, ``wins``
    (test cases where b's mean is better, ``k of n``), ``paper_wins``; with ``endpoints``
    (:func:`wma_study.report.endpoints`) also ``verdict_noise`` and ``verdict_missing``, and the
    noise / missing gains are the endpoints' (mean over cases per seed, with intervals).
    Gains of collapsed runs read "collapsed run" ("never left the prior" when every collapsed run
    of the row predicts the label prior), with fewer than 2 seeds they carry no interval.
    """
    out = {}

    def gain_text(r):
        dead = int(getattr(r, "collapsed_a", 0)) + int(getattr(r, "collapsed_b", 0))
        if dead:
            prior = int(getattr(r, "prior_a", 0)) + int(getattr(r, "prior_b", 0))
            return "never left the prior" if prior >= dead else "collapsed run"
        return _fmt_gain(r.diff_mean, r.diff_lo, r.diff_hi)

    normal = cmp[cmp["test_case"] == "normal"]
    if len(normal):
        r = next(normal.itertuples(index=False))
        out["gain_normal"] = gain_text(r)
        out["paper_gain_normal"] = "n/a" if r.paper_gain != r.paper_gain else f"{r.paper_gain:+.3f}"
        out["verdict_normal"] = verdict(r, b_label, a_label)
        out["n_seeds"] = str(int(r.n_seeds))
    for kind in ("noise", "missing"):
        sub = cmp[cmp["test_case"].str.endswith("_" + kind)]
        out[f"gain_{kind}"] = f"{sub['diff_mean'].mean():+.3f}" if len(sub) and sub["diff_mean"].notna().any() else "n/a"
        out[f"paper_gain_{kind}"] = f"{sub['paper_gain'].mean():+.3f}" if len(sub) and sub["paper_gain"].notna().any() else "n/a"
        if endpoints is not None and (endpoints["endpoint"] == kind).any():
            r = next(endpoints[endpoints["endpoint"] == kind].itertuples(index=False))
            out[f"gain_{kind}"] = gain_text(r)
            out[f"verdict_{kind}"] = verdict(r, b_label, a_label)
    live = cmp[(cmp.get("collapsed_a", 0) + cmp.get("collapsed_b", 0)) == 0] if "collapsed_a" in cmp else cmp
    ours = live["diff_mean"].dropna()
    paper = cmp["paper_gain"].dropna()
    out["wins"] = f"{int((ours > 0).sum())} of {len(ours)}"
    out["paper_wins"] = f"{int((paper > 0).sum())} of {len(paper)}"
    return {prefix + k: v for k, v in out.items()}


def collapse_note(*frames, a_label: str = "baseline", b_label: str = "WMA") -> str:
    """Markdown explaining collapsed runs, or ``""`` when none of the comparison frames has one.

    A collapsed run predicts the same output for every test sample (or scores exactly the constant
    predictor's headline: AUROC 0.5, macro-F1 0). Its difference from the other method is a failed
    fit, not a measurement of the method, so the tables print "collapsed run" instead of a gain.
    """
    dead = []
    for f in frames:
        for r in f.itertuples(index=False):
            name = getattr(r, "test_case", None) or getattr(r, "endpoint", "")
            if getattr(r, "collapsed_a", 0) or getattr(r, "collapsed_b", 0):
                dead.append(f"{case_label(name)} ({r.collapsed_a} {a_label}, {r.collapsed_b} {b_label} runs)")
    if not dead:
        return ""
    # a blockquote, not a {warning} directive: Markdown outputs are rendered as CommonMark
    return ("> **Collapsed runs.** Some runs predict the same output for every test sample "
            "(or score exactly what a constant predictor scores: AUROC 0.5, macro-F1 0): "
            + "; ".join(dict.fromkeys(dead)) + ". Such a run has not learned the task, so its difference from the "
            "other method measures a failed fit, not the method: the tables say *collapsed run* instead of a gain, "
            "and no verdict counts it as a loss. Typical causes at this scale are a learning rate too high for "
            "the regulariser's weight α, or a target the OT distance cannot reach.")
