//! The `memberledger` command line.

use clap::{Parser, Subcommand};

use crate::api::state::AppState;
use crate::config::Settings;
use crate::config::{DatabaseConfig, LogConfig, ServeConfig};
use crate::db::{self, Database};
use crate::startup::{self, Application};
use crate::{api, runner, stripe, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "memberledger",
    version,
    about = "Paid memberships and software licenses, event-sourced."
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogConfig,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Migrate the database and serve the HTTP API.
    Serve {
        #[command(flatten)]
        database: DatabaseConfig,
        #[command(flatten)]
        serve: ServeConfig,
    },
    /// Apply pending migrations and exit.
    Migrate {
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// Print the OpenAPI spec.
    Openapi,
    /// Read-model projections.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// The Stripe inbox.
    Stripe {
        #[command(subcommand)]
        command: StripeCommand,
    },
    /// The event log.
    Events {
        #[command(subcommand)]
        command: crate::export::EventsCommand,
    },
    /// Members in bulk.
    Members {
        #[command(subcommand)]
        command: MembersCommand,
    },
    /// Licenses: grant, hold, extend and move keys between policies without Stripe, and the
    /// keys that sign license files.
    Licenses {
        #[command(subcommand)]
        command: LicensesCommand,
    },
    /// Tiers: what members buy (created and priced through `POST /v1/tiers`).
    Tiers {
        #[command(subcommand)]
        command: TiersCommand,
    },
    /// Create a new admin token (printed once; only its hash is stored).
    AdminToken {
        #[command(flatten)]
        database: DatabaseConfig,
        /// Revoke every stored token first (`ADMIN_TOKEN` is not affected).
        #[arg(long)]
        revoke_others: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum MembersCommand {
    /// Write the members as CSV (what `GET /v1/members/export.csv` serves), oldest first.
    Export {
        #[command(flatten)]
        database: DatabaseConfig,
        /// The file to write; default: standard output.
        #[arg(long)]
        output: Option<std::path::PathBuf>,
        /// Only members with this status (free, paid, comped).
        #[arg(long, value_parser = ["free", "paid", "comped"])]
        status: Option<String>,
        /// Only members with this label.
        #[arg(long)]
        label: Option<String>,
    },
    /// Import members from CSV (our export's columns or Ghost's): new addresses become
    /// members (source `import`), existing ones get what the row adds; importing a file twice
    /// changes nothing the second time. Prints a summary as JSON; rows that were not imported
    /// go to the report.
    Import {
        #[command(flatten)]
        database: DatabaseConfig,
        /// The CSV file; `-` reads standard input.
        file: std::path::PathBuf,
        /// Where to write the report of refused rows (CSV: line, email, field, reason);
        /// default: standard error.
        #[arg(long)]
        report: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TiersCommand {
    /// Print every tier (hidden and archived ones too) as JSON, as `GET /v1/tiers` with an
    /// admin token answers.
    List {
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// Create a tier as `POST /v1/tiers` does: with `--currency`, `--monthly-price` and
    /// `--yearly-price` (minor units) its Stripe product and two prices are created, with
    /// `--stripe-monthly-price-id` and `--stripe-yearly-price-id` existing prices are linked.
    /// Needs `STRIPE_SECRET_KEY`. Prints the tier as JSON.
    Create {
        #[command(flatten)]
        database: DatabaseConfig,
        #[command(flatten)]
        stripe: crate::config::StripeConfig,
        #[arg(long)]
        name: String,
        #[arg(long)]
        description: Option<String>,
        /// What the tier gives; repeat for each line.
        #[arg(long = "benefit")]
        benefits: Vec<String>,
        /// `public` (listed on `GET /v1/tiers`) or `none` (sold by link only).
        #[arg(long)]
        visibility: Option<String>,
        /// ISO currency of the prices, e.g. `eur`.
        #[arg(long)]
        currency: Option<String>,
        /// Monthly price in minor units (500 = 5.00).
        #[arg(long)]
        monthly_price: Option<i64>,
        /// Yearly price in minor units.
        #[arg(long)]
        yearly_price: Option<i64>,
        #[arg(long)]
        stripe_monthly_price_id: Option<String>,
        #[arg(long)]
        stripe_yearly_price_id: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum LicensesCommand {
    /// Print the keys that verify license files (the active one first), as JSON.
    PublicKey {
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// Retire the active signing key and make a new one; prints the new key's id. Files
    /// signed before verify only with the retired key, which stays published.
    RotateSigningKey {
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// Grant a key to a member without Stripe (the member is created when no member has the
    /// email); prints the license as JSON.
    Issue {
        #[command(flatten)]
        database: DatabaseConfig,
        #[arg(long)]
        email: String,
        /// The member's name, when the member is created.
        #[arg(long)]
        name: Option<String>,
        /// A license policy's id (`PUT /v1/license-policies/{id}`).
        #[arg(long)]
        policy: Option<String>,
        /// RFC 3339, such as 2027-12-31T23:59:59Z; default: as the policy says, else never.
        #[arg(long)]
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
        /// Why (a trial, a partner, support).
        #[arg(long)]
        note: Option<String>,
    },
    /// Suspend a license with a reason (it validates as SUSPENDED until unsuspended).
    Suspend {
        #[command(flatten)]
        database: DatabaseConfig,
        id: uuid::Uuid,
        #[arg(long)]
        reason: String,
    },
    /// Lift a license's suspension.
    Unsuspend {
        #[command(flatten)]
        database: DatabaseConfig,
        id: uuid::Uuid,
    },
    /// Revoke a license for good.
    Revoke {
        #[command(flatten)]
        database: DatabaseConfig,
        id: uuid::Uuid,
        #[arg(long)]
        reason: String,
    },
    /// Extend or shorten a license's expiry.
    Expiry {
        #[command(flatten)]
        database: DatabaseConfig,
        id: uuid::Uuid,
        /// RFC 3339; a time in the past ends it now.
        #[arg(long, conflicts_with = "never", required_unless_present = "never")]
        at: Option<chrono::DateTime<chrono::Utc>>,
        /// It does not expire on its own.
        #[arg(long)]
        never: bool,
    },
    /// Put a license under another policy (or none, with --none).
    SetPolicy {
        #[command(flatten)]
        database: DatabaseConfig,
        id: uuid::Uuid,
        #[arg(conflicts_with = "none", required_unless_present = "none")]
        policy: Option<String>,
        #[arg(long)]
        none: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum StripeCommand {
    /// Make stored events due for processing again (a running server's workers pick them up).
    Replay {
        #[command(flatten)]
        database: DatabaseConfig,
        /// Every failed event (deferred ones are left to wait for their customer's next event).
        #[arg(long, conflicts_with = "id", required_unless_present = "id")]
        failed: bool,
        /// One event by its Stripe id (`evt_...`): failed, deferred, ignored or pending.
        #[arg(long)]
        id: Vec<String>,
    },
    /// Register (or update) the webhook endpoint `PUBLIC_URL/webhooks/stripe` at Stripe with
    /// exactly the event types handled, and store its signing secret. A second run changes
    /// nothing.
    Setup {
        #[command(flatten)]
        database: DatabaseConfig,
        #[command(flatten)]
        stripe: crate::config::StripeConfig,
        /// Where the server is reached from the internet (https in live mode).
        #[arg(long, env = "PUBLIC_URL")]
        public_url: String,
    },
    /// Ask Stripe for its events (it keeps them 30 days) and store those of a handled type that
    /// never arrived; a running server's inbox processes them. Prints what it found.
    Reconcile {
        #[command(flatten)]
        database: DatabaseConfig,
        #[command(flatten)]
        stripe: crate::config::StripeConfig,
        /// From when (RFC 3339); default: 30 days ago, as far back as Stripe keeps events.
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Rebuild blue/green: replay the log into shadow tables while the live ones serve, then
    /// swap them in. A running server keeps applying new events meanwhile.
    Rebuild {
        #[command(flatten)]
        database: DatabaseConfig,
        /// The projection to rebuild (see `projections status`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        name: Option<String>,
        /// Every projection and policy, one after the other.
        #[arg(long)]
        all: bool,
    },
    /// Skip the event an asynchronous projection or policy is stuck on (see `status`): it is
    /// recorded in `projection_dead_letters` with its error, stays in the log, and the
    /// projection goes on from the next event.
    Skip {
        #[command(flatten)]
        database: DatabaseConfig,
        /// The stuck projection.
        name: String,
        /// The global position of the event it is stuck on, as `status` shows it.
        position: i64,
    },
    /// The events skipped so far, newest first.
    DeadLetters {
        #[command(flatten)]
        database: DatabaseConfig,
        /// Only this projection's.
        name: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Each projection's version, position and lag.
    Status {
        #[command(flatten)]
        database: DatabaseConfig,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    telemetry::init(cli.log.log_format);
    match cli.command {
        Command::Serve { database, serve } => serve_command(database, serve).await,
        Command::Migrate { database } => {
            let db = Database::connect(&database).await?;
            db::migrate(&db.pool).await?;
            println!("migrations applied");
            db.close().await
        }
        Command::Openapi => {
            println!("{}", api::spec_json_standalone());
            Ok(())
        }
        Command::Projections {
            command: ProjectionsCommand::Status { database, json },
        } => {
            let db = Database::connect(&database).await?;
            let state = AppState::new(db.pool.clone(), &Settings::default());
            let status = runner::status(&db.pool, state.projections.list()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                println!(
                    "{:<28} {:>7} {:>12} {:>14} {:>10} {:>10} {:>12}  error",
                    "projection", "version", "position", "applied", "lag", "lag_ms", "stuck_at"
                );
                for p in status {
                    let version = if p.version == p.code_version {
                        p.version.to_string()
                    } else {
                        format!("{}→{}", p.version, p.code_version)
                    };
                    let lag = if p.lag_events >= crate::eventlog::BACKLOG_COUNTED_UP_TO {
                        format!("{}+", p.lag_events)
                    } else {
                        p.lag_events.to_string()
                    };
                    println!(
                        "{:<28} {:>7} {:>12} {:>14} {:>10} {:>10} {:>12}  {}",
                        p.name,
                        version,
                        p.global_position,
                        p.events_applied,
                        lag,
                        p.lag_ms,
                        p.stuck_position.map(|p| p.to_string()).unwrap_or_default(),
                        p.last_error.unwrap_or_default()
                    );
                }
            }
            db.close().await
        }
        Command::Projections {
            command:
                ProjectionsCommand::Skip {
                    database,
                    name,
                    position,
                },
        } => {
            let db = Database::connect(&database).await?;
            db::migrate(&db.pool).await?;
            let state = AppState::new(db.pool.clone(), &Settings::default());
            let Some(projection) = state.projections.list().iter().find(|p| p.name() == name)
            else {
                let names: Vec<&str> = state.projections.list().iter().map(|p| p.name()).collect();
                anyhow::bail!("no projection {name:?}; there are: {}", names.join(", "));
            };
            let letter =
                crate::dead_letters::skip(&db.pool, projection.as_ref(), position, "cli").await?;
            println!(
                "{name}: skipped event {} ({}/{} {}) into projection_dead_letters; it failed with: {}",
                letter.global_position,
                letter.aggregate_type,
                letter.event_type,
                letter.aggregate_id,
                letter.error
            );
            db.close().await
        }
        Command::Projections {
            command:
                ProjectionsCommand::DeadLetters {
                    database,
                    name,
                    json,
                },
        } => {
            let db = Database::connect(&database).await?;
            let letters = crate::dead_letters::list(&db.pool, name.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&letters)?);
            } else {
                for l in letters {
                    println!(
                        "{}  {:<28} {:>12}  {}/{} {}  by {}: {}",
                        l.skipped_at.to_rfc3339(),
                        l.projection,
                        l.global_position,
                        l.aggregate_type,
                        l.event_type,
                        l.aggregate_id,
                        l.skipped_by,
                        l.error
                    );
                }
            }
            db.close().await
        }
        Command::Projections {
            command:
                ProjectionsCommand::Rebuild {
                    database,
                    name,
                    all,
                },
        } => {
            let db = Database::connect(&database).await?;
            db::migrate(&db.pool).await?;
            let state = AppState::new(db.pool.clone(), &Settings::default());
            let chosen: Vec<_> = state
                .projections
                .list()
                .iter()
                .filter(|p| {
                    if all {
                        p.rebuildable()
                    } else {
                        name.as_deref() == Some(p.name())
                    }
                })
                .cloned()
                .collect();
            if chosen.is_empty() {
                let names: Vec<&str> = state.projections.list().iter().map(|p| p.name()).collect();
                anyhow::bail!(
                    "no projection {:?}; there are: {}",
                    name.unwrap_or_default(),
                    names.join(", ")
                );
            }
            rebuild_with_progress(&db.pool, &chosen).await?;
            db.close().await
        }
        Command::Stripe {
            command:
                StripeCommand::Setup {
                    database,
                    stripe,
                    public_url,
                },
        } => {
            let Some(api) = stripe::client::StripeApi::from_settings(&stripe.settings())? else {
                anyhow::bail!("STRIPE_SECRET_KEY (or --stripe-secret-key) is needed to set up the webhook endpoint");
            };
            let url = format!("{}/webhooks/stripe", public_url.trim_end_matches('/'));
            if !url.starts_with("https://") {
                eprintln!("note: {url} is not https; Stripe accepts it in test mode only");
            }
            let db = Database::connect(&database).await?;
            db::migrate(&db.pool).await?;
            let outcome = stripe::endpoint::setup(&db.pool, &api, &url).await;
            db.close().await?;
            println!("{}", outcome?);
            Ok(())
        }
        Command::Stripe {
            command:
                StripeCommand::Reconcile {
                    database,
                    stripe,
                    since,
                },
        } => {
            let settings = stripe.settings();
            let Some(api) = stripe::client::StripeApi::from_settings(&settings)? else {
                anyhow::bail!(
                    "STRIPE_SECRET_KEY (or --stripe-secret-key) is needed to list Stripe's events"
                );
            };
            let db = Database::connect(&database).await?;
            db::migrate(&db.pool).await?;
            let received = crate::eventlog::Wakeups::new(
                db.pool.clone(),
                crate::eventlog::STRIPE_EVENT_RECEIVED,
            );
            let since = since.unwrap_or_else(|| chrono::Utc::now() - chrono::Duration::days(30));
            let report = stripe::reconcile::reconcile(&db.pool, &received, &api, since).await;
            db.close().await?;
            let report = report?;
            println!("{report}");
            for id in &report.stored {
                println!("stored {id}");
            }
            Ok(())
        }
        Command::Stripe {
            command:
                StripeCommand::Replay {
                    database,
                    failed,
                    id,
                },
        } => {
            let db = Database::connect(&database).await?;
            if failed {
                let n = stripe::inbox::retry_all_failed(&db.pool).await?;
                println!("{n} failed event(s) queued for processing");
            }
            for id in id {
                match stripe::inbox::retry(&db.pool, &id).await? {
                    stripe::inbox::Retry::Queued(_) => println!("{id}: queued"),
                    stripe::inbox::Retry::NotRetryable(event) => {
                        println!("{id}: left alone, it is {}", event.status)
                    }
                    stripe::inbox::Retry::NotFound => anyhow::bail!("no stored Stripe event {id}"),
                }
            }
            db.close().await
        }
        Command::Events { command } => crate::export::run(command).await,
        Command::Members {
            command:
                MembersCommand::Export {
                    database,
                    output,
                    status,
                    label,
                },
        } => {
            use futures::TryStreamExt;
            use tokio::io::AsyncWriteExt;
            let db = Database::connect(&database).await?;
            db::migrate(&db.pool).await?;
            let filter = crate::members_export::ExportFilter {
                status,
                label,
                ..Default::default()
            };
            let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match &output {
                Some(path) => Box::new(tokio::fs::File::create(path).await?),
                None => Box::new(tokio::io::stdout()),
            };
            let mut chunks = std::pin::pin!(crate::members_export::stream(db.pool.clone(), filter));
            while let Some(chunk) = chunks.try_next().await? {
                out.write_all(&chunk).await?;
            }
            out.flush().await?;
            db.close().await
        }
        Command::Members {
            command:
                MembersCommand::Import {
                    database,
                    file,
                    report,
                },
        } => crate::members_import::run_cli(&database, &file, report.as_deref()).await,
        Command::Tiers {
            command:
                TiersCommand::Create {
                    database,
                    stripe,
                    name,
                    description,
                    benefits,
                    visibility,
                    currency,
                    monthly_price,
                    yearly_price,
                    stripe_monthly_price_id,
                    stripe_yearly_price_id,
                },
        } => {
            let body = serde_json::json!({
                "name": name, "description": description, "benefits": benefits,
                "visibility": visibility, "currency": currency,
                "monthly_price": monthly_price, "yearly_price": yearly_price,
                "stripe_monthly_price_id": stripe_monthly_price_id,
                "stripe_yearly_price_id": stripe_yearly_price_id,
            });
            crate::api::tiers::create_from_cli(&database, stripe.settings(), body).await
        }
        Command::Tiers {
            command: TiersCommand::List { database },
        } => {
            let db = Database::connect(&database).await?;
            db::migrate(&db.pool).await?;
            let tiers = crate::api::tiers::list(&db.pool, true).await?;
            println!("{}", serde_json::to_string_pretty(&tiers)?);
            db.close().await
        }
        Command::Licenses { command } => match command {
            LicensesCommand::PublicKey { database } => {
                let db = Database::connect(&database).await?;
                db::migrate(&db.pool).await?;
                let keys = crate::license_files::public_keys(&db.pool).await?;
                println!("{}", serde_json::to_string_pretty(&keys)?);
                db.close().await
            }
            LicensesCommand::RotateSigningKey { database } => {
                let db = Database::connect(&database).await?;
                db::migrate(&db.pool).await?;
                let kid = crate::license_files::rotate(&db.pool).await?;
                println!("{kid}");
                db.close().await
            }
            other => crate::license_cli::run(other).await,
        },
        Command::AdminToken {
            database,
            revoke_others,
        } => {
            let db = Database::connect(&database).await?;
            db::migrate(&db.pool).await?;
            if revoke_others {
                let n = api::auth::revoke_stored_tokens(&db.pool).await?;
                eprintln!("revoked {n} stored admin token(s)");
            }
            let token = api::auth::create_stored_token(&db.pool, "cli").await?;
            println!("{token}");
            db.close().await
        }
    }
}

async fn serve_command(database: DatabaseConfig, serve: ServeConfig) -> anyhow::Result<()> {
    // Before connecting: the summary is what an operator reads when the database is not there.
    let settings = serve.settings()?;
    crate::startup_report::log(&crate::startup_report::report(&settings));
    let db = Database::connect(&database).await?;
    db::migrate(&db.pool).await?;
    if serve.admin_token.is_none() && api::auth::stored_token_count(&db.pool).await? == 0 {
        let token = api::auth::create_stored_token(&db.pool, "generated on first start").await?;
        // Shown once, on stdout, outside the logs; only its hash is kept.
        println!(
            "Generated an admin token (shown only now; only its hash is stored):\n\n    {token}\n"
        );
        println!(
            "Use it as `Authorization: Bearer {token}`. `memberledger admin-token` makes another."
        );
    }
    let shutdown = startup::shutdown_on_signal();
    // The API's requests are bounded (statement and acquire timeouts); `db.pool` is not, for
    // the migrations above and the catch-ups at start.
    let api_pool = crate::bounds::api_pool(&db.pool, database.bounds.bounds());
    let app = Application::build(api_pool.clone(), settings).await?;
    tracing::info!(addr = %app.addr(), "listening; OpenAPI at /openapi.json, Swagger UI at /docs");
    let result = app.run_until_stopped(shutdown).await;
    api_pool.close().await;
    db.close().await?;
    tracing::info!("stopped");
    result
}

/// Rebuilds `chosen` from one pass over the log, with a progress bar on a terminal; prints
/// what each applied.
async fn rebuild_with_progress(
    pool: &sqlx::PgPool,
    chosen: &[std::sync::Arc<dyn projections::Projection>],
) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix:>28} [{bar:30}] {pos}/{len} events, {per_sec}, ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_prefix(match chosen {
            [one] => one.name().to_owned(),
            many => format!("{} projections", many.len()),
        });
        Some(bar)
    } else {
        None
    };
    let started = std::time::Instant::now();
    let done = crate::rebuild::rebuild_many(pool, chosen, |p| {
        if let Some(bar) = &bar {
            bar.set_length(p.total);
            bar.set_position(p.applied);
        }
    })
    .await?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let secs = started.elapsed().as_secs_f64();
    for (name, applied) in done {
        println!("{name}: {applied} events, swapped in");
    }
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await?;
    #[expect(clippy::cast_precision_loss, reason = "a rate for display")]
    let rate = events as f64 / secs.max(0.001);
    println!(
        "rebuilt {} projection(s) from {events} events in {secs:.1} s ({rate:.0} events/s)",
        chosen.len()
    );
    Ok(())
}
