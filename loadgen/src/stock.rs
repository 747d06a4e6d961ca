//! `loadgen stock`: the peer every figure is compared with, the stock pipeline the server
//! builds on, as its documentation shows it: cqrs-es 0.5 + postgres-es 0.5, one aggregate, one
//! `GenericQuery` view on a `PostgresViewRepository`, commands executed in-process, and
//! `QueryReplay::replay_all` of the view.
//!
//! It runs against the benchmark's PostgreSQL, in a database of its own (`stock`), so that
//! postgres-es's `events` table does not meet the server's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cqrs_es::persist::{GenericQuery, PersistenceError, QueryReplay};
use cqrs_es::{Aggregate, DomainEvent, EventEnvelope, View};
use postgres_es::{postgres_cqrs, PostgresCqrs, PostgresEventRepository, PostgresViewRepository};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use uuid::Uuid;

use crate::cli::StockArgs;
use crate::database::{db_cost, db_mark, DbCost};
use crate::measure::{drive, loadavg, print_run, Limit, Run};
use crate::results::write_result;

/// The database the stock pipeline's tables live in, in the benchmark cluster.
pub const STOCK_DATABASE: &str = "stock";
const VIEW_TABLE: &str = "stock_member_view";

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StockMember {
    created: bool,
    name: String,
}

#[derive(Debug)]
pub enum StockCommand {
    Create { email: String, name: String },
    Update { name: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StockEvent {
    Created { email: String, name: String },
    Updated { name: String },
}

impl DomainEvent for StockEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Created { .. } => "Created",
            Self::Updated { .. } => "Updated",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StockError {
    #[error("the member exists already")]
    Exists,
    #[error("no such member")]
    Missing,
}

impl Aggregate for StockMember {
    const TYPE: &'static str = "StockMember";
    type Command = StockCommand;
    type Event = StockEvent;
    type Error = StockError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            StockCommand::Create { .. } if self.created => Err(StockError::Exists),
            StockCommand::Create { email, name } => {
                sink.write(StockEvent::Created { email, name }, self).await;
                Ok(())
            }
            StockCommand::Update { .. } if !self.created => Err(StockError::Missing),
            StockCommand::Update { name } => {
                sink.write(StockEvent::Updated { name }, self).await;
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            StockEvent::Created { name, .. } => {
                self.created = true;
                self.name = name;
            }
            StockEvent::Updated { name } => self.name = name,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StockMemberView {
    email: String,
    name: String,
    updates: u64,
}

impl View<StockMember> for StockMemberView {
    fn update(&mut self, event: &EventEnvelope<StockMember>) {
        match &event.payload {
            StockEvent::Created { email, name } => {
                self.email.clone_from(email);
                self.name.clone_from(name);
            }
            StockEvent::Updated { name } => {
                self.name.clone_from(name);
                self.updates += 1;
            }
        }
    }
}

type StockQuery = GenericQuery<
    PostgresViewRepository<StockMemberView, StockMember>,
    StockMemberView,
    StockMember,
>;

/// A command run: `Create` (a new member each) or `Update` (of a member created before).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StockRun {
    pub command: String,
    pub run: Run,
    /// View updates that failed (cqrs-es hands them to the query's error handler, not to the
    /// command's caller).
    #[serde(default)]
    pub view_errors: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StockReplay {
    /// Events in the stock log, all replayed.
    pub events: i64,
    /// Members (aggregate instances) in the log.
    pub members: i64,
    /// Rows in the view after the replay (one per member).
    pub view_rows: i64,
    pub seconds: f64,
    pub events_per_s: f64,
    pub view_errors: u64,
    pub loadavg: String,
    #[serde(default)]
    pub db: Option<DbCost>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StockResult {
    pub runs: Vec<StockRun>,
    pub replay: StockReplay,
}

impl StockResult {
    /// `Create` commands/s at `tasks` tasks.
    pub fn creates_at(&self, tasks: usize) -> Option<f64> {
        self.runs
            .iter()
            .find(|r| r.command == "Create" && r.run.concurrency == tasks)
            .map(|r| r.run.per_second)
    }
}

/// Counts the view errors a `GenericQuery` reports, and keeps the first.
#[derive(Clone, Default)]
struct ViewErrors {
    count: Arc<AtomicU64>,
    first: Arc<Mutex<Option<String>>>,
}

impl ViewErrors {
    fn handler(&self) -> Box<cqrs_es::persist::QueryErrorHandler> {
        let this = self.clone();
        Box::new(move |err: PersistenceError| {
            this.count.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut first) = this.first.lock() {
                first.get_or_insert_with(|| err.to_string());
            }
        })
    }

    fn take(&self) -> u64 {
        let n = self.count.swap(0, Ordering::Relaxed);
        if n > 0 {
            if let Ok(first) = self.first.lock() {
                println!(
                    "stock: {n} view update(s) failed (first: {})",
                    first.as_deref().unwrap_or("?")
                );
            }
        }
        n
    }
}

fn query(pool: &PgPool, errors: &ViewErrors) -> StockQuery {
    let repo = PostgresViewRepository::new(VIEW_TABLE, pool.clone());
    let mut query = GenericQuery::new(Arc::new(repo));
    query.use_error_handler(errors.handler());
    query
}

/// The stock database's URL: the server's, with another database name.
pub fn stock_url(database_url: &str) -> Result<String> {
    let mut url = url::Url::parse(database_url).context("BENCH_DATABASE_URL is not a URL")?;
    url.set_path(&format!("/{STOCK_DATABASE}"));
    Ok(url.to_string())
}

/// Fresh postgres-es tables (its `db/init.sql` shapes) and the view table.
async fn create_tables(pool: &PgPool) -> Result<()> {
    for statement in [
        "DROP TABLE IF EXISTS events, snapshots, stock_member_view",
        "CREATE TABLE events (
             aggregate_type text NOT NULL,
             aggregate_id   text NOT NULL,
             sequence       bigint CHECK (sequence >= 0) NOT NULL,
             event_type     text NOT NULL,
             event_version  text NOT NULL,
             payload        json NOT NULL,
             metadata       json NOT NULL,
             PRIMARY KEY (aggregate_type, aggregate_id, sequence))",
        "CREATE TABLE snapshots (
             aggregate_type   text NOT NULL,
             aggregate_id     text NOT NULL,
             last_sequence    bigint CHECK (last_sequence >= 0) NOT NULL,
             current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
             payload          json NOT NULL,
             PRIMARY KEY (aggregate_type, aggregate_id, last_sequence))",
        "CREATE TABLE stock_member_view (
             view_id text PRIMARY KEY,
             version bigint CHECK (version >= 0) NOT NULL,
             payload json NOT NULL)",
    ] {
        sqlx::query(statement)
            .execute(pool)
            .await
            .with_context(|| format!("stock database: {statement}"))?;
    }
    Ok(())
}

pub async fn stock(args: StockArgs) -> Result<()> {
    memberledger::db::create_database_if_missing(&args.db.database_url, STOCK_DATABASE).await?;
    let max = args.tasks.iter().copied().max().unwrap_or(1);
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(max).unwrap_or(u32::MAX).saturating_add(2))
        .acquire_timeout(Duration::from_secs(30))
        .connect(&stock_url(&args.db.database_url)?)
        .await
        .context("connecting to the stock database")?;
    create_tables(&pool).await?;
    let errors = ViewErrors::default();
    let cqrs: Arc<PostgresCqrs<StockMember>> = Arc::new(postgres_cqrs(
        pool.clone(),
        vec![Box::new(query(&pool, &errors))],
        (),
    ));
    let run_tag = Uuid::now_v7().simple().to_string();
    let mut runs = Vec::new();
    // The members the create runs made, for the update run.
    let mut created: Vec<String> = Vec::new();
    for &tasks in &args.tasks {
        let prefix = format!("{}-c{tasks}", &run_tag[20..]);
        let mark = db_mark(&pool).await?;
        let mut run = {
            let cqrs = cqrs.clone();
            let prefix = prefix.clone();
            drive(
                tasks,
                Limit {
                    duration: Some(Duration::from_secs(args.seconds)),
                    units: None,
                },
                move |i| {
                    let cqrs = cqrs.clone();
                    let id = format!("{prefix}-{i}");
                    async move {
                        let command = StockCommand::Create {
                            email: format!("{id}@stock.example.com"),
                            name: format!("Stock Member {i}"),
                        };
                        let started = Instant::now();
                        let outcome = cqrs.execute(&id, command).await;
                        vec![outcome
                            .map(|()| started.elapsed())
                            .map_err(|e| e.to_string())]
                    }
                },
            )
            .await
        };
        run.db = Some(db_cost(&pool, &mark, run.ok).await?);
        print_run("stock: Create (in-process)", &run);
        // Every unit taken ran to its end: units 0..ok+errors were tried.
        created.extend((0..run.ok + run.errors).map(|i| format!("{prefix}-{i}")));
        runs.push(StockRun {
            command: "Create".to_owned(),
            view_errors: errors.take(),
            run,
        });
    }

    // A command on an existing member (its one event loaded first), each member at most once.
    if !created.is_empty() {
        let created = Arc::new(created);
        let mark = db_mark(&pool).await?;
        let mut run = {
            let cqrs = cqrs.clone();
            let created = created.clone();
            drive(
                max,
                Limit {
                    duration: Some(Duration::from_secs(args.seconds)),
                    units: Some(created.len()),
                },
                move |i| {
                    let cqrs = cqrs.clone();
                    let created = created.clone();
                    async move {
                        let Some(id) = created.get(i) else {
                            return Vec::new();
                        };
                        let started = Instant::now();
                        let outcome = cqrs
                            .execute(
                                id,
                                StockCommand::Update {
                                    name: format!("Stock Member {i} (renamed)"),
                                },
                            )
                            .await;
                        vec![outcome
                            .map(|()| started.elapsed())
                            .map_err(|e| e.to_string())]
                    }
                },
            )
            .await
        };
        run.db = Some(db_cost(&pool, &mark, run.ok).await?);
        print_run("stock: Update (in-process)", &run);
        runs.push(StockRun {
            command: "Update".to_owned(),
            view_errors: errors.take(),
            run,
        });
    }

    // The view rebuilt from the whole log, from an empty table.
    sqlx::query(&format!("TRUNCATE {VIEW_TABLE}"))
        .execute(&pool)
        .await?;
    sqlx::query("CHECKPOINT").execute(&pool).await?;
    let (events, members): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT aggregate_id) FROM events")
            .fetch_one(&pool)
            .await?;
    let replay_errors = ViewErrors::default();
    let replay = QueryReplay::new(
        PostgresEventRepository::new(pool.clone()),
        query(&pool, &replay_errors),
    );
    let replay_loadavg = loadavg();
    let mark = db_mark(&pool).await?;
    let started = Instant::now();
    replay
        .replay_all()
        .await
        .map_err(|e| anyhow::anyhow!("QueryReplay::replay_all: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    let db = db_cost(&pool, &mark, u64::try_from(events).unwrap_or(0)).await?;
    let view_rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {VIEW_TABLE}"))
        .fetch_one(&pool)
        .await?;
    let replay = StockReplay {
        events,
        members,
        view_rows,
        seconds,
        events_per_s: events as f64 / seconds.max(1e-9),
        view_errors: replay_errors.take(),
        loadavg: replay_loadavg,
        db: Some(db),
    };
    println!(
        "stock: QueryReplay::replay_all: {events} events in {seconds:.2} s ({:.0} events/s), {view_rows} view rows",
        replay.events_per_s
    );
    write_result(&args.common, "stock", &StockResult { runs, replay })?;
    pool.close().await;
    if view_rows != members {
        bail!("the stock replay left {view_rows} view rows for {members} members");
    }
    Ok(())
}
