use clap::Parser;

/// jemalloc rather than glibc's allocator: the server and the rebuild allocate per request and
/// per event, and glibc's `malloc`/`free` were a sixth of the server's samples and a third of the
/// rebuild's (figures in Cargo.toml and docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = memberledger::cli::Cli::parse();
    match memberledger::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
