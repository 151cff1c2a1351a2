//! Heterogeneous batching computes what each adapter merged into the base weights computes, one
//! request at a time; greedy decoding is deterministic and seeded sampling repeats.

use burn::tensor::Device;
use serde_json::json;
use tributary_jobs::model::{Adapter, LoraTarget};
use tributary_serving::adapter_cache::{AdapterKey, HostAdapter};
use tributary_serving::batch_lora::ActiveSet;
use tributary_serving::infer::{decode_pass, prefill_pass};
use tributary_serving::sampling::argmax;
use tributary_serving::synthetic;

use crate::common::{Fixture, assert_greedy, client, last_logits, merged, token_ids};

fn host(f: &Fixture, name: &str, adapter: &Adapter) -> HostAdapter {
    // The host tier keeps factors on the CPU device; the active set copies them to the model's.
    let on_cpu = Adapter {
        config: adapter.config.clone(),
        weights: adapter
            .weights
            .iter()
            .map(|(k, (a, b))| (*k, (a.clone().to_device(&Device::flex()), b.clone().to_device(&Device::flex()))))
            .collect(),
    };
    HostAdapter {
        key: AdapterKey::new(name, "v1"),
        record: synthetic::record(&f.base, name, "v1", adapter, 0, 0),
        adapter: on_cpu,
        credits: None,
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn rows_of(logits: burn::tensor::Tensor<3>) -> Vec<Vec<f32>> {
    let [n, _, v] = logits.dims();
    let flat = logits.try_into_vec_as::<f32>().expect("logits");
    (0..n).map(|i| flat[i * v..(i + 1) * v].to_vec()).collect()
}

const TOL: f32 = 2e-4;

#[tokio::test]
async fn heterogeneous_batch_logits_equal_merged_models() {
    let f = Fixture::new(|_| {}).await;
    let model = &f.base.model;
    let adapters = [
        synthetic::random_adapter(model, 8, 16.0, &LoraTarget::ATTENTION, 0.5, 11),
        synthetic::random_adapter(model, 4, 8.0, &LoraTarget::ALL, 0.5, 12),
        synthetic::random_adapter(model, 8, 8.0, &[LoraTarget::Q, LoraTarget::V], 0.5, 13),
    ];
    let mut active = ActiveSet::new(model, 4);
    for (i, a) in adapters.iter().enumerate() {
        active.install(i + 1, &host(&f, &format!("d{i}"), a));
    }
    let references: Vec<_> = std::iter::once(model.clone()).chain(adapters.iter().map(|a| merged(model, a))).collect();

    // Five rows of different lengths: base, each adapter, and the first adapter again.
    let texts = ["the capital of the north", "rivers", "what is the population of the eastern coast region", "notes", "hello"];
    let mut seqs: Vec<Vec<u32>> = texts.iter().map(|t| f.prompt(t)).collect();
    let mut slots = vec![0, 1, 2, 3, 1];
    let prompts: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    let (logits, mut kv) = prefill_pass(model, &active, &prompts, &slots, f.base.tokenizer.eot());
    let mut current = rows_of(logits);
    for (i, l) in current.iter().enumerate() {
        let d = max_diff(l, &last_logits(&references[slots[i]], &seqs[i]));
        assert!(d < TOL, "prefill row {i}: max |Δlogit| = {d}");
    }

    // Decode a few steps; a new row joins after the first, a row leaves after the second.
    for step in 0..4 {
        let tokens: Vec<u32> = current.iter().map(|l| argmax(l)).collect();
        for (s, t) in seqs.iter_mut().zip(&tokens) {
            s.push(*t);
        }
        let positions: Vec<usize> = seqs.iter().map(|s| s.len() - 1).collect();
        current = rows_of(decode_pass(model, &active, &mut kv, &tokens, &positions, &slots));
        for (i, l) in current.iter().enumerate() {
            let d = max_diff(l, &last_logits(&references[slots[i]], &seqs[i]));
            assert!(d < TOL, "step {step} row {i} (slot {}): max |Δlogit| = {d}", slots[i]);
        }
        if step == 0 {
            let joiner = f.prompt("a much longer prompt that joins the running batch after it started decoding");
            let (jl, jkv) = prefill_pass(model, &active, &[&joiner], &[2], f.base.tokenizer.eot());
            kv.append(jkv);
            seqs.push(joiner);
            slots.push(2);
            current.extend(rows_of(jl));
        }
        if step == 1 {
            let keep = [0, 2, 3, 4, 5];
            kv.retain(&keep, &model.device());
            seqs = keep.iter().map(|i| seqs[*i].clone()).collect();
            slots = keep.iter().map(|i| slots[*i]).collect();
            current = keep.iter().map(|i| current[*i].clone()).collect();
        }
    }
}

#[tokio::test]
async fn served_outputs_equal_merged_reference_and_decoding_is_deterministic() {
    let f = Fixture::new(|c| c.serving.max_batch = 6).await;
    let a = f.adapter("alpha", "v1", 8, &LoraTarget::ATTENTION, 21).await;
    let b = f.adapter("beta", "v1", 8, &LoraTarget::ALL, 22).await;
    let c = f.adapter("gamma", "v1", 4, &[LoraTarget::Q, LoraTarget::V, LoraTarget::Down], 23).await;
    let server = f.start().await;
    let http = client(&server);
    let model = &f.base.model;
    let eot = f.base.tokenizer.eot();
    let refs = [("", model.clone()), ("alpha", merged(model, &a)), ("beta/v1", merged(model, &b)), ("gamma", merged(model, &c))];
    let prompts = ["the capital of", "rivers of the east", "population", "what grows in the valley", "notes on"];

    let mut jobs = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        for (name, _) in &refs {
            let http = http.clone();
            let (name, p) = (name.to_string(), p.to_string());
            jobs.push(tokio::spawn(async move {
                let r = http.complete(&name, &p, json!({"max_tokens": 12, "temperature": 0, "return_token_ids": true})).await.expect("request");
                (i, name, r)
            }));
        }
    }
    let mut crowd = Vec::new();
    for j in jobs {
        let (i, name, r) = j.await.expect("task");
        assert_eq!(r.status, 200, "{name}: {}", r.body);
        let reference = &refs.iter().find(|(n, _)| *n == name).expect("known").1;
        let served = token_ids(&r.body);
        assert_greedy(reference, eot, &f.prompt(prompts[i]), &served, 12, &format!("{name} on {:?}", prompts[i]));
        assert_eq!(r.body["usage"]["completion_tokens"].as_u64(), Some(served.len() as u64));
        crowd.push((name, i, served));
    }

    // The same greedy request alone gives the same answer as in the crowd above.
    let alone = http
        .complete("beta/v1", prompts[1], json!({"max_tokens": 12, "temperature": 0, "return_token_ids": true}))
        .await
        .expect("request");
    assert_greedy(&refs[2].1, eot, &f.prompt(prompts[1]), &token_ids(&alone.body), 12, "beta/v1 alone");
    let in_crowd = crowd.iter().find(|(n, i, _)| n == "beta/v1" && *i == 1).map(|c| c.2.clone());
    assert_eq!(Some(token_ids(&alone.body)), in_crowd, "greedy decoding is deterministic, alone or batched");

    // Seeded sampling repeats, alone or batched with other traffic; other seeds differ.
    let sample = |seed: u64| {
        let http = http.clone();
        async move {
            let r = http
                .complete("alpha", "the capital of", json!({"max_tokens": 16, "temperature": 1.0, "top_p": 0.95, "seed": seed}))
                .await
                .expect("request");
            assert_eq!(r.status, 200);
            r.body["choices"][0]["text"].as_str().unwrap_or_default().to_string()
        }
    };
    let first = sample(7).await;
    let noise: Vec<_> = (0..4)
        .map(|i| {
            let http = http.clone();
            tokio::spawn(async move { http.complete("gamma", "rivers", json!({"max_tokens": 16, "seed": i})).await })
        })
        .collect();
    let again = sample(7).await;
    for n in noise {
        n.await.expect("task").expect("request");
    }
    assert_eq!(first, again, "the same seed gives the same text");
    let mut others = Vec::new();
    for seed in 8..12 {
        others.push(sample(seed).await);
    }
    assert!(others.iter().any(|o| *o != first), "different seeds give different samples");
    server.shutdown().await.expect("clean shutdown");
}
