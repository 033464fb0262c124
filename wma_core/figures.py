"""The book's figures and tables: one function per kind of plot, shared by every notebook.

Every function takes what :mod:`wma_core.report` returns (comparison frames, grids) or raw
run records (:func:`wma_core.train.fit`) and returns a matplotlib ``Figure`` (or a pandas
``Styler`` for tables); nothing here trains or reads the store. :class:`Publisher` saves a
figure as a PNG under ``<build>/figures/<notebook>/`` and glues it for the book, where a
``{glue:figure}`` directive shows it as a numbered figure.

- :func:`comparison_figure`: method a vs b per test case (ours with 95% CIs, the paper's
  numbers as markers), and the gains side by side;
- :func:`d_trajectory`: mean OT distance D over training epochs against the target β·D0;
- :func:`d_histogram`: per-sample D on the test set against β·D0 and D0;
- :func:`grid_heatmaps`, :func:`beta_curves`: the α × β grids (Fig. 2, Tables 3-6);
- :func:`explorer_panels`, :func:`slider_html`: the OT explorer and its static, JS-driven view;
- :func:`comparison_table`, :func:`show_table`: tables with the paper beside ours.

Colours: baseline grey, WMA blue, minimise-OT red, WMA with the ``batch`` target purple; the
paper is always black (markers, dashed lines).
"""

from __future__ import annotations

import html
import io
import json
import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

COLORS = {"baseline": "#7f7f7f", "wma": "#1f77b4", "min_ot": "#d62728", "batch": "#9467bd", "paper": "#000000"}
METHOD_LABELS = {"baseline": "baseline (ViLT)", "wma": "WMA", "min_ot": "minimise OT (β = 0)"}
DATASET_LABELS = {"hateful_memes": "Hateful Memes", "mmimdb": "MM-IMDb", "ur_funny": "UR-FUNNY", "mosei": "CMU-MOSEI"}
METRIC_LABELS = {"auroc": "AUROC", "f1_macro": "F1 (macro)", "mae": "MAE (lower is better)"}
PAIR_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c"]
DPI = 100
# Type sizes for figures read at the page's width: the book's text column is about 730 px wide,
# so a 10-inch figure is shown at about 3/4 of its size; nothing is set below 11 pt (about 9 pt
# or more on the page).
plt.rcParams.update({"font.size": 12, "axes.titlesize": 12, "axes.labelsize": 12, "xtick.labelsize": 11,
                     "ytick.labelsize": 11, "legend.fontsize": 11, "figure.titlesize": 13, "legend.framealpha": 0.9})
# Lines and bars differ by marker, line style or hatch as well as by colour (readable in grey, and
# for readers who do not tell the colours apart).
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
LINESTYLES = ["-", "--", "-.", ":"]
PAIR_HATCHES = ["", "//", ".."]
BAR_HATCHES = ["", "//", "..", "xx", "\\\\", "--"]


def line_style(i: int) -> dict:
    """Marker and line style of the ``i``-th line of a panel (cycled)."""
    return {"marker": MARKERS[i % len(MARKERS)], "linestyle": LINESTYLES[i % len(LINESTYLES)]}


def _root() -> Path:
    return Path(__file__).resolve().parents[1]


def build_dir() -> Path:
    """Where the build writes (``$WMA_BUILD_DIR``, set by ``book/build.py``; default ``<repo>/_build``)."""
    return Path(os.environ.get("WMA_BUILD_DIR", _root() / "_build")).resolve()


def figure_dir(notebook: str) -> Path:
    """``<build>/figures/<notebook>/`` (created)."""
    d = build_dir() / "figures" / notebook
    d.mkdir(parents=True, exist_ok=True)
    return d


def case_label(case: str) -> str:
    """``"image_missing"`` → ``"image missing"``."""
    return case.replace("_", " ")


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


class Publisher:
    """Saves a notebook's figures as PNG files and glues them for ``{glue:figure}``.

    ``pub = Publisher("02_hateful_memes"); pub(fig, "comparison")`` writes
    ``<build>/figures/02_hateful_memes/comparison.png``, glues the figure under the key
    ``comparison`` and shows it in the notebook (the book hides that copy with the cell tag
    ``remove-output`` and shows the numbered ``{glue:figure}`` instead).
    """

    def __init__(self, notebook: str):
        self.notebook = notebook
        self.paths: dict[str, Path] = {}

    def __call__(self, fig, key: str, *, show: bool = True) -> None:
        from IPython.display import Image
        from myst_nb import glue

        # drawn once: the PNG file and the glued output are the same bytes (gluing the figure
        # itself would have the inline backend draw it a second time)
        png = fig_to_png(fig, dpi=DPI)
        plt.close(fig)
        path = figure_dir(self.notebook) / f"{key}.png"
        path.write_bytes(png)
        self.paths[key] = path
        glue(key, Image(data=png, format="png"), display=show)


def fig_to_png(fig, dpi: int = 72) -> bytes:
    """The figure as PNG bytes (tight bounding box)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def cached_png(parts: dict, draw, *, dpi: int = 72, cache_dir: str | Path | None = None) -> bytes:
    """PNG bytes of ``draw()`` (a function returning a figure), kept under ``cache_dir``
    (default ``<data home>/results/figure_cache/``) by a key over ``parts`` (what the figure
    shows: record keys, settings), ``dpi``, this module's source and matplotlib's version, so
    a rebuild from the same records does not draw it again. A damaged cache file is drawn anew."""
    import hashlib

    import matplotlib

    from .results import atomic_write_bytes, config_key, data_home

    code = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    key = config_key({"parts": parts, "dpi": dpi, "code": code, "matplotlib": matplotlib.__version__})
    folder = Path(cache_dir) if cache_dir is not None else data_home() / "results" / "figure_cache"
    path = folder / f"{key}.png"
    if path.is_file():
        png = path.read_bytes()
        if png.startswith(b"\x89PNG\r\n\x1a\n"):
            return png
    fig = draw()
    png = fig_to_png(fig, dpi)
    plt.close(fig)
    atomic_write_bytes(path, png)
    return png


# --------------------------------------------------------------------------- tables


def show_table(df: pd.DataFrame, *, caption: str | None = None, precision: int = 3, hide_index: bool = True):
    """A pandas ``Styler``: numbers to ``precision`` digits, an optional caption, no index."""
    sty = df.style.format(precision=precision, na_rep="–")
    if hide_index:
        sty = sty.hide(axis="index")
    if caption:
        sty = sty.set_caption(caption)
    return sty.set_table_styles([{"selector": "caption", "props": "caption-side: top; font-weight: bold; text-align: left;"}])


def _ci_text(m, lo, hi, digits=3) -> str:
    if m != m:
        return "–"
    if lo != lo or hi != hi:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _pm_text(m, lo, hi, digits=3) -> str:
    if m != m:
        return "–"
    if lo != lo or hi != hi:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {(hi - lo) / 2:.{digits}f}"


def comparison_frame(cmp: pd.DataFrame, *, a_label: str = "baseline", b_label: str = "WMA", paper: bool = True) -> pd.DataFrame:
    """A :func:`wma_core.report.comparison` frame as display columns (paper beside ours).

    Columns: test case, the paper's a and b and its gain, our a and b (mean ± 95% CI half-width), our
    gain (mean [95% CI], positive = b better), our minimum detectable effect at 80% power, the paired
    p-value and its Holm-corrected value (secondary test cases), seeds, and the verdict
    (:func:`wma_core.report.verdict`). With fewer than 2 paired seeds no interval is printed: the
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
        })
    df = pd.DataFrame(rows)
    if not paper:
        df = df.drop(columns=[c for c in df.columns if c.startswith("paper")])
    return df


def report_min_seeds() -> str:
    from .report import MIN_SEEDS_TEXT

    return MIN_SEEDS_TEXT


VERDICT_COLORS = {"detected": "#cfe8cf", "detected (opposite sign)": "#f6c9c4", "ruled out at the paper's size": "#f6c9c4",
                  "inconclusive": "#fde2c4", "collapsed run": "#d9d9d9"}


def _shade_verdict(v) -> str:
    from .report import VERDICTS, verdict_category

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
    """The primary endpoints (:func:`wma_core.report.endpoints`) as display columns, one row each.

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
        })
    return pd.DataFrame(rows)


def endpoints_table(ep: pd.DataFrame, *, a_label: str = "baseline", b_label: str = "WMA", caption: str | None = None):
    """:func:`endpoints_frame` styled, verdicts shaded by category."""
    sty = show_table(endpoints_frame(ep, a_label=a_label, b_label=b_label), caption=caption, precision=3)
    return sty.format(p_text, subset=["p (paired t)"]).map(_shade_verdict, subset=["verdict"])


def claims_table(df: pd.DataFrame, caption: str):
    """A claims frame as the summary shows it: the gain with its interval ("collapsed run" where
    a run collapsed), the paper's gain, our MDE and the verdict, shaded by verdict."""
    show = df.assign(**{
        "ours [95% CI]": [_fmt_gain(g, lo, hi) if not str(v).startswith("collapsed") else "collapsed run"
                          for g, lo, hi, v in zip(df["gain"], df["lo"], df["hi"], df["verdict"])],
    })[["claim", "paper", "ours [95% CI]", "mde", "verdict", "evidence"]]
    show = show.rename(columns={"paper": "paper's gain", "mde": "our MDE (80% power)"})
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
    from .losses import D_MAX
    from .report import target_reachable

    c = rec["config"]
    if c["method"] == "baseline" or c.get("target", "init") != "init" or not rec.get("d0"):
        return "–"
    t = c["beta"] * max(rec["d0"].values())
    return f"{t:.2f}" if target_reachable(rec) else f"{t:.2f} ✗ unreachable (> {D_MAX:g})"


def runs_table(records) -> pd.DataFrame:
    """One row per training run: method, α, β, target, seed, epochs, D0, the target β·D0 (flagged
    when unreachable), dev and test headline metric, time."""
    rows = []
    for rec in records:
        c = rec["config"]
        m = rec.get("headline_metric")
        rows.append({
            "method": c["method"], "α": f"{c['alpha']:g}", "β": f"{c['beta']:g}" if c["method"] != "baseline" else "–",
            "target": c.get("target", "init") if c["method"] != "baseline" else "",
            "seed": c["seed"], "best epoch": f"{rec.get('best_epoch')} of {rec.get('epochs_run')}",
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


def verdict(row, b_label: str = "WMA", a_label: str = "baseline") -> str:
    """The verdict of one comparison or endpoint row (:func:`wma_core.report.verdict`'s fixed
    vocabulary), followed by the numbers it rests on: ``"detected: +0.012 [+0.004, +0.020] vs the
    paper's +0.005"``; a collapsed run and fewer than 2 seeds get no interval."""
    from .report import verdict as _verdict

    dead = int(getattr(row, "collapsed_a", 0)) + int(getattr(row, "collapsed_b", 0))
    text = getattr(row, "verdict", None) or _verdict(row.diff_mean, row.diff_lo, row.diff_hi, int(row.n_seeds),
                                                     row.paper_gain, getattr(row, "mde", float("nan")), dead)
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
    (:func:`wma_core.report.endpoints`) also ``verdict_noise`` and ``verdict_missing``, and the
    noise / missing gains are the endpoints' (mean over cases per seed, with intervals).
    Gains of collapsed runs read "collapsed run", with fewer than 2 seeds they carry no interval.
    """
    out = {}

    def gain_text(r):
        if int(getattr(r, "collapsed_a", 0)) + int(getattr(r, "collapsed_b", 0)):
            return "collapsed run"
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


# --------------------------------------------------------------------------- comparisons


def comparison_figure(cmp: pd.DataFrame, *, a: str = "baseline", b: str = "wma", a_label: str | None = None,
                      b_label: str | None = None, title: str = ""):
    """Two panels per comparison frame.

    Top: our mean per test case for a and b (bars, 95% CI error bars) with the paper's
    numbers as black markers (○ a, ◆ b). Bottom: the gain of b over a (positive = b better):
    ours with its 95% CI, the paper's as a black ×; a zero line.
    """
    a_label = a_label or METHOD_LABELS.get(a, a)
    b_label = b_label or METHOD_LABELS.get(b, b)
    cases = list(cmp["test_case"])
    x = np.arange(len(cases))
    metric = cmp["metric"].iloc[0] if len(cmp) else ""
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8.5, 7.4))
    w = 0.38
    for off, pre, color, label in ((-w / 2, "a", COLORS.get(a, "#7f7f7f"), a_label), (w / 2, "b", COLORS.get(b, "#1f77b4"), b_label)):
        m, lo, hi = (cmp[f"{pre}_{k}"].to_numpy(dtype=float) for k in ("mean", "lo", "hi"))
        err = np.vstack([m - lo, hi - m])
        err = np.where(np.isnan(err), 0, err)
        ax1.bar(x + off, m, w, color=color, alpha=0.85, label=f"ours: {label}", yerr=err, capsize=3, error_kw={"lw": 1})
        paper = cmp[f"paper_{pre}"].to_numpy(dtype=float)
        ax1.scatter(x + off, paper, marker="o" if pre == "a" else "D", facecolor="white" if pre == "a" else "black",
                    edgecolor="black", zorder=5, s=28, label=f"paper: {label}")
    # limits from the means and the paper's numbers (wide intervals of few seeds run off the axes)
    vals = np.concatenate([cmp[c].to_numpy(dtype=float) for c in ("a_mean", "b_mean", "paper_a", "paper_b")])
    vals = vals[np.isfinite(vals)]
    bounded = metric in ("auroc", "f1_macro", "f1_micro", "f1_samples", "f1_weighted", "accuracy", "acc2")
    if len(vals):
        lo_v, hi_v = vals.min(), vals.max()
        pad = 0.25 * (hi_v - lo_v) + 0.03
        lo_v, hi_v = lo_v - pad, hi_v + pad
        if bounded or metric == "mae":
            lo_v = max(0.0, lo_v)
        if bounded:
            hi_v = min(1.0, hi_v)
        ax1.set_ylim(lo_v, hi_v)
    ax1.set_xticks(x, [case_label(c) for c in cases], rotation=20 if len(cases) > 5 else 0)
    ax1.set_ylabel(metric_label(metric))
    ax1.set_title("ours (mean, 95% CI) and the paper's numbers")
    ax1.legend(fontsize=11, ncol=2, loc="best", framealpha=0.9)
    ax1.grid(axis="y", alpha=0.3)

    d, dlo, dhi = (cmp[k].to_numpy(dtype=float) for k in ("diff_mean", "diff_lo", "diff_hi"))
    err = np.vstack([d - dlo, dhi - d])
    err = np.where(np.isnan(err), 0, err)
    ax2.axhline(0, color="#444", lw=0.8)
    ax2.errorbar(x, d, yerr=err, fmt="o", color=COLORS.get(b, "#1f77b4"), capsize=4, label=f"ours: {b_label} − {a_label}")
    ax2.scatter(x, cmp["paper_gain"].to_numpy(dtype=float), marker="x", color="black", s=40, zorder=5, label="paper's gain")
    g = np.concatenate([d, cmp["paper_gain"].to_numpy(dtype=float), dlo, dhi])
    g = g[np.isfinite(g)]
    if len(g):
        span = max(abs(g.min()), abs(g.max()), 0.01) * 1.15
        if bounded:
            span = min(span, 1.0)
        ax2.set_ylim(-span, span)
    ax2.set_xticks(x, [case_label(c) for c in cases], rotation=20 if len(cases) > 5 else 0)
    ax2.set_ylabel("gain (positive = better)")
    ax2.set_title(f"gain of {b_label} over {a_label}: ours (95% CI) and the paper's")
    ax2.legend(fontsize=11)
    ax2.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def method_summary(runs: pd.DataFrame, dataset: str, selections: dict, metric: str | None = None) -> pd.DataFrame:
    """Mean and 95% CI over seeds per (method label, test case) of ``metric`` on the test split.

    ``selections``: ``{label: {config field: value}}`` (e.g. ``{"WMA (init)": {"method": "wma", "target": "init"}}``).
    """
    from . import stats
    from .report import headline, test_case_order

    metric = metric or headline(dataset)
    df = runs[(runs["dataset"] == dataset) & (runs["split"] == "test") & (runs["metric"] == metric)]
    parts = []
    for label, sel in selections.items():
        keep = np.ones(len(df), dtype=bool)
        for k, v in sel.items():
            col = df[k]
            keep &= np.isclose(col.to_numpy(dtype=float), float(v)) if isinstance(v, (int, float)) else (col == v).to_numpy()
        sub = df[keep]
        if sub.empty:
            continue
        summ = stats.summarize(sub, ["test_case"])
        summ.insert(0, "label", label)
        parts.append(summ)
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["label", "test_case", "mean", "lo", "hi", "std", "n"])
    order = {c: i for i, c in enumerate(test_case_order(out["test_case"]))}
    out = out.sort_values("test_case", key=lambda c: c.map(order), kind="stable").reset_index(drop=True)
    out.attrs["metric"] = metric
    return out


def methods_figure(summary: pd.DataFrame, *, colors: dict | None = None, title: str = ""):
    """Grouped bars: one group per test case, one bar per method label (mean, 95% CI)."""
    labels = list(dict.fromkeys(summary["label"]))
    cases = list(dict.fromkeys(summary["test_case"]))
    metric = summary.attrs.get("metric", "")
    fig, ax = plt.subplots(figsize=(min(9.0, max(6.0, 1.2 * len(cases) + 2)), 3.8))
    w = 0.8 / max(1, len(labels))
    default = [COLORS["baseline"], COLORS["min_ot"], COLORS["wma"], COLORS["batch"], "#2ca02c", "#8c564b"]
    x = np.arange(len(cases))
    means = []
    for i, label in enumerate(labels):
        sub = summary[summary["label"] == label].set_index("test_case").reindex(cases)
        m = sub["mean"].to_numpy(dtype=float)
        err = np.vstack([m - sub["lo"].to_numpy(dtype=float), sub["hi"].to_numpy(dtype=float) - m])
        err = np.where(np.isnan(err), 0, err)
        color = (colors or {}).get(label, default[i % len(default)])
        ax.bar(x + (i - (len(labels) - 1) / 2) * w, m, w, color=color, label=label, yerr=err, capsize=2, error_kw={"lw": 0.8},
               hatch=BAR_HATCHES[i % len(BAR_HATCHES)], edgecolor="white")
        means.append(m)
    vals = np.concatenate(means) if means else np.array([])
    vals = vals[np.isfinite(vals)]
    if len(vals):
        pad = 0.25 * (vals.max() - vals.min()) + 0.03
        ax.set_ylim(max(0.0, vals.min() - pad), vals.max() + pad if metric == "mae" else min(1.0, vals.max() + pad))
    ax.set_xticks(x, [case_label(c) for c in cases], rotation=30 if len(cases) > 5 else 0, ha="right" if len(cases) > 5 else "center")
    ax.set_ylabel(metric_label(metric))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=11, ncol=2)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- OT distances


def _pairs(record: dict) -> list[str]:
    return list(record.get("d0") or {})


def _label(record: dict) -> str:
    c = record["config"]
    if c["method"] == "baseline":
        return "baseline"
    s = f"{METHOD_LABELS.get(c['method'], c['method'])} α={c['alpha']:g}"
    if c["method"] != "min_ot":
        s += f" β={c['beta']:g}"
    if c.get("target", "init") != "init":
        s += f" ({c['target']} target)"
    return s


def _color(record: dict) -> str:
    c = record["config"]
    if c.get("target") == "batch" and c["method"] != "baseline":
        return COLORS["batch"]
    return COLORS.get(c["method"], "#1f77b4")


def trajectory_frame(records) -> pd.DataFrame:
    """Long table of the D trajectories: ``label, seed, epoch, split, pair, D``."""
    rows = []
    for rec in records:
        for point in rec.get("d_trajectory", []):
            for pair in _pairs(rec):
                if pair in point:
                    rows.append({"label": _label(rec), "seed": rec["config"]["seed"], "epoch": point["epoch"],
                                 "split": point["split"], "pair": pair, "D": point[pair]})
    return pd.DataFrame(rows, columns=["label", "seed", "epoch", "split", "pair", "D"])


def d_trajectory(records, *, title: str = ""):
    """Mean OT distance over training, one panel per modality pair.

    For each run group (method, α, β, target; seeds averaged, each seed a thin line): the dev
    mean D per epoch (solid) and the training-batch mean (dashed, regularised runs only); epoch 0
    is D0, the first training batch under the initial weights. The target β·D0 of every
    regularised group is a horizontal dotted line in its colour.
    """
    records = list(records)
    pairs = _pairs(records[0]) if records else []
    fig, axes = _panels(len(pairs), 4.8, 3.6)
    groups: dict[str, list] = {}
    for rec in records:
        groups.setdefault(_label(rec), []).append(rec)
    for ax, pair in zip(axes.flat, pairs):
        for g, (label, recs) in enumerate(groups.items()):
            color = _color(recs[0])
            for split, ls in (("dev", "-"), ("train", "--")):
                curves = []
                for rec in recs:
                    pts = [(p["epoch"], p[pair]) for p in rec["d_trajectory"] if pair in p and (p["split"] == split or p["split"] == "train_first_batch")]
                    if len(pts) > 1:
                        e, v = zip(*sorted(pts))
                        curves.append((np.array(e), np.array(v)))
                        ax.plot(e, v, ls, color=color, lw=0.6, alpha=0.35)
                if curves:
                    n = min(len(c[0]) for c in curves)
                    mean = np.mean([c[1][:n] for c in curves], axis=0)
                    ax.plot(curves[0][0][:n], mean, ls, color=color, lw=2, marker=MARKERS[g % len(MARKERS)], ms=5,
                            label=f"{label} ({split})" if split == "dev" or recs[0]["config"]["alpha"] > 0 else None)
            c = recs[0]["config"]
            if c["alpha"] > 0 and c.get("target", "init") == "init":
                target = c["beta"] * float(np.mean([r["d0"][pair] for r in recs]))
                ax.axhline(target, color=color, ls=":", lw=1.5)
                ax.annotate(f"β·D0 = {target:.3f}", (1.0, target), xycoords=("axes fraction", "data"), fontsize=11,
                            color=color, ha="right", va="bottom")
        ax.set_title(f"pair {pair}")
        ax.set_xlabel("epoch (0 = D0, first batch at initialisation)")
        ax.set_ylabel("mean OT distance D")
        ax.grid(alpha=0.3)
    if pairs:
        axes.flat[0].legend(fontsize=11)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _panels(n: int, w: float, h: float, ncol_max: int = 2):
    """A grid of ``n`` panels, at most ``ncol_max`` per row; unused axes switched off."""
    ncol = min(ncol_max, max(1, n))
    nrow = max(1, math.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(w * ncol, h * nrow), squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig, axes


def d_histogram(records, *, test_case: str = "normal", title: str = "", bins: int = 30):
    """Per-sample D on the test set (one ``test_case``), one panel per pair, one histogram per run group.

    Vertical lines: D0 (grey, dashed) and β·D0 of every regularised group (its colour, dotted).
    Seeds of a group are pooled.
    """
    records = list(records)
    pairs = _pairs(records[0]) if records else []
    fig, axes = _panels(len(pairs), 4.8, 3.5)
    groups: dict[str, list] = {}
    for rec in records:
        groups.setdefault(_label(rec), []).append(rec)
    for ax, pair in zip(axes.flat, pairs):
        all_d = np.concatenate([np.asarray(r["distances"][test_case][pair]) for r in records])
        edges = np.linspace(min(all_d.min(), 0.0), max(all_d.max(), 1e-3), bins + 1) if len(all_d) else bins
        d0 = float(np.mean([r["d0"][pair] for r in records]))
        for g, (label, recs) in enumerate(groups.items()):
            d = np.concatenate([np.asarray(r["distances"][test_case][pair]) for r in recs])
            color = _color(recs[0])
            ax.hist(d, bins=edges, color=color, alpha=0.45, hatch=BAR_HATCHES[g % len(BAR_HATCHES)],
                    label=f"{label} (mean {d.mean():.3f})")
            c = recs[0]["config"]
            if c["alpha"] > 0 and c.get("target", "init") == "init":
                ax.axvline(c["beta"] * float(np.mean([r["d0"][pair] for r in recs])), color=color, ls=":", lw=2)
        ax.axvline(d0, color="#555", ls="--", lw=1, label=f"D0 = {d0:.3f}")
        ax.set_title(f"pair {pair}, test case {case_label(test_case)}")
        ax.set_xlabel("OT distance D per test sample")
        ax.set_ylabel("samples")
        ax.legend(fontsize=11)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- α × β grids


def _heat(ax, table: pd.DataFrame, *, title: str, cmap: str, center: float | None = None, fmt: str = "{:.3f}"):
    vals = table.to_numpy(dtype=float)
    finite = vals[np.isfinite(vals)]
    if center is not None and len(finite):
        # the 95th percentile, so that one outlier cell does not wash out the rest
        span = max(float(np.percentile(np.abs(finite - center), 95)), 1e-9)
        vmin, vmax = center - span, center + span
    else:
        vmin, vmax = (finite.min(), finite.max()) if len(finite) else (0, 1)
    im = ax.imshow(np.ma.masked_invalid(vals), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(table.shape[1]), [f"{b:g}" for b in table.columns], fontsize=11, rotation=90 if table.shape[1] > 6 else 0)
    ax.set_yticks(range(table.shape[0]), [f"{a:g}" for a in table.index], fontsize=11)
    ax.set_xlabel("β")
    ax.set_ylabel("α")
    ax.set_title(title, fontsize=12)
    if table.size <= 40:
        for i in range(table.shape[0]):
            for j in range(table.shape[1]):
                if np.isfinite(vals[i, j]):
                    ax.text(j, i, fmt.format(vals[i, j]), ha="center", va="center", fontsize=12 if table.shape[1] <= 6 else 10)
    return im


def _hatch_unreachable(ax, unreachable: pd.DataFrame) -> int:
    """Hatch and frame the cells of a heatmap whose target β·D0 could not be reached.

    ``unreachable``: a bool table with the heatmap's index and columns. Returns how many cells.
    """
    from matplotlib.patches import Rectangle

    n = 0
    for i in range(unreachable.shape[0]):
        for j in range(unreachable.shape[1]):
            if bool(unreachable.iat[i, j]):
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="#b00", lw=1.2))
                n += 1
    return n


PAPER_GRID_TABLE = {"hateful_memes": 3, "mmimdb": 4, "ur_funny": 5, "mosei": 6}


def _sign(metric: str) -> float:
    return -1.0 if metric == "mae" else 1.0


def our_grid(runs: pd.DataFrame, dataset: str, cases=None, metric: str | None = None) -> dict:
    """``{test_case: long frame}`` of our α × β grid with ``alpha, beta, n, mean, gain, gain_lo, gain_hi``.

    Every cell is compared with **all** baseline seeds (:func:`wma_core.report.grid_gains`: paired
    by seed where the cell has several seeds the baseline also ran; otherwise against the mean of
    all baseline seeds, the interval's spread from the baseline seeds). Positive = better (for MAE
    the gain is baseline − cell). The baseline's summary is in ``.attrs["baseline"]``.
    """
    from .report import grid_gains, headline, test_case_order

    metric = metric or headline(dataset)
    sub = runs[(runs["dataset"] == dataset) & (runs["split"] == "test")]
    cases = cases or test_case_order(sub["test_case"].unique())
    return {case: grid_gains(runs, dataset, test_case=case, metric=metric) for case in cases}


def paper_grid(dataset: str, paper: pd.DataFrame | None = None) -> dict:
    """``{test_case: long frame}`` of the paper's α × β grid (Tables 3-6) with ``alpha, beta, value, gain``.

    The gain is over the paper's Table 1 baseline (positive = better). The minimise-OT row of
    Table 2 is added as the cell (α = 1, β = 0).
    """
    from .paper import load_paper_results

    p = load_paper_results() if paper is None else paper
    p = p[p["dataset"] == dataset]
    base = p[(p["table"] == 1) & (p["method"] == "baseline")].set_index("test_case")["value"]
    cells = p[p["table"] == PAPER_GRID_TABLE[dataset]]
    min_ot = p[(p["table"] == 2) & (p["method"] == "min_ot")].assign(alpha=1.0, beta=0.0)
    cells = pd.concat([cells, min_ot], ignore_index=True)
    metric = cells["metric"].iloc[0] if len(cells) else "auroc"
    out = {}
    for case, g in cells.groupby("test_case", sort=False):
        g = g[["alpha", "beta", "value"]].sort_values(["alpha", "beta"]).reset_index(drop=True)
        g["gain"] = _sign(metric) * (g["value"] - base.get(case, np.nan))
        out[case] = g
    from .report import test_case_order

    return {c: out[c] for c in test_case_order(out)}


def paper_baseline(dataset: str, test_case: str = "normal") -> float:
    """The paper's Table 1 baseline value of ``dataset`` on ``test_case``."""
    from .paper import load_paper_results

    p = load_paper_results()
    v = p[(p["table"] == 1) & (p["dataset"] == dataset) & (p["method"] == "baseline") & (p["test_case"] == test_case)]["value"]
    return float(v.iloc[0]) if len(v) else float("nan")


def grid_heatmaps(frames: dict, *, value: str = "gain", metric: str = "", title: str = ""):
    """One α × β heatmap per test case from long frames (``alpha, beta`` and ``value`` columns).

    ``value="gain"``: a diverging map centred at 0 (blue = better than the baseline); otherwise
    the metric itself. Cells whose target β·D0 could not be reached (a ``feasible`` column that
    is False, :func:`our_grid`) are hatched in red and named in a note under the figure.
    """
    cases = list(frames)
    fig, axes = _panels(len(cases), 5.0, 3.4)
    n_flagged = 0
    for ax, case in zip(axes.flat, cases):
        t = frames[case].pivot_table(index="alpha", columns="beta", values=value, aggfunc="mean").sort_index().sort_index(axis=1)
        if value == "gain":
            im = _heat(ax, t, title=f"{case_label(case)}: gain over baseline", cmap="RdBu", center=0.0, fmt="{:+.3f}")
        else:
            im = _heat(ax, t, title=f"{case_label(case)}: {metric_label(metric)}", cmap="viridis_r" if metric == "mae" else "viridis")
        if "feasible" in frames[case]:
            bad = (~frames[case]["feasible"].astype(bool)).astype(float)
            u = frames[case].assign(_bad=bad).pivot_table(index="alpha", columns="beta", values="_bad", aggfunc="max")
            n_flagged = max(n_flagged, _hatch_unreachable(ax, u.reindex(index=t.index, columns=t.columns).fillna(0) > 0))
        fig.colorbar(im, ax=ax, shrink=0.8)
    if title:
        fig.suptitle(title)
    if n_flagged:
        fig.text(0.5, 0.0, f"hatched: {n_flagged} cell(s) whose target β·D0 exceeds 2, the largest OT distance (unreachable)",
                 ha="center", va="bottom", fontsize=11, color="#b00")
    fig.tight_layout()
    return fig


def placeholder(text: str):
    """A small figure that only says ``text`` (a dataset left out of this execution)."""
    fig, ax = plt.subplots(figsize=(6, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12, color="#555")
    return fig


def timing_bars(labels, ms, colors, *, unit: str, legend: str):
    """Horizontal bars of times in ms (one per benchmark entry), log scale when they span > 20x."""
    ms = list(ms)
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.35 * len(ms)))
    ax.barh(list(labels), ms, color=list(colors))
    wide = max(ms) / max(min(ms), 1e-9) > 20
    if wide:
        ax.set_xscale("log")
    ax.set_xlabel(f"ms per {unit}" + (" (log scale)" if wide else "") + f"; {legend}")
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def beta_curves(ours: dict, paper: dict | None = None, *, metric: str, title: str = ""):
    """Gain over the baseline against β, one panel per test case (the paper's Fig. 2, every α).

    Args:
        ours: ``{test_case: long frame}`` with columns ``alpha, beta, gain, gain_lo, gain_hi``
            (:func:`our_grid`; the interval is NaN with one seed).
        paper: the same for the paper (:func:`paper_grid`), drawn dashed in grey shades.
    Red crosses: our cells whose target β·D0 could not be reached (``feasible`` False).
    Solid lines: ours, one colour per α; dashed: the paper's α rows. β on a log-like axis
    (symlog, so β = 0, minimise-OT, is shown).
    """
    cases = list(ours)
    fig, axes = _panels(len(cases), 5.0, 3.3)
    our_alphas = sorted({a for df in ours.values() for a in df["alpha"]})
    cmap = plt.get_cmap("viridis", max(2, len(our_alphas) + 1))
    # α rows with a cell whose target β·D0 cannot be reached (marked with a red cross, labelled once)
    our_alphas_flagged = [i for i, a in enumerate(our_alphas)
                          if any("feasible" in df and not df.loc[df["alpha"] == a, "feasible"].astype(bool).all() for df in ours.values())]
    paper_alphas = sorted({a for df in (paper or {}).values() for a in df["alpha"]})
    greys = plt.get_cmap("Greys", len(paper_alphas) + 2) if paper_alphas else None
    amark = {a: MARKERS[k % len(MARKERS)] for k, a in enumerate(sorted(set(our_alphas) | set(paper_alphas)))}
    for ax, case in zip(axes.flat, cases):
        ax.axhline(0, color="#444", lw=0.8)
        for i, a in enumerate(our_alphas):
            df = ours[case][ours[case]["alpha"] == a].sort_values("beta")
            if df.empty:
                continue
            ax.plot(df["beta"], df["gain"], "-", marker=amark[a], color=cmap(i), ms=5, label=f"ours α={a:g}")
            if "gain_lo" in df and df["gain_lo"].notna().any():
                ax.fill_between(df["beta"], df["gain_lo"], df["gain_hi"], color=cmap(i), alpha=0.15)
            if "feasible" in df and not df["feasible"].astype(bool).all():
                bad = df[~df["feasible"].astype(bool)]
                ax.plot(bad["beta"], bad["gain"], "x", color="#b00", ms=9, mew=2, ls="none",
                        label="target β·D0 > 2: unreachable" if i == min(our_alphas_flagged) else None)
        if paper and case in paper:
            for j, a in enumerate(paper_alphas):
                df = paper[case][paper[case]["alpha"] == a].sort_values("beta")
                if not df.empty:
                    ax.plot(df["beta"], df["gain"], "--", marker=amark[a], mfc="white", ms=4, color=greys(j + 2), lw=1.2,
                            label=f"paper α={a:g}")
        ax.set_xscale("symlog", linthresh=0.5)
        ax.set_xlabel("β (target = β·D0)")
        ax.set_ylabel("gain over baseline")
        ax.set_title(case_label(case), fontsize=12)
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    spare = list(axes.flat[len(cases):])
    if handles:
        if spare:  # an empty panel slot: the legend goes there, at full size
            spare[0].legend(handles, labels, loc="center", fontsize=14, frameon=False)
        else:
            fig.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)), fontsize=13, bbox_to_anchor=(0.5, -0.01))
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.04 + 0.02 * math.ceil(len(labels) / 5) if handles and not spare else 0, 1, 1))
    return fig


# --------------------------------------------------------------------------- explorer


def explorer_panels(record: dict, baseline: dict | None = None, *, title: str = ""):
    """The OT explorer's three panels for one run (and the baseline beside it).

    1. (top left) per-sample D on the test set (normal), every pair, with β·D0 (dotted) and D0 (dashed);
    2. (top right) mean D over training epochs (dev solid, training batches dashed) with the target line;
    3. (bottom) the headline metric per test case (the run, and the baseline in grey).
    """
    c = record["config"]
    pairs = _pairs(record)
    regularised = c["alpha"] > 0 and c.get("target", "init") == "init"
    fig = plt.figure(figsize=(9.5, 6.8))
    gs = fig.add_gridspec(2, 2, height_ratios=[1, 1])
    ax1, ax2, ax3 = fig.add_subplot(gs[0, 0]), fig.add_subplot(gs[0, 1]), fig.add_subplot(gs[1, :])
    dists = [np.asarray(record["distances"]["normal"][p]) for p in pairs]
    hi = max([d.max() for d in dists if len(d)] + [max(record["d0"].values()) * max(c["beta"], 1.0) * 1.05 if regularised else 0.0])
    edges = np.linspace(0, max(hi, 1e-3) * 1.02, 31)
    for k, (pair, d) in enumerate(zip(pairs, dists)):
        col = PAIR_COLORS[k % len(PAIR_COLORS)]
        ax1.hist(d, bins=edges, color=col, alpha=0.45, hatch=PAIR_HATCHES[k % len(PAIR_HATCHES)],
                 label=f"{pair} (mean {d.mean():.3f})")
        d0 = record["d0"][pair]
        ax1.axvline(d0, color=col, ls="--", lw=1)
        if regularised:
            ax1.axvline(c["beta"] * d0, color=col, ls=":", lw=2)
    ax1.set_title("test D per sample (normal); -- D0, ··· β·D0", fontsize=12)
    ax1.set_xlabel("OT distance D")
    ax1.set_ylabel("samples")
    ax1.legend(fontsize=11)

    for k, pair in enumerate(pairs):
        col = PAIR_COLORS[k % len(PAIR_COLORS)]
        for split, ls in (("dev", "-"), ("train", "--")):
            pts = sorted((p["epoch"], p[pair]) for p in record["d_trajectory"] if pair in p and p["split"] in (split, "train_first_batch"))
            if len(pts) > 1:
                e, v = zip(*pts)
                ax2.plot(e, v, ls, marker=MARKERS[k % len(MARKERS)], ms=5, color=col, label=f"{pair} {split}")
        if regularised:
            ax2.axhline(c["beta"] * record["d0"][pair], color=col, ls=":", lw=1.5)
    ax2.set_title("mean D over training; ··· target β·D0", fontsize=12)
    ax2.set_xlabel("epoch (0 = D0)")
    ax2.set_ylabel("mean D")
    ax2.legend(fontsize=11)
    ax2.grid(alpha=0.3)

    metric = record.get("headline_metric")
    cases = [k for k in _case_order(record["metrics"])]
    x = np.arange(len(cases))
    vals = [record["metrics"][k][metric] for k in cases]
    if baseline is not None and baseline is not record:
        bvals = [baseline["metrics"].get(k, {}).get(metric, np.nan) for k in cases]
        ax3.bar(x - 0.2, bvals, 0.4, color=COLORS["baseline"], label="baseline")
        ax3.bar(x + 0.2, vals, 0.4, color=_color(record), label=_label(record))
    else:
        ax3.bar(x, vals, 0.6, color=_color(record), label=_label(record))
    allv = np.array(vals + ([] if baseline is None else [baseline["metrics"].get(k, {}).get(metric, np.nan) for k in cases]), dtype=float)
    allv = allv[np.isfinite(allv)]
    if len(allv):
        pad = 0.1 * (allv.max() - allv.min()) + 0.02
        ax3.set_ylim(max(0, allv.min() - pad), allv.max() + pad)
    ax3.set_xticks(x, [case_label(k) for k in cases], fontsize=11)
    ax3.set_ylabel(metric_label(metric))
    ax3.set_title("test metric per test case", fontsize=12)
    ax3.legend(fontsize=11)
    ax3.grid(axis="y", alpha=0.3)
    key = f", run {record['key']}" if record.get("key") else ""
    fig.suptitle(title or f"{DATASET_LABELS.get(c['dataset'], c['dataset'])}: {_label(record)}, seed {c['seed']}{key}")
    fig.tight_layout()
    return fig


def d_ratio(record: dict, test_case: str = "normal") -> float:
    """Mean over pairs of (mean test D on ``test_case``) / D0: where the run's modalities ended up."""
    vals = [float(np.mean(record["distances"][test_case][p])) / record["d0"][p] for p in _pairs(record) if record["d0"][p] > 0]
    return float(np.mean(vals)) if vals else float("nan")


def distance_table(records) -> pd.DataFrame:
    """Per run: dataset, α, β, seed, D0 and mean test D (means over pairs), D / D0, the target β, the headline metric (normal test)."""
    rows = []
    for r in records:
        c = r["config"]
        m = r.get("headline_metric")
        pairs = _pairs(r)
        rows.append({
            "dataset": DATASET_LABELS.get(c["dataset"], c["dataset"]), "method": c["method"], "α": f"{c['alpha']:g}",
            "β": f"{c['beta']:g}" if c["method"] != "baseline" else "–", "seed": c["seed"],
            "D0": float(np.mean([r["d0"][p] for p in pairs])),
            "mean test D": float(np.mean([np.mean(r["distances"]["normal"][p]) for p in pairs])),
            "D / D0": d_ratio(r), "target D / D0": c["beta"] if c["alpha"] > 0 and c.get("target", "init") == "init" else np.nan,
            "target β·D0": target_text(r),
            "metric": m, "test (normal)": r["metrics"]["normal"].get(m, np.nan), "key": r.get("key", ""),
        })
    return pd.DataFrame(rows)


def d_vs_beta(records, *, title: str = ""):
    """OT distance against β: mean test D / D0 per dataset (panels) and α (lines).

    The dashed diagonal is WMA's target (D / D0 = β); the grey line is the baseline, the red
    point at β = 0 with α > 0 is minimise-OT. Seeds are averaged.
    """
    rows = [{"dataset": r["config"]["dataset"], "alpha": r["config"]["alpha"], "beta": r["config"]["beta"],
             "method": r["config"]["method"], "ratio": d_ratio(r)} for r in records if r["config"].get("target", "init") == "init"]
    df = pd.DataFrame(rows)
    dss = list(dict.fromkeys(df["dataset"])) if len(df) else []
    ncol = min(2, max(1, len(dss)))
    nrow = max(1, math.ceil(len(dss) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 3.6 * nrow), squeeze=False)
    for ax in list(axes.flat)[len(dss):]:
        ax.axis("off")
    for ax, ds in zip(axes.flat, dss):
        sub = df[df["dataset"] == ds]
        reg = sub[sub["method"] != "baseline"]
        alphas = sorted(reg["alpha"].unique())
        cmap = plt.get_cmap("viridis", max(2, len(alphas) + 1))
        bmax = max(reg["beta"].max() if len(reg) else 1.0, 1.0)
        ax.plot([0, bmax], [0, bmax], color="black", ls=(0, (1, 1.5)), lw=1.2, label="target D/D0 = β")
        for i, a in enumerate(alphas):
            g = reg[reg["alpha"] == a].groupby("beta")["ratio"].mean()
            ax.plot(g.index, g.values, color=cmap(i), ms=6, lw=1.6, label=f"α={a:g}", **line_style(i))
        base = sub[sub["method"] == "baseline"]["ratio"].mean()
        if base == base:
            ax.axhline(base, color=COLORS["baseline"], lw=1.5, label="baseline")
        ax.set_title(DATASET_LABELS.get(ds, ds), fontsize=11)
        ax.set_xlabel("β")
        ax.set_ylabel("mean test D / D0 (normal)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=11)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _case_order(cases) -> list[str]:
    from .report import test_case_order

    return test_case_order(list(cases))


def slider_html(images: dict, datasets: list, alphas: dict, betas: dict, *, element_id: str = "wma-explorer") -> str:
    """A self-contained HTML block: a dataset menu, α and β sliders and JavaScript that swaps images.

    Args:
        images: ``{"<dataset>|<alpha>|<beta>": base64 PNG}``; the baseline (α = 0) is stored under
            β = the first β of that dataset (any β shows it).
        datasets: dataset names for the menu.
        alphas, betas: ``{dataset: [values]}`` (α includes 0 for the baseline).

    The page works without Python: every combination is pre-rendered and embedded.
    """
    eid = html.escape(element_id)
    payload = json.dumps({"images": images, "alphas": alphas, "betas": betas})
    options = "".join(f'<option value="{html.escape(d)}">{html.escape(DATASET_LABELS.get(d, d))}</option>' for d in datasets)
    return f"""<div id="{eid}" class="wma-explorer" style="border:1px solid #ccc;padding:8px;border-radius:6px;">
<div style="display:flex;gap:18px;align-items:center;flex-wrap:wrap;font-family:sans-serif;font-size:14px;">
<label>dataset <select class="wma-ds">{options}</select></label>
<label>α <input class="wma-a" type="range" min="0" max="0" step="1" value="0"> <span class="wma-a-val"></span></label>
<label>β <input class="wma-b" type="range" min="0" max="0" step="1" value="0"> <span class="wma-b-val"></span></label>
<span class="wma-note" style="color:#666;"></span>
</div>
<img class="wma-img" alt="OT explorer view" style="max-width:100%;margin-top:6px;">
<script type="application/json" class="wma-data">{payload}</script>
<script>
(function() {{
  var root = document.getElementById("{eid}");
  var data = JSON.parse(root.querySelector(".wma-data").textContent);
  var ds = root.querySelector(".wma-ds"), a = root.querySelector(".wma-a"), b = root.querySelector(".wma-b");
  var img = root.querySelector(".wma-img"), note = root.querySelector(".wma-note");
  function key(d, av, bv) {{ return d + "|" + av + "|" + bv; }}
  function setRanges() {{
    var d = ds.value;
    a.max = data.alphas[d].length - 1; b.max = data.betas[d].length - 1;
    if (+a.value > +a.max) a.value = a.max;
    if (+b.value > +b.max) b.value = b.max;
  }}
  function show() {{
    var d = ds.value, av = data.alphas[d][+a.value], bv = data.betas[d][+b.value];
    root.querySelector(".wma-a-val").textContent = av;
    root.querySelector(".wma-b-val").textContent = bv;
    var k = key(d, av, bv);
    if (+av === 0) {{ k = key(d, av, data.betas[d][0]); note.textContent = "α = 0: the baseline (β has no effect)"; }}
    else {{ note.textContent = ""; }}
    if (data.images[k]) {{ img.src = "data:image/png;base64," + data.images[k]; img.alt = "OT explorer: " + k; }}
    else {{ img.removeAttribute("src"); img.alt = "not run: " + k; note.textContent = "no run for " + k; }}
  }}
  ds.addEventListener("change", function() {{ setRanges(); show(); }});
  a.addEventListener("input", show); b.addEventListener("input", show);
  // a link may choose the view: #{eid}=<dataset>,<alpha>,<beta>
  var m = decodeURIComponent(location.hash).match(/{eid}=([^,]+),([^,]+),([^,&]+)/);
  if (m && data.alphas[m[1]]) {{
    ds.value = m[1]; setRanges();
    var ia = data.alphas[m[1]].indexOf(+m[2]), ib = data.betas[m[1]].indexOf(+m[3]);
    if (ia >= 0) a.value = ia;
    if (ib >= 0) b.value = ib;
  }}
  setRanges(); show();
}})();
</script>
</div>"""


def image_key(dataset: str, alpha: float, beta: float) -> str:
    """The key of one pre-rendered explorer view (numbers as JavaScript prints them)."""
    return f"{dataset}|{_js_num(alpha)}|{_js_num(beta)}"


def _js_num(x: float) -> str:
    x = float(x)
    return str(int(x)) if x.is_integer() else repr(x)


# --------------------------------------------------------------------------- verdict notes


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


def claims_figure(claims: pd.DataFrame, *, title: str = ""):
    """A forest plot of the paper's claims: our gain (95% CI) against the paper's, one row per claim.

    ``claims``: columns ``claim, gain, lo, hi, paper, verdict`` (rows without an interval are drawn
    as a point; collapsed runs as a grey cross at 0). Marker shape follows the verdict category,
    so that the reading does not rest on colour alone.
    """
    from .report import verdict_category

    n = len(claims)
    fig, ax = plt.subplots(figsize=(8.5, 0.8 + 0.32 * max(n, 1)))
    marks = {"detected": "o", "detected (opposite sign)": "v", "ruled out at the paper's size": "s",
             "inconclusive": "D", "collapsed run": "X"}
    y = np.arange(n)[::-1]
    for yi, r in zip(y, claims.itertuples(index=False)):
        cat = verdict_category(r.verdict)
        color = {"collapsed run": "#999999"}.get(cat, COLORS["wma"])
        if cat == "collapsed run":
            ax.scatter([0], [yi], marker="X", color=color, s=40, zorder=4)
        else:
            if r.lo == r.lo and r.hi == r.hi:
                ax.plot([r.lo, r.hi], [yi, yi], color=color, lw=1.6)
            ax.scatter([r.gain], [yi], marker=marks[cat], color=color, s=30, zorder=4)
        if r.paper == r.paper:
            ax.scatter([r.paper], [yi], marker="x", color=COLORS["paper"], s=36, zorder=5)
    ax.axvline(0, color="#444", lw=0.8)
    ax.set_yticks(y, list(claims["claim"]), fontsize=8)
    ax.set_xlabel("gain of WMA (positive = better; relative for the averages): ours (95% CI) and the paper's (×)")
    handles = [plt.Line2D([], [], marker=m, ls="", color=COLORS["wma"] if k != "collapsed run" else "#999999", label=k)
               for k, m in marks.items()] + [plt.Line2D([], [], marker="x", ls="", color="black", label="paper")]
    ax.legend(handles=handles, fontsize=7, loc="lower right", framealpha=0.9)
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def pretraining_curves(steps: pd.DataFrame, epochs: pd.DataFrame):
    """Pretraining at a glance: the three losses per step (thin: each step, thick: running mean,
    columns ``mlm``, ``itm``, ``wpa`` and ``*_smooth`` of :func:`wma_core.pretrain_study.loss_curves`)
    and, per epoch, the held-out image-text matching accuracy and masked-word accuracy with and
    without the image (columns ``dev_*`` of ``pretrain.json``'s epoch history)."""
    fig, grid = plt.subplots(2, 2, figsize=(10, 7.0))
    axes = grid.ravel()
    for ax, (k, title) in zip(axes, [("mlm", "masked language modelling"), ("itm", "image-text matching"),
                                     ("wpa", "word-patch alignment")]):
        ax.plot(steps.index, steps[k], alpha=0.25, lw=0.8, color="C0")
        ax.plot(steps.index, steps[f"{k}_smooth"], lw=1.8, color="C0")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
    ax = axes[3]
    cols = [("dev_itm_accuracy", "ITM accuracy"), ("dev_itm_accuracy_hard", "ITM accuracy, hard negatives"),
            ("dev_mlm_accuracy_with_image", "masked words, with image"),
            ("dev_mlm_accuracy_without_image", "masked words, image missing")]
    for i, (c, label) in enumerate(cols):
        if c in epochs:
            ax.plot(epochs["epoch"], epochs[c], label=label, **line_style(i))
    ax.set_ylim(0, 1)
    ax.set_xlabel("epoch")
    ax.set_title("held-out accuracy")
    # below the panel: inside it, the legend would hide the hard-negative curve near 0.5
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig
