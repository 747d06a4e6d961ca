//! memberledger: paid memberships and software licenses, event-sourced.
//!
//! `main.rs` only parses the command line; everything it runs lives here, so tests start the
//! real server ([`startup::Application`]) against a real database.

pub mod api;
pub mod auth;
pub mod batch_queue;
pub mod bounds;
pub mod cli;
pub mod complimentary;
pub mod config;
pub mod db;
pub mod dead_letters;
pub mod edge;
pub mod email_change;
pub mod erasure;
pub mod eventlog;
pub mod export;
pub mod inline;
pub mod license_cli;
pub mod license_files;
pub mod license_keys;
pub mod license_machines;
pub mod license_policies;
pub mod links;
pub mod localpg;
pub mod mail;
pub mod member_mail;
pub mod members;
pub mod members_export;
pub mod members_import;
pub mod metrics;
pub mod outbound;
pub mod policies;
pub mod rate_limit;
pub mod rebuild;
pub mod runner;
pub mod secrets;
pub mod startup;
pub mod startup_report;
pub mod store;
pub mod stripe;
pub mod telemetry;
pub mod web;
