//! Logging through tracing-subscriber: `RUST_LOG` filters, `LOG_FORMAT` picks pretty or JSON.
//! Pretty lines are coloured only on a terminal: piped into a file or a log collector, ANSI
//! escape codes would be noise in every line.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,poem=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    // `try_init`: tests initialise once per process and may call this again.
    let _ = match format {
        LogFormat::Pretty => registry
            .with(
                fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
}
