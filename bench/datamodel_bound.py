#!/usr/bin/env python3
"""What a contributor-level datamodel fitted to many retrainings reaches on the eval's own subsets.

The contributor-level LDS of `tributary eval attribution` asks an attribution method, which never
retrains, to rank 50 random halves of the contributors by the validation loss a retraining on each
reaches. The most a method of a given form could reach is what the same form reaches when it is
*fitted* to retrainings (a datamodel, Ilyas et al. 2022). This script fits such models to the
retrainings of `cargo run --release -p tributary-jobs --example datamodel` (other random halves of
the same datanet's contributors, trained exactly as the eval trains its own) and scores them on the
report's subsets with the table's statistic: Spearman's rho between predicted and measured mean
validation loss, against each of the two seeds' retrainings, averaged.

The models, each a ridge regression (numpy):

  * additive, one weight per contributor, on the mean loss: the best any additive contributor score
    can do, the form the payouts (and every method's row in the table) have;
  * additive per validation row in log loss: each row's loss multiplies per contributor;
  * pairwise per validation row in log loss, over all 30 contributors (465 features);
  * pairwise per validation row in log loss, over the contributors with a training row on the
    validation row's region (about 8): the datanet's structure (a fact is taught only by rows about
    its region) given to the model; with a learning curve over the number of retrainings.

Usage:
    python3 bench/datamodel_bound.py report.json dm0.json [dm1.json ...] [--predictions predictions.json]

`report.json` is the eval's `--output` (its contributor-level section); each `dm*.json` is one output
of the `datamodel` example; several are pooled (e.g. both retraining seeds).

Given both seeds' retrainings of the same subsets (`datamodel N DIR 0` and `datamodel N DIR 1`), it
also scores on the datamodel's own subsets, which are many more than the report's 50 and so give
tight figures: the models are fitted to the first half of the subsets and scored on the second half,
against each seed, beside the noise ceiling measured there. `--predictions` (the output of `datamodel
--predict DIR dm0.json`) adds the table's rows on those subsets: the group prediction and each
method's additive contributor score, which see no retraining at all.
"""

import json
import sys

import numpy as np

from contributor_lds import spearman  # Spearman with tied ranks averaged, as the eval's


def indicators(kept, contributors):
    m = np.zeros((len(kept), contributors))
    for i, k in enumerate(kept):
        m[i, k] = 1.0
    return m


def with_pairs(m):
    c = m.shape[1]
    return np.hstack([m] + [(m[:, a] * m[:, b])[:, None] for a in range(c) for b in range(a + 1, c)])


def ridge(x, y, lam):
    """Fit y ≈ x w + b (centred, penalty lam on w); returns the predictor."""
    mu, ym = x.mean(0), y.mean(0)
    xc = x - mu
    w = np.linalg.solve(xc.T @ xc + lam * np.eye(xc.shape[1]), xc.T @ (y - ym))
    return lambda xt: (xt - mu) @ w + ym


def per_row(x_fit, val_loss, x_eval, lam, features, log=True):
    """Each validation row `v` its own model on `features(v, indicators)`; the predicted mean
    validation loss of each subset of `x_eval`."""
    out = np.zeros((x_eval.shape[0], val_loss.shape[1]))
    for v in range(val_loss.shape[1]):
        y = np.log(val_loss[:, v]) if log else val_loss[:, v]
        p = ridge(features(v, x_fit), y, lam)(features(v, x_eval))
        out[:, v] = np.exp(p) if log else p
    return out.mean(1)


class Scorer:
    """The table's statistic against `measured` (each seed's mean validation losses of the same
    subsets): Spearman's rho against each seed, averaged, with a 95% bootstrap interval (the same
    resamples of the subsets for every prediction scored)."""

    def __init__(self, measured, draws=1000):
        self.measured = [np.asarray(m) for m in measured]
        n = len(self.measured[0])
        self.resamples = np.random.default_rng(0xB007).integers(0, n, size=(draws, n))

    def interval(self, stat):
        boot = sorted(stat(i) for i in self.resamples)
        return boot[int(0.025 * len(boot))], boot[int(0.975 * len(boot)) - 1]

    def __call__(self, pred):
        pred, (a, b) = np.asarray(pred), self.measured
        each = [spearman(list(pred), list(a)), spearman(list(pred), list(b))]
        lo, hi = self.interval(lambda i: (spearman(list(pred[i]), list(a[i])) + spearman(list(pred[i]), list(b[i]))) / 2)
        return f"{(each[0] + each[1]) / 2:.3f} ({each[0]:.3f} / {each[1]:.3f}; 95% {lo:.2f}–{hi:.2f})"

    def ceiling(self):
        """The second seed's losses as the prediction of the first's."""
        a, b = self.measured
        lo, hi = self.interval(lambda i: spearman(list(b[i]), list(a[i])))
        return f"{spearman(list(b), list(a)):.3f} (95% {lo:.2f}–{hi:.2f})"


def main():
    args = sys.argv[1:]
    predictions = None
    if "--predictions" in args:
        k = args.index("--predictions")
        if k + 1 >= len(args):
            sys.exit("--predictions needs a file")
        predictions = json.load(open(args[k + 1]))
        del args[k : k + 2]
    if len(args) < 2:
        sys.exit(__doc__)
    report = json.load(open(args[0]))
    paths = args[1:]
    dms = [json.load(open(p)) for p in paths]
    sc = report["scenarios"][0]
    if sc["name"] != "corrupted":
        sys.exit(f"{sys.argv[1]}: its first scenario is {sc['name']!r}, expected the corrupted one")
    d = sc["contributor_lds"]
    for path, dm in zip(paths + ["--predictions"], dms + ([predictions] if predictions else [])):
        for key in ("kb", "train", "corrupt_frac", "seeds"):
            if dm["config"][key] != report["config"][key]:
                sys.exit(f"{path}: its {key} differs from the report's; the retrainings must be the eval's")
    contributors = sc["contributors"]
    eval_x = indicators(d["kept"], contributors)
    fit_x = np.vstack([indicators(dm["kept"], contributors) for dm in dms])
    val_loss = np.vstack([np.array(dm["val_loss"]) for dm in dms])
    eval_keys = {tuple(k) for k in d["kept"]}
    overlap = sum(tuple(k) in eval_keys for dm in dms for k in dm["kept"])
    measured = [np.array(d["loss"][0]), np.array(d["loss"][1])]

    lds = Scorer(measured)

    rc, rr, vr = np.array(d["row_contributor"]), np.array(d["row_region"]), np.array(d["val_region"])
    region = [sorted(set(rc[rr == vr[v]])) for v in range(len(vr))]

    def alone(v, m):
        return m

    def everyone(v, m):
        return with_pairs(m)

    def on_region(v, m):
        return with_pairs(m[:, region[v]])

    n = fit_x.shape[0]
    print(f"{n} retrainings fitted ({', '.join(paths)}; {overlap} of their subsets are also the report's),")
    print(f"scored on the report's {len(d['kept'])} subsets: contributor LDS, mean of both seeds (first / second;")
    print("bootstrap interval over the report's subsets)")
    print(f"  additive, one weight per contributor       {lds(ridge(fit_x, val_loss.mean(1), 1.0)(eval_x))}")
    print(f"  additive per validation row, log loss      {lds(per_row(fit_x, val_loss, eval_x, 1.0, alone))}")
    print(f"  pairwise per validation row, log loss      {lds(per_row(fit_x, val_loss, eval_x, 10.0, everyone))}")
    print(f"  pairwise over its region's contributors    {lds(per_row(fit_x, val_loss, eval_x, 1.0, on_region))}"
          f"  (about {np.mean([len(r) for r in region]):.1f} contributors a row)")
    for k in (100, 200, 400):
        if k < n:
            pred = per_row(fit_x[:k], val_loss[:k], eval_x, 1.0, on_region)
            print(f"    the same fitted to the first {k:<4}       {lds(pred)}")
    print(f"  the report's group prediction              {lds(np.array(d['group']))}")
    print(f"  noise ceiling (second seed against first)  {lds.ceiling()}")

    # Held out within the datamodel's own subsets, when both seeds retrained the same ones.
    by_seed = {dm["replica"]: dm for dm in dms}
    if len(by_seed) < 2 or by_seed[0]["kept"] != by_seed[1]["kept"]:
        print("\n(both seeds' retrainings of the same subsets are needed to score on the datamodel's own subsets)")
        return
    kept = by_seed[0]["kept"]
    half = len(kept) // 2
    x = indicators(kept, contributors)
    seeds = [np.array(by_seed[r]["val_loss"]) for r in (0, 1)]
    fit_x2, fit_v = np.vstack([x[:half]] * 2), np.vstack([v[:half] for v in seeds])
    held = [v[half:].mean(1) for v in seeds]

    lds_held = Scorer(held)

    print(f"\nFitted to both seeds' retrainings of the first {half} of those subsets, scored on the other {len(kept) - half}:")
    print(f"  additive, one weight per contributor       {lds_held(ridge(fit_x2, fit_v.mean(1), 1.0)(x[half:]))}")
    print(f"  additive per validation row, log loss      {lds_held(per_row(fit_x2, fit_v, x[half:], 1.0, alone))}")
    print(f"  pairwise per validation row, log loss      {lds_held(per_row(fit_x2, fit_v, x[half:], 10.0, everyone))}")
    print(f"  pairwise over its region's contributors    {lds_held(per_row(fit_x2, fit_v, x[half:], 1.0, on_region))}")
    if predictions:
        if predictions["kept"] != kept:
            sys.exit("--predictions: made for other subsets than the datamodel's")
        print("  the table's rows, no retraining seen:")
        print(f"    exact-block (group)                      {lds_held(np.array(predictions['group'])[half:])}")
        for name, pred in predictions["additive"]:
            print(f"    {name + ' (additive)':<40} {lds_held(np.array(pred)[half:])}")
    print(f"  noise ceiling (second seed against first)  {lds_held.ceiling()}")
    if predictions:
        everything = Scorer([v.mean(1) for v in seeds])
        print(f"\nThe table's rows on all {len(kept)} subsets (nothing is fitted to them):")
        print(f"    exact-block (group)                      {everything(predictions['group'])}")
        for name, pred in predictions["additive"]:
            print(f"    {name + ' (additive)':<40} {everything(pred)}")
        print(f"  noise ceiling (second seed against first)  {everything.ceiling()}")


if __name__ == "__main__":
    main()
