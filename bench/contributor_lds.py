#!/usr/bin/env python3
"""Why contributor-level LDS stops where it does: what simple models of a retraining's loss reach.

Reads the JSON report of `tributary eval attribution --output report.json` (its `contributor_lds`
section: who owns which row, which contributors each retraining kept, the mean validation loss from
each of two seeds) and, per scenario, correlates the measured losses with models that know the
ground truth, each fit by ridge regression and scored out of sample (10-fold cross-validation),
with Spearman's rho averaged over the two seeds like the table's LDS:

  * falsified rows kept                      — the oracle count of the table, fit instead of ranked
  * + regions left without a correct row     — coverage that falls to zero, the non-additive part
  * correct rows kept per region + falsified — additive in rows, 17 weights
  * log correct rows kept on each validation row's region (averaged over the validation rows), alone
    and + falsified rows kept — saturating coverage, one or two weights
  * rows teaching each fact kept             — each validation row's loss from the rows that teach its
    fact (same region and question, or an overview): correct and falsified ones kept, pooled weights
    or each validation row its own (see `fact_models`)
  * one weight per contributor               — the best additive contributor model the retrainings can fit
  * the same fit to the other seed's losses   — an optimistic bound on any additive contributor score

and every row of the table, including `exact-block (group)`, the non-additive group prediction
(`jobs/src/attribute/group.rs`), whose per-subset predictions the report publishes (`group`).

and, from each method's per-pair influences τ(i, v) (the report's `detail.pair`, written by
`--output` only), the table's additive prediction beside the same τ linearised in each validation
row's margin instead of its loss (TRAK's choice of model output): a row's loss L = softplus(−z) is
taken as a function of a margin z that moves additively, z(S) = z_full + Σ_removed τ(i, v) / (dL/dz),
so a subset that strips a confident row of its support can raise its loss more than linearly. τ's own
scale is used (nothing is fit). Two more from the same τ: each validation row's helpful support
saturating (losing most of a region's correct rows costs far more than losing a few), and the table's
additive prediction against the mean of both seeds' losses (TRAK's expected model output) instead of
each seed's.

Last, where the group prediction misses (from its per-validation-row predictions, `detail.group`):
the validation rows whose fact also has falsified training rows against the rest — each group's
share of the losses' spread across retrainings and of what the prediction misses, each row's own
correlation with its prediction, and the rank correlation on the group's mean loss.

`--region N` prints instead one region across the retrainings (`region_subsets`): per subset, the
region's correct and falsified rows kept, its validation loss under each seed and the group
prediction's rise.

Standard library only: python3 bench/contributor_lds.py report.json [--region N]
"""

import json
import math
import sys


def ranks(x):
    order = sorted(range(len(x)), key=lambda i: x[i])
    r = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return r


def pearson(a, b):
    n = len(a)
    ma, mb = sum(a) / n, sum(b) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    va = sum((x - ma) ** 2 for x in a)
    vb = sum((y - mb) ** 2 for y in b)
    return cov / (va * vb) ** 0.5 if va > 0 and vb > 0 else 0.0


def spearman(a, b):
    return pearson(ranks(a), ranks(b))


def solve(a, b):
    """Solve a x = b (a square, small) by Gaussian elimination with partial pivoting."""
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(m[r][c]))
        m[c], m[p] = m[p], m[c]
        for r in range(c + 1, n):
            f = m[r][c] / m[c][c]
            for k in range(c, n + 1):
                m[r][k] -= f * m[c][k]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        x[r] = (m[r][n] - sum(m[r][k] * x[k] for k in range(r + 1, n))) / m[r][r]
    return x


def ridge_cv(features, y, lam, folds=10):
    """Out-of-sample predictions of a ridge fit (intercept unpenalised) over `folds` folds."""
    rows = [f + [1.0] for f in features]
    d = len(rows[0])
    pred = [0.0] * len(y)
    for fold in range(folds):
        test = set(range(fold, len(y), folds))
        train = [i for i in range(len(y)) if i not in test]
        ata = [[sum(rows[i][p] * rows[i][q] for i in train) + (lam if p == q and p < d - 1 else 0.0) for q in range(d)] for p in range(d)]
        atb = [sum(rows[i][p] * y[i] for i in train) for p in range(d)]
        w = solve(ata, atb)
        for i in test:
            pred[i] = sum(wi * xi for wi, xi in zip(w, rows[i]))
    return pred


def standardise(features):
    cols = list(zip(*features))
    out = []
    for col in cols:
        m = sum(col) / len(col)
        s = (sum((v - m) ** 2 for v in col) / len(col)) ** 0.5 or 1.0
        out.append([(v - m) / s for v in col])
    return [list(r) for r in zip(*out)]


def scenario(s):
    d = s["contributor_lds"]
    owner, region, bad = d["row_contributor"], d["row_region"], d["row_falsified"]
    kept, (loss_a, loss_b) = d["kept"], d["loss"]
    contributors = max(owner) + 1
    regions = max(region) + 1
    rows_of = [[i for i, c in enumerate(owner) if c in set(k)] for k in kept]
    falsified = [[float(sum(bad[i] for i in rows))] for rows in rows_of]
    correct = [[float(sum(1 for i in rows if region[i] == r and not bad[i])) for r in range(regions)] for rows in rows_of]
    empty = [[float(sum(1 for c in cs if c == 0))] for cs in correct]
    # Saturating coverage: each validation row's support is the log of the correct rows kept on its
    # region (the first few rows teach a fact, the rest add little), averaged over validation rows.
    asked = d["val_region"]
    log_support = [[sum(math.log1p(cs[r]) for r in asked) / len(asked)] for cs in correct]
    per_contributor = [[1.0 if c in set(k) else 0.0 for c in range(contributors)] for k in kept]
    def plus_falsified(name, features):
        # Nothing falsified (the clean scenario): the falsified count is constant, leave it out.
        if not any(bad):
            return name, features
        return name + " + falsified rows kept", [x + f for x, f in zip(features, falsified)]

    models = []
    if any(bad):
        models += [
            ("falsified rows kept", falsified),
            ("falsified rows kept + regions left without a correct row", [f + e for f, e in zip(falsified, empty)]),
        ]
    models += [
        plus_falsified("correct rows kept per region", correct),
        ("log correct rows kept on each validation row's region", log_support),
    ]
    if any(bad):
        models.append(plus_falsified("log correct rows kept on its region", log_support))
    models.append(("one weight per contributor (additive)", per_contributor))
    print(f"\n{s['name']}: {len(kept)} retrainings, noise ceiling {spearman(loss_a, loss_b):.2f}; "
          f"regions left without a correct row per retraining: {sum(e[0] for e in empty) / len(empty):.2f} on average")
    print(f"  {'model of the loss (10-fold ridge, out of sample)':<62} {'rho':>5}  (seed 1 / seed 2)")
    for name, features in models:
        x = standardise(features)
        best = None
        for lam in (0.1, 1.0, 10.0):
            each = [spearman(ridge_cv(x, y, lam), y) for y in (loss_a, loss_b)]
            if best is None or sum(each) > sum(best[1]):
                best = (lam, each)
        lam, each = best
        print(f"  {name:<62} {sum(each) / 2:5.2f}  ({each[0]:.2f} / {each[1]:.2f}; ridge {lam:g})")
    # The most any additive contributor score could reach on these very subsets: one weight per
    # contributor fit (least squares) to one seed's losses, scored against the other seed's. It sees
    # the subsets it is scored on, so it is optimistic; only the seed noise is out of sample.
    x = [r + [1.0] for r in per_contributor]
    cross = []
    for fit, score in ((loss_a, loss_b), (loss_b, loss_a)):
        w = solve([[sum(r[p] * r[q] for r in x) + (1e-9 if p == q else 0.0) for q in range(len(x[0]))] for p in range(len(x[0]))],
                  [sum(r[p] * y for r, y in zip(x, fit)) for p in range(len(x[0]))])
        cross.append(spearman([sum(a * b for a, b in zip(w, r)) for r in x], score))
    print(f"  {'one weight per contributor, fit to the other seed (optimistic)':<62} {sum(cross) / 2:5.2f}  "
          f"({cross[1]:.2f} / {cross[0]:.2f})")
    for m in s["methods"]:
        if m.get("lds_contributor_each"):
            a, b = m["lds_contributor_each"]
            print(f"  {'table: ' + m['name']:<62} {(a + b) / 2:5.2f}  ({a:.2f} / {b:.2f})")
    if d.get("group"):
        both = [(a + b) / 2 for a, b in zip(loss_a, loss_b)]
        print(f"  {'exact-block (group) against the mean of both seeds':<62} {spearman(d['group'], both):5.2f}")


def teaching(d, v):
    """The training rows that teach validation row v's fact: its region's rows that ask the same
    question, or an overview (which states every fact); an overview row is taught by all of them."""
    r, q = d["val_region"][v], d["val_question"][v]
    return [i for i, (ri, qi) in enumerate(zip(d["row_region"], d["row_question"]))
            if ri == r and (qi == q or qi == "overview" or q == "overview")]


def fact_models(s):
    """Models of each validation row's loss from the rows that teach its fact, fitted to the
    retrainings (10-fold over the retrainings, out of sample) and averaged over the validation rows:

      * pooled: one set of weights for every validation row (each keeps its own mean) on the log of the
        correct rows kept that teach its fact, the falsified ones kept, the log of the correct rows
        kept on its region, and the product of the first two;
      * own: each validation row its own weights and intercept on the first three (ridge 0.1).

    They know every row's fact and whether it is falsified, which no attribution method does."""
    d = s["contributor_lds"]
    detail = d.get("detail")
    if not detail or "row_question" not in d:
        return
    owner, bad, kept = d["row_contributor"], d["row_falsified"], d["kept"]
    seeds = detail["val_loss"]
    n, m, k = len(owner), len(d["val_region"]), len(kept)
    keeps = [[owner[i] in set(c) for i in range(n)] for c in kept]
    region_rows = [[i for i in range(n) if d["row_region"][i] == d["val_region"][v]] for v in range(m)]
    falsified_any = any(bad)
    features = []  # [retraining][validation row] -> features
    for keep in keeps:
        row = []
        for v in range(m):
            rows = teaching(d, v)
            c = math.log1p(sum(1 for i in rows if keep[i] and not bad[i]))
            f = float(sum(1 for i in rows if keep[i] and bad[i]))
            cr = math.log1p(sum(1 for i in region_rows[v] if keep[i] and not bad[i]))
            row.append([c, f, cr, c * f] if falsified_any else [c, cr])
        features.append(row)
    folds = [[j for j in range(k) if j % 10 == fold] for fold in range(10)]

    def pooled(y):
        pred = [0.0] * k
        for test in folds:
            train = [j for j in range(k) if j not in test]
            offset = [sum(y[j][v] for j in train) / len(train) for v in range(m)]
            centre = [[sum(features[j][v][p] for j in train) / len(train) for p in range(len(features[0][0]))] for v in range(m)]
            xs = [[a - b for a, b in zip(features[j][v], centre[v])] for j in train for v in range(m)]
            ys = [y[j][v] - offset[v] for j in train for v in range(m)]
            w = least_squares(xs, ys, 1e-3)
            for j in test:
                pred[j] = sum(offset[v] + sum(wi * (a - b) for wi, a, b in zip(w, features[j][v], centre[v])) for v in range(m)) / m
        return pred

    def own(y):
        pred = [0.0] * k
        for test in folds:
            train = [j for j in range(k) if j not in test]
            total = [0.0] * len(test)
            for v in range(m):
                xs = [features[j][v][:3 if falsified_any else 2] + [1.0] for j in train]
                w = least_squares(xs, [y[j][v] for j in train], 0.1, free=len(xs[0]) - 1)
                for t, j in enumerate(test):
                    total[t] += sum(wi * xi for wi, xi in zip(w, features[j][v][:len(w) - 1] + [1.0]))
            for t, j in enumerate(test):
                pred[j] = total[t] / m
        return pred

    means = [[sum(r) / m for r in y] for y in seeds]
    for label, model in (("rows teaching each fact kept, pooled weights (fitted)", pooled),
                         ("rows teaching each fact kept, own weights (fitted)", own)):
        each = [spearman(model(y), mean) for y, mean in zip(seeds, means)]
        print(f"  {label:<62} {sum(each) / 2:5.2f}  ({each[0]:.2f} / {each[1]:.2f})")


def least_squares(xs, ys, lam, free=None):
    """Ridge regression: argmin |X w − y|² + lam |w[:free]|² (every weight penalised if free is None)."""
    p = len(xs[0])
    free = p if free is None else free
    ata = [[sum(x[a] * x[b] for x in xs) + (lam if a == b and a < free else 0.0) for b in range(p)] for a in range(p)]
    return solve(ata, [sum(x[a] * y for x, y in zip(xs, ys)) for a in range(p)])


def margin_space(s):
    d = s["contributor_lds"]
    detail = d.get("detail")
    if not detail:
        return
    owner, kept, (loss_a, loss_b) = d["row_contributor"], d["kept"], d["loss"]
    full = detail["val_loss_full"]
    n, m = len(owner), len(full)
    removed, kept_rows = [], []
    for k in kept:
        keep = set(k)
        removed.append([i for i in range(n) if owner[i] not in keep])
        kept_rows.append([i for i in range(n) if owner[i] in keep])
    # L = softplus(-z): z = -log(e^L - 1), dL/dz = -(1 - e^-L).
    z = [-math.log(math.expm1(x)) for x in full]
    slope = [-(1.0 - math.exp(-x)) for x in full]
    print(f"  {'from τ(i, v) (the report pairs)':<62} {'rho':>5}  (seed 1 / seed 2)   rise: predicted / measured")
    measured = sum(sum(r) / m - sum(full) / m for r in detail["val_loss"][0]) / len(kept)
    for name, pair in detail["pair"]:
        rise = [[sum(pair[i * m + v] for i in rows) for v in range(m)] for rows in removed]
        linear = [sum(r) / m for r in rise]
        margin = [sum(softplus(-(z[v] + r[v] / slope[v])) for v in range(m)) / m for r in rise]
        saturating = support_saturating(pair, n, m, kept_rows)
        for label, pred in ((f"{name}: additive in the loss (the table)", linear), (f"{name}: additive in the margin", margin),
                            (f"{name}: helpful support saturating (c = {SATURATION})", saturating)):
            each = [spearman(pred, y) for y in (loss_a, loss_b)]
            print(f"  {label:<62} {sum(each) / 2:5.2f}  ({each[0]:.2f} / {each[1]:.2f})"
                  + (f"   {sum(linear) / len(linear):.3g} / {measured:.3g}" if pred is linear else ""))
        both = [(a + b) / 2 for a, b in zip(loss_a, loss_b)]
        print(f"  {name + ': the table against the mean of both seeds':<62} {spearman(linear, both):5.2f}")


# The saturation scale of `support_saturating`: the best of 0.05, 0.1, 0.2, 0.3 and 0.5 on the
# 2026-12-04 100-subset report, so the figure it gives is optimistic.
SATURATION = 0.2


def support_saturating(pair, n, m, kept_rows):
    """A validation row's loss falls with the share of its helpful support a retraining keeps, and
    saturates: f_v = Σ_kept τ⁺(i, v) / Σ_all τ⁺(i, v), the drop is T_v (1 − e^(−f_v / c)) with
    T_v = Σ_all τ⁺(i, v); harmful rows (τ < 0) stay additive. The shape of losing a whole region's
    support, which the additive model cannot express."""
    total = [sum(max(pair[i * m + v], 0.0) for i in range(n)) or 1e-12 for v in range(m)]
    out = []
    for rows in kept_rows:
        drop = 0.0
        for v in range(m):
            kept = sum(max(pair[i * m + v], 0.0) for i in rows)
            harm = sum(min(pair[i * m + v], 0.0) for i in rows)
            drop += total[v] * (1.0 - math.exp(-kept / total[v] / SATURATION)) + harm
        out.append(-drop)
    return out


def softplus(x):
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def column(x, v):
    return [row[v] for row in x]


def variance(xs):
    mean = sum(xs) / len(xs)
    return sum((x - mean) ** 2 for x in xs) / len(xs)


def group_misses(s):
    """Where the group prediction misses: its per-validation-row predictions (the report's
    `detail.group`) beside each row's measured loss (the mean of both seeds), split by whether the
    row's fact (its region and kind of question) also has falsified training rows."""
    d = s["contributor_lds"]
    detail = d.get("detail")
    if not detail or not detail.get("group") or "row_question" not in d or not any(d["row_falsified"]):
        return
    pred = detail["group"]
    full = detail["val_loss_full"]
    seeds = detail["val_loss"]
    rise = [[(a - f + b - f) / 2 for a, b, f in zip(ra, rb, full)] for ra, rb in zip(*seeds)]
    m = len(full)
    contested = [any(bad and r == d["val_region"][v] and q == d["val_question"][v]
                     for bad, r, q in zip(d["row_falsified"], d["row_region"], d["row_question"])) for v in range(m)]
    # The one scale that best fits every (retraining, row) prediction to its measured rise.
    scale = sum(p * r for ps, rs in zip(pred, rise) for p, r in zip(ps, rs)) / sum(p * p for ps in pred for p in ps)
    spread = [variance(column(rise, v)) for v in range(m)]
    missed = [variance([r - scale * p for r, p in zip(column(rise, v), column(pred, v))]) for v in range(m)]
    print(f"  group prediction per validation row (measured: the mean of both seeds; {sum(contested)} of {m} rows "
          f"ask about a fact that has falsified rows)")
    print(f"  {'validation rows':<30} {'count':>5} {'spread':>7} {'missed':>7} {'row rho':>8} {'mean-loss rho':>14}")
    for label, want in (("with falsified rows behind", True), ("only correct rows behind", False)):
        vs = [v for v in range(m) if contested[v] == want]
        rho = sum(pearson(column(rise, v), column(pred, v)) for v in vs) / len(vs)
        mean_rho = spearman([sum(p[v] for v in vs) for p in pred], [sum(r[v] for v in vs) for r in rise])
        print(f"  {label:<30} {len(vs):>5} {sum(spread[v] for v in vs) / sum(spread):>7.0%} "
              f"{sum(missed[v] for v in vs) / sum(missed):>7.0%} {rho:>8.2f} {mean_rho:>14.2f}")


def region_subsets(s, q):
    """One region across the retrainings: per contributor subset, how many of the region's correct
    and falsified training rows it kept, the mean loss of the region's validation rows under each
    seed's retraining, and the group prediction's mean rise for them (the report's `detail.group`),
    sorted by the first seed's loss."""
    d = s["contributor_lds"]
    detail = d.get("detail")
    if not detail or not detail.get("group"):
        return
    owners = [(c, bad) for c, r, bad in zip(d["row_contributor"], d["row_region"], d["row_falsified"]) if r == q]
    vs = [v for v, r in enumerate(d["val_region"]) if r == q]
    if not owners or not vs:
        print(f"  region {q}: no training or no validation rows")
        return
    print(f"  region {q}: {len(owners)} training rows ({sum(b for _, b in owners)} falsified) held by "
          f"{len({c for c, _ in owners})} contributors, {len(vs)} validation rows")
    print(f"  {'correct kept':>12} {'falsified kept':>14} {'loss seed 1':>11} {'loss seed 2':>11} {'group rise':>10}")
    rows = []
    for k, kept in enumerate(d["kept"]):
        kept = set(kept)
        correct = sum(1 for c, bad in owners if c in kept and not bad)
        falsified = sum(1 for c, bad in owners if c in kept and bad)
        losses = [sum(detail["val_loss"][seed][k][v] for v in vs) / len(vs) for seed in range(2)]
        rise = sum(detail["group"][k][v] for v in vs) / len(vs)
        rows.append((correct, falsified, losses[0], losses[1], rise))
    for correct, falsified, a, b, rise in sorted(rows, key=lambda r: r[2]):
        print(f"  {correct:>12} {falsified:>14} {a:>11.3f} {b:>11.3f} {rise:>10.3f}")


def main():
    args = sys.argv[1:]
    region = None
    if len(args) == 3 and args[1] == "--region" and args[2].isdigit():
        region = int(args[2])
    elif len(args) != 1:
        sys.exit("usage: contributor_lds.py REPORT.json [--region N]  (from `tributary eval attribution --output`)")
    with open(args[0]) as f:
        report = json.load(f)
    for s in report["scenarios"]:
        if region is not None:
            print(s["name"])
            region_subsets(s, region)
            continue
        scenario(s)
        fact_models(s)
        margin_space(s)
        group_misses(s)


if __name__ == "__main__":
    main()
