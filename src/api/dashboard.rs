//! The customer dashboard: one member's subscriptions, sites, payments and license keys, read
//! from the read models. Members see their own at `/v1/me/dashboard`; admins anyone's at
//! `/v1/members/{id}/dashboard`.
//!
//! It is read in one round trip: one statement builds the whole document as JSON
//! (`json_build_object`, `json_agg` with each list's order), and serde reads it into these
//! types. PostgreSQL writes a `timestamptz` in JSON with its offset and microseconds, which
//! reads into the same `DateTime<Utc>` the columns decode to, so the answer is the one the
//! columns would give.

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::PgPool;
use uuid::Uuid;

use super::problem::Problem;

#[derive(Debug, Clone, Object, Deserialize)]
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

#[derive(Debug, Clone, Object, Deserialize)]
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
    pub items: Vec<DashboardItem>,
}

#[derive(Debug, Clone, Object, Deserialize)]
pub struct DashboardItem {
    pub id: String,
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
    /// The tier this item's price belongs to (any price a tier has had), if any.
    #[oai(nullable)]
    pub tier_id: Option<uuid::Uuid>,
    #[oai(nullable)]
    pub tier_name: Option<String>,
    /// `month` or `year`, with the tier.
    #[oai(nullable)]
    pub cadence: Option<String>,
}

#[derive(Debug, Clone, Object, Deserialize)]
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

#[derive(Debug, Clone, Object, Deserialize)]
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

#[derive(Debug, Clone, Object, Deserialize)]
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

#[derive(Debug, Clone, Object, Deserialize)]
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

#[derive(Debug, Clone, Object, Deserialize, sqlx::FromRow)]
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
    /// Null for a key an operator granted without Stripe.
    #[oai(nullable)]
    pub subscription_id: Option<String>,
    /// Why it is inactive or canceled.
    #[oai(nullable)]
    pub deactivation_reason: Option<String>,
    /// The license purchase that bought it (`POST /v1/me/license-purchases`).
    #[oai(nullable)]
    pub purchase_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    /// The first domain a quantity key is activated on (`POST
    /// /v1/me/licenses/{key}/activation`); kept while the license is inactive. Always null for
    /// a site license (see `site`).
    #[oai(nullable)]
    pub used_site: Option<String>,
    /// When it was activated on `used_site`.
    #[oai(nullable)]
    pub activated_at: Option<DateTime<Utc>>,
    /// Why an operator suspended it, while it is suspended (it does not validate meanwhile).
    #[oai(nullable)]
    pub suspension_reason: Option<String>,
    /// When an operator revoked it for good.
    #[oai(nullable)]
    pub revoked_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub revocation_reason: Option<String>,
    /// Every domain (machine) a quantity key is activated on, oldest first.
    #[sqlx(json)]
    pub machines: Vec<LicenseMachine>,
    /// How many domains it may be activated on at once (its policy's limit; 1 without one).
    pub max_machines: i32,
    /// Its license policy (machine limit, expiry, entitlements), if it has one.
    #[oai(nullable)]
    pub policy_id: Option<String>,
    /// When it stops validating on its own (its policy's duration, or an operator's date).
    #[oai(nullable)]
    pub expires_at: Option<DateTime<Utc>>,
    /// For a key an operator granted: why.
    #[oai(nullable)]
    pub grant_note: Option<String>,
}

/// One activation of a quantity key.
#[derive(Debug, Clone, Object, Serialize, Deserialize)]
pub struct LicenseMachine {
    /// The domain, or a `*.domain` pattern.
    pub domain: String,
    pub activated_at: DateTime<Utc>,
    /// The address the activation came from (null before it was recorded).
    #[oai(nullable)]
    pub ip: Option<String>,
}

/// The license with id `id`, as the inline read model has it.
pub(crate) async fn license_by_id(pool: &PgPool, id: Uuid) -> Result<DashboardLicense, Problem> {
    let license: Option<DashboardLicense> = sqlx::query_as(&format!(
        "SELECT {LICENSE_COLUMNS} FROM licenses WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(super::problem::db_error)?;
    license.ok_or_else(|| Problem::not_found("no license has this id"))
}

/// The `licenses` columns a [`DashboardLicense`] is read from.
pub(crate) const LICENSE_COLUMNS: &str =
    "id, key, status, purchase_type, site, seat, subscription_id, \
     deactivation_reason, purchase_id, issued_at AS created_at, used_site, activated_at, \
     suspension_reason, revoked_at, revocation_reason, machines, policy_id, expires_at, grant_note, \
     coalesce((SELECT p.max_machines FROM license_policies p WHERE p.id = licenses.policy_id), 1) \
     AS max_machines";

/// The member's dashboard, `None` for an unknown member.
pub async fn load(pool: &PgPool, member_id: Uuid) -> Result<Option<Dashboard>, sqlx::Error> {
    let dashboard: Option<Json<Dashboard>> = sqlx::query_scalar(&DASHBOARD_SQL)
        .bind(member_id)
        .fetch_optional(pool)
        .await?;
    Ok(dashboard.map(|Json(dashboard)| dashboard))
}

/// The dashboard as one JSON document, each list in the order the API gives it.
static DASHBOARD_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT json_build_object(
  'member_id', m.id, 'email', m.email, 'name', m.name, 'status', m.status,
  'customer_ids', coalesce((
    SELECT json_agg(c.customer_id ORDER BY c.linked_at)
    FROM stripe_customers c WHERE c.member_id = m.id), '[]'),
  'subscriptions', coalesce((
    SELECT json_agg(json_build_object(
      'id', s.id, 'status', s.status, 'current_period_start', s.current_period_start,
      'current_period_end', s.current_period_end, 'cancel_at_period_end', s.cancel_at_period_end,
      'created_at', s.created_at, 'mrr', s.mrr, 'currency', s.currency,
      'site_count', (SELECT count(*) FROM subscription_items i
                     WHERE i.subscription_id = s.id AND i.status = 'active' AND i.site IS NOT NULL),
      'items', coalesce((
        SELECT json_agg(json_build_object(
          'id', i.id, 'price_id', i.price_id, 'unit_amount', i.unit_amount,
          'currency', i.currency, 'interval', i.interval, 'interval_count', i.interval_count,
          'quantity', i.quantity, 'site', i.site, 'purchase_type', i.purchase_type,
          'status', i.status, 'tier_id', tp.tier_id, 'tier_name', t.name, 'cadence', tp.cadence)
          ORDER BY i.added_at, i.id)
        FROM subscription_items i
        LEFT JOIN tier_prices tp ON tp.price_id = i.price_id
        LEFT JOIN tiers t ON t.id = tp.tier_id
        WHERE i.subscription_id = s.id), '[]')
    ) ORDER BY s.created_at DESC, s.id)
    FROM subscriptions s WHERE s.member_id = m.id), '[]'),
  'sites', coalesce((
    SELECT json_agg(json_build_object(
      'domain', i.site, 'subscription_id', i.subscription_id, 'item_id', i.id,
      'price_id', i.price_id, 'unit_amount', i.unit_amount, 'currency', i.currency,
      'quantity', i.quantity, 'status', i.status) ORDER BY i.status, i.site)
    FROM subscription_items i JOIN subscriptions s ON s.id = i.subscription_id
    WHERE s.member_id = m.id AND i.site IS NOT NULL), '[]'),
  'pending_sites', coalesce((
    SELECT json_agg(json_build_object(
      'domain', p.site, 'subscription_id', p.subscription_id, 'session_id', p.session_id,
      'amount', p.amount, 'currency', p.currency, 'created_at', p.created_at)
      ORDER BY p.created_at, p.site)
    FROM pending_sites p WHERE p.member_id = m.id AND p.status = 'pending'), '[]'),
  'pending_license_purchases', coalesce((
    SELECT json_agg(json_build_object(
      'purchase_id', p.purchase_id, 'subscription_id', p.subscription_id,
      'session_id', p.session_id, 'quantity', p.quantity, 'amount', p.amount,
      'currency', p.currency, 'created_at', p.created_at)
      ORDER BY p.created_at, p.purchase_id)
    FROM license_purchases p WHERE p.member_id = m.id AND p.status = 'pending'), '[]'),
  -- Invoices, refunds and failures, and the one-off payments of purchases adding to a
  -- subscription (no invoice is made for those).
  'payments', coalesce((
    SELECT json_agg(p ORDER BY p.created_at DESC, p.kind, p.subscription_id) FROM (
      SELECT kind,
             CASE kind WHEN 'payment' THEN 'paid' WHEN 'refund' THEN 'refunded' ELSE 'failed' END
               AS status,
             amount, currency, invoice_id, subscription_id, NULL::text AS site,
             NULL::integer AS quantity, created_at
      FROM members_payment_events WHERE member_id = m.id
      UNION ALL
      SELECT 'purchase', 'paid', max(amount), max(currency), NULL, max(subscription_id),
             string_agg(site, ',' ORDER BY site), NULL, max(updated_at)
      FROM pending_sites WHERE member_id = m.id AND status = 'paid' GROUP BY session_id
      UNION ALL
      SELECT 'purchase', 'paid', amount, currency, NULL, subscription_id, NULL, quantity,
             updated_at
      FROM license_purchases WHERE member_id = m.id AND status = 'paid') p), '[]'),
  'licenses', coalesce((
    SELECT json_agg(l ORDER BY l.created_at DESC, l.seat, l.id)
    FROM (SELECT {LICENSE_COLUMNS} FROM licenses WHERE member_id = m.id) l), '[]')
)
FROM member_list m WHERE m.id = $1"
    )
});

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
