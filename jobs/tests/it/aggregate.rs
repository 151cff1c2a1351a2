//! Contributor aggregation on real influences: shares sum to one, duplicates and rejected rows earn
//! nothing, and splitting one contributor's rows over many addresses cannot raise their total.

use std::collections::BTreeMap;

use tributary_jobs::aggregate::{RowInfluence, aggregate};
use tributary_jobs::attribute::{self, AttributionConfig, Method, NoCache};
use tributary_jobs::corpus::KbSpec;
use tributary_jobs::tokenizer::Encoded;
use tributary_jobs::train::{Quiet, TrainConfig, train_adapter};

use crate::common::{address, base};

/// Real per-row influences of a small corrupted knowledge-base datanet.
fn real_rows() -> Vec<RowInfluence> {
    let base = base();
    let kb = KbSpec { seed: 31, regions: 8, train_rows: 96, val_per_region: 2, contributors: 8, corrupt_frac: 0.25 }.generate();
    let enc = |rows: &[tributary_jobs::corpus::KbRow]| -> Vec<Encoded> {
        rows.iter().map(|r| base.tokenizer.encode_pair(&r.prompt, &r.completion).expect("encode")).collect()
    };
    let (train, val) = (enc(&kb.train), enc(&kb.val));
    let cfg = TrainConfig { epochs: 2, ..TrainConfig::default() };
    let out = train_adapter(&base.model, &train, &val, &cfg, base.tokenizer.eot(), None, &mut Quiet).expect("train");
    let scores = attribute::attribute(
        &base.model,
        &out.adapter,
        &out.tracin,
        &train,
        &val,
        base.tokenizer.eot(),
        cfg.batch_size,
        &AttributionConfig::new(Method::ExactBlock),
        &mut NoCache,
    )
    .expect("attribute");
    kb.train
        .iter()
        .zip(scores.row_influence())
        .enumerate()
        .map(|(i, (r, inf))| RowInfluence { contribution_id: format!("row-{i}"), contributor: address(r.contributor), influence: inf })
        .collect()
}

#[test]
fn splitting_cannot_raise_a_total() {
    let rows = real_rows();
    assert!(rows.iter().any(|r| r.influence < 0.0) && rows.iter().any(|r| r.influence > 0.0));
    let shares = aggregate(&rows, &BTreeMap::new());
    assert!((shares.iter().map(|s| s.share).sum::<f64>() - 1.0).abs() < 1e-12);
    let by = |s: &[tributary_jobs::aggregate::ContributorShare], c: &str| {
        s.iter().find(|x| x.contributor == c).map(|x| (x.positive_influence, x.share)).unwrap_or((0.0, 0.0))
    };

    // Every contributor in turn splits their rows over five fresh addresses.
    let mut someone_could_game_netting = false;
    for victim in shares.iter().map(|s| s.contributor.clone()) {
        let mut k = 0;
        let split: Vec<RowInfluence> = rows
            .iter()
            .map(|r| {
                let mut r = r.clone();
                if r.contributor == victim {
                    r.contributor = format!("{victim}-sybil-{}", k % 5);
                    k += 1;
                }
                r
            })
            .collect();
        let after = aggregate(&split, &BTreeMap::new());
        let sybils: Vec<_> = after.iter().filter(|s| s.contributor.starts_with(&format!("{victim}-sybil-"))).collect();
        let (p_before, share_before) = by(&shares, &victim);
        let p_after: f64 = sybils.iter().map(|s| s.positive_influence).sum();
        let share_after: f64 = sybils.iter().map(|s| s.share).sum();
        assert!((p_after - p_before).abs() <= 1e-12 * p_before.abs().max(1.0), "{victim}: {p_before} → {p_after}");
        assert!((share_after - share_before).abs() < 1e-12, "{victim}: share {share_before} → {share_after}");
        // Everyone else is untouched.
        for s in &shares {
            if s.contributor != victim {
                assert!((by(&after, &s.contributor).1 - s.share).abs() < 1e-12);
            }
        }
        // Netting per contributor (max(0, Σ influence)) would reward a split chosen by the gamer:
        // the harmful rows on one address, the helpful ones on another.
        let net = |rs: &[RowInfluence], owner: &dyn Fn(&str) -> bool| -> f64 {
            let mut per: BTreeMap<&str, f64> = BTreeMap::new();
            for r in rs.iter().filter(|r| owner(&r.contributor)) {
                *per.entry(r.contributor.as_str()).or_default() += r.influence;
            }
            per.values().map(|v| v.max(0.0)).sum()
        };
        let by_sign: Vec<RowInfluence> = rows
            .iter()
            .map(|r| {
                let mut r = r.clone();
                if r.contributor == victim {
                    r.contributor = format!("{victim}-sybil-{}", if r.influence < 0.0 { "harm" } else { "help" });
                }
                r
            })
            .collect();
        let signed = aggregate(&by_sign, &BTreeMap::new());
        let share_signed: f64 = signed.iter().filter(|s| s.contributor.starts_with(&format!("{victim}-sybil-"))).map(|s| s.share).sum();
        assert!((share_signed - share_before).abs() < 1e-12, "{victim}: share {share_before} → {share_signed} split by sign");
        let v = victim.clone();
        let before = net(&rows, &|c| c == v);
        let prefix = format!("{victim}-sybil-");
        let after_net = net(&by_sign, &|c| c.starts_with(&prefix));
        if after_net > before + 1e-12 {
            someone_could_game_netting = true;
        }
    }
    assert!(someone_could_game_netting, "the counter-example: per-contributor netting is gameable on these data");
}

#[test]
fn duplicates_and_rejected_rows_earn_nothing() {
    let rows = vec![
        RowInfluence { contribution_id: "a".into(), contributor: "0xa".into(), influence: 2.0 },
        RowInfluence { contribution_id: "b".into(), contributor: "0xa".into(), influence: -1.0 },
        RowInfluence { contribution_id: "c".into(), contributor: "0xb".into(), influence: 1.0 },
    ];
    // 0xc submitted 5 rows, all duplicates or rejected: none reached the training set.
    let counts = BTreeMap::from([("0xa".to_string(), (4, 1)), ("0xc".to_string(), (5, 3))]);
    let out = aggregate(&rows, &counts);
    let get = |c: &str| out.iter().find(|s| s.contributor == c).expect("row").clone();
    let (a, b, c) = (get("0xa"), get("0xb"), get("0xc"));
    assert_eq!((a.rows_submitted, a.rows_accepted, a.duplicates), (4, 2, 1));
    assert_eq!(a.influence_sum, 1.0);
    assert_eq!(a.positive_influence, 2.0);
    assert!((a.share - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(b.rows_submitted, 1, "submitted is at least accepted when bronze is unknown");
    assert!((b.share - 1.0 / 3.0).abs() < 1e-12);
    assert_eq!((c.rows_submitted, c.rows_accepted, c.duplicates, c.share), (5, 0, 3, 0.0));
    // Nothing helped: nobody is paid, nothing divides by zero.
    let none = aggregate(&[RowInfluence { contribution_id: "x".into(), contributor: "0xa".into(), influence: -1.0 }], &BTreeMap::new());
    assert_eq!(none[0].share, 0.0);
}
