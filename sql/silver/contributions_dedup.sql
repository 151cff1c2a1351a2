/* @model
description = """
One row per contribution with the canonical row of its duplicate cluster. Exact duplicates share a
normalized content hash; near duplicates have an estimated Jaccard similarity >= 0.8 between their
word 5-gram shingle sets (MinHash, 128 permutations, LSH 16 bands x 8 rows); clusters are the
connected components of near-duplicate pairs. The canonical row of a cluster is its first row by
(ingested_at, contribution_id) within the datanet.
"""
materialized = "incremental"
unique_key = "contribution_id"
audits = [
    "not_null(contribution_id, datanet, contributor, epoch, canonical_id, dedup_kind)",
    "accepted_values(dedup_kind, 'unique', 'exact', 'near')",
    "accepted_range(jaccard, 0, 1)",
    "relationships(canonical_id, source('bronze', 'contributions'), contribution_id)",
    "canonical_is_earliest",
]
*/

-- Everything the rows of epoch @epoch can be a duplicate of. A canonical row is never later than
-- its duplicates, so later epochs cannot change this epoch's answer: building epoch by epoch gives
-- the same table as building everything at once.
WITH contributions AS (
    SELECT contribution_id, datanet, contributor, epoch, ingested_at, content_hash, text
    FROM source('bronze', 'contributions')
    WHERE epoch <= @epoch
),

-- 1. Exact duplicates: the same normalized content (NFKC, lower case, collapsed whitespace, see
--    content_hash) within a datanet. The first row by (ingested_at, contribution_id) is canonical.
exact AS (
    SELECT
        *,
        first_value(contribution_id) OVER (
            PARTITION BY datanet, content_hash
            ORDER BY ingested_at, contribution_id
        ) AS exact_canonical
    FROM contributions
),

-- 2. Near duplicates are searched among exact-canonical rows only. Each gets an ordinal in
--    (ingested_at, contribution_id) order: the smallest ordinal of a cluster is its earliest row.
survivors AS (
    SELECT
        datanet,
        contribution_id,
        row_number() OVER (PARTITION BY datanet ORDER BY ingested_at, contribution_id) AS ord,
        minhash(text, 128) AS signature
    FROM exact
    WHERE contribution_id = exact_canonical
),

-- 3. LSH: 16 bands of 8 signature values. Rows sharing a band bucket are candidate pairs; at
--    Jaccard 0.8 a pair shares at least one bucket with probability 0.95 (0.999 at 0.9). Each
--    candidate is confirmed by its estimated Jaccard similarity (>= 0.8), and clusters are the
--    connected components of confirmed pairs (A ~ B and B ~ C put A, B, C together even if A and C
--    differ more); each member points at the component's smallest ordinal, its earliest row.
--    lsh_clusters does all of this in one aggregate; spelled out in SQL it is
--      buckets:    SELECT datanet, ord, unnest(lsh_buckets(signature, 16, 8)) AS bucket FROM survivors
--      candidates: SELECT DISTINCT a.datanet, a.ord AS a, b.ord AS b FROM buckets a JOIN buckets b
--                  ON a.datanet = b.datanet AND a.bucket = b.bucket AND a.ord < b.ord
--      confirmed:  ... WHERE minhash_jaccard(sa.signature, sb.signature) >= 0.8
--      clusters:   SELECT datanet, connected_components(a, b) FROM confirmed GROUP BY datanet
--    (same answer; the aggregate avoids materialising every bucket and candidate pair as rows).
components AS (
    SELECT datanet, lsh_clusters(ord, signature, 16, 8, 0.8) AS members
    FROM survivors
    GROUP BY datanet
),

cluster_members AS (
    SELECT datanet, member['node'] AS ord, member['root'] AS root
    FROM (SELECT datanet, unnest(members) AS member FROM components)
),

near_canonical AS (
    SELECT
        s.contribution_id,
        COALESCE(r.contribution_id, s.contribution_id) AS canonical_id,
        CASE
            WHEN r.contribution_id <> s.contribution_id THEN minhash_jaccard(s.signature, r.signature)
        END AS jaccard
    FROM survivors AS s
    LEFT JOIN cluster_members AS m ON m.datanet = s.datanet AND m.ord = s.ord
    LEFT JOIN survivors AS r ON r.datanet = m.datanet AND r.ord = m.root
)

-- An exact duplicate follows its exact-canonical row into that row's cluster, so every cluster
-- (exact and near together) has exactly one canonical row.
SELECT
    e.contribution_id,
    e.datanet,
    e.contributor,
    e.epoch,
    e.ingested_at,
    e.content_hash,
    n.canonical_id,
    CASE
        WHEN e.contribution_id <> e.exact_canonical THEN 'exact'
        WHEN n.canonical_id <> e.contribution_id THEN 'near'
        ELSE 'unique'
    END AS dedup_kind,
    -- Similarity to the canonical row: 1 for exact duplicates, the MinHash estimate for near
    -- duplicates, NULL for canonical rows.
    CASE
        WHEN e.contribution_id <> e.exact_canonical THEN 1.0
        ELSE n.jaccard
    END AS jaccard
FROM exact AS e
JOIN near_canonical AS n ON n.contribution_id = e.exact_canonical
WHERE e.epoch = @epoch
