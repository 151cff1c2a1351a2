//! `tributary`: the command-line interface. A thin layer: parse, call a crate, print.
//!
//! Exit codes: 0 ok, 1 the command failed, 2 usage error (bad flags or arguments).

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// jemalloc instead of the system allocator: ingest and the SQL models allocate and free large
/// Arrow and Parquet buffers from several threads, and glibc's returning them to the kernel
/// (page faults, TLB shootdowns) was a tenth of ingest's CPU time (`cargo bench -p
/// tributary-pipeline --bench ingest`, README § Benchmarks).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(1)
        }
    }
}
