/* @model
description = """
The training set: accepted rows only, i.e. the canonical row of each duplicate cluster that passed
every quality rule of its datanet. Adapters are trained on this table, and attribution refers to
its Delta version.
"""
materialized = "incremental"
unique_key = "contribution_id"
audits = [
    "not_null(contribution_id, datanet, contributor, epoch, text)",
    "relationships(contribution_id, ref('silver.quality_scores'), contribution_id)",
]
*/

SELECT
    b.contribution_id,
    b.datanet,
    b.contributor,
    b.epoch,
    b.ingested_at,
    b.text,
    b.prompt,
    b.completion,
    b.label,
    b.license,
    b.source,
    q.quality_score
FROM ref('silver.quality_scores') AS q
JOIN source('bronze', 'contributions') AS b
  ON b.contribution_id = q.contribution_id AND b.epoch = @epoch
WHERE q.epoch = @epoch
  AND q.accepted
