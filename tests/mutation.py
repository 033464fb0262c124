"""Mutation check: plant one plausible bug at a time and see whether the tests catch it.

    .venv/bin/python tests/mutation.py                 # every mutant (or: make mutate)
    .venv/bin/python tests/mutation.py --list
    .venv/bin/python tests/mutation.py beta_dropped rng_not_restored
    .venv/bin/python tests/mutation.py --skip-clean    # do not first run the files unmutated

Each mutant is a small source edit of one module of the method (or a corrupted cell of the
paper's transcription). It is applied in memory only: for every mutant a fresh
``pytest -x -q -p no:cacheprovider -p mutation <files>`` runs with ``WMA_MUTANT=<name>``, and this
file, loaded by pytest as a plugin, re-executes the edited source into the already imported
module before any test module is imported (references to the replaced functions and classes in
other ``wma_core``/``data_prep`` modules are re-bound too). No file of the repository changes.

A mutant is *killed* when its tests fail, *survived* when they pass (a hole in the suite),
*stale* when its edit no longer matches the source (update the mutant), *error* otherwise. The
script prints the table and exits non-zero unless every mutant is killed. Not part of the test
suite (pytest does not collect this file); run it on demand, after changing the method or its tests.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = "WMA_MUTANT"


@dataclass(frozen=True)
class Mutant:
    """One planted bug.

    Attributes:
        name: short id (``WMA_MUTANT`` value).
        what: the bug in words.
        module: the module edited.
        edits: ``((old, new), ...)``: each ``old`` (a string, or a tuple of alternatives, the
            first that occurs is used) must occur exactly once in the module's source.
        tests: the test files (and optional ``-k`` expression) that must catch it.
    """

    name: str
    what: str
    module: str
    edits: tuple = ()
    tests: tuple = ()
    k: str | None = None
    special: str | None = None  # "paper_cell": a corrupted cell of book/data/paper_results.csv
    extra: dict = field(default_factory=dict)


TB = "tests/test_train_behaviour.py"
TT = "tests/test_train.py"

MUTANTS = [
    Mutant("ipot_marginals_swapped", "IPOT: each side's marginal normalised by the other side's token count",
           "wma_core.ot",
           (("n = xm.sum(1, keepdim=True)", "n = ym.sum(1, keepdim=True)"),
            ("m = ym.sum(1, keepdim=True)", "m = xm.sum(1, keepdim=True)")),
           ("tests/test_ot.py",)),
    Mutant("padding_mask_dropped", "ot_distance: the IPOT plan ignores the padding masks", "wma_core.ot",
           (("T = ipot(C.detach(), xm, ym,", "T = ipot(C.detach(), None, None,"),),
           ("tests/test_ot.py", "tests/test_losses.py")),
    Mutant("target_negated", "WMA target -beta*D0 instead of beta*D0", "wma_core.losses",
           (("target = self.cfg.beta * self.d0[k]", "target = -self.cfg.beta * self.d0[k]"),),
           ("tests/test_losses.py", TT)),
    Mutant("regulariser_sign_flipped", "training loss = task - regulariser", "wma_core.train",
           (("loss = loss + loss_reg", "loss = loss - loss_reg"),),
           (TB, TT), k="beta or toward"),
    Mutant("z_instead_of_t", "confidence interval with the normal quantile instead of Student's t",
           "wma_study.stats",
           (("_st.t.ppf((1 + confidence) / 2, n - 1)", "_st.norm.ppf((1 + confidence) / 2)"),),
           ("tests/test_stats.py",)),
    Mutant("image_missing_after_type", "image perturbation applied after the modality-type embedding",
           "wma_core.model",
           (("        image = P.apply(perturbation, \"image\", image, sample_ids, canon)\n"
             "        text = type_embed(self.vilt.embeddings, text, self.type_rows[\"text\"])\n"
             "        image = type_embed(self.vilt.embeddings, image, self.type_rows[\"image\"])\n",
             "        text = type_embed(self.vilt.embeddings, text, self.type_rows[\"text\"])\n"
             "        image = type_embed(self.vilt.embeddings, image, self.type_rows[\"image\"])\n"
             "        image = P.apply(perturbation, \"image\", image, sample_ids, canon)\n"),),
           ("tests/test_model.py", "tests/test_perturb.py")),
    Mutant("feature_missing_after_type", "feature-modality perturbation applied after the modality-type embedding",
           "wma_core.model",
           (("            e = P.apply(perturbation, m, e, sample_ids)\n"
             "            e = type_embed(self.vilt.embeddings, e, self.type_rows[m])\n",
             "            e = type_embed(self.vilt.embeddings, e, self.type_rows[m])\n"
             "            e = P.apply(perturbation, m, e, sample_ids)\n"),),
           (TB,), k="missing_feature"),
    Mutant("type_rows_by_position", "feature modalities take type rows in manifest order, not by name",
           "wma_core.model",
           (("self.type_rows = modality_type_rows(self.modalities)",
             "self.type_rows = {m: i for i, m in enumerate(self.modalities)}"),),
           ("tests/test_model.py", TB), k="type_row"),
    Mutant("feature_norm_dropped", "no LayerNorm after the feature projection", "wma_core.embeddings",
           (("return self.norm(e) if self.norm is not None else e", "return e"),),
           ("tests/test_model.py", TB), k="feature"),
    Mutant("scheduler_not_restored", "resume: the LR scheduler's state is not restored", "wma_core.train",
           (("sched.load_state_dict(ck[\"sched\"])", "pass"),),
           (TB, TT), k="resume"),
    Mutant("d0_after_update", "D0 measured after one optimiser step", "wma_core.train",
           (("        first = to_device(next(iter(make_loader(run.train_ds, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=0))), run.device)\n",
             "        first = to_device(next(iter(make_loader(run.train_ds, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=0))), run.device)\n"
             "        run.model.train(); _lg, _ = run.model(first); task_loss(run.task.kind, _lg, first['labels']).backward()\n"
             "        run.opt.step(); run.opt.zero_grad(set_to_none=True)\n"),),
           (TB, TT), k="d0 or toward"),
    Mutant("d0_from_dev_batch", "D0 measured on the first dev batch", "wma_core.train",
           (("first = to_device(next(iter(make_loader(run.train_ds, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=0))), run.device)",
             "first = to_device(next(iter(make_loader(run.dev_ds, cfg.batch_size))), run.device)"),),
           (TB, TT), k="d0 or toward"),
    Mutant("best_not_restored", "the last epoch's weights are tested instead of the best checkpoint",
           "wma_core.train",
           (("    if run.best_path.exists():\n        model.load_state_dict(", "    if False:\n        model.load_state_dict("),),
           (TB, TT), k="best"),
    Mutant("perturbation_seed_per_run", "test-time noise and missing set seeded per run", "wma_core.train",
           (("rate=cfg.missing_rate, seed=cfg.perturb_seed)", "rate=cfg.missing_rate, seed=cfg.perturb_seed + cfg.seed)"),),
           (TB,), k="perturbed"),
    Mutant("beta_dropped", "beta lost between TrainConfig and the regulariser (always 1)", "wma_core.train",
           (("WMAConfig(alpha=self.alpha, beta=self.beta, target=self.target", "WMAConfig(alpha=self.alpha, target=self.target"),),
           (TB, TT), k="beta or toward"),
    Mutant("rng_not_restored", "resume: the RNG states are not restored", "wma_core.train",
           ((("checkpoint.set_rng_state(ck[\"rng\"])", "torch.set_rng_state(ck[\"rng\"])"), "pass"),),
           (TB, TT), k="resume"),
    Mutant("blocked_mean_over_seeds", "backbones: the gain is the mean over all seeds, not over the backbones",
           "wma_study.stats", (("    mu = float(means.mean())\n", "    mu = float(d.mean())\n"),),
           ("tests/test_backbones.py",), k="blocked or backbone"),
    Mutant("blocked_df_ignores_blocks", "backbones: N - 1 degrees of freedom instead of N - K", "wma_study.stats",
           (("    df = N - K\n", "    df = N - 1\n"),), ("tests/test_backbones.py",), k="blocked or backbone"),
    Mutant("seeds_interleaved_over_backbones", "seeds alternate between backbones instead of nesting in blocks",
           "wma_study.profiles", (("return int(profile.backbones[(int(seed) // block) % k])",
                                    "return int(profile.backbones[int(seed) % k])"),),
           ("tests/test_backbones.py",), k="nested"),
    Mutant("blocks_from_one_side", "a seed's backbone is read from method a's runs only", "wma_study.report.comparisons",
           (("        names = fa.get(s, set()) | fb.get(s, set())\n", "        names = fa.get(s, set())\n"),),
           ("tests/test_backbones.py",), k="random_init"),
    Mutant("l2sp_not_in_loss", "the L2-SP penalty is computed but not added to the loss", "wma_core.train",
           (("            loss = loss + loss_sp\n", "            loss = loss\n"),),
           ("tests/test_backbones.py",), k="l2sp"),
    Mutant("paper_cell_corrupted", "Table 5 cell 0.698 -> 0.999 in book/data/paper_results.csv", "wma_study.paper",
           (), ("tests/test_paper_results.py",), special="paper_cell",
           extra={"row": "5,ur_funny,auroc,wma,0.1,0.4,normal,0.698", "bad": "0.999"}),
]
BY_NAME = {m.name: m for m in MUTANTS}


class StaleMutant(RuntimeError):
    pass


# ---------------------------------------------------------------------------- in the pytest process
def _edited_source(m: Mutant, src: str) -> str:
    for old, new in m.edits:
        alts = old if isinstance(old, tuple) else (old,)
        found = [a for a in alts if src.count(a) == 1]
        if not found:
            counts = {a[:60]: src.count(a) for a in alts}
            raise StaleMutant(f"mutant {m.name}: edit not found exactly once in {m.module} ({counts})")
        src = src.replace(found[0], new)
    return src


def _rebind(old_ns: dict, mod) -> None:
    """Point other modules' references to the replaced objects at the new ones."""
    changed = {id(v): mod.__dict__[k] for k, v in old_ns.items() if k in mod.__dict__ and mod.__dict__[k] is not v}
    if not changed:
        return
    for name, other in list(sys.modules.items()):
        if other is None or other is mod or not name.startswith(("wma_core", "data_prep")):
            continue
        for attr, val in list(vars(other).items()):
            if id(val) in changed:
                setattr(other, attr, changed[id(val)])


def apply_mutant(m: Mutant) -> None:
    mod = importlib.import_module(m.module)
    if m.special == "paper_cell":
        src = Path(mod.DEFAULT_PATH).read_text(encoding="utf-8")
        row = m.extra["row"]
        if src.count(row + "\n") != 1:
            raise StaleMutant(f"mutant {m.name}: row {row!r} not found once in {mod.DEFAULT_PATH}")
        bad = row.rsplit(",", 1)[0] + "," + m.extra["bad"]
        out = Path(tempfile.mkdtemp(prefix="wma-mutant-")) / "paper_results.csv"
        out.write_text(src.replace(row + "\n", bad + "\n"), encoding="utf-8")
        mod.DEFAULT_PATH = out
        return
    path = Path(mod.__file__)
    src = _edited_source(m, path.read_text(encoding="utf-8"))
    old_ns = dict(vars(mod))
    exec(compile(src, str(path), "exec"), mod.__dict__)
    _rebind(old_ns, mod)


if __name__ != "__main__" and os.environ.get(ENV):  # imported by pytest as a plugin (-p mutation)
    apply_mutant(BY_NAME[os.environ[ENV]])


# ---------------------------------------------------------------------------- the driver
def _pytest(files, k, env_extra, timeout) -> tuple[int, float, str]:
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "mutation", *files]
    if k:
        cmd += ["-k", k]
    env = {**os.environ, **env_extra}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, time.perf_counter() - t0, "timeout"
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    return proc.returncode, time.perf_counter() - t0, "\n".join(lines[-15:])


def _first_failure(tail: str) -> str:
    for ln in tail.splitlines():
        if ln.startswith(("FAILED", "ERROR")):
            return ln.split(" - ")[0].replace("FAILED ", "").replace("ERROR ", "")[:70]
    return ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="mutants to run (default: all)")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--skip-clean", action="store_true", help="do not first check that the files pass unmutated")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per pytest run")
    args = ap.parse_args(argv)
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:28s} {m.what}  [{' '.join(m.tests)}{' -k ' + repr(m.k) if m.k else ''}]")
        return 0
    unknown = [n for n in args.names if n not in BY_NAME]
    if unknown:
        ap.error(f"unknown mutants {unknown}; --list shows them")
    chosen = [BY_NAME[n] for n in args.names] if args.names else MUTANTS

    if not args.skip_clean:
        files = sorted({f for m in chosen for f in m.tests})
        print(f"clean run of {' '.join(files)} ...", flush=True)
        rc, secs, tail = _pytest(files, None, {ENV: ""}, args.timeout)
        if rc != 0:
            print(f"the unmutated tests do not pass (exit {rc}, {secs:.0f} s): fix them first\n{tail}")
            return 2
        print(f"  passed in {secs:.0f} s", flush=True)

    rows = []
    for m in chosen:
        rc, secs, tail = _pytest(list(m.tests), m.k, {ENV: m.name}, args.timeout)
        if rc == 1:
            status = "killed"
        elif rc == 0:
            status = "SURVIVED"
        elif "StaleMutant" in tail:
            status = "STALE"
        else:
            status = "ERROR"
        rows.append((m.name, status, secs, _first_failure(tail) if status == "killed" else tail.splitlines()[-1:] and tail.splitlines()[-1][:70]))
        print(f"{m.name:28s} {status:9s} {secs:6.0f} s  {rows[-1][3]}", flush=True)

    print("\n| mutant | result | seconds | first failing test |\n|---|---|---|---|")
    for name, status, secs, detail in rows:
        print(f"| {name} | {status} | {secs:.0f} | {detail} |")
    killed = sum(s == "killed" for _, s, _, _ in rows)
    print(f"\n{killed}/{len(rows)} mutants killed")
    return 0 if killed == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
