//! Integration tests: the real server on port 0 against a real PostgreSQL, a fresh database
//! per test. Without `DATABASE_URL` a local cluster under `target/test-pg` is started once.

mod admin_console;
mod browser_support;
mod checkout;
mod cli;
mod crash;
mod crash_support;
mod dead_letters;
mod edge;
mod errors;
mod events;
mod export;
mod health;
mod helpers;
mod instances;
mod license_files;
mod license_holds;
mod license_order;
mod license_purchases;
mod licenses;
mod mail_support;
mod members;
mod openapi;
mod operator;
mod pipeline;
mod portal;
mod portal_settings;
mod projections;
mod rebuild;
mod refusals;
mod set_apply;
mod signin;
mod stripe_support;
mod stripe_versions;
mod stripe_webhooks;
mod timeouts;
