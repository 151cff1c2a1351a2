/* @model
description = """
Quality of every contribution: Gopher/C4/FineWeb-style heuristics, each failing rule adding a
reason code to `reasons`. quality_score is the fraction of rules passed; a row is accepted when it
is the canonical row of its duplicate cluster and its score reaches the datanet's
min_quality_score. Thresholds are per datanet ([datanets.quality] in tributary.toml, visible here
as config.datanets).
"""
materialized = "incremental"
unique_key = "contribution_id"
audits = [
    "not_null(contribution_id, datanet, epoch, quality_score, reasons, accepted)",
    "accepted_range(quality_score, 0, 1)",
    "accepted_rows_are_canonical",
]
*/

WITH measured AS (
    SELECT
        d.contribution_id,
        d.datanet,
        d.contributor,
        d.epoch,
        d.dedup_kind,
        d.canonical_id,
        b.label,
        -- One pass over the text computes every feature (see pipeline/src/models/quality.rs).
        text_stats(b.text) AS s,
        CASE WHEN q.kind = 'prompt_completion' THEN text_stats(b.completion)['words'] END AS completion_words,
        q.min_words,
        q.max_words,
        q.min_mean_word_length,
        q.max_mean_word_length,
        q.max_symbol_ratio,
        q.min_alpha_word_ratio,
        q.max_dup_line_fraction,
        q.max_top_2gram_fraction,
        q.max_dup_5gram_fraction,
        q.max_boilerplate_hits,
        q.require_terminal_punctuation,
        q.min_completion_words,
        q.allowed_labels,
        q.min_quality_score
    FROM ref('silver.contributions_dedup') AS d
    JOIN source('bronze', 'contributions') AS b
      ON b.contribution_id = d.contribution_id AND b.epoch = @epoch
    JOIN config.datanets AS q ON q.datanet = d.datanet
    WHERE d.epoch = @epoch
),

-- Each rule yields its reason code when it fails and NULL when it passes; array_compact drops
-- the NULLs. Keep the list and the rule count below (11) in step.
judged AS (
    SELECT
        *,
        array_compact(make_array(
            -- Gopher: documents need enough words, and not absurdly many.
            CASE WHEN s['words'] < min_words THEN 'too_few_words' END,
            CASE WHEN s['words'] > max_words THEN 'too_many_words' END,
            -- Gopher: mean word length outside [3, 10] characters means gibberish or code dumps.
            CASE WHEN s['mean_word_length'] < min_mean_word_length
                   OR s['mean_word_length'] > max_mean_word_length THEN 'bad_mean_word_length' END,
            -- Gopher: symbol-heavy text ("$$$ ### @@@").
            CASE WHEN s['symbol_ratio'] > max_symbol_ratio THEN 'too_many_symbols' END,
            -- Gopher: at least 80% of words must contain a letter.
            CASE WHEN s['alpha_word_ratio'] < min_alpha_word_ratio THEN 'too_few_alpha_words' END,
            -- Gopher/FineWeb: repeated lines and repeated n-grams.
            CASE WHEN s['dup_line_fraction'] > max_dup_line_fraction THEN 'repeated_lines' END,
            CASE WHEN s['top_2gram_fraction'] > max_top_2gram_fraction
                   OR s['dup_5gram_fraction'] > max_dup_5gram_fraction THEN 'repeated_ngrams' END,
            -- C4: boilerplate phrases ("lorem ipsum", "terms of use", "click here", ...).
            CASE WHEN s['boilerplate_hits'] > max_boilerplate_hits THEN 'boilerplate' END,
            -- C4: text should end like a sentence.
            CASE WHEN require_terminal_punctuation AND NOT s['ends_with_terminal'] THEN 'no_terminal_punctuation' END,
            -- Per-datanet column checks: prompt/completion pairs need a real completion, and
            -- labels must come from the datanet's list when it has one.
            CASE WHEN completion_words < min_completion_words THEN 'short_completion' END,
            CASE WHEN cardinality(allowed_labels) > 0
                  AND (label IS NULL OR NOT array_has(allowed_labels, label)) THEN 'invalid_label' END
        )) AS reasons
    FROM measured
)

SELECT
    contribution_id,
    datanet,
    contributor,
    epoch,
    dedup_kind,
    canonical_id,
    1.0 - CAST(cardinality(reasons) AS DOUBLE) / 11.0 AS quality_score,
    reasons,
    dedup_kind = 'unique' AND 1.0 - CAST(cardinality(reasons) AS DOUBLE) / 11.0 >= min_quality_score AS accepted,
    -- The measurements, so a rejection can be explained without recomputing.
    s['words'] AS words,
    s['mean_word_length'] AS mean_word_length,
    s['symbol_ratio'] AS symbol_ratio,
    s['alpha_word_ratio'] AS alpha_word_ratio,
    s['dup_line_fraction'] AS dup_line_fraction,
    s['top_2gram_fraction'] AS top_2gram_fraction,
    s['dup_5gram_fraction'] AS dup_5gram_fraction,
    s['boilerplate_hits'] AS boilerplate_hits
FROM judged
