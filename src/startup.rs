//! Building and running the server: bind the listener (port 0 works), start the projection
//! runners, serve until told to stop, then finish in-flight work.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use poem::listener::{Acceptor, Listener, TcpListener};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::api::{
    self,
    state::{AppState, State},
};
use crate::config::Settings;
use crate::mail::Mailer;
use crate::stripe::client::StripeApi;
use crate::stripe::inbox;
use crate::stripe::translate::Translator;

pub struct Application {
    addr: SocketAddr,
    acceptor: poem::listener::TcpAcceptor,
    state: State,
    translator: Arc<Translator>,
    mailer: Mailer,
    /// Runners, the inbox dispatcher and start-up catch-ups: no statement timeout (`bounds`).
    background: PgPool,
    /// Keys the pages share with the other instances.
    web: crate::web::WebKeys,
    /// How long in-flight requests, then background work, get to finish after a stop signal.
    grace: Duration,
}

impl Application {
    /// Binds the listener; the database must be migrated already. `pool` serves the API (with
    /// the bounds `serve` gives it, `bounds::api_pool`); background work gets a pool of its own.
    pub async fn build(pool: PgPool, settings: Settings) -> anyhow::Result<Self> {
        let acceptor = TcpListener::bind(settings.bind.to_string())
            .into_acceptor()
            .await
            .with_context(|| format!("binding {}", settings.bind))?;
        let addr = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .context("the listener has no socket address")?;
        crate::metrics::install();
        let stripe_api = StripeApi::from_settings(&settings.stripe)?;
        let mailer = Mailer::new(pool.clone(), &settings)?;
        let web = crate::web::WebKeys::load(&pool)
            .await
            .context("reading the pages' shared keys (server_secrets)")?;
        let state = AppState::new(pool, &settings);
        let mailer = mailer.with_members(state.members.clone());
        // Runners and inbox workers each keep a connection (advisory locks live in sessions):
        // a pool of their own, so they never starve the API's.
        let needed = state.projections.list().len() + state.stripe.workers + 4;
        let background =
            crate::bounds::unbounded_pool(&state.pool, u32::try_from(needed).unwrap_or(u32::MAX));
        let _ = state.background_pool.set(background.clone());
        // Before any command: from here on the appending transactions keep them.
        crate::inline::prepare(&background, state.projections.list()).await?;
        let translator = Arc::new(Translator {
            pool: state.pool.clone(),
            members: state.members.clone(),
            subscriptions: state.subscriptions.clone(),
            licenses: state.licenses.clone(),
            stripe: stripe_api,
        });
        Ok(Self {
            addr,
            acceptor,
            state,
            translator,
            mailer,
            background,
            web,
            grace: settings.shutdown_grace,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, lets in-flight requests
    /// finish (up to the grace period) and gives the projection runners, the inbox and the
    /// mailer as long again to finish their current work; what still runs then is abandoned
    /// (uncommitted, so done again after the next start).
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let background = self.background;
        let mut runners = self.state.projections.spawn(&background, shutdown.clone());
        runners.extend(inbox::spawn(
            background.clone(),
            self.translator.clone(),
            self.state.stripe.clone(),
            self.state.stripe_received.subscribe(),
            shutdown.clone(),
        ));
        runners.push(tokio::spawn(self.mailer.run(shutdown.clone())));
        runners.push(tokio::spawn(
            crate::members_import::job::Importer::new(
                background.clone(),
                self.state.members.clone(),
            )
            .run(shutdown.clone()),
        ));
        runners.push(tokio::spawn(crate::metrics::upkeep(shutdown.clone())));
        if let (Some(every), Some(api)) = (
            self.state.stripe.reconcile_every,
            self.state.stripe_api.clone(),
        ) {
            runners.push(tokio::spawn(crate::stripe::reconcile::periodically(
                background.clone(),
                self.state.stripe_received.clone(),
                api,
                every,
                self.state.stripe.reconcile_window,
                shutdown.clone(),
            )));
        }
        match crate::outbound::Deliverer::new(background.clone(), self.state.webhooks.clone()) {
            Ok(deliverer) => {
                runners.push(tokio::spawn(
                    std::sync::Arc::new(deliverer).run(shutdown.clone()),
                ));
            }
            Err(err) => tracing::error!(error = %err, "outbound webhooks are off: no HTTP client"),
        }
        runners.push(tokio::spawn(crate::license_machines::sweeper(
            background.clone(),
            self.state.licenses.clone(),
            self.state.license_settings.heartbeat_sweep_every,
            shutdown.clone(),
        )));
        runners.push(tokio::spawn(crate::complimentary::sweeper(
            background.clone(),
            self.state.members.clone(),
            crate::complimentary::SWEEP_EVERY,
            shutdown.clone(),
        )));
        let app = api::routes(&self.state, &self.web);
        let signal = shutdown.clone();
        // Headers sent a byte at a time, more often than the idle timeout, are cut here
        // (`HTTP_HEADER_TIMEOUT_SECS`): poem has no header-read timeout of its own.
        let acceptor =
            api::slow_headers::HeaderDeadline::new(self.acceptor, self.state.edge.header_timeout);
        let mut server = poem::Server::new_with_acceptor(acceptor);
        if let Some(idle) = self.state.edge.idle_timeout {
            // A client that stops sending or reading is dropped (`HTTP_IDLE_TIMEOUT_SECS`).
            server = server.idle_timeout(idle);
        }
        let served = server
            .run_with_graceful_shutdown(
                app,
                async move { signal.cancelled().await },
                Some(self.grace),
            )
            .await;
        shutdown.cancel();
        let aborts: Vec<_> = runners.iter().map(|r| r.abort_handle()).collect();
        let finished = tokio::time::timeout(self.grace, async {
            for runner in runners {
                let _ = runner.await;
            }
        })
        .await;
        if finished.is_err() {
            tracing::warn!(
                grace_secs = self.grace.as_secs(),
                "background work did not finish within the grace period; abandoning it"
            );
            for abort in aborts {
                abort.abort();
            }
        }
        background.close().await;
        served.context("serving HTTP")
    }
}

/// Cancelled on SIGINT or SIGTERM.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            () = term => {}
        }
        tracing::info!("stop signal received; finishing in-flight work");
        cancel.cancel();
    });
    token
}
