//! `connected_components(a, b)`: an aggregate that resolves an edge list into clusters.
//!
//! Near-duplicate pairs are not transitive on their own (A ~ B and B ~ C with A ≁ C), but every
//! cluster must have exactly one canonical row. The aggregate collects the edges of its group and
//! returns, for every node, the root of its connected component, the root being the component's
//! smallest node. Models number rows by (ingested_at, contribution_id) within a datanet and pass
//! those ordinals as nodes, so the root is the earliest row of the cluster.
//!
//! ```sql
//! SELECT datanet, unnest(cc) AS m
//! FROM (SELECT datanet, connected_components(a, b) AS cc FROM near_pairs GROUP BY datanet)
//! -- m['node'], m['root']
//! ```
//!
//! Union–find with path halving; the union always hangs the larger root under the smaller, so a
//! root is always the minimum of its component. Memory is 16 bytes per edge plus the node map.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, StructArray};
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Int64Type};
use datafusion::common::utils::SingleRowListArrayBuilder;
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};

use super::udf::coerce_int;

/// The struct fields of one output element: `node`, `root`.
pub fn member_fields() -> Fields {
    Fields::from(vec![Field::new("node", DataType::Int64, false), Field::new("root", DataType::Int64, false)])
}

/// The return type: `List<Struct<node: Int64, root: Int64>>`.
pub fn return_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Struct(member_fields()), true)))
}

/// Union–find over arbitrary `i64` nodes; roots are component minima.
#[derive(Debug, Default)]
pub struct Components {
    index: HashMap<i64, usize>,
    nodes: Vec<i64>,
    parent: Vec<usize>,
}

impl Components {
    fn id(&mut self, node: i64) -> usize {
        *self.index.entry(node).or_insert_with(|| {
            self.nodes.push(node);
            self.parent.push(self.nodes.len() - 1);
            self.nodes.len() - 1
        })
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    /// Add a node with no edge (it forms its own component unless joined later).
    pub fn add_node(&mut self, a: i64) {
        self.id(a);
    }

    /// Join the components of `a` and `b`.
    pub fn add_edge(&mut self, a: i64, b: i64) {
        let (x, y) = (self.id(a), self.id(b));
        let (rx, ry) = (self.find(x), self.find(y));
        if rx != ry {
            // Keep the smaller node as root so that the root is the component minimum.
            if self.nodes[rx] < self.nodes[ry] {
                self.parent[ry] = rx;
            } else {
                self.parent[rx] = ry;
            }
        }
    }

    /// Every node with its component root, sorted by node.
    pub fn roots(&mut self) -> Vec<(i64, i64)> {
        let mut out: Vec<(i64, i64)> = (0..self.nodes.len())
            .map(|i| {
                let r = self.find(i);
                (self.nodes[i], self.nodes[r])
            })
            .collect();
        out.sort_unstable();
        out
    }
}

/// The `connected_components(a, b)` aggregate function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ConnectedComponents {
    signature: Signature,
}

impl ConnectedComponents {
    /// The function.
    pub fn new() -> Self {
        ConnectedComponents { signature: Signature::user_defined(Volatility::Immutable) }
    }
}

impl Default for ConnectedComponents {
    fn default() -> Self {
        Self::new()
    }
}

impl AggregateUDFImpl for ConnectedComponents {
    fn name(&self) -> &str {
        "connected_components"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        match args {
            [a, b] => Ok(vec![coerce_int("connected_components", a)?, coerce_int("connected_components", b)?]),
            _ => plan_err!("connected_components(a, b) takes 2 integer arguments, got {}", args.len()),
        }
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(return_type())
    }
    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(EdgeAccumulator::default()))
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let list = || DataType::List(Arc::new(Field::new("item", DataType::Int64, true)));
        Ok(vec![
            Arc::new(Field::new(format_state_name(args.name, "a"), list(), true)),
            Arc::new(Field::new(format_state_name(args.name, "b"), list(), true)),
        ])
    }
}

/// Collects edges; `b` is NULL for a lone node.
#[derive(Debug, Default)]
struct EdgeAccumulator {
    a: Vec<i64>,
    b: Vec<Option<i64>>,
}

impl EdgeAccumulator {
    fn push_arrays(&mut self, a: &Int64Array, b: &Int64Array) {
        for i in 0..a.len() {
            if a.is_null(i) {
                continue;
            }
            self.a.push(a.value(i));
            self.b.push((!b.is_null(i)).then(|| b.value(i)));
        }
    }
}

fn int64s<'a>(what: &str, a: &'a ArrayRef) -> Result<&'a Int64Array> {
    a.as_primitive_opt::<Int64Type>()
        .map_or_else(|| exec_err!("connected_components: {what} must be Int64, got {}", a.data_type()), Ok)
}

impl Accumulator for EdgeAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let [a, b] = values else { return exec_err!("connected_components: expected 2 arguments") };
        self.push_arrays(int64s("a", a)?, int64s("b", b)?);
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let [a, b] = states else { return exec_err!("connected_components: expected 2 state columns") };
        let (a, b) = (a.as_list::<i32>(), b.as_list::<i32>());
        for row in 0..a.len() {
            if a.is_null(row) || b.is_null(row) {
                continue;
            }
            let (va, vb) = (a.value(row), b.value(row));
            self.push_arrays(int64s("state a", &va)?, int64s("state b", &vb)?);
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let a: ArrayRef = Arc::new(Int64Array::from(std::mem::take(&mut self.a)));
        let b: ArrayRef = Arc::new(Int64Array::from(std::mem::take(&mut self.b)));
        Ok(vec![SingleRowListArrayBuilder::new(a).build_list_scalar(), SingleRowListArrayBuilder::new(b).build_list_scalar()])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let mut cc = Components::default();
        for (&a, b) in self.a.iter().zip(&self.b) {
            match b {
                Some(b) => cc.add_edge(a, *b),
                None => cc.add_node(a),
            }
        }
        let roots = cc.roots();
        let nodes: ArrayRef = Arc::new(Int64Array::from_iter_values(roots.iter().map(|r| r.0)));
        let rts: ArrayRef = Arc::new(Int64Array::from_iter_values(roots.iter().map(|r| r.1)));
        let members = StructArray::try_new(member_fields(), vec![nodes, rts], None)?;
        Ok(SingleRowListArrayBuilder::new(Arc::new(members)).build_list_scalar())
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.a.capacity() * 8 + self.b.capacity() * 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_component_minima() {
        let mut cc = Components::default();
        // 5-3, 3-9, 9-1 form one chain; 7-8 another; 4 alone.
        for (a, b) in [(5, 3), (3, 9), (9, 1), (8, 7)] {
            cc.add_edge(a, b);
        }
        cc.add_node(4);
        assert_eq!(cc.roots(), vec![(1, 1), (3, 1), (4, 4), (5, 1), (7, 7), (8, 7), (9, 1)]);
    }
}
