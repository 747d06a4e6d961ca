//! The customer dashboard: one member's subscriptions, sites, payments and license keys, read
//! from the read models. Members see their own at `/v1/me/dashboard`; admins anyone's at
//! `/v1/members/{id}/dashboard`.

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, Object)]
pub struct Dashboard {
    pub member_id: Uuid,
    pub email: String,
    #[oai(nullable)]
    pub name: Option<String>,
    /// `free`, `paid` or `comped`.
    pub status: String,
    /// The member's Stripe customers.
    pub customer_ids: Vec<String>,
    pub subscriptions: Vec<DashboardSubscription>,
    /// Every site bought, active or removed.
    pub sites: Vec<DashboardSite>,
    /// Sites being paid for, not added yet.
    pub pending_sites: Vec<PendingSite>,
    /// License purchases being paid for; their keys are `pending` in `licenses`.
    pub pending_license_purchases: Vec<PendingLicensePurchase>,
    /// Payments, refunds and failed payments, newest first.
    pub payments: Vec<DashboardPayment>,
    pub licenses: Vec<DashboardLicense>,
}

#[derive(Debug, Clone, Object, sqlx::FromRow)]
pub struct DashboardSubscription {
    pub id: String,
    pub status: String,
    #[oai(nullable)]
    pub current_period_start: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub created_at: DateTime<Utc>,
    /// Monthly recurring revenue, minor units.
    pub mrr: i64,
    #[oai(nullable)]
    pub currency: Option<String>,
    /// Active site items.
    pub site_count: i64,
    #[sqlx(skip)]
    pub items: Vec<DashboardItem>,
}

#[derive(Debug, Clone, Object, sqlx::FromRow)]
pub struct DashboardItem {
    pub id: String,
    #[oai(skip)]
    pub subscription_id: String,
    pub price_id: String,
    /// Per unit, minor units.
    pub unit_amount: i64,
    pub currency: String,
    pub interval: String,
    pub interval_count: i32,
    pub quantity: i32,
    #[oai(nullable)]
    pub site: Option<String>,
    /// `site` or `quantity`.
    pub purchase_type: String,
    /// `active` or `removed`.
    pub status: String,
}

#[derive(Debug, Clone, Object, sqlx::FromRow)]
pub struct DashboardSite {
    pub domain: String,
    pub subscription_id: String,
    pub item_id: String,
    pub price_id: String,
    pub unit_amount: i64,
    pub currency: String,
    pub quantity: i32,
    /// `active` or `removed`.
    pub status: String,
}

#[derive(Debug, Clone, Object, sqlx::FromRow)]
pub struct PendingSite {
    pub domain: String,
    pub subscription_id: String,
    /// The Checkout Session paying for it.
    pub session_id: String,
    /// The session's prorated total, minor units.
    pub amount: i64,
    pub currency: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Object, sqlx::FromRow)]
pub struct PendingLicensePurchase {
    pub purchase_id: Uuid,
    pub subscription_id: String,
    /// The Checkout Session paying for it.
    pub session_id: String,
    /// How many keys.
    pub quantity: i32,
    /// The session's prorated total, minor units.
    pub amount: i64,
    pub currency: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Object, sqlx::FromRow)]
pub struct DashboardPayment {
    /// `payment` (an invoice), `purchase` (sites or license keys added to the subscription),
    /// `refund` or `failure`.
    pub kind: String,
    /// `paid`, `refunded` or `failed`.
    pub status: String,
    pub amount: i64,
    pub currency: String,
    #[oai(nullable)]
    pub invoice_id: Option<String>,
    pub subscription_id: String,
    /// The sites a purchase paid for (comma-separated).
    #[oai(nullable)]
    pub site: Option<String>,
    /// For a purchase of license keys, how many.
    #[oai(nullable)]
    pub quantity: Option<i32>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Object, sqlx::FromRow)]
pub struct DashboardLicense {
    pub id: Uuid,
    pub key: String,
    /// `pending` (bought, not paid yet), `active`, `inactive`, or `canceled` (never paid).
    pub status: String,
    /// `site` or `quantity`.
    pub purchase_type: String,
    #[oai(nullable)]
    pub site: Option<String>,
    #[oai(nullable)]
    pub seat: Option<i32>,
    pub subscription_id: String,
    /// Why it is inactive or canceled.
    #[oai(nullable)]
    pub deactivation_reason: Option<String>,
    /// The license purchase that bought it (`POST /v1/me/license-purchases`).
    #[oai(nullable)]
    pub purchase_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    /// The domain a quantity key is activated on (`POST /v1/me/licenses/{key}/activation`);
    /// kept while the license is inactive. Always null for a site license (see `site`).
    #[oai(nullable)]
    pub used_site: Option<String>,
    /// When it was activated on `used_site`.
    #[oai(nullable)]
    pub activated_at: Option<DateTime<Utc>>,
}

/// The `licenses` columns a [`DashboardLicense`] is read from.
pub(crate) const LICENSE_COLUMNS: &str =
    "id, key, status, purchase_type, site, seat, subscription_id, \
     deactivation_reason, purchase_id, issued_at AS created_at, used_site, activated_at";

/// The member's dashboard, `None` for an unknown member.
pub async fn load(pool: &PgPool, member_id: Uuid) -> Result<Option<Dashboard>, sqlx::Error> {
    let member: Option<(String, Option<String>, String)> =
        sqlx::query_as("SELECT email, name, status FROM member_list WHERE id = $1")
            .bind(member_id)
            .fetch_optional(pool)
            .await?;
    let Some((email, name, status)) = member else {
        return Ok(None);
    };
    let customer_ids: Vec<String> = sqlx::query_scalar(
        "SELECT customer_id FROM stripe_customers WHERE member_id = $1 ORDER BY linked_at",
    )
    .bind(member_id)
    .fetch_all(pool)
    .await?;
    let mut subscriptions: Vec<DashboardSubscription> = sqlx::query_as(
        "SELECT s.id, s.status, s.current_period_start, s.current_period_end, s.cancel_at_period_end,
                s.created_at, s.mrr, s.currency,
                (SELECT count(*) FROM subscription_items i
                 WHERE i.subscription_id = s.id AND i.status = 'active' AND i.site IS NOT NULL) AS site_count
         FROM subscriptions s WHERE s.member_id = $1 ORDER BY s.created_at DESC, s.id",
    )
    .bind(member_id)
    .fetch_all(pool)
    .await?;
    let items: Vec<DashboardItem> = sqlx::query_as(
        "SELECT i.id, i.subscription_id, i.price_id, i.unit_amount, i.currency, i.interval, i.interval_count,
                i.quantity, i.site, i.purchase_type, i.status
         FROM subscription_items i JOIN subscriptions s ON s.id = i.subscription_id
         WHERE s.member_id = $1 ORDER BY i.added_at, i.id",
    )
    .bind(member_id)
    .fetch_all(pool)
    .await?;
    for sub in &mut subscriptions {
        sub.items = items
            .iter()
            .filter(|i| i.subscription_id == sub.id)
            .cloned()
            .collect();
    }
    let sites: Vec<DashboardSite> = sqlx::query_as(
        "SELECT i.site AS domain, i.subscription_id, i.id AS item_id, i.price_id, i.unit_amount, i.currency,
                i.quantity, i.status
         FROM subscription_items i JOIN subscriptions s ON s.id = i.subscription_id
         WHERE s.member_id = $1 AND i.site IS NOT NULL ORDER BY i.status, i.site",
    )
    .bind(member_id)
    .fetch_all(pool)
    .await?;
    // Invoices, refunds and failures, and the one-off payments of purchases adding to a
    // subscription (no invoice is made for those).
    let payments: Vec<DashboardPayment> = sqlx::query_as(
        "SELECT kind, CASE kind WHEN 'payment' THEN 'paid' WHEN 'refund' THEN 'refunded' ELSE 'failed' END AS status,
                amount, currency, invoice_id, subscription_id, NULL::text AS site, NULL::integer AS quantity,
                created_at
         FROM members_payment_events WHERE member_id = $1
         UNION ALL
         SELECT 'purchase', 'paid', max(amount), max(currency), NULL, max(subscription_id),
                string_agg(site, ',' ORDER BY site), NULL, max(updated_at)
         FROM pending_sites WHERE member_id = $1 AND status = 'paid' GROUP BY session_id
         UNION ALL
         SELECT 'purchase', 'paid', amount, currency, NULL, subscription_id, NULL, quantity, updated_at
         FROM license_purchases WHERE member_id = $1 AND status = 'paid'
         ORDER BY created_at DESC, kind, subscription_id",
    )
    .bind(member_id)
    .fetch_all(pool)
    .await?;
    let licenses = licenses(pool, member_id).await?;
    let pending_sites: Vec<PendingSite> = sqlx::query_as(
        "SELECT site AS domain, subscription_id, session_id, amount, currency, created_at FROM pending_sites
         WHERE member_id = $1 AND status = 'pending' ORDER BY created_at, site",
    )
    .bind(member_id)
    .fetch_all(pool)
    .await?;
    let pending_license_purchases: Vec<PendingLicensePurchase> = sqlx::query_as(
        "SELECT purchase_id, subscription_id, session_id, quantity, amount, currency, created_at
         FROM license_purchases WHERE member_id = $1 AND status = 'pending' ORDER BY created_at, purchase_id",
    )
    .bind(member_id)
    .fetch_all(pool)
    .await?;
    Ok(Some(Dashboard {
        member_id,
        email,
        name,
        status,
        customer_ids,
        subscriptions,
        sites,
        pending_sites,
        pending_license_purchases,
        payments,
        licenses,
    }))
}

/// The member's license keys, newest first.
pub async fn licenses(
    pool: &PgPool,
    member_id: Uuid,
) -> Result<Vec<DashboardLicense>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {LICENSE_COLUMNS} FROM licenses WHERE member_id = $1 ORDER BY issued_at DESC, seat, id"
    ))
    .bind(member_id)
    .fetch_all(pool)
    .await
}
