//! `loadgen infra`: a dedicated PostgreSQL and a fake Stripe API, until SIGTERM.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;
use stripe_fixtures::Fixtures;

use crate::cli::InfraArgs;

pub async fn infra(args: InfraArgs) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let fixtures = load_fixtures(&args.fixtures)?;
    // Normal durability: fsync, synchronous_commit and full_page_writes stay on.
    let pg = memberledger::localpg::LocalPostgres::start_with(
        &args.pg_dir,
        memberledger::localpg::StartOptions { fast_unsafe: false },
    )
    .await
    .context("starting the benchmark PostgreSQL")?;
    let result = async {
        memberledger::db::create_database_if_missing(pg.url(), "memberledger").await?;
        let stripe_base = fake_stripe(fixtures).await?;
        let env = format!(
            "BENCH_DATABASE_URL={}\nBENCH_PG_PORT={}\nBENCH_STRIPE_API_BASE={}\n",
            pg.url_for("memberledger"),
            pg.port(),
            stripe_base
        );
        let tmp = args.env_file.with_extension("tmp");
        std::fs::write(&tmp, env).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &args.env_file)
            .with_context(|| format!("writing {}", args.env_file.display()))?;
        tracing::info!(port = pg.port(), %stripe_base, "benchmark infrastructure up; SIGTERM stops it");
        wait_for_stop().await;
        anyhow::Ok(())
    }
    .await;
    tracing::info!("stopping the benchmark PostgreSQL");
    let stopped = pg.stop().await;
    result?;
    stopped
}

pub async fn wait_for_stop() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// Answers `GET /v1/customers/cus_<tag>` with `<tag>@example.com`, like the lifecycles' own
/// emails, so a subscription event processed before its checkout finds its customer's email.
pub async fn fake_stripe(fixtures: Fixtures) -> Result<String> {
    use poem::listener::{Acceptor, Listener, TcpListener};
    use poem::web::{Data, Path as WebPath};
    use poem::{get, handler, EndpointExt, Response, Route};

    #[handler]
    fn customer(WebPath(id): WebPath<String>, fixtures: Data<&Fixtures>) -> Response {
        let tag = id.strip_prefix("cus_").unwrap_or(&id);
        let mut customer = fixtures.resource("customer");
        customer["id"] = json!(id);
        customer["email"] = json!(format!("{tag}@example.com"));
        customer["name"] = json!("Bench Customer");
        Response::builder()
            .content_type("application/json")
            .body(customer.to_string())
    }

    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .context("binding the fake Stripe API")?;
    let addr = acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied())
        .context("the fake Stripe listener has no address")?;
    let app = Route::new()
        .at("/v1/customers/:id", get(customer))
        .data(fixtures);
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));
    Ok(format!("http://{addr}/"))
}

pub fn load_fixtures(path: &Path) -> Result<Fixtures> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading Stripe fixtures {}", path.display()))?;
    Fixtures::from_json(&text).with_context(|| format!("parsing {}", path.display()))
}
