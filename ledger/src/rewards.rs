//! The rewards policy: an epoch's pool and inference fees → `gold.epoch_payouts`.
//!
//! The policy, in order (worked example in the README):
//!
//! 1. **Pool across datanets.** The epoch's pool (`rewards.pool_per_epoch`) is split across the
//!    datanets that have at least one contributor with positive influence, in proportion to their
//!    configured `reward_weight`. A datanet with nobody to pay passes its share to the others.
//! 2. **Within a datanet, by positive influence.** Each contributor's weight is the sum of the
//!    positive influence of their accepted canonical rows (`gold.contributor_attribution.
//!    positive_influence`). Duplicates and rejected rows have no influence, so they earn nothing.
//!    A contributor with more than `rejection_penalty_threshold` of their submitted rows rejected
//!    by quality rules has their weight scaled by `1 - rejection_penalty`; what they lose goes to
//!    the other contributors of the datanet, because the datanet's share is split by the adjusted
//!    weights.
//! 3. **Inference fees, by credits.** Every request in `gold.inference_usage` of the epoch carries
//!    a fee and credits (contributor → weight, from matching the answer against the training rows).
//!    The fee is split by the credit weights; a request with no credits pays its fee to its
//!    datanet's contributors by the same influence weights as step 2 (and, if the datanet has none,
//!    to all paid contributors of the epoch by their pool amounts).
//!
//! **Integer amounts and the remainder rule.** All amounts are integer token base units. Every
//! split is a largest-remainder (Hamilton) apportionment: each party gets the floor of its exact
//! share, then the leftover units go one each to the parties with the largest fractional parts, ties
//! broken by ascending address. So each split sums exactly to what it divides, and the payouts of an
//! epoch sum to exactly the distributed pool plus fees. (If no datanet has anyone to pay, the pool
//! is not distributed that epoch and the payouts sum to the fees alone.)
//!
//! **Splitting addresses does not pay.** Influence is a sum over rows, so moving rows between
//! addresses moves their weight with them: the total paid to a set of addresses is the same as to
//! one address holding all their rows, up to one base unit of rounding per address. The rejection
//! penalty is judged per address, so splitting rows *in proportion* (each address keeps the same
//! rejection rate) changes nothing; an address holding only rejected rows earns nothing either way.
//! The one thing an address split can do is keep rejected rows away from accepted ones — the
//! penalty is a deterrent against careless bulk submissions, not a sybil defence (no address-based
//! rule can be), and its size is bounded by the configured `rejection_penalty`.

use std::collections::{BTreeMap, BTreeSet};

use alloy::primitives::U256;
use serde::Serialize;

use crate::error::{Error, Result};

/// A datanet's configured share of the pool.
#[derive(Debug, Clone)]
pub struct DatanetWeight {
    /// Datanet name.
    pub name: String,
    /// Relative weight (≥ 0).
    pub weight: f64,
}

/// One row of `gold.contributor_attribution` for the epoch.
#[derive(Debug, Clone)]
pub struct AttributionRow {
    /// Datanet.
    pub datanet: String,
    /// Contributor address (lower-case hex).
    pub contributor: String,
    /// Rows the contributor submitted this epoch.
    pub rows_submitted: u64,
    /// Rows accepted (canonical, passing quality).
    pub rows_accepted: u64,
    /// Rows that were exact or near duplicates.
    pub duplicates: u64,
    /// Sum of the positive influence of the accepted rows.
    pub positive_influence: f64,
}

impl AttributionRow {
    /// Rows rejected by quality rules (not counting duplicates).
    pub fn rejected(&self) -> u64 {
        self.rows_submitted.saturating_sub(self.rows_accepted).saturating_sub(self.duplicates)
    }
}

/// One metered inference request of the epoch.
#[derive(Debug, Clone)]
pub struct UsageRow {
    /// The adapter's datanet (None for the base model).
    pub datanet: Option<String>,
    /// Fee in base units.
    pub fee: U256,
    /// Credits: contributor → weight.
    pub credits: Vec<(String, f64)>,
}

/// Everything the policy needs for one epoch.
#[derive(Debug, Clone)]
pub struct RewardInputs {
    /// The epoch.
    pub epoch: u64,
    /// Pool in base units.
    pub pool: U256,
    /// Datanet weights.
    pub datanets: Vec<DatanetWeight>,
    /// Attribution rows.
    pub attribution: Vec<AttributionRow>,
    /// Inference usage rows.
    pub usage: Vec<UsageRow>,
    /// Rejected fraction above which the penalty applies.
    pub penalty_threshold: f64,
    /// Fraction of weight withheld from a penalized contributor.
    pub penalty: f64,
}

/// Where one contributor's payout came from.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Breakdown {
    /// Pool share per datanet (decimal base units).
    pub pool: BTreeMap<String, String>,
    /// Inference fees (decimal base units).
    pub fees: String,
    /// Datanets in which the rejection penalty applied.
    pub penalized_in: Vec<String>,
}

/// One payout leaf.
#[derive(Debug, Clone, PartialEq)]
pub struct Payout {
    /// Leaf index (payouts are sorted by address).
    pub index: u64,
    /// Contributor address.
    pub contributor: String,
    /// Amount in base units.
    pub amount: U256,
    /// Where it came from.
    pub breakdown: Breakdown,
}

/// The policy's result.
#[derive(Debug, Clone, PartialEq)]
pub struct RewardOutcome {
    /// Payout leaves, one per paid contributor, sorted by address.
    pub payouts: Vec<Payout>,
    /// Pool actually distributed (the whole pool, or zero if no datanet had anyone to pay).
    pub pool_distributed: U256,
    /// Fees distributed.
    pub fees_distributed: U256,
}

impl RewardOutcome {
    /// Sum of all payouts.
    pub fn total(&self) -> U256 {
        self.payouts.iter().fold(U256::ZERO, |a, p| a + p.amount)
    }
}

/// Convert one weight of a split to an integer: `w · 2^shift`, truncated. Scaling by a power of two
/// is exact in binary floating point, so weights keep every bit they have above the unit (each is
/// ≥ 2^53 units unless it is tiny next to the largest), and a weight divided into parts that sum to
/// it exactly converts to integers that sum to at most the whole's: splitting cannot gain weight.
fn weight_units(w: f64, shift: i32) -> Result<U256> {
    if !w.is_finite() || w < 0.0 {
        return Err(Error::InvalidInput(format!("reward weight {w} must be finite and ≥ 0")));
    }
    let scaled = w * 2f64.powi(shift);
    // `as u128` truncates toward zero and is exact for integral values below 2^128.
    Ok(U256::from(scaled as u128))
}

/// Split `amount` across `parties` by integer `weights` with the largest-remainder rule.
/// Ties in the fractional part go to the smaller key. Parties with zero weight get zero.
/// Returns an empty map if every weight is zero.
pub fn apportion(amount: U256, weights: &BTreeMap<String, U256>) -> BTreeMap<String, U256> {
    let total: U256 = weights.values().fold(U256::ZERO, |a, w| a + *w);
    let mut out = BTreeMap::new();
    if total.is_zero() {
        return out;
    }
    let mut remainders: Vec<(U256, &String)> = Vec::with_capacity(weights.len());
    let mut given = U256::ZERO;
    for (k, w) in weights {
        // amount · w / total, exactly, in 256 bits: amount < 2^128 and w < 2^128 by construction.
        let product = amount * *w;
        let share = product / total;
        let rem = product % total;
        given += share;
        out.insert(k.clone(), share);
        if !w.is_zero() {
            remainders.push((rem, k));
        }
    }
    let mut leftover = amount - given;
    // Largest remainder first; BTreeMap order makes ties resolve to the smaller key.
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    for (_, k) in remainders {
        if leftover.is_zero() {
            break;
        }
        if let Some(v) = out.get_mut(k) {
            *v += U256::from(1u8);
            leftover -= U256::from(1u8);
        }
    }
    out
}

/// `x = m · 2^e` with `m` in [0.5, 1), for finite positive `x`.
fn frexp(x: f64) -> (f64, i32) {
    let bits = x.to_bits();
    let raw = ((bits >> 52) & 0x7ff) as i32;
    if raw == 0 {
        // Subnormal: normalize first.
        let (m, e) = frexp(x * 2f64.powi(64));
        return (m, e - 64);
    }
    let m = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    (m, raw - 1022)
}

/// Split `amount` by f64 weights (scaled to integers by a power of two, exactly).
fn apportion_f64(amount: U256, weights: &BTreeMap<String, f64>) -> Result<BTreeMap<String, U256>> {
    let max = weights.values().cloned().fold(0.0f64, f64::max);
    if max <= 0.0 {
        return Ok(BTreeMap::new());
    }
    // The power of two that brings the largest weight into [2^126, 2^127): products with amounts
    // below 2^128 stay within 256 bits.
    let (_, exponent) = frexp(max);
    let shift = 127 - exponent;
    let mut units = BTreeMap::new();
    for (k, w) in weights {
        units.insert(k.clone(), weight_units(*w, shift)?);
    }
    Ok(apportion(amount, &units))
}

/// Apply the policy. Pure: the same inputs always give the same payouts.
pub fn compute(inputs: &RewardInputs) -> Result<RewardOutcome> {
    if !(0.0..=1.0).contains(&inputs.penalty) || !(0.0..=1.0).contains(&inputs.penalty_threshold) {
        return Err(Error::InvalidInput("rejection_penalty and its threshold must be in [0, 1]".into()));
    }
    // Step 2 first: each datanet's adjusted contributor weights.
    let mut per_datanet: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    let mut penalized: BTreeSet<(String, String)> = BTreeSet::new();
    for row in &inputs.attribution {
        if !row.positive_influence.is_finite() {
            return Err(Error::InvalidInput(format!("{} in {}: influence is not finite", row.contributor, row.datanet)));
        }
        let mut w = row.positive_influence.max(0.0);
        let rejected_fraction =
            if row.rows_submitted == 0 { 0.0 } else { row.rejected() as f64 / row.rows_submitted as f64 };
        if rejected_fraction > inputs.penalty_threshold && inputs.penalty > 0.0 {
            w *= 1.0 - inputs.penalty;
            penalized.insert((row.datanet.clone(), row.contributor.clone()));
        }
        *per_datanet.entry(row.datanet.clone()).or_default().entry(row.contributor.clone()).or_default() += w;
    }
    let payable = |d: &str| per_datanet.get(d).is_some_and(|m| m.values().any(|w| *w > 0.0));

    // Step 1: the pool across datanets with someone to pay.
    let mut datanet_weights = BTreeMap::new();
    for d in &inputs.datanets {
        if payable(&d.name) && d.weight > 0.0 {
            *datanet_weights.entry(d.name.clone()).or_insert(0.0) += d.weight;
        }
    }
    let datanet_pools = apportion_f64(inputs.pool, &datanet_weights)?;
    let pool_distributed = datanet_pools.values().fold(U256::ZERO, |a, v| a + *v);

    let mut amounts: BTreeMap<String, U256> = BTreeMap::new();
    let mut breakdowns: BTreeMap<String, Breakdown> = BTreeMap::new();
    for (datanet, pool) in &datanet_pools {
        let shares = apportion_f64(*pool, &per_datanet[datanet])?;
        for (c, v) in shares {
            if v.is_zero() {
                continue;
            }
            *amounts.entry(c.clone()).or_default() += v;
            breakdowns.entry(c).or_default().pool.insert(datanet.clone(), v.to_string());
        }
    }

    // Step 3: fees.
    let mut fees: BTreeMap<String, U256> = BTreeMap::new();
    let mut fees_distributed = U256::ZERO;
    for u in &inputs.usage {
        if u.fee.is_zero() {
            continue;
        }
        let mut credit_weights: BTreeMap<String, f64> = BTreeMap::new();
        for (c, w) in &u.credits {
            if w.is_finite() && *w > 0.0 {
                *credit_weights.entry(c.to_ascii_lowercase()).or_default() += *w;
            }
        }
        let split = if !credit_weights.is_empty() {
            apportion_f64(u.fee, &credit_weights)?
        } else if let Some(w) = u.datanet.as_ref().and_then(|d| per_datanet.get(d)).filter(|m| m.values().any(|w| *w > 0.0)) {
            apportion_f64(u.fee, w)?
        } else {
            // No credits and no datanet weights: pay it like the pool was paid.
            let by_pool: BTreeMap<String, U256> = amounts.clone();
            apportion(u.fee, &by_pool)
        };
        for (c, v) in split {
            fees_distributed += v;
            *fees.entry(c).or_default() += v;
        }
    }
    for (c, v) in &fees {
        *amounts.entry(c.clone()).or_default() += *v;
        breakdowns.entry(c.clone()).or_default().fees = v.to_string();
    }
    for (d, c) in penalized {
        if let Some(b) = breakdowns.get_mut(&c) {
            b.penalized_in.push(d);
        }
    }

    let payouts = amounts
        .into_iter()
        .filter(|(_, v)| !v.is_zero())
        .enumerate()
        .map(|(i, (c, amount))| {
            let mut breakdown = breakdowns.remove(&c).unwrap_or_default();
            if breakdown.fees.is_empty() {
                breakdown.fees = "0".into();
            }
            Payout { index: i as u64, contributor: c, amount, breakdown }
        })
        .collect();
    Ok(RewardOutcome { payouts, pool_distributed, fees_distributed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn row(d: &str, c: &str, submitted: u64, accepted: u64, infl: f64) -> AttributionRow {
        AttributionRow {
            datanet: d.into(),
            contributor: c.into(),
            rows_submitted: submitted,
            rows_accepted: accepted,
            duplicates: 0,
            positive_influence: infl,
        }
    }

    fn inputs(pool: u64, attribution: Vec<AttributionRow>, usage: Vec<UsageRow>) -> RewardInputs {
        RewardInputs {
            epoch: 1,
            pool: U256::from(pool),
            datanets: vec![
                DatanetWeight { name: "a".into(), weight: 2.0 },
                DatanetWeight { name: "b".into(), weight: 1.0 },
            ],
            attribution,
            usage,
            penalty_threshold: 0.5,
            penalty: 0.5,
        }
    }

    #[test]
    fn worked_example_from_the_readme() {
        // Pool 1000 over datanets a:b = 2:1 → 667 and 333 (remainder unit to a, larger fraction).
        let out = compute(&inputs(
            1000,
            vec![
                row("a", "0x01", 10, 10, 3.0),
                row("a", "0x02", 10, 9, 1.0),
                row("a", "0x03", 10, 2, 1.0), // 80% rejected → weight halved to 0.5
                row("b", "0x02", 5, 5, 1.0),
            ],
            vec![UsageRow { datanet: Some("a".into()), fee: U256::from(10u8), credits: vec![("0x03".into(), 1.0), ("0x01".into(), 3.0)] }],
        ))
        .expect("policy");
        let by: BTreeMap<_, _> = out.payouts.iter().map(|p| (p.contributor.as_str(), p.amount.to::<u64>())).collect();
        // a: 667 by 3 : 1 : 0.5 → 444.67, 148.22, 74.11 → 444+1, 148, 74 = 667.
        // Fees 10 split 3:1 → 7.5 / 2.5; 0x03's weight rounds down in fixed point, so 0x01 has the larger remainder.
        assert_eq!(by["0x01"], 445 + 8);
        assert_eq!(by["0x02"], 148 + 333);
        assert_eq!(by["0x03"], 74 + 2);
        assert_eq!(out.total(), U256::from(1010u64));
        assert_eq!(out.payouts.iter().find(|p| p.contributor == "0x03").expect("paid").breakdown.penalized_in, vec!["a"]);
    }

    #[test]
    fn nobody_payable_distributes_only_fees() {
        let out = compute(&inputs(1000, vec![row("a", "0x01", 10, 0, 0.0)], vec![])).expect("policy");
        assert!(out.payouts.is_empty());
        assert_eq!(out.pool_distributed, U256::ZERO);
    }

    #[test]
    fn apportion_is_exact_and_deterministic() {
        let w: BTreeMap<String, U256> = [("x", 1u64), ("y", 1), ("z", 1)].iter().map(|(k, v)| (k.to_string(), U256::from(*v))).collect();
        let s = apportion(U256::from(100u8), &w);
        assert_eq!(s["x"], U256::from(34u8));
        assert_eq!(s["y"], U256::from(33u8));
        assert_eq!(s.values().fold(U256::ZERO, |a, v| a + *v), U256::from(100u8));
    }

    fn random_case(rng: &mut rand::rngs::StdRng) -> RewardInputs {
        let n = rng.random_range(1..12);
        let attribution = (0..n)
            .map(|i| {
                let submitted = rng.random_range(1..50);
                let accepted = rng.random_range(0..=submitted);
                AttributionRow {
                    datanet: if rng.random_bool(0.5) { "a".into() } else { "b".into() },
                    contributor: format!("0x{:02x}", i),
                    rows_submitted: submitted,
                    rows_accepted: accepted,
                    duplicates: rng.random_range(0..=(submitted - accepted)),
                    positive_influence: if rng.random_bool(0.2) { 0.0 } else { rng.random_range(0.0..10.0) },
                }
            })
            .collect();
        let usage = (0..rng.random_range(0..5))
            .map(|_| UsageRow {
                datanet: Some("a".into()),
                fee: U256::from(rng.random_range(0u64..10_000)),
                credits: (0..rng.random_range(0..3)).map(|j| (format!("0x{:02x}", j), rng.random_range(0.0..1.0))).collect(),
            })
            .collect();
        let mut i = inputs(rng.random_range(0u64..u64::MAX / 4), attribution, usage);
        i.pool *= U256::from(1_000_000_000u64); // ~1e27: realistic 18-decimal pools
        i
    }

    #[test]
    fn property_payouts_sum_exactly_and_are_positive() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..500 {
            let i = random_case(&mut rng);
            let out = compute(&i).expect("policy");
            assert_eq!(out.total(), out.pool_distributed + out.fees_distributed);
            let fees: U256 = i.usage.iter().fold(U256::ZERO, |a, u| a + u.fee);
            let any_payable = i.attribution.iter().any(|r| r.positive_influence > 0.0);
            if any_payable {
                assert_eq!(out.pool_distributed, i.pool);
                assert_eq!(out.fees_distributed, fees);
            }
            assert!(out.payouts.iter().all(|p| !p.amount.is_zero()));
            let idx: Vec<u64> = out.payouts.iter().map(|p| p.index).collect();
            assert_eq!(idx, (0..out.payouts.len() as u64).collect::<Vec<_>>());
        }
    }

    #[test]
    fn property_splitting_rows_across_addresses_does_not_raise_the_total() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        for _ in 0..500 {
            let base = random_case(&mut rng);
            let k = rng.random_range(2..6u64);
            let mut base = base;
            // An influence that divides by k exactly, so the parts sum to the whole in f64 too.
            base.attribution[0].positive_influence = (base.attribution[0].positive_influence * 1024.0).round() * k as f64;
            let victim = base.attribution[0].clone();
            // Split the first contributor's rows into k addresses, each keeping the same rejection rate
            // (rows and influence divided proportionally), as a splitter who spreads their data would.
            let mut split = base.clone();
            split.attribution.remove(0);
            for j in 0..k {
                let part = |x: u64| x / k + u64::from(j < x % k);
                split.attribution.push(AttributionRow {
                    contributor: format!("{}-sybil{j}", victim.contributor),
                    rows_submitted: part(victim.rows_submitted),
                    rows_accepted: part(victim.rows_accepted),
                    duplicates: part(victim.duplicates),
                    positive_influence: victim.positive_influence / k as f64,
                    ..victim.clone()
                });
            }
            // Credits name the original address: keep fees out of the comparison.
            let mut a = base.clone();
            a.usage.clear();
            split.usage.clear();
            let before = compute(&a).expect("policy");
            let after = compute(&split).expect("policy");
            let total_of = |o: &RewardOutcome, prefix: &str| {
                o.payouts.iter().filter(|p| p.contributor.starts_with(prefix)).fold(U256::ZERO, |s, p| s + p.amount)
            };
            let was = total_of(&before, &victim.contributor);
            let now = total_of(&after, &victim.contributor);
            // Rejection rates of the parts can differ from the whole by integer rounding, which can
            // only cross the threshold in the splitter's favour by a row; allow that plus 1 unit/address.
            let rate = |r: &AttributionRow| r.rejected() as f64 / r.rows_submitted.max(1) as f64;
            let parts_penalized = split.attribution.iter().filter(|r| r.contributor.contains("sybil")).all(|r| rate(r) > a.penalty_threshold || r.positive_influence == 0.0);
            if rate(&victim) > a.penalty_threshold && !parts_penalized {
                continue;
            }
            assert!(now <= was + U256::from(k), "split raised {was} to {now}");
        }
    }
}
