"""Baseline of the `quality` benchmark: exact dedup + quality scoring as plain DuckDB SQL.

The same logic as pipeline/benches/sql_models.rs (QUALITY_SQL) and sql/silver/quality_scores.sql,
with every text feature of Tributary's text_stats() written with DuckDB's string and list functions.

usage: duckdb_quality.py DOCS.parquet OUT.parquet RUNS   → one JSON line on stdout
"""
import json
import statistics
import sys
import time

import duckdb

FEATURES = r"""
WITH exact AS (
    SELECT contribution_id, datanet, contributor, text,
           first_value(contribution_id) OVER (
               PARTITION BY datanet, content_hash ORDER BY ingested_at, contribution_id) AS canonical_id
    FROM read_parquet('{docs}')
),
words AS (
    SELECT *,
           list_filter(string_split_regex(text, '\s+'), lambda w: w <> '') AS ws,
           regexp_extract_all(lower(text), '[\p{{L}}\p{{N}}]+') AS toks,
           list_filter(list_transform(string_split(text, chr(10)), lambda l: trim(l)), lambda l: l <> '') AS lns
    FROM exact
),
base AS (
    SELECT *,
           len(ws) AS n_words,
           length(regexp_replace(text, '\s', '', 'g')) AS non_space,
           length(regexp_replace(text, '[\s\p{{L}}\p{{N}}.,;:!?''"()\-‘’“”–—…]', '', 'g')) AS symbols,
           len(list_filter(ws, lambda w: regexp_matches(w, '\p{{L}}'))) AS alpha_words,
           list_sum(list_transform(toks, lambda t: length(t))) AS tok_chars,
           list_transform(range(1, len(toks)), lambda i: toks[i] || ' ' || toks[i + 1]) AS bigrams,
           list_transform(range(1, len(toks) - 3), lambda i: array_to_string(toks[i:i + 4], ' ')) AS fivegrams
    FROM words
),
counted AS (
    SELECT *,
           list_aggregate(bigrams, 'histogram') AS h2,
           list_aggregate(fivegrams, 'histogram') AS h5
    FROM base
),
stats AS (
    SELECT contribution_id, datanet, contributor, canonical_id,
        n_words AS words,
        CASE WHEN n_words > 0 THEN non_space / n_words ELSE 0 END AS mean_word_length,
        CASE WHEN non_space > 0 THEN symbols / non_space ELSE 0 END AS symbol_ratio,
        CASE WHEN n_words > 0 THEN alpha_words / n_words ELSE 0 END AS alpha_word_ratio,
        CASE WHEN len(lns) > 1 THEN (len(lns) - len(list_distinct(lns))) / len(lns) ELSE 0 END AS dup_line_fraction,
        CASE WHEN len(toks) >= 4 AND tok_chars > 0 THEN least(1.0, coalesce(list_max(list_transform(map_entries(h2),
             lambda e: CASE WHEN e.value > 1 THEN e.value * (length(e.key) - 1) ELSE 0 END)), 0) / tok_chars) ELSE 0 END
             AS top_2gram_fraction,
        CASE WHEN len(toks) >= 6 AND tok_chars > 0 THEN coalesce(list_sum(list_transform(
             list_distinct(flatten(list_transform(list_filter(range(1, len(fivegrams) + 1), lambda i: h5[fivegrams[i]] > 1),
                                                  lambda i: range(i, i + 5)))),
             lambda j: length(toks[j]))), 0) / tok_chars ELSE 0 END AS dup_5gram_fraction,
        len(regexp_extract_all(array_to_string(toks, ' '),
             '\b(lorem ipsum|click here|all rights reserved|privacy policy|cookie policy|terms of use|terms of service|subscribe to our newsletter|enable javascript|accept cookies)\b')) AS boilerplate_hits,
        regexp_matches(text, '[.!?"'')…”’。！？]\s*$') AS ends_with_terminal
    FROM counted
),
judged AS (
    SELECT *, list_filter([
        CASE WHEN words < 5 THEN 'too_few_words' END,
        CASE WHEN words > 100000 THEN 'too_many_words' END,
        CASE WHEN mean_word_length < 3.0 OR mean_word_length > 10.0 THEN 'bad_mean_word_length' END,
        CASE WHEN symbol_ratio > 0.1 THEN 'too_many_symbols' END,
        CASE WHEN alpha_word_ratio < 0.8 THEN 'too_few_alpha_words' END,
        CASE WHEN dup_line_fraction > 0.3 THEN 'repeated_lines' END,
        CASE WHEN top_2gram_fraction > 0.2 OR dup_5gram_fraction > 0.15 THEN 'repeated_ngrams' END,
        CASE WHEN boilerplate_hits > 0 THEN 'boilerplate' END,
        CASE WHEN NOT ends_with_terminal THEN 'no_terminal_punctuation' END
    ], lambda r: r IS NOT NULL) AS reasons
    FROM stats
)
SELECT contribution_id, datanet, contributor, canonical_id,
       CASE WHEN contribution_id = canonical_id THEN 'unique' ELSE 'exact' END AS dedup_kind,
       reasons,
       1.0 - len(reasons) / 9.0 AS quality_score,
       contribution_id = canonical_id AND len(reasons) = 0 AS accepted
FROM judged
"""


def main():
    docs, out, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    con = duckdb.connect()
    sql = FEATURES.format(docs=docs.replace("'", "''"))
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        con.execute(f"COPY ({sql}) TO '{out}' (FORMAT parquet)")
        times.append(time.perf_counter() - t)
    accepted, exact = con.execute(
        f"SELECT count(*) FILTER (WHERE accepted), count(*) FILTER (WHERE dedup_kind = 'exact') FROM read_parquet('{out}')"
    ).fetchone()
    reasons = dict(con.execute(
        f"SELECT r, count(*) FROM (SELECT unnest(reasons) AS r FROM read_parquet('{out}')) GROUP BY r"
    ).fetchall())
    print(json.dumps({
        "version": duckdb.__version__,
        "threads": con.execute("SELECT current_setting('threads')").fetchone()[0],
        "seconds": [round(t, 3) for t in times],
        "median_seconds": statistics.median(times),
        "accepted": accepted,
        "exact": exact,
        "reasons": reasons,
    }))


if __name__ == "__main__":
    main()
