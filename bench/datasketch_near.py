"""Baseline of the `near` benchmark: datasketch MinHashLSH with the parameters of
sql/silver/contributions_dedup.sql — word 5-gram shingles (words = runs of letters and digits,
lower-cased), 128 permutations, LSH with 16 bands x 8 rows, candidates confirmed at estimated
Jaccard >= 0.8, clusters = connected components with the smallest id as root.

Scored exactly like pipeline/benches/sql_models.rs (fn f1).

usage: datasketch_near.py DOCS.parquet TRUTH.parquet   → one JSON line on stdout
"""
import json
import re
import sys
import time

import datasketch
import pyarrow.parquet as pq
from datasketch import MinHash, MinHashLSH

WORD = re.compile(r"[^\W_]+")
NUM_PERM, BANDS, ROWS, THRESHOLD = 128, 16, 8, 0.8


def shingles(text):
    words = WORD.findall(text.lower())
    if not words:
        return []
    k = min(5, len(words))
    return [" ".join(words[i:i + k]).encode() for i in range(len(words) - k + 1)]


def find(parent, x):
    root = x
    while parent.get(root, root) != root:
        root = parent[root]
    while x != root:
        parent[x], x = root, parent.get(x, x)
    return root


def union(parent, a, b):
    ra, rb = find(parent, a), find(parent, b)
    if ra != rb:
        parent[max(ra, rb)] = min(ra, rb)


def score(pred, truth):
    parent = {}
    for d, s in truth:
        union(parent, d, s)
    dups = [(n, r) for n, r in pred.items() if n != r]
    correct = sum(1 for n, r in dups if find(parent, n) == find(parent, r))
    found = sum(1 for d, s in truth if pred.get(d, d) == pred.get(s, s))
    p = correct / len(dups) if dups else 1.0
    r = found / len(truth) if truth else 1.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def main():
    docs_path, truth_path = sys.argv[1], sys.argv[2]
    truth_t = pq.read_table(truth_path)
    truth = list(zip(truth_t.column("dup").to_pylist(), truth_t.column("src").to_pylist()))

    t0 = time.perf_counter()
    docs = pq.read_table(docs_path, columns=["id", "text"])
    ids = docs.column("id").to_pylist()
    texts = docs.column("text").to_pylist()
    hashes = MinHash.bulk((shingles(t) for t in texts), num_perm=NUM_PERM)
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM, params=(BANDS, ROWS))
    by_id = {}
    for i, m in zip(ids, hashes):
        lsh.insert(i, m)
        by_id[i] = m
    parent = {}
    for i, m in zip(ids, hashes):
        for j in lsh.query(m):
            if j > i and m.jaccard(by_id[j]) >= THRESHOLD:
                union(parent, i, j)
    pred = {n: find(parent, n) for n in list(parent)}
    seconds = time.perf_counter() - t0

    p, r, f = score(pred, truth)
    print(json.dumps({"version": datasketch.__version__, "seconds": seconds, "precision": p, "recall": r, "f1": f}))


if __name__ == "__main__":
    main()
