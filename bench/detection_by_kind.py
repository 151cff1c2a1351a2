#!/usr/bin/env python3
"""Which falsified rows the influence scores miss, by kind of question.

Reads the JSON report of `tributary eval attribution --output report.json` (written with the
per-pair detail, `detail.pair`) and prints, for the corrupted scenario:

  * each method's detection AUC of the falsified rows (low train→validation influence = suspect)
    over all rows and within each kind of question (capital, export, feature, overview);
  * where a falsified row's influence goes: its τ(i, v) summed over the validation row asking the
    same question about the same region, over the same question about the other regions, and over
    the rest, averaged over the falsified rows of each kind, beside the same for the correct rows;
  * the validation loss of each kind of question under the adapter trained on every row, in the
    corrupted scenario and in the clean one: what the falsified rows of that kind actually cost.

Standard library only: python3 bench/detection_by_kind.py report.json
"""

import json
import sys

KINDS = ["capital", "export", "feature", "overview"]


def auc(scores, labels):
    """ROC AUC of `scores` for `labels`, ties counted half (NaN without both classes)."""
    pos = [s for s, l in zip(scores, labels) if l]
    neg = [s for s, l in zip(scores, labels) if not l]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: detection_by_kind.py REPORT.json  (from `tributary eval attribution --output`)")
    try:
        with open(sys.argv[1]) as f:
            report = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"cannot read the report {sys.argv[1]}: {e}")
    scenarios = {s["name"]: s for s in report["scenarios"]}
    s = scenarios["corrupted"]
    d = s["contributor_lds"]
    if "detail" not in d or "row_question" not in d:
        sys.exit("the report has no per-pair detail or question kinds: write it with `--output` (2026-12-06 or later)")
    falsified, kind, region = d["row_falsified"], d["row_question"], d["row_region"]
    val_kind, val_region = d["val_question"], d["val_region"]
    n, m = len(falsified), len(val_kind)
    print(f"corrupted scenario: {n} training rows ({sum(falsified)} falsified), {m} validation rows")
    print(f"\n  {'method':<12} {'all':>5} " + " ".join(f"{k:>8}" for k in KINDS) + "   detection AUC (within each kind)")
    for name, pair in d["detail"]["pair"]:
        tau = [pair[i * m:(i + 1) * m] for i in range(n)]
        suspect = [-mean(row) for row in tau]
        within = []
        for k in KINDS:
            rows = [i for i in range(n) if kind[i] == k]
            within.append(auc([suspect[i] for i in rows], [falsified[i] for i in rows]))
        print(f"  {name:<12} {auc(suspect, falsified):5.2f} " + " ".join(f"{a:8.2f}" for a in within))
        print(f"    {'where the influence goes (mean Σ τ per row)':<44} {'own question':>12} {'same kind, others':>18} {'the rest':>9}")
        for k in KINDS:
            for label, want in [("falsified", True), ("correct", False)]:
                rows = [i for i in range(n) if kind[i] == k and falsified[i] == want]
                own = mean(sum(tau[i][v] for v in range(m) if val_kind[v] == k and val_region[v] == region[i]) for i in rows)
                same = mean(sum(tau[i][v] for v in range(m) if val_kind[v] == k and val_region[v] != region[i]) for i in rows)
                rest = mean(sum(tau[i][v] for v in range(m) if val_kind[v] != k) for i in rows)
                print(f"    {k + ' ' + label + f' ({len(rows)})':<44} {own:12.3g} {same:18.3g} {rest:9.3g}")
    print(f"\n  {'validation loss by kind (adapter on every row)':<48} {'corrupted':>9} {'clean':>7}")
    def by_kind(sc, k):
        # Each scenario's own validation order (the two draw their validation rows separately).
        lds = sc["contributor_lds"]
        loss = lds.get("detail", {}).get("val_loss_full")
        return mean(loss[v] for v, q in enumerate(lds.get("val_question", [])) if q == k) if loss else float("nan")

    for k in KINDS:
        clean = by_kind(scenarios["clean"], k) if "clean" in scenarios else float("nan")
        print(f"  {k:<48} {by_kind(s, k):9.3f} {clean:7.3f}")


if __name__ == "__main__":
    main()
