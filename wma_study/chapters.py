"""The shared sections of the four dataset chapters (study layer).

Every dataset chapter (02-05) compares two methods twice: baseline against WMA (the paper's
Table 1) and minimise-OT against WMA (Table 2). One section of a chapter is the same sequence
of calls each time, so it lives here once:

- :func:`report.comparison` (every test case) and :func:`report.endpoints` (the three primary
  endpoints) of method ``b`` against method ``a``;
- the primary-endpoint table, then the every-test-case table, with captions naming the dataset;
- the texts that the chapter's narrative reads with ``{glue:text}`` (:func:`figures.headline_glue`);
- the collapsed-run note, when a run collapsed (:func:`figures.collapse_note`).

The figure of the section is published by the chapter itself, in a cell whose input and output
the book hides (the numbered ``{glue:figure}`` shows it).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from . import figures, report


@dataclass
class Section:
    """One comparison of a chapter: ``cmp`` per test case, ``ep`` per primary endpoint,
    ``glue`` the texts glued (already glued when shown)."""

    cmp: pd.DataFrame
    ep: pd.DataFrame
    glue: dict


def comparison_section(runs: pd.DataFrame, dataset: str, *, a: dict, b: dict, paper_table: int,
                       a_label: str, b_label: str, title: str, detail: str, prefix: str = "",
                       show: bool = True, paper: bool = True) -> Section:
    """Compute one comparison section and (with ``show``) display and glue it.

    Args:
        runs: :func:`wma_study.report.records_frame` of the chapter's records.
        a, b: method filters (``{"method": "baseline"}``, ``{"method": "wma", "alpha": ..., ...}``).
        paper_table: 1 (against the baseline) or 2 (against minimise-OT).
        a_label, b_label: how tables and texts name the two methods.
        title: the caption's head, e.g. ``"Hateful Memes, Table 1"``.
        detail: what is compared, e.g. ``"baseline vs WMA (α=1, β=2)"``.
        prefix: prefix of the glue keys (``"t2_"`` for Table 2).
        paper: show the paper's columns in the every-test-case table (``False``: a comparison
            the paper did not make).
    """
    cmp = report.comparison(runs, dataset, a=a, b=b, paper_table=paper_table)
    ep = report.endpoints(runs, dataset, a=a, b=b, paper_table=paper_table)
    texts = figures.headline_glue(cmp, prefix=prefix, endpoints=ep, a_label=a_label, b_label=b_label)
    if show:
        from IPython.display import Markdown, display
        from myst_nb import glue

        display(figures.endpoints_table(ep, a_label=a_label, b_label=b_label,
                                        caption=f"{title}, primary endpoints: {detail}"))
        display(figures.comparison_table(cmp, a_label=a_label, b_label=b_label, paper=paper,
                                         caption=f"{title}: {detail}, every test case"))
        for key, value in texts.items():
            glue(key, value, display=False)
        note = figures.collapse_note(cmp, ep, a_label=a_label, b_label=b_label)
        if note:
            display(Markdown(note))
    return Section(cmp, ep, texts)


def l2sp_section(runs: pd.DataFrame, dataset: str, *, b: dict, title: str, b_detail: str, show: bool = True) -> Section | None:
    """WMA (``b``) against the L2-SP control (:mod:`wma_study.l2sp`) as a :func:`comparison_section`
    (glue prefix ``sp_``; the paper has no such row, so its columns are NaN); ``None`` (and a
    printed line) when the chapter has no L2-SP runs (no strength pre-registered)."""
    if not (runs["method"] == "l2sp").any():
        if show:
            print(f"No L2-SP runs for {dataset}: its strength is pre-registered for the synthetic twins only "
                  "(python -m wma_study.l2sp); on the real data, give the chapter's l2sp a strength.")
        return None
    lam = float(runs.loc[runs["method"] == "l2sp", "l2sp"].iloc[0])
    return comparison_section(runs, dataset, a={"method": "l2sp"}, b=b, paper_table=1, a_label="L2-SP", b_label="WMA",
                              title=title, detail=f"L2-SP (λ={lam:g}) vs {b_detail}", prefix="sp_", show=show,
                              paper=False)


# --------------------------------------------------------------------------- the summary's claims

#: The chapter that holds each dataset's two comparisons (the claims' evidence).
DATASET_CHAPTERS = {"hateful_memes": "02_hateful_memes", "mmimdb": "03_mmimdb", "ur_funny": "04_ur_funny",
                    "mosei": "05_mosei"}
CLAIM_COLUMNS = ["claim", "gain", "lo", "hi", "paper", "mde", "seeds", "verdict", "holds_on", "by_backbone", "evidence"]


def claim_rows(endpoints: dict, what: str, table: int) -> pd.DataFrame:
    """One claim per dataset and primary endpoint: ``{dataset: report.endpoints(...)}`` ->
    columns :data:`CLAIM_COLUMNS` (``what``: the claim, e.g. ``"WMA beats the baseline"``;
    ``table``: the paper's table, named in the evidence)."""
    rows = []
    for ds, ep in endpoints.items():
        for r in ep.itertuples(index=False):
            rows.append({"claim": f"{figures.DATASET_LABELS[ds]}, {r.endpoint}: {what}", "gain": r.diff_mean,
                         "lo": r.diff_lo, "hi": r.diff_hi, "paper": r.paper_gain, "mde": r.mde, "seeds": r.n_seeds,
                         "verdict": r.verdict, "holds_on": getattr(r, "holds_on", ""),
                         "by_backbone": getattr(r, "by_backbone", ""),
                         "evidence": f"{DATASET_CHAPTERS.get(ds, ds)}: " + (f"Table {table}" if table else "L2-SP control")})
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def pooled_claims(pool: pd.DataFrame) -> pd.DataFrame:
    """The paper's headline averages as claims (:func:`wma_study.report.pooled` -> :data:`CLAIM_COLUMNS`)."""
    rows = [{"claim": f"average relative gain, {r.endpoint} (paper: {r.paper:.1%})", "gain": r.effect, "lo": r.lo,
             "hi": r.hi, "paper": r.paper, "mde": r.mde, "seeds": None, "verdict": r.verdict, "holds_on": "",
             "by_backbone": "",
             "evidence": f"pooled over {r.k} datasets (random effects)" + (f"; left out: {r.left_out}" if r.left_out else "")}
            for r in pool.itertuples(index=False)]
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)

