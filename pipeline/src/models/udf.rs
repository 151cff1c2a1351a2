//! The Rust functions SQL models call, and their registration in a DataFusion session.
//!
//! | function | returns | defined in |
//! |---|---|---|
//! | `minhash(text [, num_perm])` | `Binary` MinHash signature of the word 5-gram shingles | [`super::minhash`] |
//! | `minhash_jaccard(sig_a, sig_b)` | `Float64` estimated Jaccard similarity | [`super::minhash`] |
//! | `lsh_buckets(sig, bands, rows)` | `List<UInt64>` one bucket per LSH band | [`super::minhash`] |
//! | `lsh_clusters(ord, sig, bands, rows, threshold)` (aggregate) | `List<Struct<node, root>>`: LSH candidates confirmed at `threshold`, connected components; root = smallest `ord` | [`super::lsh`] |
//! | `connected_components(a, b)` (aggregate) | `List<Struct<node, root>>`, root = smallest node | [`super::components`] |
//! | `text_stats(text)` | `Struct` of quality features (words, symbol ratio, …) | [`super::quality`] |
//!
//! Every function is deterministic: the same input gives the same output on every machine and
//! every run, which incremental builds and recorded lineage depend on.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{AggregateUDF, ColumnarValue, ScalarUDF};
use datafusion::prelude::SessionContext;

use super::{components, lsh, minhash, quality};

/// Bumped whenever a function's output changes for the same input, so that models using it are
/// rebuilt (it is part of every model's SQL hash).
pub const UDF_VERSION: u32 = 1;

/// Register every Tributary function in `ctx`.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::new_from_impl(minhash::MinHashUdf::new()));
    ctx.register_udf(ScalarUDF::new_from_impl(minhash::JaccardUdf::new()));
    ctx.register_udf(ScalarUDF::new_from_impl(minhash::LshBucketsUdf::new()));
    ctx.register_udf(ScalarUDF::new_from_impl(quality::TextStatsUdf::new()));
    ctx.register_udaf(AggregateUDF::new_from_impl(components::ConnectedComponents::new()));
    ctx.register_udaf(AggregateUDF::new_from_impl(lsh::LshClusters::new()));
}

/// Whether `t` is one of Arrow's string types.
pub(crate) fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// Coerce a text argument: strings stay as they are (no copy), NULL and dictionaries become Utf8.
pub(crate) fn coerce_text(fname: &str, t: &DataType) -> datafusion::common::Result<DataType> {
    match t {
        t if is_string(t) => Ok(t.clone()),
        DataType::Null => Ok(DataType::Utf8),
        DataType::Dictionary(_, v) if is_string(v) => Ok(DataType::Utf8),
        other => plan_err!("{fname}: expected a text argument, got {other}"),
    }
}

/// Coerce an integer argument to Int64.
pub(crate) fn coerce_int(fname: &str, t: &DataType) -> datafusion::common::Result<DataType> {
    if t.is_integer() || *t == DataType::Null {
        Ok(DataType::Int64)
    } else {
        plan_err!("{fname}: expected an integer argument, got {t}")
    }
}

/// Apply `f` to every value of a string array of any of Arrow's string types.
pub(crate) fn for_each_str(array: &ArrayRef, mut f: impl FnMut(Option<&str>)) -> datafusion::common::Result<()> {
    match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().iter().for_each(&mut f),
        DataType::LargeUtf8 => array.as_string::<i64>().iter().for_each(&mut f),
        DataType::Utf8View => array.as_string_view().iter().for_each(&mut f),
        other => return exec_err!("expected a string array, got {other}"),
    }
    Ok(())
}

/// The value of a constant integer argument (e.g. `num_perm`), which must be a literal.
pub(crate) fn const_int(fname: &str, arg: &ColumnarValue, what: &str) -> datafusion::common::Result<i64> {
    match arg {
        ColumnarValue::Scalar(ScalarValue::Int64(Some(v))) => Ok(*v),
        ColumnarValue::Scalar(s) => match s.cast_to(&DataType::Int64)? {
            ScalarValue::Int64(Some(v)) => Ok(v),
            _ => exec_err!("{fname}: {what} must not be NULL"),
        },
        ColumnarValue::Array(_) => exec_err!("{fname}: {what} must be a constant, not a column"),
    }
}

/// Turn a columnar argument into an array of `rows` rows.
pub(crate) fn to_array(arg: &ColumnarValue, rows: usize) -> datafusion::common::Result<ArrayRef> {
    arg.to_array(rows)
}

/// Error for an argument count the signature should have prevented.
pub(crate) fn arity(fname: &str, got: usize) -> DataFusionError {
    DataFusionError::Plan(format!("{fname}: wrong number of arguments ({got})"))
}

/// Shared `Arc` helper: wrap an array.
pub(crate) fn arc<A: Array + 'static>(a: A) -> ArrayRef {
    Arc::new(a)
}
