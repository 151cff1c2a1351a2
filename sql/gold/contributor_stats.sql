/* @model
description = """
The leaderboard contributors see: per epoch, datanet and contributor, rows submitted, accepted,
exact and near duplicates, rows rejected for quality and the rejection reasons with their counts.
Every submitted row is counted in exactly one of accepted, exact_duplicates, near_duplicates and
rejected_quality.
"""
materialized = "incremental"
unique_key = ["epoch", "datanet", "contributor"]
audits = [
    "not_null(epoch, datanet, contributor, submitted, accepted)",
    "accepted_range(acceptance_rate, 0, 1)",
    "stats_add_up",
]
*/

WITH scored AS (
    SELECT epoch, datanet, contributor, dedup_kind, accepted, reasons
    FROM ref('silver.quality_scores')
    WHERE epoch = @epoch
),

totals AS (
    SELECT
        epoch,
        datanet,
        contributor,
        count(*) AS submitted,
        count(*) FILTER (WHERE accepted) AS accepted,
        count(*) FILTER (WHERE dedup_kind = 'exact') AS exact_duplicates,
        count(*) FILTER (WHERE dedup_kind = 'near') AS near_duplicates,
        count(*) FILTER (WHERE dedup_kind = 'unique' AND NOT accepted) AS rejected_quality
    FROM scored
    GROUP BY epoch, datanet, contributor
),

-- A rejected row may fail several rules, so these counts can add up to more than rejected_quality.
reason_counts AS (
    SELECT epoch, datanet, contributor, reason, count(*) AS row_count
    FROM (
        SELECT epoch, datanet, contributor, unnest(reasons) AS reason
        FROM scored
        WHERE dedup_kind = 'unique' AND NOT accepted
    )
    GROUP BY epoch, datanet, contributor, reason
),

by_reason AS (
    SELECT
        epoch,
        datanet,
        contributor,
        array_agg(named_struct('reason', reason, 'rows', row_count) ORDER BY row_count DESC, reason) AS rejected_by_reason
    FROM reason_counts
    GROUP BY epoch, datanet, contributor
)

SELECT
    t.epoch,
    t.datanet,
    t.contributor,
    -- Each build is one epoch (WHERE epoch = @epoch), so ranking within the datanet ranks within the
    -- epoch. Partitioning by epoch as well would rest on epoch being constant, which the engine
    -- knows in one process but a Ballista shuffle forgets (the cluster then refuses the plan).
    CAST(rank() OVER (PARTITION BY t.datanet ORDER BY t.accepted DESC) AS BIGINT) AS rank,
    t.submitted,
    t.accepted,
    t.exact_duplicates,
    t.near_duplicates,
    t.rejected_quality,
    CAST(t.accepted AS DOUBLE) / t.submitted AS acceptance_rate,
    r.rejected_by_reason
FROM totals AS t
LEFT JOIN by_reason AS r
  ON r.epoch = t.epoch AND r.datanet = t.datanet AND r.contributor = t.contributor
