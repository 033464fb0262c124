"""The OT explorer: three panels for one run (:func:`explorer_panels`) and the static,
JS-driven page that swaps pre-rendered views with a dataset menu and α, β sliders
(:func:`slider_html`, :func:`image_key`)."""

from __future__ import annotations

import html
import json

import matplotlib.pyplot as plt
import numpy as np

from .distances import _pairs
from .style import COLORS, DATASET_LABELS, MARKERS, PAIR_COLORS, PAIR_HATCHES, _color, _label, case_label, metric_label


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


def _case_order(cases) -> list[str]:
    from ..report import test_case_order

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
