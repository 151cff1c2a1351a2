//! Serving throughput, following S-LoRA's method (Sheng et al., 2023, §7): requests arrive as a
//! Poisson process; each picks one of N rank-8 adapters with power-law popularity (exponent alpha,
//! 0.1 ≈ uniform, 1 = skewed); input and output lengths are uniform in a range; the engine runs
//! until every request finishes. Throughput = requests (and tokens) per second from the first
//! arrival to the last completion. Every ratio below is between runs of this one process: the
//! whole list of configurations runs `--rounds` times (3), interleaved, and each figure is the
//! configuration's median round (one run's throughput on this 2-core machine wanders by ±15%).
//!
//! 1. heterogeneous batching vs batching only same-adapter requests, N = 128 (target ≥ 8×);
//! 2. throughput with N = 1024 adapters vs N = 1 (target ≥ 0.9);
//! 3. one adapter vs the base model alone (target ≥ 0.85);
//!
//! plus p50/p90 time to first token. The base model has the demo's shape (`base-model init`'s
//! `tiny` preset) with random weights, or is read from `--warehouse DIR` (`models/tributary-base`).
//! Adapters are random rank-8 PEFT files over the attention projections (the default targets of
//! `tributary train`), loaded into host memory before timing (as S-LoRA keeps all adapters in main
//! memory); the compute-memory tier (64 slots) is exercised during the runs.
//!
//! ```sh
//! cargo bench -p tributary-serving --bench serving                  # CPU
//! cargo bench -p tributary-serving --bench serving --features cuda -- --device cuda
//! cargo bench -p tributary-serving --bench serving -- --requests 128 --quick
//! cargo bench -p tributary-serving --bench serving -- --only 1,1024 --alpha 0.1   # a subset of the runs
//! cargo bench -p tributary-serving --bench serving -- --rounds 1                   # one round (a third of the time)
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc::unbounded_channel;
use tributary_jobs::compute::Compute;
use tributary_jobs::model::{BaseModel, LoraTarget};
use tributary_pipeline::{Config, Tables, Warehouse};
use tributary_serving::adapter_cache::{AdapterKey, BaseIdentity, Loader, Registry};
use tributary_serving::infer::{Batching, Engine, EngineOptions, EngineParts};
use tributary_serving::queue::Event;
use tributary_serving::sampling::SamplingParams;
use tributary_serving::validation::{ApiKind, ValidatedRequest};
use tributary_serving::{Metrics, synthetic};

/// The allocator the `tributary` binary uses (src/main.rs), so the engine is measured as shipped
/// (with the system allocator, `malloc`/`free` were ~8% of a run's profile).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

struct Args {
    device: String,
    requests: usize,
    rate: f64,
    max_batch: usize,
    warehouse: Option<String>,
    quick: bool,
    only: Option<Vec<usize>>,
    alphas: Vec<f64>,
    rounds: usize,
}

fn args() -> Args {
    let mut a = Args { device: "cpu".into(), requests: 256, rate: 400.0, max_batch: 32, warehouse: None, quick: false, only: None, alphas: vec![0.1, 1.0], rounds: 3 };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let next = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--device" => a.device = next,
            "--requests" => a.requests = next.parse().unwrap_or(a.requests),
            "--rate" => a.rate = next.parse().unwrap_or(a.rate),
            "--max-batch" => a.max_batch = next.parse().unwrap_or(a.max_batch),
            "--warehouse" => a.warehouse = Some(next),
            "--only" => a.only = Some(next.split(',').filter_map(|n| n.trim().parse().ok()).collect()),
            "--alpha" => a.alphas = next.split(',').filter_map(|n| n.trim().parse().ok()).collect(),
            "--rounds" => a.rounds = next.parse::<usize>().unwrap_or(a.rounds).max(1),
            "--quick" => {
                a.quick = true;
                i += 1;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

/// One workload request: adapter index (None = base), prompt tokens, output length.
struct Spec {
    adapter: Option<usize>,
    prompt: Vec<u32>,
    output: usize,
    at: Duration,
}

/// Power-law popularity: P(i) ∝ (i + 1)^-alpha over `n` adapters (S-LoRA's adapter distribution).
fn pick(rng: &mut StdRng, cdf: &[f64]) -> usize {
    let u: f64 = rng.random::<f64>() * cdf[cdf.len() - 1];
    cdf.partition_point(|c| *c < u).min(cdf.len() - 1)
}

fn workload(n: Option<usize>, alpha: f64, requests: usize, rate: f64, vocab: u32, eot: u32, seed: u64) -> Vec<Spec> {
    let mut rng = StdRng::seed_from_u64(seed);
    let cdf: Vec<f64> = match n {
        Some(n) => (0..n)
            .scan(0.0, |acc, i| {
                *acc += ((i + 1) as f64).powf(-alpha);
                Some(*acc)
            })
            .collect(),
        None => vec![],
    };
    let mut t = 0.0;
    (0..requests)
        .map(|_| {
            // Exponential inter-arrival times: a Poisson process of `rate` requests per second.
            t += -(1.0 - rng.random::<f64>()).ln() / rate;
            let len = rng.random_range(8..=32);
            let prompt = std::iter::once(eot).chain((1..len).map(|_| rng.random_range(0..vocab)).filter(|x| *x != eot)).collect();
            Spec {
                adapter: n.map(|_| pick(&mut rng, &cdf)),
                prompt,
                output: rng.random_range(16..=48),
                at: Duration::from_secs_f64(t),
            }
        })
        .collect()
}

struct RunResult {
    req_per_s: f64,
    tok_per_s: f64,
    ttft_p50: f64,
    ttft_p90: f64,
    mean_batch: f64,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

async fn run(base: &BaseModel, loader: &Loader, specs: &[Spec], keys: &[AdapterKey], batching: Batching, max_batch: usize) -> RunResult {
    let metrics = Arc::new(Metrics::default());
    let (usage, mut usage_rx) = unbounded_channel();
    let drain = tokio::spawn(async move {
        let mut n = 0;
        while usage_rx.recv().await.is_some() {
            n += 1;
        }
        n
    });
    let engine = Engine::start(
        EngineParts {
            model: Arc::new(base.model.clone()),
            tokenizer: base.tokenizer.clone(),
            base_name: base.name.clone(),
            loader: loader.clone(),
            metrics: metrics.clone(),
            usage,
            runtime: tokio::runtime::Handle::current(),
        },
        EngineOptions { max_batch, max_queue: specs.len() + 1, max_active_adapters: 64, batching, ..EngineOptions::default() },
    )
    .expect("engine starts");
    let handle = engine.handle();
    let start = Instant::now();
    let mut waiting = Vec::with_capacity(specs.len());
    for (i, s) in specs.iter().enumerate() {
        let wait = s.at.saturating_sub(start.elapsed());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let request = ValidatedRequest {
            id: format!("bench-{i}"),
            model: String::new(),
            adapter: s.adapter.map(|a| keys[a].clone()),
            prompt_tokens: s.prompt.clone(),
            params: SamplingParams { max_tokens: s.output, ignore_eos: true, ..SamplingParams::default() },
            stream: false,
            return_token_ids: false,
            api: ApiKind::Completion,
        };
        let mut rx = handle.submit(request).expect("queue has room");
        waiting.push(tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Some(Event::Done(f)) => return (f.ttft_secs, f.completion_tokens, Instant::now()),
                    Some(Event::Token(_)) => continue,
                    Some(Event::Failed(e)) => panic!("request failed: {e}"),
                    None => panic!("engine dropped a request"),
                }
            }
        }));
    }
    let mut ttft = Vec::with_capacity(specs.len());
    let (mut tokens, mut last) = (0usize, start);
    for w in waiting {
        let (t, n, done) = w.await.expect("request task");
        ttft.push(t);
        tokens += n;
        last = last.max(done);
    }
    let report = engine.shutdown().await.expect("engine stops");
    assert_eq!(drain.await.expect("drain"), specs.len(), "every request metered");
    assert_eq!(report.finished, specs.len());
    if std::env::var("BENCH_VERBOSE").is_ok() {
        eprintln!("  engine: {} decode steps, {} prefill passes", report.decode_steps, report.prefills);
    }
    ttft.sort_by(f64::total_cmp);
    let secs = last.duration_since(start).as_secs_f64();
    RunResult {
        req_per_s: specs.len() as f64 / secs,
        tok_per_s: tokens as f64 / secs,
        ttft_p50: quantile(&ttft, 0.5),
        ttft_p90: quantile(&ttft, 0.9),
        mean_batch: metrics.batch_size.sum() / metrics.batch_size.count().max(1) as f64,
    }
}

fn line(label: &str, r: &RunResult, rounds: &[RunResult]) {
    let each: Vec<String> = rounds.iter().map(|x| format!("{:.0}", x.req_per_s)).collect();
    println!(
        "| {label:<44} | {:>8.1} | {:>9.0} | {:>9.1} | {:>9.1} | {:>6.1} | {} |",
        r.req_per_s,
        r.tok_per_s,
        r.ttft_p50 * 1e3,
        r.ttft_p90 * 1e3,
        r.mean_batch,
        each.join(" / ")
    );
}

/// One benchmark configuration.
struct RunConfig {
    label: String,
    /// Popularity exponent (None = the base model alone).
    alpha: Option<f64>,
    /// Adapters (None = the base model alone).
    n: Option<usize>,
    batching: Batching,
}

/// The round with the median throughput (its other figures come with it).
fn median_run(rounds: &[RunResult]) -> &RunResult {
    let mut order: Vec<&RunResult> = rounds.iter().collect();
    order.sort_by(|x, y| x.req_per_s.total_cmp(&y.req_per_s));
    order[order.len() / 2]
}

fn verdict(ratio: f64, target: f64) -> &'static str {
    if ratio >= target { "meets" } else { "MISSES" }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let compute: Compute = a.device.parse().expect("--device cpu | cuda | cuda:N");
    let device = compute.device().expect("device available in this build");
    let base = match &a.warehouse {
        Some(dir) => {
            let warehouse =
                format!("file://{}", std::fs::canonicalize(dir).expect("warehouse dir").join("warehouse").display());
            let c = Config { warehouse, ..Config::default() };
            let w = Warehouse::open(&c).expect("warehouse");
            BaseModel::load(&w, "tributary-base", &device).await.expect("models/tributary-base in --warehouse")
        }
        None => synthetic::tiny_base(&Warehouse::in_memory(), "bench-base", 1, 600, &device).await.expect("base model"),
    };
    let warehouse = Warehouse::in_memory();
    // The base model's files must be in the warehouse the adapters are read from: re-register it.
    let files = tributary_jobs::model::loader::model_files(&base.model, &base.tokenizer).expect("files");
    files.write_warehouse(&warehouse, &base.name, &[]).await.expect("write base");
    let n_max = if a.quick { 128 } else { 1024 };
    let t0 = Instant::now();
    let mut keys = Vec::with_capacity(n_max);
    for i in 0..n_max {
        let adapter = synthetic::random_adapter(&base.model, 8, 16.0, &LoraTarget::ATTENTION, 0.05, 1000 + i as u64);
        let version = "v1";
        let datanet = format!("a{i:04}");
        let record = synthetic::record(&base, &datanet, version, &adapter, 0, 0);
        synthetic::publish(&warehouse, &record, &adapter).await.expect("publish");
        keys.push(AdapterKey::new(datanet, version));
    }
    let registry = Registry::new(&base.name);
    registry.refresh(&warehouse).await.expect("scan adapters");
    let loader = Loader::new(
        warehouse.clone(),
        registry,
        BaseIdentity { name: base.name.clone(), sha256: base.sha256.clone() },
        Arc::new(base.model.clone()),
        2 * n_max,
        64,
        Arc::new(Metrics::default()),
    );
    for k in &keys {
        loader.load(k).await.expect("adapter loads");
    }
    let _ = Tables::new(warehouse);
    let (vocab, eot) = (base.model.config.vocab_size as u32, base.tokenizer.eot());
    eprintln!(
        "setup: {} adapters published and loaded into host memory in {:.1}s; device {compute}; {} requests per run at {} req/s; max batch {}",
        n_max,
        t0.elapsed().as_secs_f64(),
        a.requests,
        a.rate,
        a.max_batch
    );

    // Warm-up, not reported: the first run of a process pays for first-touch allocations and cold
    // caches, which would otherwise all land on whichever run goes first (the base model's).
    let warm = workload(Some(16.min(n_max)), 1.0, 128.min(a.requests), a.rate, vocab, eot, 3);
    run(&base, &loader, &warm, &keys, Batching::Heterogeneous, a.max_batch).await;

    // Every configuration, in the order of a round. Rounds repeat the whole list, so slow and fast
    // spells of the machine fall on every configuration alike, and each figure is the median round.
    let r = a.requests;
    let ns: Vec<usize> =
        [1, 16, 128, 1024].into_iter().filter(|n| *n <= n_max && a.only.as_ref().is_none_or(|o| o.contains(n))).collect();
    let mut configs = vec![RunConfig { label: "base model alone".into(), alpha: None, n: None, batching: Batching::Heterogeneous }];
    for alpha in a.alphas.clone() {
        for &n in &ns {
            let c = |batching, kind: &str| RunConfig { label: format!("N={n} alpha={alpha} {kind}"), alpha: Some(alpha), n: Some(n), batching };
            configs.push(c(Batching::Heterogeneous, "heterogeneous"));
            if n == 128 {
                configs.push(c(Batching::SameAdapter, "same-adapter only"));
            }
        }
    }
    let workloads: Vec<Vec<Spec>> = configs
        .iter()
        .map(|c| match (c.n, c.alpha) {
            (Some(n), Some(alpha)) => workload(Some(n), alpha, r, a.rate, vocab, eot, 2),
            _ => workload(None, 0.0, r, a.rate, vocab, eot, 1),
        })
        .collect();
    let mut results: Vec<Vec<RunResult>> = configs.iter().map(|_| Vec::new()).collect();
    for round in 0..a.rounds {
        for (k, c) in configs.iter().enumerate() {
            let res = run(&base, &loader, &workloads[k], &keys, c.batching, a.max_batch).await;
            eprintln!("  round {}/{}: {:<44} {:8.1} req/s", round + 1, a.rounds, c.label, res.req_per_s);
            results[k].push(res);
        }
    }

    println!("\n{} requests per run at {} req/s, median of {} interleaved rounds (req/s of each round in brackets)\n", r, a.rate, a.rounds);
    println!("| run | req/s | tokens/s | TTFT p50 ms | TTFT p90 ms | batch | rounds |");
    println!("|---|---:|---:|---:|---:|---:|---|");
    let medians: Vec<&RunResult> = results.iter().map(|rs| median_run(rs)).collect();
    for ((c, m), rs) in configs.iter().zip(&medians).zip(&results) {
        line(&c.label, m, rs);
    }
    let find = |alpha: Option<f64>, n: Option<usize>, batching: Batching| {
        configs.iter().position(|c| c.alpha == alpha && c.n == n && c.batching == batching).map(|k| medians[k].req_per_s)
    };

    println!("\n| ratio | alpha | value | target | |");
    println!("|---|---:|---:|---:|---|");
    for alpha in a.alphas.clone() {
        let het = find(Some(alpha), Some(128), Batching::Heterogeneous);
        if let (Some(het), Some(same)) = (het, find(Some(alpha), Some(128), Batching::SameAdapter)) {
            let ratio = het / same;
            println!("| (1) heterogeneous / same-adapter-only, N=128 | {alpha} | {ratio:.2}× | ≥ 8× | {} |", verdict(ratio, 8.0));
        }
    }
    let n_top = *ns.last().unwrap_or(&1);
    for alpha in a.alphas.clone() {
        let at = |n: usize| find(Some(alpha), Some(n), Batching::Heterogeneous);
        if let (Some(hi), Some(one)) = (at(n_top), at(1)) {
            let ratio = hi / one;
            println!("| (2) throughput N={n_top} / N=1 | {alpha} | {ratio:.3} | ≥ 0.9 | {} |", verdict(ratio, 0.9));
        }
    }
    if let (Some(base_only), Some(one)) = (find(None, None, Batching::Heterogeneous), a.alphas.first().and_then(|al| find(Some(*al), Some(1), Batching::Heterogeneous))) {
        let ratio = one / base_only;
        println!("| (3) one adapter / base model alone | - | {ratio:.3} | ≥ 0.85 | {} |", verdict(ratio, 0.85));
    }
}
