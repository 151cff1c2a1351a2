//! `tributary serve`: the OpenAI-compatible serving tier over every published adapter.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tributary_pipeline::config::DatanetKind;
use tributary_serving::{ServingBuilder, shutdown_signal};

use super::{App, Format};

/// Arguments of `tributary serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Listen on this address instead of `serving.bind` (e.g. 0.0.0.0:8080).
    #[arg(long)]
    pub bind: Option<String>,
    /// Serve this base model (under models/) instead of `serving.base_model`.
    #[arg(long)]
    pub base_model: Option<String>,
    /// Compute device instead of `serving.device`: cpu, cuda or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
}

pub async fn run(app: &App, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = (*app.config).clone();
    if let Some(b) = args.bind {
        config.serving.bind = b;
    }
    if let Some(m) = args.base_model {
        config.serving.base_model = m;
    }
    if let Some(d) = args.device {
        config.serving.device = d;
    }
    let token_env = config.serving.admin_token_env.clone();
    let server = ServingBuilder::new(Arc::new(config), app.tables()?).start().await.context("starting the server")?;
    eprintln!(
        "serving on {} ({} adapter versions); admin API {}; Ctrl-C or SIGTERM stops",
        server.url(),
        server.registry().len(),
        if std::env::var(&token_env).is_ok_and(|t| !t.is_empty()) { "enabled" } else { "disabled (set the token variable)" }
    );
    let report = server.run_until(shutdown_signal()).await.context("shutting down")?;
    match app.format {
        Format::Json => println!(
            "{}",
            serde_json::json!({
                "finished": report.engine.finished,
                "failed": report.engine.failed,
                "tokens_out": report.engine.tokens_out,
                "usage_rows_written": report.meter.rows,
                "usage_commits": report.meter.commits,
            })
        ),
        Format::Table => eprintln!(
            "stopped: {} requests finished ({} tokens out), {} failed; {} usage rows written to gold.inference_usage in {} commits",
            report.engine.finished, report.engine.tokens_out, report.engine.failed, report.meter.rows, report.meter.commits
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// The demo's serving stage: start the server in-process on a free loopback port, send a few
/// requests to the `geo-qa` and `notes` adapters, shut down (flushing usage), and print the usage
/// rows and credits the requests produced. Skips, saying why, when the base model or the adapters
/// do not exist yet.
pub async fn demo_stage(app: &App) -> anyhow::Result<()> {
    use tributary_serving::client::Client;
    use tributary_serving::metering::read_usage;

    let tables = app.tables()?;
    // Idempotent like every demo stage: once the demo's requests are metered, a re-run shows them
    // instead of adding more usage (and fees) to the epoch.
    let earlier: Vec<_> = read_usage(&tables)
        .await?
        .into_iter()
        .filter(|r| r.datanet.as_deref().is_some_and(|d| ["geo-qa", "notes"].contains(&d)))
        .collect();
    if !earlier.is_empty() {
        eprintln!("   already served in an earlier run; gold.inference_usage rows of the demo adapters:");
        eprintln!("{}", usage_table(&earlier));
        return Ok(());
    }
    let server = match ServingBuilder::new(app.config.clone(), tables.clone())
        .with_bind("127.0.0.1:0")
        .with_admin_token(None)
        .start()
        .await
    {
        Ok(s) => s,
        Err(tributary_serving::Error::Jobs(tributary_jobs::Error::NotFound(what))) => {
            eprintln!("   skipped: {what} does not exist yet (the base-model and train stages create it)");
            return Ok(());
        }
        Err(e) => return Err(e).context("starting the server"),
    };
    let datanets: Vec<&str> = ["geo-qa", "notes"].into_iter().filter(|d| server.registry().latest(d).is_some()).collect();
    for d in ["geo-qa", "notes"] {
        if !datanets.contains(&d) {
            eprintln!("   no adapter for `{d}` yet (run `tributary train --datanet {d}`); skipping it");
        }
    }
    eprintln!("   server on {} with {} adapter versions", server.url(), server.registry().len());
    let client = Client::new(server.url())?;
    let mut ids = Vec::new();
    for d in &datanets {
        for prompt in demo_prompts(&tables, d).await {
            // A prompt/completion adapter is asked through the chat API (which renders the prompt the
            // way training laid it out); a text adapter continues the opening of a row.
            let chat = app.config.datanet(d).is_some_and(|n| n.kind == DatanetKind::PromptCompletion);
            let reply = if chat {
                let body = serde_json::json!({
                    "model": d, "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": 48, "temperature": 0, "stop": ["\n\n"],
                });
                client.post("/v1/chat/completions", &body).await?
            } else {
                client
                    .complete(d, &prompt, serde_json::json!({"max_tokens": 48, "temperature": 0, "stop": ["\n\n"]}))
                    .await?
            };
            if reply.status != 200 {
                anyhow::bail!("{d}: HTTP {}: {}", reply.status, reply.body);
            }
            let b = &reply.body;
            ids.push(b["id"].as_str().unwrap_or_default().to_string());
            let choice = &b["choices"][0];
            let text = choice["text"].as_str().or(choice["message"]["content"].as_str()).unwrap_or_default().replace('\n', " ");
            let credited: Vec<String> = b["attribution"]["contributors"]
                .as_array()
                .map(|cs| {
                    cs.iter()
                        .map(|c| format!("{}…:{:.2}", c["address"].as_str().unwrap_or("?").get(..10).unwrap_or("?"), c["weight"].as_f64().unwrap_or(0.0)))
                        .collect()
                })
                .unwrap_or_default();
            eprintln!("   [{}] {prompt:?} → {:?}", b["model"].as_str().unwrap_or(d), text.chars().take(90).collect::<String>());
            eprintln!(
                "       {} tokens; attribution {}: {}",
                b["usage"]["completion_tokens"],
                b["attribution"]["status"].as_str().unwrap_or("?"),
                if credited.is_empty() { "no reproduced spans".to_string() } else { credited.join(", ") }
            );
        }
    }
    let report = server.shutdown().await.context("shutting the server down")?;
    eprintln!("   server stopped; {} usage rows flushed", report.meter.rows);
    let rows: Vec<_> = read_usage(&tables).await?.into_iter().filter(|r| ids.contains(&r.request_id)).collect();
    eprintln!("   gold.inference_usage rows of these requests:\n{}", usage_table(&rows));
    Ok(())
}

/// The usage rows as a table: request, adapter, tokens, fee and the credited contributors.
fn usage_table(rows: &[tributary_serving::metering::UsageRecord]) -> String {
    super::output::table(
        &["request", "adapter", "tokens in", "tokens out", "fee", "credits"],
        rows.iter()
            .map(|r| {
                let credits = match &r.credits {
                    None => "-".to_string(),
                    Some(c) if c.is_empty() => "none".to_string(),
                    Some(c) => c.iter().map(|c| format!("{}…={:.3}", c.address.get(..10).unwrap_or(&c.address), c.weight)).collect::<Vec<_>>().join(" "),
                };
                vec![
                    r.request_id.get(..13).unwrap_or(&r.request_id).to_string(),
                    r.adapter.clone(),
                    r.tokens_in.to_string(),
                    r.tokens_out.to_string(),
                    r.fee.to_string(),
                    credits,
                ]
            })
            .collect(),
    )
    .to_string()
}

/// Two prompts for `datanet`: prompts (or openings) of its training rows, so the adapter has
/// something of its contributors' data to reproduce; fixed questions when none can be read.
async fn demo_prompts(tables: &tributary_pipeline::Tables, datanet: &str) -> Vec<String> {
    let mut out: Vec<String> = match tributary_jobs::dataset::read_training_set(tables, datanet, None, None).await {
        Ok(set) => set
            .rows
            .iter()
            .filter_map(|r| r.prompt.clone().or_else(|| Some(r.text.split_whitespace().take(9).collect::<Vec<_>>().join(" "))))
            .filter(|p| !p.is_empty())
            .take(2)
            .collect(),
        Err(_) => vec![],
    };
    if out.is_empty() {
        out = vec!["What is the capital of the northern region?".into(), "Summarize the notes.".into()];
    }
    out
}
