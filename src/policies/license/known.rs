//! What the license policy knows of subscriptions: loaded for a whole batch in a few statements,
//! changed in memory event by event, and written back with one multi-row statement per table.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use aggregates::{DeactivationReason, License, LicenseCommand, PurchaseType, SubscriptionStatus};
use projections::StoredEvent;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Plan, Planned};
use crate::policies::caused_by;

/// A subscription item as the policy keeps it (`policy_license_items`).
#[derive(sqlx::FromRow)]
pub(super) struct Item {
    pub subscription_id: String,
    pub item_id: String,
    pub purchase_type: String,
    pub site: Option<String>,
    pub quantity: i32,
    pub removed: bool,
    pub license_purchase_id: Option<Uuid>,
    pub product_id: Option<String>,
}

/// A license the policy issued and whether it last left it active (`policy_licenses`).
#[derive(Clone, sqlx::FromRow)]
pub(super) struct IssuedLicense {
    pub license_id: Uuid,
    pub item_id: String,
    pub seat: Option<i32>,
    pub active: bool,
}

/// One subscription as the policy knows it.
#[derive(Default)]
pub(super) struct Known {
    /// Its member and status, once its creation was seen.
    pub subscription: Option<(Uuid, String)>,
    /// A payment of it was seen (possibly before the subscription itself).
    pub paid: bool,
    pub items: BTreeMap<String, Item>,
    pub licenses: BTreeMap<Uuid, IssuedLicense>,
    changed_subscription: bool,
    changed_paid: bool,
    changed_items: BTreeSet<String>,
    changed_licenses: BTreeSet<Uuid>,
}

impl Known {
    pub fn set_subscription(&mut self, member_id: Uuid, status: &str) {
        match &mut self.subscription {
            Some((_, known)) => *known = status.to_owned(),
            None => self.subscription = Some((member_id, status.to_owned())),
        }
        self.changed_subscription = true;
    }

    /// A status change of a subscription whose creation was not seen changes nothing.
    pub fn set_status(&mut self, status: &str) {
        if let Some((_, known)) = &mut self.subscription {
            *known = status.to_owned();
            self.changed_subscription = true;
        }
    }

    pub fn set_paid(&mut self) {
        if !self.paid {
            self.paid = true;
            self.changed_paid = true;
        }
    }

    /// An item added, or added again: again, only its quantity changes and it is no longer
    /// removed.
    pub fn add_item(&mut self, item: Item) {
        let id = item.item_id.clone();
        match self.items.get_mut(&id) {
            Some(known) => {
                known.quantity = item.quantity;
                known.removed = false;
            }
            None => {
                self.items.insert(id.clone(), item);
            }
        }
        self.changed_items.insert(id);
    }

    /// Changes an item of this subscription; one the policy does not know is left alone.
    pub fn change_item(&mut self, item_id: &str, change: impl FnOnce(&mut Item)) {
        if let Some(item) = self.items.get_mut(item_id) {
            change(item);
            self.changed_items.insert(item_id.to_owned());
        }
    }

    fn set_license(&mut self, license: IssuedLicense) {
        self.changed_licenses.insert(license.license_id);
        self.licenses.insert(license.license_id, license);
    }
}

/// Everything the policy knows of these subscriptions, in four statements.
pub(super) async fn load(
    conn: &mut PgConnection,
    subscription_ids: &[String],
) -> Result<HashMap<String, Known>, sqlx::Error> {
    let mut known: HashMap<String, Known> = subscription_ids
        .iter()
        .map(|id| (id.clone(), Known::default()))
        .collect();
    if subscription_ids.is_empty() {
        return Ok(known);
    }
    let subscriptions: Vec<(String, Uuid, String)> = sqlx::query_as(
        "SELECT subscription_id, member_id, status FROM policy_license_subscriptions
         WHERE subscription_id = ANY($1)",
    )
    .bind(subscription_ids)
    .fetch_all(&mut *conn)
    .await?;
    for (id, member_id, status) in subscriptions {
        if let Some(k) = known.get_mut(&id) {
            k.subscription = Some((member_id, status));
        }
    }
    let paid: Vec<String> = sqlx::query_scalar(
        "SELECT subscription_id FROM policy_license_paid_subscriptions WHERE subscription_id = ANY($1)",
    )
    .bind(subscription_ids)
    .fetch_all(&mut *conn)
    .await?;
    for id in paid {
        if let Some(k) = known.get_mut(&id) {
            k.paid = true;
        }
    }
    let items: Vec<Item> = sqlx::query_as(
        "SELECT subscription_id, item_id, purchase_type, site, quantity, removed,
                license_purchase_id, product_id
         FROM policy_license_items WHERE subscription_id = ANY($1)",
    )
    .bind(subscription_ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut item_subscription: HashMap<String, String> = HashMap::new();
    for item in items {
        item_subscription.insert(item.item_id.clone(), item.subscription_id.clone());
        if let Some(k) = known.get_mut(&item.subscription_id) {
            k.items.insert(item.item_id.clone(), item);
        }
    }
    let licenses: Vec<IssuedLicense> = sqlx::query_as(
        "SELECT l.license_id, l.item_id, l.seat, l.active
         FROM policy_licenses l JOIN policy_license_items i USING (item_id)
         WHERE i.subscription_id = ANY($1)",
    )
    .bind(subscription_ids)
    .fetch_all(&mut *conn)
    .await?;
    for license in licenses {
        let subscription = item_subscription.get(&license.item_id);
        if let Some(k) = subscription.and_then(|id| known.get_mut(id)) {
            k.licenses.insert(license.license_id, license);
        }
    }
    Ok(known)
}

/// Writes back what the batch changed: one statement per table that changed.
pub(super) async fn store(
    conn: &mut PgConnection,
    known: &HashMap<String, Known>,
) -> Result<(), sqlx::Error> {
    let (mut sub_ids, mut members, mut statuses, mut paid) = (vec![], vec![], vec![], vec![]);
    let mut items = Vec::new();
    let mut licenses = Vec::new();
    for (id, k) in known {
        if let (true, Some((member_id, status))) = (k.changed_subscription, &k.subscription) {
            sub_ids.push(id.as_str());
            members.push(*member_id);
            statuses.push(status.as_str());
        }
        if k.changed_paid {
            paid.push(id.as_str());
        }
        items.extend(k.changed_items.iter().filter_map(|id| k.items.get(id)));
        licenses.extend(
            k.changed_licenses
                .iter()
                .filter_map(|id| k.licenses.get(id)),
        );
    }
    if !sub_ids.is_empty() {
        sqlx::query(
            "INSERT INTO policy_license_subscriptions (subscription_id, member_id, status)
             SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[])
             ON CONFLICT (subscription_id) DO UPDATE SET status = EXCLUDED.status",
        )
        .bind(&sub_ids)
        .bind(&members)
        .bind(&statuses)
        .execute(&mut *conn)
        .await?;
    }
    if !paid.is_empty() {
        sqlx::query(
            "INSERT INTO policy_license_paid_subscriptions (subscription_id)
             SELECT * FROM unnest($1::text[]) ON CONFLICT DO NOTHING",
        )
        .bind(&paid)
        .execute(&mut *conn)
        .await?;
    }
    if !items.is_empty() {
        sqlx::query(
            "INSERT INTO policy_license_items
                 (item_id, subscription_id, purchase_type, site, quantity, removed,
                  license_purchase_id, product_id)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[],
                                  $6::bool[], $7::uuid[], $8::text[])
             ON CONFLICT (item_id) DO UPDATE SET
                 purchase_type = EXCLUDED.purchase_type, site = EXCLUDED.site,
                 quantity = EXCLUDED.quantity, removed = EXCLUDED.removed",
        )
        .bind(items.iter().map(|i| i.item_id.as_str()).collect::<Vec<_>>())
        .bind(
            items
                .iter()
                .map(|i| i.subscription_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            items
                .iter()
                .map(|i| i.purchase_type.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(items.iter().map(|i| i.site.as_deref()).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.quantity).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.removed).collect::<Vec<_>>())
        .bind(
            items
                .iter()
                .map(|i| i.license_purchase_id)
                .collect::<Vec<_>>(),
        )
        .bind(
            items
                .iter()
                .map(|i| i.product_id.as_deref())
                .collect::<Vec<_>>(),
        )
        .execute(&mut *conn)
        .await?;
    }
    if !licenses.is_empty() {
        sqlx::query(
            "INSERT INTO policy_licenses (license_id, item_id, seat, active)
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::bool[])
             ON CONFLICT (license_id) DO UPDATE SET active = EXCLUDED.active",
        )
        .bind(licenses.iter().map(|l| l.license_id).collect::<Vec<_>>())
        .bind(
            licenses
                .iter()
                .map(|l| l.item_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(licenses.iter().map(|l| l.seat).collect::<Vec<_>>())
        .bind(licenses.iter().map(|l| l.active).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// One license the policy wants, and whether it should be active.
struct Wanted {
    license_id: Uuid,
    item_id: String,
    /// The item's Stripe product: its policy, if it has one, is given to a new key.
    product_id: Option<String>,
    purchase_type: PurchaseType,
    site: Option<String>,
    seat: Option<u32>,
    active: bool,
    reason: DeactivationReason,
    /// Not issued yet and not active, but issued (then deactivated) in order: see
    /// `ended_after_paying`.
    issue_inactive: bool,
}

impl Known {
    /// Brings the subscription's licenses to what its items, seats and status want, after
    /// `event`: the commands go to `plan`, what they leave to the policy's memory.
    pub(super) fn reconcile(
        &mut self,
        subscription_id: &str,
        event: &StoredEvent,
        plan: &mut Plan,
    ) {
        let Some((member_id, status)) = &self.subscription else {
            return;
        };
        let member_id = *member_id;
        let status = SubscriptionStatus::parse(status);
        let paying = status.is_some_and(SubscriptionStatus::grants_licenses);
        let inactive_reason = if status == Some(SubscriptionStatus::Canceled) {
            DeactivationReason::SubscriptionCanceled
        } else {
            DeactivationReason::SubscriptionInactive
        };
        // Canceled or unpaid is only reached after paying. Seen so, with a payment recorded,
        // but never paying here (its deletion was processed before its activation, which is
        // then stale): in order its licenses were issued and later deactivated, so they are
        // issued now, deactivated, and end where in-order delivery leaves them.
        let ended = matches!(
            status,
            Some(SubscriptionStatus::Canceled | SubscriptionStatus::Unpaid)
        );
        let ended_after_paying = ended && self.paid;
        // The highest seat issued per item.
        let mut seats_issued: HashMap<&str, i32> = HashMap::new();
        for license in self.licenses.values() {
            if let Some(seat) = license.seat {
                let issued = seats_issued.entry(&license.item_id).or_insert(seat);
                *issued = (*issued).max(seat);
            }
        }

        let mut wanted = Vec::new();
        for item in self.items.values() {
            let item_reason = if item.removed {
                DeactivationReason::ItemRemoved
            } else {
                inactive_reason
            };
            if item.purchase_type == PurchaseType::Site.as_str() {
                wanted.push(Wanted {
                    license_id: License::id_for_site(&item.item_id),
                    item_id: item.item_id.clone(),
                    product_id: item.product_id.clone(),
                    purchase_type: PurchaseType::Site,
                    site: item.site.clone(),
                    seat: None,
                    active: paying && !item.removed,
                    reason: item_reason,
                    issue_inactive: ended_after_paying,
                });
                continue;
            }
            let issued = seats_issued
                .get(item.item_id.as_str())
                .copied()
                .unwrap_or(0);
            for seat in 1..=item.quantity.max(issued) {
                let seat_u32 = u32::try_from(seat).unwrap_or(0);
                let beyond = seat > item.quantity;
                let license_id = match item.license_purchase_id {
                    Some(purchase_id) => License::id_for_purchase(purchase_id, seat_u32),
                    None => License::id_for_seat(&item.item_id, seat_u32),
                };
                wanted.push(Wanted {
                    license_id,
                    item_id: item.item_id.clone(),
                    product_id: item.product_id.clone(),
                    purchase_type: PurchaseType::Quantity,
                    site: None,
                    seat: Some(seat_u32),
                    active: paying && !item.removed && !beyond,
                    reason: if beyond && !item.removed {
                        DeactivationReason::QuantityReduced
                    } else {
                        item_reason
                    },
                    issue_inactive: ended_after_paying && !beyond,
                });
            }
        }

        let metadata = caused_by(event);
        let at = event.recorded_at;
        // An active license no longer wanted at all: a seat key of an item that turned out to
        // be a site's, whose site license replaces it.
        let wanted_ids: HashSet<Uuid> = wanted.iter().map(|w| w.license_id).collect();
        let replaced: Vec<IssuedLicense> = self
            .licenses
            .values()
            .filter(|l| l.active && !wanted_ids.contains(&l.license_id))
            .cloned()
            .collect();
        for license in replaced {
            let command = LicenseCommand::DeactivateLicense {
                reason: DeactivationReason::Replaced,
                at,
            };
            plan.push(license.license_id, Planned::Ready(command), &metadata);
            self.set_license(IssuedLicense {
                active: false,
                ..license
            });
        }
        for want in wanted {
            let license_id = want.license_id;
            match self.licenses.get(&license_id).map(|l| l.active) {
                // Issued only once it should be active (no license without payment), or, for a
                // subscription that ended after paying, issued and deactivated at once. A key a
                // license purchase reserved is activated (see `LicenseCommand::IssueLicense`).
                None if want.active || want.issue_inactive => {
                    let subscription_id = subscription_id.to_owned();
                    let (item_id, purchase_type) = (want.item_id.clone(), want.purchase_type);
                    let (site, seat) = (want.site.clone(), want.seat);
                    let issue = move |key| LicenseCommand::IssueLicense {
                        license_id,
                        key,
                        member_id,
                        subscription_id,
                        item_id,
                        purchase_type,
                        site,
                        seat,
                        at,
                    };
                    plan.push(license_id, Planned::Keyed(Box::new(issue)), &metadata);
                    // A key of a product with a policy is issued under it (at its first
                    // issue only: an operator's later change is not undone).
                    if let Some(product) = &want.product_id {
                        plan.push(
                            license_id,
                            Planned::ProductPolicy(product.clone(), at),
                            &metadata,
                        );
                    }
                    if !want.active {
                        let command = LicenseCommand::DeactivateLicense {
                            reason: want.reason,
                            at,
                        };
                        plan.push(license_id, Planned::Ready(command), &metadata);
                    }
                }
                None => continue,
                Some(active) if active == want.active => continue,
                Some(_) if want.active => {
                    let command = LicenseCommand::ReactivateLicense { at };
                    plan.push(license_id, Planned::Ready(command), &metadata);
                }
                Some(_) => {
                    let command = LicenseCommand::DeactivateLicense {
                        reason: want.reason,
                        at,
                    };
                    plan.push(license_id, Planned::Ready(command), &metadata);
                }
            }
            self.set_license(IssuedLicense {
                license_id,
                item_id: want.item_id,
                seat: want.seat.and_then(|s| i32::try_from(s).ok()),
                active: want.active,
            });
        }
    }
}
