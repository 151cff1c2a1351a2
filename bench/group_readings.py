#!/usr/bin/env python3
"""Readings of the group prediction: variants of it, recomputed from the attributed adapter's
gradients, scored on the retrainings of one eval report. Nothing is retrained.

    tributary eval attribution --methods exact-block --output report.json --gradients grads/
    python3 bench/group_readings.py report.json grads/

(or the example: TRIBUTARY_EVAL_OUTPUT=report.json TRIBUTARY_EVAL_GRADIENTS=grads/ eval_attribution 50).

The group prediction (`jobs/src/attribute/group.rs`) takes one Newton step on the kept rows'
objective, block by block (one block per adapted projection l, observed-label gradients J_l of the
training rows, V_l of the validation rows, kept rows S, left-out rows R, n = |S|):

    Δloss_v = Σ_l g_vᵀ (J_Sᵀ J_S + n λ_l I)⁻¹ Σ_{i∈R} g_i,   λ_l = damping · ‖J_l‖² / (N p_l)

First the script rebuilds that from the written gradients and checks it against the report's
published predictions (correlation 1.0000 when the files belong to the report's adapter). Then it
prints the contributor-level LDS (Spearman on the mean validation loss over the report's
contributor subsets, against each seed's retrainings and their mean, like the table) of:

  * the published prediction, and other dampings;
  * one joint curvature over every block instead of one per block;
  * a gradient-flow filter (1 − e^(−ts))/s on each eigenvalue s of the kept rows' Gram matrix instead
    of the ridge filter 1/(s + nλ): training stopped at time t = c/(nλ) instead of run to the optimum;
  * the Gauss–Newton curvature (model-sampled labels, `train_sampled.npy`) of the kept rows instead of
    their empirical Fisher;
  * a logistic loss per row: each row's loss L = softplus(−(m + z))/k, with m set so that it equals the
    row's measured loss at z = 0 and z moving along the row's gradient; the kept rows' objective is
    then minimised exactly (Newton's method to convergence) rather than by one quadratic step, so a
    fact whose competing answer loses its support can flip. k = 1 is the whole row as one binary
    answer; k > 1 sharpens it (the row's loss is a mean over tokens, of which few are contested);
  * saturating support: each validation row's loss falling with the log of the helpful influence
    (τ under the group prediction's curvature) of the kept rows, rising with their harmful influence;
    additive inside the log;
  * checkpoints: the published prediction at each epoch-end checkpoint alone (`DIR/<scenario>/epoch<E>/`,
    the last epoch's being the attributed adapter), and summed over the last k of them; the sum over
    the second half of training is the table's `exact-block (group, checkpoints)` row, checked against
    the report's `group_checkpoints` like the published prediction. Also each checkpoint's prediction
    scaled to unit spread over the subsets before summing (a scale taken from the queried subsets).

numpy, and `contributor_lds.py` beside it. Each reading is one line: the mean over both seeds, then each seed.
"""

import json
import os
import sys

import numpy as np

from contributor_lds import spearman  # Spearman with tied ranks averaged, as the eval's


def npy_blocks(path, widths):
    m = np.load(path).astype(np.float64)
    edges = np.cumsum([0] + list(widths))
    assert m.shape[1] == edges[-1], f"{path}: {m.shape[1]} columns, widths sum to {edges[-1]}"
    return [m[:, edges[i]:edges[i + 1]] for i in range(len(widths))]


class Scenario:
    def __init__(self, report, gradients, name):
        s = next(x for x in report["scenarios"] if x["name"] == name)
        d = s["contributor_lds"]
        meta = json.load(open(f"{gradients}/{name}/meta.json"))
        w = meta["widths"]
        self.name = name
        self.train = npy_blocks(f"{gradients}/{name}/train.npy", w)
        self.val = npy_blocks(f"{gradients}/{name}/val.npy", w)
        self.sampled = npy_blocks(f"{gradients}/{name}/train_sampled.npy", w)
        self.train_loss = np.array(meta["train_loss"])
        self.val_loss = np.array(meta["val_loss"])
        owner = np.array(d["row_contributor"])
        self.masks = [np.isin(owner, kept) for kept in d["kept"]]
        self.loss = [np.array(d["loss"][0]), np.array(d["loss"][1])]
        self.published = np.array(d["group"])

    def lds(self, predicted):
        each = [spearman(predicted, l) for l in self.loss]
        return (each[0] + each[1]) / 2, each[0], each[1]


def lambdas(blocks, damping):
    n = blocks[0].shape[0]
    return [damping * float(np.sum(j * j)) / (n * j.shape[1]) for j in blocks]


def over_subsets(sc, blocks, lam, rise):
    """Each contributor subset's predicted mean rise: Σ over blocks of rise(block, S, R, μ = nλ_l)."""
    out = []
    for m in sc.masks:
        s, r = np.where(m)[0], np.where(~m)[0]
        out.append(sum(rise(b, s, r, len(s) * l) for b, l in zip(blocks, lam)).mean())
    return np.array(out)


def ridge(sc, damping=1.0, curvature=None):
    """The published prediction; `curvature` (rows F) replaces the kept rows' J_l in J_Sᵀ J_S.

    Dual form (Woodbury): vᵀ(F_SᵀF_S + μI)⁻¹ x = (vᵀx − vᵀF_Sᵀ (F_S F_Sᵀ + μI)⁻¹ F_S x)/μ, μ = nλ_l.
    """
    curv = curvature or sc.train
    grams = [(f @ f.T, f @ j.T, v @ f.T, v @ j.T) for j, v, f in zip(sc.train, sc.val, curv)]

    def rise(g, s, r, mu):
        ff, fj, vf, vj = g
        u = np.linalg.solve(ff[np.ix_(s, s)] + mu * np.eye(len(s)), fj[np.ix_(s, r)].sum(1))
        return (vj[:, r].sum(1) - vf[:, s] @ u) / mu

    return over_subsets(sc, grams, lambdas(sc.train, damping), rise)


def joint(sc, damping=1.0):
    """One curvature over all blocks (each block's damping kept): dual form with K = Σ_l J_l J_lᵀ / λ_l."""
    lam = lambdas(sc.train, damping)
    k = sum(j @ j.T / l for j, l in zip(sc.train, lam))
    c = sum(v @ j.T / l for j, v, l in zip(sc.train, sc.val, lam))
    return ridge_dual(sc, [(k, c)], [1.0])


def ridge_dual(sc, blocks, lam):
    """ridge() from precomputed (K = J Jᵀ, C = V Jᵀ) per block."""

    def rise(b, s, r, mu):
        k, c = b
        u = np.linalg.solve(k[np.ix_(s, s)] + mu * np.eye(len(s)), k[np.ix_(s, r)].sum(1))
        return (c[:, r].sum(1) - c[:, s] @ u) / mu

    return over_subsets(sc, blocks, lam, rise)


def flow(sc, c, damping=1.0):
    """Gradient flow stopped at t = c/(nλ): filter (1 − e^(−ts))/s in place of 1/(s + nλ), dual form."""
    ks = [(j @ j.T, v @ j.T) for j, v in zip(sc.train, sc.val)]

    def rise(b, s, r, mu):
        k, cv = b
        t = c / mu
        e, u = np.linalg.eigh(k[np.ix_(s, s)])
        e = np.maximum(e, 0.0)
        proj = u.T @ k[np.ix_(s, r)].sum(1)
        # Δθ = F(J_SᵀJ_S) Σ_R g with F(s) = (1 − e^(−ts))/s; in the dual, with F(0) = t:
        # Δloss = t·C_R 1 + C_S U diag((F(e) − t)/e) Uᵀ K_SR 1.
        fe = np.where(t * e > 1e-12, -np.expm1(-t * e) / np.maximum(e, 1e-300), t)
        coef = np.where(e > 1e-12 * e.max(), (fe - t) / np.maximum(e, 1e-300), 0.0)
        return t * cv[:, r].sum(1) + cv[:, s] @ (u @ (coef * proj))

    return over_subsets(sc, ks, lambdas(sc.train, damping), rise)


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def logistic(sc, k, damping=1.0, iters=50):
    """Per block, the kept rows' logistic objective minimised exactly (see the module's docstring).

    Row i's loss along its gradient: ℓ_i(z) = softplus(−(m_i + z))/k with p_i = e^(−k L_i),
    m_i = logit(p_i), so ℓ_i(0) = L_i and ℓ_i'(0) = −(1 − p_i)/k; z_i = u_iᵀΔθ with u_i = g_i/ℓ_i'(0),
    so that ℓ_i'(0)·u_i = g_i. Minimising Σ_S ℓ_i(u_iᵀΔθ) − (Σ_all g_i)ᵀΔθ + (nλ/2)‖Δθ‖² (the
    linear term makes Δθ = 0 optimal when nothing is left out) gives Δθ = Uᵀ(c₀ − 1_S ℓ'(z))/(nλ),
    a fixed point in z_S that Newton's method solves in the dual.
    """

    def curve(loss):
        p = np.clip(np.exp(-k * loss), 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p)), -(1 - p) / k

    mt, d0 = curve(sc.train_loss)
    mv, dv = curve(sc.val_loss)
    ks = [(j @ j.T / np.outer(d0, d0), v @ j.T / np.outer(dv, d0)) for j, v in zip(sc.train, sc.val)]

    def rise(b, s, r, mu):
        kt, kv = b[0] / mu, b[1] / mu
        base = kt[np.ix_(s, r)] @ d0[r]
        z = np.zeros(len(s))
        for _ in range(iters):
            dl = -sigmoid(-(mt[s] + z)) / k
            d2 = sigmoid(mt[s] + z) * sigmoid(-(mt[s] + z)) / k
            f = z - base - kt[np.ix_(s, s)] @ (d0[s] - dl)
            step = np.linalg.solve(np.eye(len(s)) + kt[np.ix_(s, s)] * d2[None, :], -f)
            z = z + step
            if np.abs(step).max() < 1e-10:
                break
        dl = -sigmoid(-(mt[s] + z)) / k
        zv = kv[:, r] @ d0[r] + kv[:, s] @ (d0[s] - dl)
        return (np.logaddexp(0, -(mv + zv)) - np.logaddexp(0, -mv)) / k

    return over_subsets(sc, ks, lambdas(sc.train, damping), rise)


def coverage(sc, c, damping=1.0):
    """Saturating support, from the pair influences τ(i, v) = Σ_l g_vᵀ(J_lᵀJ_l + Nλ_l I)⁻¹ g_i (the
    group prediction's curvature with nothing left out).

    Each validation row's loss falls with the log of the helpful influence the kept rows give it and
    rises with the harmful influence, relative to the helpful: loss_v(S) = −log(s + P_v) + Q_v/(s + P_v),
    P_v = Σ_{i∈S} max(τ, 0), Q_v = Σ_{i∈S} max(−τ, 0), s = c · (the mean over v of P_v for all rows).
    The coverage a retraining-fitted model of the subsets' composition finds (contributor_lds.py), read
    from gradients instead of from the regions.
    """
    n = sc.train[0].shape[0]
    tau = sum(v @ np.linalg.solve(j.T @ j + n * l * np.eye(j.shape[1]), j.T)
              for j, v, l in zip(sc.train, sc.val, lambdas(sc.train, damping)))
    helpful, harmful = np.maximum(tau, 0.0), np.maximum(-tau, 0.0)
    s = c * helpful.sum(1).mean()
    kept = np.array(sc.masks, dtype=float)
    p, q = kept @ helpful.T, kept @ harmful.T
    return (-np.log(s + p) + q / (s + p)).mean(1)


def checkpoints(sc, gradients, report):
    """Rows of the checkpoint readings, or none (and a line saying so) when the files predate them."""
    d = next(x for x in report["scenarios"] if x["name"] == sc.name)["contributor_lds"]
    widths = json.load(open(f"{gradients}/{sc.name}/meta.json"))["widths"]
    used_epochs = d.get("group_checkpoint_epochs") or []
    if not used_epochs:
        print("  (no checkpoint readings: the report predates the checkpoint row)")
        return []
    last = used_epochs[-1]
    # The epochs written before the last (all of them since the eval writes every epoch end).
    first = last
    while first > 1 and os.path.exists(f"{gradients}/{sc.name}/epoch{first - 1}/train.npy"):
        first -= 1
    if first > used_epochs[0]:
        print(f"  (no checkpoint readings: one of {gradients}/{sc.name}/epoch{used_epochs[0]}/ … epoch{last - 1}/ is missing;"
              " rerun the eval with --gradients)")
        return []
    dirs = [f"{gradients}/{sc.name}/epoch{e}" for e in range(first, last)]
    final = (sc.train, sc.val)
    per = []
    for x in dirs:
        sc.train, sc.val = npy_blocks(f"{x}/train.npy", widths), npy_blocks(f"{x}/val.npy", widths)
        per.append(ridge(sc))
    sc.train, sc.val = final
    per.append(ridge(sc))
    used = sum(per[e - first] for e in used_epochs)
    agree = float(np.corrcoef(used, d["group_checkpoints"])[0, 1])
    if agree < 0.9999:
        sys.exit(f"the checkpoint files do not reproduce the report's group_checkpoints (correlation {agree:.4f})")
    rows = [(f"epoch {e} alone", p) for e, p in enumerate(per, first)]
    rows += [(f"sum of the last {k} epochs" + (" (published)" if k == len(used_epochs) else ""), sum(per[-k:]))
             for k in range(2, len(per) + 1)]
    unit = lambda p: (p - p.mean()) / p.std()
    half = len(used_epochs)
    rows.append((f"last {half} epochs, each at unit spread", sum(unit(p) for p in per[-half:])))
    return rows


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    report = json.load(open(sys.argv[1]))
    for name in ["corrupted", "clean"]:
        sc = Scenario(report, sys.argv[2], name)
        published = ridge(sc)
        agree = float(np.corrcoef(published, sc.published)[0, 1])
        print(f"{name}: {len(sc.masks)} contributor subsets; the written gradients reproduce the published "
              f"group predictions at correlation {agree:.4f}")
        if agree < 0.9999:
            sys.exit("the gradients do not belong to this report's adapter (rerun the eval with both --output and --gradients)")
        rows = [("published: ridge, damping 1", published)]
        rows += [(f"ridge, damping {d}", ridge(sc, d)) for d in (0.3, 3.0, 10.0)]
        rows.append(("joint curvature, damping 1", joint(sc)))
        rows += [(f"gradient flow, c = {c}", flow(sc, c)) for c in (0.3, 1.0, 3.0, 10.0, 30.0)]
        rows += [(f"Gauss-Newton (sampled labels), damping {d}", ridge(sc, d, sc.sampled)) for d in (0.3, 1.0, 3.0)]
        rows += [(f"logistic per row, k = {k}", logistic(sc, k)) for k in (1.0, 2.0, 4.0)]
        rows += [(f"saturating support, c = {c}", coverage(sc, c)) for c in (0.003, 0.01, 0.03)]
        rows += checkpoints(sc, sys.argv[2], report)
        print(f"  {'reading':<44} {'LDS':>6} {'seed A':>7} {'seed B':>7}")
        for label, pred in rows:
            mean, a, b = sc.lds(pred)
            print(f"  {label:<44} {mean:6.2f} {a:7.2f} {b:7.2f}")


if __name__ == "__main__":
    main()
