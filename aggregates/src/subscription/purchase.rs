//! Purchases adding sites or license seats to a subscription, paid through a payment-mode
//! Checkout Session: pending until completed (paid) or expired, each once.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Subscription, SubscriptionEvent};

/// A purchase adding to the subscription, paid through a payment-mode Checkout Session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Purchase {
    pub session_id: String,
    /// `Some` for license seats, `None` for sites.
    pub license_purchase_id: Option<Uuid>,
    pub state: PurchaseState,
}

impl Purchase {
    /// The event ending this pending purchase: completed (paid) or expired.
    pub(super) fn ended(&self, state: PurchaseState, at: DateTime<Utc>) -> SubscriptionEvent {
        let session_id = self.session_id.clone();
        match (self.license_purchase_id, state) {
            (None, PurchaseState::Completed) => SubscriptionEvent::SitePurchaseCompleted {
                session_id,
                completed_at: at,
            },
            (None, _) => SubscriptionEvent::SitePurchaseExpired {
                session_id,
                expired_at: at,
            },
            (Some(purchase_id), PurchaseState::Completed) => {
                SubscriptionEvent::LicensePurchaseCompleted {
                    purchase_id,
                    session_id,
                    completed_at: at,
                }
            }
            (Some(purchase_id), _) => SubscriptionEvent::LicensePurchaseExpired {
                purchase_id,
                session_id,
                expired_at: at,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PurchaseState {
    Pending,
    Completed,
    Expired,
}

impl Subscription {
    pub(super) fn pending_purchase(&self, purchase: &str) -> Option<&Purchase> {
        self.purchases
            .get(purchase)
            .filter(|p| p.state == PurchaseState::Pending)
    }

    /// Ends the site purchase of `session_id` (its events name the session only).
    pub(super) fn end_purchase(&mut self, session_id: &str, state: PurchaseState) {
        if let Some(p) = self
            .purchases
            .values_mut()
            .find(|p| p.session_id == session_id && p.license_purchase_id.is_none())
        {
            p.state = state;
        }
    }
}
