//! Keys every instance shares (`server_secrets`): made by the first instance that needs one,
//! read by the others, so a form rendered by one instance is accepted by another.

use rand::RngCore;
use sqlx::PgPool;

/// The 32-byte secret called `name`, made now if no instance has made it yet.
pub async fn shared_key(pool: &PgPool, name: &str) -> Result<[u8; 32], sqlx::Error> {
    let mut fresh = [0u8; 32];
    rand::rng().fill_bytes(&mut fresh);
    // Two instances starting at once: the first insert wins, both read its key.
    sqlx::query(
        "INSERT INTO server_secrets (name, secret) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(fresh.as_slice())
    .execute(pool)
    .await?;
    let stored: Vec<u8> = sqlx::query_scalar("SELECT secret FROM server_secrets WHERE name = $1")
        .bind(name)
        .fetch_one(pool)
        .await?;
    stored
        .try_into()
        .map_err(|_| sqlx::Error::Protocol(format!("server secret {name:?} is not 32 bytes")))
}
