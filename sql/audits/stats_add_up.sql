/* @audit
description = "Every submitted row is counted once: accepted + duplicates + quality rejections = submitted."
*/
SELECT epoch, datanet, contributor, submitted, accepted, exact_duplicates, near_duplicates, rejected_quality
FROM @this
WHERE accepted + exact_duplicates + near_duplicates + rejected_quality <> submitted
