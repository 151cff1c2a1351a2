//! Our standard trees against the real `@openzeppelin/merkle-tree` (npm), run by `ledger/js/oz-check.js`.

use alloy::primitives::{Address, B256, I256, U256};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tributary_ledger::leaves::{AttributionCodec, AttributionLeaf, PayoutCodec, PayoutLeaf};
use tributary_ledger::merkle::{
    DynCodec, LeafCodec, MultiProof, StandardDump, StandardMerkleTree, TreeOptions, verify, verify_multiproof,
};

use crate::common::{ledger_dir, node};

fn run_oz(ops: &[Value]) -> Vec<Value> {
    let out = node("oz-check.js", &[], serde_json::to_vec(&json!({ "ops": ops })).expect("json").as_slice());
    let v: Value = serde_json::from_slice(&out).expect("oz-check prints JSON");
    let results = v["results"].as_array().expect("results").clone();
    for (i, r) in results.iter().enumerate() {
        assert!(r.get("error").is_none(), "op {i} failed in @openzeppelin/merkle-tree: {}", r["error"]);
    }
    results
}

fn hashes(v: &Value) -> Vec<B256> {
    serde_json::from_value(v.clone()).expect("array of hashes")
}

fn random_payouts(rng: &mut StdRng, n: usize) -> Vec<PayoutLeaf> {
    (0..n)
        .map(|i| PayoutLeaf {
            epoch: rng.random_range(0..u64::MAX),
            index: U256::from(i),
            account: Address::from(rng.random::<[u8; 20]>()),
            amount: U256::from_be_bytes(rng.random::<[u8; 32]>()) >> rng.random_range(0..256usize),
        })
        .collect()
}

fn random_attribution(rng: &mut StdRng, n: usize) -> Vec<AttributionLeaf> {
    (0..n)
        .map(|_| {
            let magnitude = I256::from_raw(U256::from_be_bytes(rng.random::<[u8; 32]>()) >> rng.random_range(1..256usize));
            AttributionLeaf {
                epoch: rng.random_range(0..1_000_000),
                contribution_id: B256::from(rng.random::<[u8; 32]>()),
                contributor: Address::from(rng.random::<[u8; 20]>()),
                influence: if rng.random_bool(0.5) { -magnitude } else { magnitude },
            }
        })
        .collect()
}

/// One tree: the `of` op for OZ plus everything needed to compare its answer with ours.
struct Case {
    dump: StandardDump,
    proofs: Vec<Vec<B256>>,
    multi: Vec<(Vec<usize>, MultiProof<usize>)>,
    sort: bool,
}

fn case<C: LeafCodec>(codec: C, values: Vec<C::Value>, sort: bool, rng: &mut StdRng) -> Case
where
    C::Value: Clone,
{
    let tree = StandardMerkleTree::of(codec, values, TreeOptions { sort_leaves: sort }).expect("tree");
    let n = tree.len();
    let proofs = (0..n).map(|i| tree.proof(i).expect("proof")).collect();
    let mut multi = Vec::new();
    for k in [1usize, 3, n.min(17)] {
        let mut idx: Vec<usize> = (0..n).collect();
        for i in 0..k.min(n) {
            let j = rng.random_range(i..n);
            idx.swap(i, j);
        }
        idx.truncate(k.min(n));
        let mp = tree.multiproof(&idx).expect("multiproof");
        // Our multiproof verifies against our root.
        let leaves = mp.leaves.iter().map(|&i| tree.values()[i].clone()).collect();
        let mpv = MultiProof { leaves, proof: mp.proof.clone(), proof_flags: mp.proof_flags.clone() };
        assert!(verify_multiproof(tree.codec(), tree.root(), &mpv), "own multiproof of {idx:?} verifies");
        multi.push((idx, mp));
    }
    Case { dump: tree.dump(), proofs, multi, sort }
}

fn of_op(c: &Case) -> Value {
    let values: Vec<Value> = c.dump.values.iter().map(|v| v.value.clone()).collect();
    json!({
        "op": "of",
        "encoding": c.dump.leaf_encoding,
        "values": values,
        "sortLeaves": c.sort,
        "multi": c.multi.iter().map(|(idx, _)| idx.clone()).collect::<Vec<_>>(),
    })
}

#[test]
fn random_trees_equal_openzeppelin_and_proofs_cross_verify() {
    let mut rng = StdRng::seed_from_u64(0x7e1b);
    let mut sizes = vec![1usize, 2, 3, 4, 5, 7, 8, 9, 16, 17, 100, 257, 10_000];
    sizes.extend((0..4).map(|_| rng.random_range(1..10_000)));
    let mut cases = Vec::new();
    for (k, &n) in sizes.iter().enumerate() {
        let sort = k % 5 != 4; // a few unsorted trees too
        let c = match k % 3 {
            0 => case(PayoutCodec, random_payouts(&mut rng, n), sort, &mut rng),
            1 => case(AttributionCodec, random_attribution(&mut rng, n), sort, &mut rng),
            _ => {
                let codec = DynCodec::new(&["address", "uint256", "bool", "string", "bytes32[]"]).expect("types");
                let values = (0..n.min(2000))
                    .map(|i| {
                        let j = json!([
                            Address::from(rng.random::<[u8; 20]>()).to_string(),
                            rng.random::<u64>().to_string(),
                            rng.random_bool(0.5),
                            format!("row {i} ✓ \"quoted\""),
                            (0..rng.random_range(0..3)).map(|_| B256::from(rng.random::<[u8; 32]>()).to_string()).collect::<Vec<_>>(),
                        ]);
                        codec.leaf(j, i).expect("valid leaf")
                    })
                    .collect();
                case(codec, values, sort, &mut rng)
            }
        };
        cases.push(c);
    }

    // Ask OpenZeppelin to build every tree, load every one of our dumps, and verify our proofs.
    let mut ops: Vec<Value> = cases.iter().map(of_op).collect();
    ops.extend(cases.iter().map(|c| json!({ "op": "load", "dump": c.dump })));
    ops.extend(cases.iter().map(|c| {
        let items: Vec<Value> = c
            .dump
            .values
            .iter()
            .zip(&c.proofs)
            .map(|(v, p)| json!({ "value": v.value, "proof": p }))
            .collect();
        json!({ "op": "verify", "root": c.dump.tree[0], "encoding": c.dump.leaf_encoding, "items": items })
    }));
    let results = run_oz(&ops);
    let n = cases.len();
    for (i, c) in cases.iter().enumerate() {
        let size = c.dump.values.len();
        let built = &results[i];
        assert_eq!(built["root"], json!(c.dump.tree[0]), "tree {i} ({size} leaves): root");
        let their_dump: StandardDump = serde_json::from_value(built["dump"].clone()).expect("OZ dump parses as ours");
        assert_eq!(their_dump, c.dump, "tree {i}: the dump is identical");
        // Their proofs equal ours, and verify in our library.
        let theirs: Vec<Vec<B256>> = built["proofs"].as_array().expect("proofs").iter().map(hashes).collect();
        assert_eq!(theirs, c.proofs, "tree {i}: proofs");
        let codec = DynCodec::new(&c.dump.leaf_encoding).expect("encoding");
        for (j, (v, p)) in c.dump.values.iter().zip(&theirs).enumerate().take(200) {
            let leaf = codec.leaf(v.value.clone(), j).expect("value");
            assert!(verify(&codec, c.dump.tree[0], &leaf, p), "tree {i}: OZ proof {j} verifies here");
        }
        // Multiproofs: same leaves order, proof and flags.
        for (k, (_, ours)) in c.multi.iter().enumerate() {
            let m = &built["multi"][k];
            let their_leaves: Vec<Value> = m["leaves"].as_array().expect("leaves").clone();
            let our_leaves: Vec<Value> = ours.leaves.iter().map(|&x| c.dump.values[x].value.clone()).collect();
            assert_eq!(their_leaves, our_leaves, "tree {i} multiproof {k}: leaves order");
            assert_eq!(hashes(&m["proof"]), ours.proof, "tree {i} multiproof {k}: proof");
            assert_eq!(m["proofFlags"], json!(ours.proof_flags), "tree {i} multiproof {k}: flags");
        }
        // OZ loads and validates our dump, and gets the same proofs from it.
        let loaded = &results[n + i];
        assert_eq!(loaded["root"], json!(c.dump.tree[0]), "tree {i}: OZ loads our dump");
        assert_eq!(loaded["proofs"].as_array().expect("proofs").iter().map(hashes).collect::<Vec<_>>(), c.proofs);
        // OZ verifies each of our proofs.
        let ok = results[2 * n + i]["ok"].as_array().expect("ok");
        assert_eq!(ok.len(), size);
        assert!(ok.iter().all(|b| b == &json!(true)), "tree {i}: every proof of ours verifies in OZ");
    }
}

#[test]
fn tampered_dumps_are_refused() {
    let mut rng = StdRng::seed_from_u64(9);
    let tree = StandardMerkleTree::of(PayoutCodec, random_payouts(&mut rng, 10), TreeOptions::default()).expect("tree");
    let good = tree.dump();
    assert!(StandardMerkleTree::load(PayoutCodec, &good).is_ok());
    let mut bad_value = good.clone();
    bad_value.values[3].value[3] = json!("1");
    assert!(StandardMerkleTree::load(PayoutCodec, &bad_value).is_err(), "a changed amount no longer hashes to its leaf");
    let mut bad_node = good.clone();
    bad_node.tree[1] = B256::repeat_byte(7);
    assert!(StandardMerkleTree::load(PayoutCodec, &bad_node).is_err(), "a changed node breaks the tree");
    let mut bad_encoding = good;
    bad_encoding.leaf_encoding[0] = "uint128".into();
    assert!(StandardMerkleTree::load(PayoutCodec, &bad_encoding).is_err());
}

#[test]
fn published_dump_vectors_reproduce() {
    let dir = ledger_dir().join("tests/it/vectors");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("vectors dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 3, "the three standard-v1 vectors of @openzeppelin/merkle-tree");
    let mut ops = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read vector");
        let original: Value = serde_json::from_str(&text).expect("json");
        let dump = StandardDump::from_json(&text).expect("a standard-v1 dump");
        let codec = DynCodec::new(&dump.leaf_encoding).expect("encoding");
        let tree = StandardMerkleTree::load(codec.clone(), &dump).expect("loads and validates");
        assert_eq!(serde_json::to_value(tree.dump()).expect("json"), original, "{}: re-dump is identical", file.display());
        // Rebuilding from the values alone reproduces the tree (sorted or not, as the file says).
        let sort = file.to_string_lossy().contains(".sorted.");
        let values = dump.values.iter().enumerate().map(|(i, v)| codec.leaf(v.value.clone(), i)).collect::<Result<Vec<_>, _>>();
        let rebuilt = StandardMerkleTree::of(codec, values.expect("values"), TreeOptions { sort_leaves: sort }).expect("tree");
        assert_eq!(rebuilt.dump(), dump, "{}: rebuilt from its values", file.display());
        ops.push(json!({ "op": "load", "dump": original }));
    }
    // And the package itself agrees on the roots.
    let results = run_oz(&ops);
    for (file, r) in files.iter().zip(results) {
        let dump = StandardDump::from_json(&std::fs::read_to_string(file).expect("read")).expect("dump");
        assert_eq!(r["root"], json!(dump.tree[0]), "{}", file.display());
    }
}
