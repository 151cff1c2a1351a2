//! Contributor attribution: from per-row influence to each contributor's share of the datanet.
//!
//! The rule: a contributor's `positive_influence` is the sum over their rows of `max(0, influence)`,
//! and their `share` is that divided by the datanet's total positive influence.
//!
//! - Only rows in `gold.training_set` have an influence: duplicates (only the canonical row of a
//!   duplicate group is in the set) and rejected rows earn nothing.
//! - Harmful rows (negative influence) earn nothing but do not cancel a contributor's helpful rows:
//!   payment is for measured help, and penalties for bad data belong to the rewards policy (which
//!   sees `influence_sum`, rejection counts and duplicates alongside).
//! - **Splitting cannot raise a total.** The influence of a row is computed from the rows and the
//!   model alone — the owner's address is not an input to training or attribution — and the clip
//!   at zero is applied per row, before any grouping. Every term of the sum therefore belongs to one
//!   row and is the same whatever address owns it, so the positive influence of a set of rows is
//!   the same however they are spread over addresses: `Σ_k P(rows of address k) = P(all rows)`.
//!   (Clipping per contributor instead — `max(0, Σ influence)` — would be gameable: a contributor
//!   could move their harmful rows to a throw-away address and raise their total.) The test
//!   `aggregate::splitting_cannot_raise_a_total` checks this on real influences.

use std::collections::BTreeMap;

use serde::Serialize;

/// One row's influence and owner.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowInfluence {
    /// `contribution_id`.
    pub contribution_id: String,
    /// Owner.
    pub contributor: String,
    /// Influence on validation loss (positive = helps).
    pub influence: f64,
}

/// One contributor's attribution.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContributorShare {
    /// Address.
    pub contributor: String,
    /// Rows submitted (bronze), when known.
    pub rows_submitted: i64,
    /// Rows in the training set.
    pub rows_accepted: i64,
    /// Rows judged duplicates of another row.
    pub duplicates: i64,
    /// Sum of the influence of their rows.
    pub influence_sum: f64,
    /// Sum of `max(0, influence)` over their rows.
    pub positive_influence: f64,
    /// `positive_influence / Σ positive_influence` (0 when nothing helped).
    pub share: f64,
}

/// Aggregate `rows` per contributor. `counts` gives (submitted, duplicates) per contributor from
/// bronze/silver; contributors that appear there but have no accepted rows get a zero share row.
pub fn aggregate(rows: &[RowInfluence], counts: &BTreeMap<String, (i64, i64)>) -> Vec<ContributorShare> {
    let mut by: BTreeMap<String, ContributorShare> = BTreeMap::new();
    let blank = |c: &str| ContributorShare {
        contributor: c.to_string(),
        rows_submitted: 0,
        rows_accepted: 0,
        duplicates: 0,
        influence_sum: 0.0,
        positive_influence: 0.0,
        share: 0.0,
    };
    for r in rows {
        let e = by.entry(r.contributor.clone()).or_insert_with(|| blank(&r.contributor));
        e.rows_accepted += 1;
        if r.influence.is_finite() {
            e.influence_sum += r.influence;
            e.positive_influence += r.influence.max(0.0);
        }
    }
    for (c, (submitted, dups)) in counts {
        let e = by.entry(c.clone()).or_insert_with(|| blank(c));
        e.rows_submitted = *submitted;
        e.duplicates = *dups;
    }
    let total: f64 = by.values().map(|e| e.positive_influence).sum();
    let mut out: Vec<ContributorShare> = by.into_values().collect();
    for e in &mut out {
        e.rows_submitted = e.rows_submitted.max(e.rows_accepted);
        e.share = if total > 0.0 { e.positive_influence / total } else { 0.0 };
    }
    out.sort_by(|a, b| b.share.total_cmp(&a.share).then_with(|| a.contributor.cmp(&b.contributor)));
    out
}
