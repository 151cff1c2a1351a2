/* @audit
description = "A duplicate's canonical row is in the same datanet and no later than the duplicate."
*/
-- Failing rows: duplicates whose canonical row was ingested after them (ties broken by
-- contribution_id, as the dedup model does), or belongs to another datanet.
SELECT
    d.contribution_id,
    d.canonical_id,
    d.dedup_kind,
    d.ingested_at,
    c.ingested_at AS canonical_ingested_at
FROM @this AS d
JOIN source('bronze', 'contributions') AS c ON c.contribution_id = d.canonical_id
WHERE c.datanet <> d.datanet
   OR c.ingested_at > d.ingested_at
   OR (c.ingested_at = d.ingested_at AND c.contribution_id > d.contribution_id)
