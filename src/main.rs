use clap::Parser;

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
