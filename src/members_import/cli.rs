//! `memberledger members import`: the file or standard input in, the report and a progress bar
//! out.

use std::io::Read;

use uuid::Uuid;

use super::{report_header, Import, Summary};

/// `memberledger members import FILE [--report REPORT]`: a progress bar on standard error
/// (when it is a terminal), the summary as JSON on standard output.
pub async fn run_cli(
    database: &crate::config::DatabaseConfig,
    file: &std::path::Path,
    report: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::IsTerminal;

    let input: Box<dyn Read + Send> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?)
    };
    let out: Box<dyn std::io::Write> = match report {
        Some(path) => Box::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        ),
        None => Box::new(std::io::stderr()),
    };
    let mut report = csv::Writer::from_writer(out);
    report.write_record(report_header())?;
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new_spinner();
        if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg}  {elapsed}") {
            bar.set_style(style);
        }
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let db = crate::db::Database::connect(database).await?;
    crate::db::migrate(&db.pool).await?;
    let state =
        crate::api::state::AppState::new(db.pool.clone(), &crate::config::Settings::default());
    let request_id = format!("cli:import:{}", Uuid::now_v7());
    let result = async {
        let mut import = Import::start(
            &db.pool,
            &state.members,
            input,
            &request_id,
            Summary::default(),
        )
        .await?;
        while let Some(refusals) = import.next_batch().await? {
            for refusal in &refusals {
                report
                    .write_record(refusal.record())
                    .context("writing the report")?;
            }
            let s = import.summary();
            bar.set_message(format!(
                "{} rows: {} created, {} updated, {} unchanged, {} refused",
                s.rows, s.created, s.updated, s.unchanged, s.refused
            ));
        }
        anyhow::Ok(import.summary())
    }
    .await;
    bar.finish_and_clear();
    db.close().await?;
    let summary = result?;
    report.flush()?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}
