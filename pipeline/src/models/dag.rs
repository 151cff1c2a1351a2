//! The dependency graph of a project's models, from their `ref()`s.
//!
//! [`Dag::build`] orders models topologically (Kahn's algorithm, ties broken by name so the order
//! is stable) and refuses a cycle, naming every model on it.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Error, Result};
use crate::tables::TableId;

use super::project::Project;

/// Models in build order, with their edges.
#[derive(Debug, Clone)]
pub struct Dag {
    /// Topological order: every model after the models it refs.
    pub order: Vec<TableId>,
    /// Model → models it refs.
    pub deps: BTreeMap<TableId, BTreeSet<TableId>>,
    /// Model → models that ref it.
    pub dependents: BTreeMap<TableId, BTreeSet<TableId>>,
}

impl Dag {
    /// Order `project`'s models, or fail with [`Error::Cycle`].
    pub fn build(project: &Project) -> Result<Dag> {
        let mut deps: BTreeMap<TableId, BTreeSet<TableId>> = BTreeMap::new();
        let mut dependents: BTreeMap<TableId, BTreeSet<TableId>> = BTreeMap::new();
        for (id, m) in &project.models {
            deps.entry(id.clone()).or_default();
            dependents.entry(id.clone()).or_default();
            for d in m.deps() {
                deps.entry(id.clone()).or_default().insert(d.clone());
                dependents.entry(d.clone()).or_default().insert(id.clone());
            }
        }
        let mut remaining: BTreeMap<&TableId, usize> = deps.iter().map(|(k, v)| (k, v.len())).collect();
        let mut ready: BTreeSet<&TableId> = remaining.iter().filter(|(_, n)| **n == 0).map(|(k, _)| *k).collect();
        let mut order = Vec::with_capacity(deps.len());
        while let Some(next) = ready.pop_first() {
            remaining.remove(next);
            order.push(next.clone());
            for d in dependents.get(next).into_iter().flatten() {
                if let Some(n) = remaining.get_mut(d) {
                    *n -= 1;
                    if *n == 0 {
                        ready.insert(d);
                    }
                }
            }
        }
        if !remaining.is_empty() {
            let left: BTreeSet<TableId> = remaining.keys().map(|k| (*k).clone()).collect();
            return Err(Error::Cycle { cycle: find_cycle(&deps, &left) });
        }
        Ok(Dag { order, deps, dependents })
    }

    /// `selected` and everything downstream of it, in build order.
    pub fn with_downstream(&self, selected: &BTreeSet<TableId>) -> Vec<TableId> {
        let mut keep = selected.clone();
        for id in &self.order {
            if self.deps.get(id).is_some_and(|d| d.iter().any(|x| keep.contains(x))) {
                keep.insert(id.clone());
            }
        }
        self.order.iter().filter(|id| keep.contains(*id)).cloned().collect()
    }
}

/// A cycle among `left` (nodes Kahn could not order), as names with the first repeated at the end.
fn find_cycle(deps: &BTreeMap<TableId, BTreeSet<TableId>>, left: &BTreeSet<TableId>) -> Vec<String> {
    // Every node left has a dependency that is also left, so walking dependencies from any of them
    // must revisit a node; the walk from that node back to itself is a cycle.
    let Some(start) = left.first() else { return vec![] };
    let mut path: Vec<TableId> = vec![start.clone()];
    loop {
        let cur = path.last().cloned().unwrap_or_else(|| start.clone());
        let Some(next) = deps.get(&cur).and_then(|d| d.iter().find(|x| left.contains(*x))) else {
            return path.iter().map(ToString::to_string).collect();
        };
        if let Some(pos) = path.iter().position(|p| p == next) {
            let mut cycle: Vec<TableId> = path[pos..].to_vec();
            // Start at the smallest name so the message is stable; show data flow order
            // (a dependency before the model that refs it).
            cycle.reverse();
            let min = cycle.iter().enumerate().min_by_key(|(_, id)| (*id).clone()).map(|(i, _)| i).unwrap_or(0);
            cycle.rotate_left(min);
            let mut names: Vec<String> = cycle.iter().map(ToString::to_string).collect();
            names.push(names[0].clone());
            return names;
        }
        path.push(next.clone());
    }
}
