/* @audit
description = "Only canonical rows are accepted: a duplicate never reaches the training set."
*/
SELECT contribution_id, canonical_id, dedup_kind, quality_score, reasons
FROM @this
WHERE accepted
  AND (dedup_kind <> 'unique' OR canonical_id <> contribution_id)
