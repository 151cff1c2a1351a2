//! Attribution: planted falsified rows get the lowest influence; the job writes both gold tables
//! with the versions it used, resumes from saved gradient chunks, and every method runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::array::AsArray;
use tributary_jobs::Error;
use tributary_jobs::attribute::grads::GradBlocks;
use tributary_jobs::attribute::group::{self, CheckpointEnsemble, GroupPredictor};
use tributary_jobs::attribute::{self, AttributeEvent, AttributeJob, AttributionConfig, Curvature, Method, NoCache};
use tributary_jobs::corpus::KbSpec;
use tributary_jobs::tokenizer::Encoded;
use tributary_jobs::train::{Quiet, TrainConfig, TrainJob, train_adapter};

use crate::common::{append_training_set, base, config, kb_rows, memory, put_validation, warehouse_with_base};

#[test]
fn falsified_rows_rank_in_the_lowest_influence_decile() {
    let base = base();
    let kb = KbSpec { seed: 9, regions: 12, train_rows: 160, val_per_region: 2, contributors: 16, corrupt_frac: 0.2 }.generate();
    let enc = |rows: &[tributary_jobs::corpus::KbRow]| -> Vec<Encoded> {
        rows.iter().map(|r| base.tokenizer.encode_pair(&r.prompt, &r.completion).expect("encode")).collect()
    };
    let (train, val) = (enc(&kb.train), enc(&kb.val));
    let cfg = TrainConfig::default();
    let out = train_adapter(&base.model, &train, &val, &cfg, base.tokenizer.eot(), None, &mut Quiet).expect("train");
    let n = train.len();
    let corrupted: Vec<bool> = kb.train.iter().map(|r| r.corrupted).collect();
    let planted = corrupted.iter().filter(|c| **c).count();
    let chance = planted as f64 / n as f64;
    let run = |attribution: &AttributionConfig| {
        attribute::attribute(&base.model, &out.adapter, &out.tracin, &train, &val, base.tokenizer.eot(), cfg.batch_size, attribution, &mut NoCache)
            .expect("attribute")
    };
    // Share of falsified rows among the tenth of rows with the lowest influence.
    let lowest_decile_hit = |inf: &[f64]| {
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| inf[a].total_cmp(&inf[b]));
        let decile = &order[..n / 10];
        decile.iter().filter(|&&i| corrupted[i]).count() as f64 / decile.len() as f64
    };
    for method in Method::ALL {
        let scores = run(&AttributionConfig::new(method));
        assert_eq!(scores.n_train, n);
        assert!(scores.pair.iter().chain(&scores.self_influence).all(|x| x.is_finite()));
        let inf = scores.row_influence();
        let hit = lowest_decile_hit(&inf);
        eprintln!("{method}: {:.0}% of the lowest-influence decile is falsified (chance {:.0}%)", hit * 100.0, chance * 100.0);
        if method == Method::ExactBlock {
            // 16 rows in the decile, 20% falsified overall: a random ranking puts ≥ 8 falsified
            // rows there with probability 0.007 (binomial), so 2.5× chance is far from luck.
            // (This datanet gives 9 of 16; the figure moves by a row or two with the sampled
            // targets of the curvature estimate, so the bound is not set at the observed value.)
            assert!(hit >= 2.5 * chance, "{method}: lowest decile {hit:.2} falsified vs chance {chance:.2}");
            let mean = |f: bool| {
                let v: Vec<f64> = (0..n).filter(|&i| corrupted[i] == f).map(|i| inf[i]).collect();
                v.iter().sum::<f64>() / v.len() as f64
            };
            // Falsified rows help *less* than clean ones. They need not hurt on average: their
            // completions still teach the answer template and the copying of the region's name,
            // and retraining confirms it — on this datanet, dropping the 32 falsified rows raises
            // the validation loss (0.592 → 0.611), so a negative mean would be the wrong answer.
            assert!(mean(true) < mean(false), "falsified rows should help less than clean ones: {} vs {}", mean(true), mean(false));
        }
    }

    // The other curvatures (`--curvature`): each changes the scores, and the ranking still puts
    // falsified rows in the lowest decile far more often than chance.
    let with = |curvature: Curvature| run(&AttributionConfig { curvature, ..AttributionConfig::new(Method::ExactBlock) });
    let default = with(Curvature::default());
    for curvature in Curvature::ALL.into_iter().filter(|c| *c != Curvature::default()) {
        let other = with(curvature);
        assert!(other.pair.iter().chain(&other.self_influence).all(|x| x.is_finite()), "{curvature}: non-finite scores");
        assert_ne!(default.pair, other.pair, "{curvature} must change the curvature");
        let hit = lowest_decile_hit(&other.row_influence());
        eprintln!("exact-block, curvature {curvature}: {:.0}% of the lowest-influence decile is falsified", hit * 100.0);
        assert!(hit >= 2.5 * chance, "{curvature}: lowest decile {hit:.2} falsified vs chance {chance:.2}");
    }
}

async fn attribution_fixture() -> (tributary_pipeline::Warehouse, tributary_pipeline::Tables, Arc<tributary_pipeline::Config>) {
    let (w, tables) = memory();
    warehouse_with_base(&w).await;
    let kb = KbSpec { seed: 4, regions: 10, train_rows: 100, val_per_region: 2, contributors: 10, corrupt_frac: 0.2 }.generate();
    append_training_set(&tables, "facts", &kb_rows(&kb.train, 1)).await;
    put_validation(&w, "validation/facts.parquet", &kb.val).await;
    let cfg = config("memory://", "facts", "validation/facts.parquet");
    TrainJob::new(cfg.clone(), tables.clone(), "facts")
        .with_train_config(TrainConfig { epochs: 2, ..TrainConfig::default() })
        .execute()
        .await
        .expect("train");
    (w, tables, cfg)
}

async fn influence_by_id(tables: &tributary_pipeline::Tables, method: &str) -> BTreeMap<String, (f64, f64)> {
    let batches = tables
        .query(&format!(
            "SELECT contribution_id, influence, self_influence FROM gold.example_influence WHERE method = '{method}'"
        ))
        .await
        .expect("query");
    let mut out = BTreeMap::new();
    for b in batches {
        let ids = tributary_pipeline::tables::strings(b.column(0)).expect("strings");
        let inf = b.column(1).as_primitive::<arrow::datatypes::Float64Type>();
        let sel = b.column(2).as_primitive::<arrow::datatypes::Float64Type>();
        for i in 0..b.num_rows() {
            out.insert(ids.value(i).to_string(), (inf.value(i), sel.value(i)));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attribute_job_writes_both_tables_and_resumes() {
    let (_w, tables, cfg) = attribution_fixture().await;

    // A run cancelled after a few gradient chunks keeps them…
    let cancel = Arc::new(AtomicBool::new(false));
    let c = cancel.clone();
    let progress = Arc::new(move |e: AttributeEvent| {
        let AttributeEvent::Chunk { done, .. } = e;
        if done >= 2 {
            c.store(true, Ordering::SeqCst);
        }
    });
    let small_chunks = AttributionConfig { chunk: 8, ..AttributionConfig::new(Method::ExactBlock) };
    let cancelled = AttributeJob::new(cfg.clone(), tables.clone(), "facts")
        .with_attribution(small_chunks.clone())
        .with_progress(progress)
        .with_cancel(cancel)
        .execute()
        .await;
    assert!(matches!(cancelled, Err(Error::Cancelled)), "{cancelled:?}");
    assert!(tables.query("SELECT * FROM gold.example_influence").await.is_err(), "nothing committed by a cancelled run");

    // …and the next run reuses them and finishes.
    let s = AttributeJob::new(cfg.clone(), tables.clone(), "facts")
        .with_attribution(small_chunks.clone())
        .execute()
        .await
        .expect("resume");
    assert!(s.chunks_resumed >= 2, "resumed {} chunks", s.chunks_resumed);
    assert!(!s.already_done, "a resumed run computes the rest");
    assert_eq!(s.rows, 100);
    assert_eq!(s.method_version, "exact-block/3 damping=0.1");
    let total: f64 = s.contributors.iter().map(|c| c.share).sum();
    assert!((total - 1.0).abs() < 1e-9, "shares sum to {total}");

    let rows = tables
        .query(
            "SELECT count(*), count(DISTINCT adapter_version), min(training_set_version), max(training_set_version), \
             min(method_version) FROM gold.example_influence",
        )
        .await
        .expect("query");
    let b = &rows[0];
    assert_eq!(b.column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0), 100);
    assert_eq!(b.column(1).as_primitive::<arrow::datatypes::Int64Type>().value(0), 1);
    assert_eq!(tributary_pipeline::tables::strings(b.column(4)).expect("strings").value(0), "exact-block/3 damping=0.1");
    let resumed = influence_by_id(&tables, "exact-block").await;
    assert!(resumed.values().all(|(i, s)| i.is_finite() && s.is_finite() && *s >= 0.0));

    let contributors = tables
        .query("SELECT sum(share), count(*), sum(rows_accepted) FROM gold.contributor_attribution WHERE method = 'exact-block'")
        .await
        .expect("query");
    let b = &contributors[0];
    assert!((b.column(0).as_primitive::<arrow::datatypes::Float64Type>().value(0) - 1.0).abs() < 1e-9);
    assert_eq!(b.column(1).as_primitive::<arrow::datatypes::Int64Type>().value(0), 10);
    assert_eq!(b.column(2).as_primitive::<arrow::datatypes::Int64Type>().value(0), 100);

    // Already done: nothing recomputed. Forced: recomputed from scratch, bit for bit the same.
    let again = AttributeJob::new(cfg.clone(), tables.clone(), "facts").with_attribution(small_chunks.clone()).execute().await.expect("again");
    assert!(again.already_done);
    assert_eq!((again.rows, again.chunks_resumed, &again.method_version), (100, 0, &s.method_version));
    AttributeJob::new(cfg.clone(), tables.clone(), "facts")
        .with_attribution(small_chunks)
        .with_force(true)
        .execute()
        .await
        .expect("forced");
    assert_eq!(influence_by_id(&tables, "exact-block").await, resumed, "a resumed run must equal a fresh one");

    // Every other method writes its own rows beside.
    for m in [Method::DataInf, Method::TracIn, Method::GradDot] {
        let s = AttributeJob::new(cfg.clone(), tables.clone(), "facts")
            .with_attribution(AttributionConfig::new(m))
            .execute()
            .await
            .expect("method runs");
        assert_eq!(s.rows, 100, "{m}");
        assert_eq!(influence_by_id(&tables, m.name()).await.len(), 100, "{m}");
    }
    let per_method = tables
        .query("SELECT count(DISTINCT method) FROM gold.contributor_attribution")
        .await
        .expect("query");
    assert_eq!(per_method[0].column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attribute_without_an_adapter_says_what_to_run() {
    let (w, tables) = memory();
    warehouse_with_base(&w).await;
    let cfg = config("memory://", "facts", "");
    match AttributeJob::new(cfg, tables, "facts").with_epoch(Some(4)).execute().await {
        Err(Error::NotFound(m)) => assert!(m.contains("tributary train --datanet facts --epoch 4"), "{m}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!("bogus".parse::<Method>().is_err());
}

/// The benchmark checks its settings before it trains anything: a bad damping fails at once, not
/// after the adapter and its retrainings.
#[test]
fn eval_refuses_a_bad_damping_before_training() {
    use tributary_jobs::eval::{self, EvalConfig};
    let base = base();
    for damping in [0.0, -1.0, f64::NAN] {
        let cases = [
            ("damping", EvalConfig { subsets: 2, damping: Some(damping), ..EvalConfig::default() }),
            ("group damping", EvalConfig { subsets: 2, group_damping: Some(damping), ..EvalConfig::default() }),
        ];
        for (what, cfg) in cases {
            let phases = std::sync::Mutex::new(Vec::new());
            let err = eval::run(&base, &cfg, &|p| phases.lock().expect("lock").push(format!("{p:?}"))).expect_err("refused");
            assert!(matches!(err, Error::InvalidArgument(_)), "{what} {damping}: {err}");
            assert!(err.to_string().contains(what), "{what} {damping}: {err}");
            assert!(phases.lock().expect("lock").is_empty(), "{what} {damping}: work started: {:?}", phases.lock());
        }
    }
}

/// A miniature benchmark run end to end: both scenarios, every baseline row of the table, and the
/// raw data the report publishes for further analysis (`bench/contributor_lds.py`) — each table
/// figure of the contributor-level LDS can be recomputed from it.
#[test]
fn eval_report_is_complete_and_its_raw_data_reproduces_the_table() {
    use tributary_jobs::eval::{self, EvalConfig, spearman};
    let base = base();
    let subsets = 4;
    let dumps = tempfile::tempdir().expect("tempdir");
    let cfg = EvalConfig {
        kb: KbSpec { regions: 4, train_rows: 40, val_per_region: 2, contributors: 6, ..KbSpec::default() },
        // Three epochs, so the checkpoint row sums two checkpoints (the ends of epochs 2 and 3).
        train: TrainConfig { epochs: 3, ..TrainConfig::default() },
        subsets,
        methods: vec![Method::ExactBlock, Method::GradDot],
        gradients: Some(dumps.path().to_path_buf()),
        ..EvalConfig::default()
    };
    let report = eval::run(&base, &cfg, &|_| {}).expect("benchmark runs");
    let names: Vec<&str> = report.scenarios.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["corrupted", "clean"]);
    // A datamodel's retrainings (bench/datamodel_bound.py) are the eval's own: on the report's
    // subsets they reproduce its measured losses, to the bit, from either seed.
    let d = &report.scenarios[0].contributor_lds;
    let measured = &d.detail.as_ref().expect("detail").val_loss;
    for (replica, measured) in (0u64..).zip(measured) {
        let again = eval::retrain_contributors(&base, &cfg, &d.kept[..2], replica, &|_| {}).expect("retrains");
        assert_eq!(again, measured[..2], "seed {replica}");
    }
    let dm = eval::contributor_retrainings(&base, &cfg, 3, 1, 0, &|_| {}).expect("datamodel retrainings");
    assert_eq!((dm.kept.len(), dm.val_loss.len()), (3, 3));
    for (kept, losses) in dm.kept.iter().zip(&dm.val_loss) {
        assert!(kept.len() == 3 && kept.windows(2).all(|w| w[0] < w[1]) && kept.iter().all(|&c| c < 6), "{kept:?}");
        assert!(losses.len() == 8 && losses.iter().all(|l| l.is_finite() && *l > 0.0), "{losses:?}");
    }
    // ... and the attributed run's predictions for given subsets are the report's for its own.
    let pred = eval::contributor_predictions(&base, &cfg, &d.kept).expect("predictions");
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1e-3);
    assert!(pred.group.iter().zip(&d.group).all(|(a, b)| close(*a, *b)), "{:?} vs {:?}", pred.group, d.group);
    let pair = &d.detail.as_ref().expect("detail").pair;
    assert_eq!(pred.additive.len(), 2);
    for (name, additive) in &pred.additive {
        let tau = &pair.iter().find(|(n, _)| n == name).expect("the method's pairs").1;
        let m = measured[0][0].len();
        for (kept, p) in d.kept.iter().zip(additive) {
            let sum: f64 = (0..d.row_contributor.len())
                .filter(|&i| kept.contains(&d.row_contributor[i]))
                .map(|i| tau[i * m..(i + 1) * m].iter().sum::<f64>() / m as f64)
                .sum();
            assert!(close(*p, -sum), "{name}: {p} vs {}", -sum);
        }
    }
    let refusals = [
        eval::retrain_contributors(&base, &cfg, &d.kept[..1], 2, &|_| {}).map(|_| ()),
        eval::retrain_contributors(&base, &cfg, &[vec![0, 6]], 0, &|_| {}).map(|_| ()),
        eval::contributor_retrainings(&base, &cfg, 1, cfg.kb.seed ^ eval::SUBSET_STREAM, 0, &|_| {}).map(|_| ()),
        eval::contributor_predictions(&base, &cfg, &[vec![7]]).map(|_| ()),
    ];
    for (r, why) in refusals.into_iter().zip(["the eval has two", "contributor 6", "own subset stream", "contributor 7"]) {
        let err = r.expect_err(why);
        assert!(matches!(err, Error::InvalidArgument(_)) && err.to_string().contains(why), "{why}: {err}");
    }
    // The written gradients reproduce the published group predictions (what bench/group_readings.py relies on).
    for s in &report.scenarios {
        let dir = dumps.path().join(&s.name);
        let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("meta.json")).expect("meta.json")).expect("json");
        let widths: Vec<usize> = serde_json::from_value(meta["widths"].clone()).expect("widths");
        let train_loss: Vec<f64> = serde_json::from_value(meta["train_loss"].clone()).expect("train_loss");
        let val_loss: Vec<f64> = serde_json::from_value(meta["val_loss"].clone()).expect("val_loss");
        assert_eq!((train_loss.len(), val_loss.len()), (s.train_rows, s.val_rows));
        let detail = s.contributor_lds.detail.as_ref().expect("detail");
        for (a, b) in val_loss.iter().zip(&detail.val_loss_full) {
            assert!((a - b).abs() < 1e-6, "{}: validation loss {a} in meta.json, {b} in the report", s.name);
        }
        let train = npy_blocks(&dir.join("train.npy"), s.train_rows, &widths);
        let val = npy_blocks(&dir.join("val.npy"), s.val_rows, &widths);
        let sampled = npy_blocks(&dir.join("train_sampled.npy"), s.train_rows, &widths);
        assert_eq!(sampled.blocks.len(), train.blocks.len());
        let predictor = GroupPredictor::new(&train, &val, group::DEFAULT_DAMPING).expect("predictor");
        // The checkpoint row: the attributed adapter is the end of epoch 3; epoch 2's gradients are in `epoch2/`.
        let d = &s.contributor_lds;
        assert_eq!(d.group_checkpoint_epochs, [2, 3]);
        let (epoch2, third) = (dir.join("epoch2"), dir.join("epoch3"));
        assert!(dir.join("epoch1").join("val.npy").exists(), "every earlier epoch end is written");
        assert!(!third.exists() && !epoch2.join("train_sampled.npy").exists(), "the attributed adapter once; no sampled labels");
        let earlier = GroupPredictor::new(
            &npy_blocks(&epoch2.join("train.npy"), s.train_rows, &widths),
            &npy_blocks(&epoch2.join("val.npy"), s.val_rows, &widths),
            group::DEFAULT_DAMPING,
        )
        .expect("epoch 2 predictor");
        let ensemble = CheckpointEnsemble::new(vec![earlier, predictor.clone()]).expect("ensemble");
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs().max(1e-3);
        let mut differs = false;
        for ((kept, published), summed) in d.kept.iter().zip(&d.group).zip(&d.group_checkpoints) {
            let mask: Vec<bool> = d.row_contributor.iter().map(|c| kept.contains(c)).collect();
            let rise = predictor.predict(&mask).expect("prediction");
            let mean = rise.iter().sum::<f64>() / rise.len() as f64;
            assert!(close(mean, *published), "{}: {mean} from the files, {published} published", s.name);
            let rise = ensemble.predict(&mask).expect("ensemble prediction");
            let both = rise.iter().sum::<f64>() / rise.len() as f64;
            assert!(close(both, *summed), "{}: {both} from the files, {summed} published", s.name);
            differs |= !close(both, 2.0 * mean);
        }
        assert!(differs, "{}: the checkpoints' predictions are not the final adapter's twice over", s.name);
        let row = s.methods.iter().find(|f| f.name == eval::CHECKPOINTS_ROW).expect("checkpoint row");
        let each = row.lds_contributor_each.expect("checkpoint contributor LDS");
        for seed in 0..2 {
            let again = spearman(&d.group_checkpoints, &d.loss[seed]);
            assert!((again - each[seed]).abs() < 1e-9 || (again.is_nan() && each[seed].is_nan()), "{again} vs {each:?}");
        }
        let group_cost = s.methods.iter().find(|f| f.name == eval::GROUP_ROW).and_then(|f| f.cost_epochs).expect("group cost");
        assert!(row.cost_epochs.is_some_and(|c| c > group_cost), "{:?} vs {group_cost}: two checkpoints cost more than one", row.cost_epochs);
    }
    for s in &report.scenarios {
        let (n, m) = (s.train_rows, s.val_rows);
        assert_eq!((n, m, s.contributors), (40, 8, 6), "{}", s.name);
        assert_eq!(s.corrupted_rows, if s.name == "corrupted" { 8 } else { 0 });
        let methods: Vec<&str> = s.methods.iter().map(|f| f.name.as_str()).collect();
        for want in ["exact-block", "graddot", eval::GROUP_ROW, eval::CHECKPOINTS_ROW, "training loss", "random", "oracle: falsified rows kept"] {
            assert!(methods.contains(&want), "{}: {want} missing from {methods:?}", s.name);
        }
        let d = &s.contributor_lds;
        // The group row's contributor LDS is the correlation of the published group predictions.
        assert_eq!(d.group.len(), subsets);
        assert!(d.group.iter().all(|g| g.is_finite()), "{:?}", d.group);
        let group = s.methods.iter().find(|f| f.name == eval::GROUP_ROW).expect("group row");
        let each = group.lds_contributor_each.expect("group contributor LDS");
        for seed in 0..2 {
            let again = spearman(&d.group, &d.loss[seed]);
            assert!((again - each[seed]).abs() < 1e-9 || (again.is_nan() && each[seed].is_nan()), "group: {again} vs {each:?}");
        }
        // ... and its reading against the two seeds' mean is the correlation with the published losses' mean.
        let halfway: Vec<f64> = d.loss[0].iter().zip(&d.loss[1]).map(|(a, b)| (a + b) / 2.0).collect();
        let again = spearman(&d.group, &halfway);
        let published = group.lds_contributor_seed_mean.expect("group contributor LDS against the seeds' mean");
        assert!((again - published).abs() < 1e-9 || (again.is_nan() && published.is_nan()), "group: {again} vs {published}");
        for f in &s.methods {
            assert_eq!(f.lds_contributor_each.is_some(), f.lds_contributor_seed_mean.is_some(), "{}: {}", s.name, f.name);
            assert_eq!(f.lds_example_each.is_some(), f.lds_example_seed_mean.is_some(), "{}: {}", s.name, f.name);
        }
        assert!(group.cost_epochs.is_some_and(|c| c > 0.0), "{:?}", group.cost_epochs);
        // Every LDS figure comes with its bootstrap interval, a real range of correlations.
        let in_range = |x: Option<[f64; 2]>| x.is_some_and(|[lo, hi]| -1.0 - 1e-9 <= lo && lo <= hi && hi <= 1.0 + 1e-9);
        for f in &s.methods {
            assert_eq!(f.lds_contributor.is_some(), in_range(f.lds_contributor_interval), "{}: {:?}", f.name, f.lds_contributor_interval);
            assert_eq!(f.lds_example.is_some(), in_range(f.lds_example_interval), "{}: {:?}", f.name, f.lds_example_interval);
        }
        assert!(s.ceiling_intervals.iter().all(|&i| in_range(Some(i))), "{:?}", s.ceiling_intervals);
        assert_eq!(d.row_contributor.len(), n);
        assert_eq!((d.row_question.len(), d.val_region.len(), d.val_question.len()), (n, m, m));
        let kinds = ["capital", "export", "feature", "overview"];
        assert!(d.row_question.iter().chain(&d.val_question).all(|q| kinds.contains(q)), "{:?}", d.val_question);
        // Two validation questions per region, two different ones.
        for r in 0..4 {
            let mut asked: Vec<&str> = (0..m).filter(|&v| d.val_region[v] == r).map(|v| d.val_question[v]).collect();
            asked.dedup();
            assert_eq!(asked.len(), 2, "region {r}: {asked:?}");
        }
        assert_eq!(d.row_falsified.iter().filter(|f| **f).count(), s.corrupted_rows);
        assert_eq!(d.kept.len(), subsets);
        assert!(d.kept.iter().all(|k| k.len() == 3 && k.windows(2).all(|w| w[0] < w[1])), "{:?}", d.kept);
        let detail = d.detail.as_ref().expect("the full report has the detail");
        assert_eq!(detail.val_loss_full.len(), m);
        assert!(detail.val_loss_full.iter().all(|l| l.is_finite() && *l > 0.0));
        for seed in 0..2 {
            assert_eq!(detail.val_loss[seed].len(), subsets);
            for (per_val, mean) in detail.val_loss[seed].iter().zip(&d.loss[seed]) {
                assert_eq!(per_val.len(), m);
                assert!((per_val.iter().sum::<f64>() / m as f64 - mean).abs() < 1e-12);
            }
        }
        // The group prediction per validation row, whose mean is the published one.
        assert_eq!(detail.group.len(), subsets);
        for (per_val, mean) in detail.group.iter().zip(&d.group) {
            assert_eq!(per_val.len(), m);
            assert!((per_val.iter().sum::<f64>() / m as f64 - mean).abs() < 1e-12, "{per_val:?} vs {mean}");
        }
        assert_eq!(detail.pair.len(), 2);
        for (name, pair) in &detail.pair {
            assert_eq!(pair.len(), n * m, "{name}");
            let influence: Vec<f64> = (0..n).map(|i| pair[i * m..(i + 1) * m].iter().sum::<f64>() / m as f64).collect();
            let predicted: Vec<f64> = d
                .kept
                .iter()
                .map(|k| -(0..n).filter(|&i| k.contains(&d.row_contributor[i])).map(|i| influence[i]).sum::<f64>())
                .collect();
            let fig = s.methods.iter().find(|f| &f.name == name).expect("method row");
            let each = fig.lds_contributor_each.expect("contributor LDS");
            for seed in 0..2 {
                let again = spearman(&predicted, &d.loss[seed]);
                assert!((again - each[seed]).abs() < 1e-9 || (again.is_nan() && each[seed].is_nan()), "{name}: {again} vs {each:?}");
            }
            let auc = fig.auc_influence;
            assert_eq!(auc.is_some(), s.name == "corrupted", "{name}");
            assert!(auc.is_none_or(|a| (0.0..=1.0).contains(&a)), "{name}: {auc:?}");
        }
    }
    let table = report.markdown();
    let trained = "training: 3 epochs of 8-row batches;";
    for want in ["exact-block", "graddot", "noise ceiling", "95% bootstrap intervals (the 4 subsets resampled 1000 times", trained] {
        assert!(table.contains(want), "{want} missing from\n{table}");
    }
    // `--format json` prints the report without the per-row detail, and nothing else is dropped.
    let full_json = serde_json::to_value(&report).expect("json");
    let short = serde_json::to_value(report.without_detail()).expect("json");
    assert!(short["scenarios"].as_array().expect("scenarios").iter().all(|s| s["contributor_lds"].get("detail").is_none()));
    let mut stripped = full_json.clone();
    for s in stripped["scenarios"].as_array_mut().expect("scenarios") {
        s["contributor_lds"].as_object_mut().expect("object").remove("detail");
    }
    assert_eq!(stripped, short);
    assert!(full_json["scenarios"][0]["contributor_lds"]["detail"]["pair"].is_array());
}

/// Read a `float32 [rows, Σ widths]` `.npy` matrix written by the eval back into gradient blocks.
fn npy_blocks(path: &std::path::Path, rows: usize, widths: &[usize]) -> GradBlocks {
    use burn::tensor::{Tensor, TensorData};
    let bytes = std::fs::read(path).expect("npy file");
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00", "{path:?}");
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + len]).expect("header");
    let cols: usize = widths.iter().sum();
    assert!(header.contains(&format!("'shape': ({rows}, {cols})")), "{path:?}: {header}");
    let values: Vec<f32> = bytes[10 + len..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert_eq!(values.len(), rows * cols, "{path:?}");
    let device = tributary_jobs::compute::Compute::Cpu.device().expect("cpu");
    let mut start = 0;
    let mut blocks = Vec::new();
    for &p in widths {
        let block: Vec<f32> = (0..rows).flat_map(|r| values[r * cols + start..r * cols + start + p].iter().copied()).collect();
        blocks.push(Tensor::from_data(TensorData::new(block, [rows, p]), &device));
        start += p;
    }
    let keys = (0..widths.len()).map(|i| (i, tributary_jobs::model::LoraTarget::ALL[0])).collect();
    GradBlocks { keys, blocks }
}
