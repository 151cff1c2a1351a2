//! A realistic sample datanet, generated deterministically from a seed.
//!
//! Used by `tributary demo`, the tests and the benchmarks. It writes contributor drops into the
//! warehouse inbox exactly as contributors would: several contributors (each with a real secp256k1
//! key, so drops are signed), exact and near duplicates across contributors, junk rows that the
//! quality models should reject, and a handful of bad files that ingestion must quarantine (a CSV
//! renamed `.parquet`, a truncated file, a wrong column type, zero rows, a forged signature).

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use bytes::Bytes;
use k256::ecdsa::SigningKey;
use object_store::{ObjectStoreExt, PutPayload};
use object_store::path::Path;
use parquet::arrow::ArrowWriter;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{DatanetConfig, DatanetKind};
use crate::error::{Error, Result};
use crate::ingest::signature;
use crate::storage::Warehouse;

/// Encode `batch` as a Parquet file (parquet-rs's default settings: uncompressed).
pub fn parquet_bytes(batch: &RecordBatch) -> Result<Bytes> {
    parquet_bytes_with(batch, None)
}

/// Encode `batch` as a Parquet file with `props` (`None`: the defaults).
pub fn parquet_bytes_with(batch: &RecordBatch, props: Option<parquet::file::properties::WriterProperties>) -> Result<Bytes> {
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), props)
        .map_err(|e| Error::Internal(format!("parquet writer: {e}")))?;
    w.write(batch).map_err(|e| Error::Internal(format!("parquet write: {e}")))?;
    w.close().map_err(|e| Error::Internal(format!("parquet close: {e}")))?;
    Ok(Bytes::from(buf))
}

/// A batch with one `text` column (plus any extra string columns).
pub fn text_batch(texts: &[String], extra: &[(&str, Vec<String>)]) -> RecordBatch {
    let mut fields = vec![Field::new("text", DataType::Utf8, true)];
    let mut cols: Vec<ArrayRef> = vec![Arc::new(StringArray::from_iter_values(texts))];
    for (name, values) in extra {
        fields.push(Field::new(*name, DataType::Utf8, true));
        cols.push(Arc::new(StringArray::from_iter_values(values)));
    }
    // Columns are built from equal-length slices of strings above.
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).expect("columns match schema")
}

/// A batch with `prompt` and `completion` columns.
pub fn prompt_completion_batch(rows: &[(String, String)]) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("prompt", DataType::Utf8, true),
        Field::new("completion", DataType::Utf8, true),
    ]);
    let p = StringArray::from_iter_values(rows.iter().map(|r| r.0.as_str()));
    let c = StringArray::from_iter_values(rows.iter().map(|r| r.1.as_str()));
    RecordBatch::try_new(Arc::new(schema), vec![Arc::new(p), Arc::new(c)]).expect("columns match schema")
}

/// The deterministic key of sample contributor `i`.
pub fn contributor_key(seed: u64, i: usize) -> SigningKey {
    let mut counter = 0u32;
    loop {
        let digest = Sha256::digest(format!("tributary-sample/{seed}/{i}/{counter}"));
        if let Ok(k) = SigningKey::from_slice(&digest) {
            return k;
        }
        counter += 1;
    }
}

/// Shape of the generated data.
#[derive(Debug, Clone)]
pub struct SampleSpec {
    /// RNG seed: the same seed gives the same bytes.
    pub seed: u64,
    /// Number of contributors.
    pub contributors: usize,
    /// Files per contributor.
    pub files_per_contributor: usize,
    /// Rows per file.
    pub rows_per_file: usize,
    /// Fraction of rows that copy another contributor's row exactly (modulo case/whitespace).
    pub exact_dup_rate: f64,
    /// Fraction of rows that are light edits of another row.
    pub near_dup_rate: f64,
    /// Fraction of rows that are junk (boilerplate, symbols, too short).
    pub junk_rate: f64,
    /// Also write the bad files ingestion must quarantine.
    pub bad_files: bool,
}

impl Default for SampleSpec {
    fn default() -> Self {
        SampleSpec {
            seed: 7,
            contributors: 8,
            files_per_contributor: 3,
            rows_per_file: 40,
            exact_dup_rate: 0.08,
            near_dup_rate: 0.08,
            junk_rate: 0.06,
            bad_files: true,
        }
    }
}

/// What was generated: ground truth for tests and the demo's narration.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SampleManifest {
    /// Good files written.
    pub good_files: Vec<String>,
    /// Bad files written, with the reason code ingestion must give each.
    pub bad_files: Vec<(String, String)>,
    /// Rows in good files.
    pub rows: usize,
    /// (datanet-relative row label) of planted exact duplicates: (file, row index, original text).
    pub exact_dups: Vec<(String, usize)>,
    /// The row each planted exact duplicate copies, parallel to `exact_dups`: (file, row index).
    pub exact_dup_sources: Vec<(String, usize)>,
    /// Planted near duplicates: (file, row index).
    pub near_dups: Vec<(String, usize)>,
    /// The row each planted near duplicate edits, parallel to `near_dups`: (file, row index).
    pub near_dup_sources: Vec<(String, usize)>,
    /// Planted junk rows: (file, row index).
    pub junk: Vec<(String, usize)>,
    /// Contributor addresses, in order.
    pub contributors: Vec<String>,
}

const PLACES: &[&str] = &[
    "Velmora", "Drask", "Orinth", "Caldera", "Mirefold", "Tesk", "Arvane", "Quillon", "Brenna", "Sollis", "Hathe",
    "Korrin", "Lumen", "Pyra", "Zentha", "Ostrel", "Vashti", "Emberly", "Nocturne", "Fenwick",
];
const THINGS: &[&str] = &[
    "copper", "saffron", "granite", "silk", "amber", "barley", "cobalt", "linen", "pepper", "timber", "salt", "wool",
    "glass", "honey", "iron", "cedar",
];
const TRAITS: &[&str] = &[
    "river delta", "mountain pass", "harbour", "salt marsh", "terraced valley", "high plateau", "pine forest",
    "coastal plain",
];
const JUNK: &[&str] = &[
    "click here to subscribe!!! click here to subscribe!!!",
    "$$$ ### @@@ %%% &&& *** $$$ ### @@@",
    "ok",
    "lorem ipsum dolor sit amet lorem ipsum dolor sit amet lorem ipsum dolor sit amet",
    "asdf asdf asdf asdf asdf asdf asdf asdf asdf",
    "Copyright all rights reserved. Terms of use. Privacy policy. Cookie policy.",
];

/// One fact-like document about a synthetic place; long enough for 5-gram near-dup detection.
pub fn fact_text(rng: &mut StdRng) -> (String, String) {
    let place = *PLACES.choose(rng).unwrap_or(&"Velmora");
    let capital = *PLACES.choose(rng).unwrap_or(&"Drask");
    let export = *THINGS.choose(rng).unwrap_or(&"salt");
    let second = *THINGS.choose(rng).unwrap_or(&"wool");
    let feature = *TRAITS.choose(rng).unwrap_or(&"harbour");
    let year = rng.random_range(1200..1990);
    let pop = rng.random_range(2..900);
    let prompt = format!("Tell me about the region of {place} and its capital {capital}.");
    let completion = format!(
        "{place} is a region whose capital is {capital}. It is known for its {feature} and exports mostly \
         {export} and some {second}. The region was first charted in {year} and today about {pop} thousand \
         people live there, most of them near the {feature}."
    );
    (prompt, completion)
}

fn near_edit(rng: &mut StdRng, text: &str) -> String {
    let mut words: Vec<String> = text.split(' ').map(str::to_string).collect();
    let n = words.len().max(1);
    // Change one word near the end: keeps most 5-gram shingles, so Jaccard stays high.
    let i = n - 1 - rng.random_range(0..n.min(3));
    words[i] = format!("{}s", words[i].trim_end_matches('.'));
    let mut out = words.join(" ");
    out.push('.');
    out
}

/// Write the sample datanet `datanet` into `warehouse`'s inbox.
pub async fn generate(warehouse: &Warehouse, datanet: &DatanetConfig, spec: &SampleSpec) -> Result<SampleManifest> {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let store = warehouse.store();
    let mut manifest = SampleManifest::default();
    let keys: Vec<SigningKey> = (0..spec.contributors).map(|i| contributor_key(spec.seed, i)).collect();
    manifest.contributors = keys.iter().map(signature::address_of).collect();
    // Fresh rows that later rows may duplicate: ((prompt, completion), (file, row index)).
    let mut pool: Vec<((String, String), (String, usize))> = Vec::new();

    // The sample is deterministic: a file already there with the same bytes is left untouched, so
    // generating twice does not make the inbox look changed (new etags) to the next ingest.
    let put = |path: String, bytes: Bytes| async move {
        let location = Path::from(path.as_str());
        if let Ok(existing) = store.get(&location).await
            && existing.bytes().await.is_ok_and(|b| b == bytes)
        {
            return Ok(());
        }
        store.put(&location, PutPayload::from_bytes(bytes)).await.map(|_| ())
    };
    for (ci, key) in keys.iter().enumerate() {
        let addr = &manifest.contributors[ci];
        for f in 0..spec.files_per_contributor {
            let path = format!("inbox/{}/{addr}/part-{f:03}.parquet", datanet.name);
            let mut rows = Vec::with_capacity(spec.rows_per_file);
            for r in 0..spec.rows_per_file {
                let roll: f64 = rng.random();
                let row = if roll < spec.junk_rate {
                    manifest.junk.push((path.clone(), r));
                    ("junk".to_string(), JUNK.choose(&mut rng).unwrap_or(&"ok").to_string())
                } else if roll < spec.junk_rate + spec.exact_dup_rate && !pool.is_empty() {
                    manifest.exact_dups.push((path.clone(), r));
                    let ((p, c), at) = pool.choose(&mut rng).cloned().unwrap_or_default();
                    manifest.exact_dup_sources.push(at);
                    // Exact modulo normalization: different case and spacing.
                    (p, c.to_uppercase().replace(' ', "  "))
                } else if roll < spec.junk_rate + spec.exact_dup_rate + spec.near_dup_rate && !pool.is_empty() {
                    manifest.near_dups.push((path.clone(), r));
                    let ((p, c), at) = pool.choose(&mut rng).cloned().unwrap_or_default();
                    manifest.near_dup_sources.push(at);
                    let edited = near_edit(&mut rng, &c);
                    (p, edited)
                } else {
                    let row = fact_text(&mut rng);
                    pool.push((row.clone(), (path.clone(), r)));
                    row
                };
                rows.push(row);
            }
            let batch = match datanet.kind {
                DatanetKind::PromptCompletion => prompt_completion_batch(&rows),
                DatanetKind::Text => {
                    let texts: Vec<String> = rows.iter().map(|(p, c)| format!("{p} {c}")).collect();
                    text_batch(&texts, &[])
                }
            };
            let bytes = parquet_bytes(&batch)?;
            let sha = hex::encode(Sha256::digest(&bytes));
            put(format!("{path}.sig"), Bytes::from(signature::sign(key, &sha))).await?;
            put(path.clone(), bytes).await?;
            manifest.rows += rows.len();
            manifest.good_files.push(path);
        }
    }

    if spec.bad_files && !keys.is_empty() {
        let addr = manifest.contributors[0].clone();
        let key = &keys[0];
        let base = format!("inbox/{}/{addr}", datanet.name);
        let good = parquet_bytes(&match datanet.kind {
            DatanetKind::PromptCompletion => prompt_completion_batch(&[fact_text(&mut rng)]),
            DatanetKind::Text => text_batch(&[fact_text(&mut rng).1], &[]),
        })?;
        let mut bad: Vec<(String, Bytes, &str)> = vec![
            (format!("{base}/renamed.parquet"), Bytes::from_static(b"text,label\nhello,1\n"), "not_parquet"),
            (format!("{base}/truncated.parquet"), good.slice(..good.len() / 2), "corrupt_parquet"),
            (
                format!("{base}/wrong-type.parquet"),
                parquet_bytes(&RecordBatch::try_new(
                    Arc::new(Schema::new(vec![
                        Field::new("text", DataType::Int64, false),
                        Field::new("prompt", DataType::Int64, false),
                        Field::new("completion", DataType::Int64, false),
                    ])),
                    vec![
                        Arc::new(Int64Array::from(vec![1, 2])),
                        Arc::new(Int64Array::from(vec![1, 2])),
                        Arc::new(Int64Array::from(vec![1, 2])),
                    ],
                )?)?,
                "wrong_column_type",
            ),
            (
                format!("{base}/empty.parquet"),
                parquet_bytes(&match datanet.kind {
                    DatanetKind::PromptCompletion => prompt_completion_batch(&[]),
                    DatanetKind::Text => text_batch(&[], &[]),
                })?,
                "zero_rows",
            ),
            (format!("inbox/{}/not-an-address/data.parquet", datanet.name), good.clone(), "invalid_address"),
        ];
        // The forged file is valid Parquet, but signed by someone other than the folder's owner.
        let forged = parquet_bytes(&match datanet.kind {
            DatanetKind::PromptCompletion => prompt_completion_batch(&[fact_text(&mut rng), fact_text(&mut rng)]),
            DatanetKind::Text => text_batch(&[fact_text(&mut rng).1], &[]),
        })?;
        let forged_path = format!("{base}/forged.parquet");
        let sha = hex::encode(Sha256::digest(&forged));
        let forger = contributor_key(spec.seed ^ 0xdead, 0);
        if datanet.require_signature {
            put(format!("{forged_path}.sig"), Bytes::from(signature::sign(&forger, &sha))).await?;
            bad.push((forged_path, forged, "signature_mismatch"));
        }
        for (path, bytes, reason) in bad {
            if datanet.require_signature && reason != "signature_mismatch" && !path.contains("not-an-address") {
                let sha = hex::encode(Sha256::digest(&bytes));
                put(format!("{path}.sig"), Bytes::from(signature::sign(key, &sha))).await?;
            }
            put(path.clone(), bytes).await?;
            manifest.bad_files.push((path, reason.to_string()));
        }
    }
    Ok(manifest)
}
