//! Invoices of a subscription paid or failing, and refunds of their charges.

use aggregates::SubscriptionCommand;
use anyhow::{anyhow, Context};
use serde_json::Value;
use uuid::Uuid;

use super::read::{
    self, id_of, invoice_contact, invoice_payment_intent, invoice_subscription, text, Contact,
};
use super::{Outcome, Translator, Waiting};
use crate::store::EventMetadata;

struct InvoiceParties<'a> {
    subscription_id: &'a str,
    invoice_id: &'a str,
    member_id: Uuid,
}

impl Translator {
    /// Who an invoice concerns; `None` for an invoice that is not for a subscription.
    async fn invoice_parties<'a>(
        &self,
        invoice: &'a Value,
        metadata: &EventMetadata,
    ) -> anyhow::Result<Option<InvoiceParties<'a>>> {
        let Some(subscription_id) = invoice_subscription(invoice) else {
            if read::invoice_is_for_subscription(invoice) {
                anyhow::bail!(
                    "the invoice's billing_reason is {:?} but it names no subscription \
                     (looked in `subscription`, `parent.subscription_details.subscription` and \
                     `lines.data[].subscription`)",
                    text(&invoice["billing_reason"]).unwrap_or_default()
                );
            }
            return Ok(None);
        };
        let invoice_id = text(&invoice["id"]).context("the invoice has no id")?;
        let customer = id_of(&invoice["customer"]).context("the invoice has no customer")?;
        let member_id = self
            .member_for_customer(customer, &invoice_contact(invoice), metadata)
            .await?;
        Ok(Some(InvoiceParties {
            subscription_id,
            invoice_id,
            member_id,
        }))
    }

    pub(super) async fn invoice_paid(
        &self,
        invoice: &Value,
        created: i64,
        metadata: &EventMetadata,
    ) -> anyhow::Result<Outcome> {
        let Some(InvoiceParties {
            subscription_id,
            invoice_id,
            member_id,
        }) = self.invoice_parties(invoice, metadata).await?
        else {
            return Ok(Outcome::Ignored(
                "the invoice is not for a subscription".into(),
            ));
        };
        if let Some(intent) = invoice_payment_intent(invoice) {
            sqlx::query(
                "INSERT INTO stripe_payment_intents (payment_intent_id, invoice_id, subscription_id)
                 VALUES ($1, $2, $3) ON CONFLICT (payment_intent_id) DO NOTHING",
            )
            .bind(intent)
            .bind(invoice_id)
            .bind(subscription_id)
            .execute(&self.pool)
            .await?;
        }
        let payment = read::payment(invoice, member_id, created)?;
        self.subscriptions
            .execute(
                subscription_id,
                SubscriptionCommand::RecordPayment { payment },
                metadata.clone(),
            )
            .await
            .map_err(|e| anyhow!("recording the payment of {invoice_id}: {e}"))?;
        Ok(Outcome::Processed)
    }

    pub(super) async fn invoice_failed(
        &self,
        invoice: &Value,
        created: i64,
        metadata: &EventMetadata,
    ) -> anyhow::Result<Outcome> {
        let Some(InvoiceParties {
            subscription_id,
            invoice_id,
            member_id,
        }) = self.invoice_parties(invoice, metadata).await?
        else {
            return Ok(Outcome::Ignored(
                "the invoice is not for a subscription".into(),
            ));
        };
        let command = read::payment_failure(invoice, member_id, created)?;
        self.subscriptions
            .execute(subscription_id, command, metadata.clone())
            .await
            .map_err(|e| anyhow!("recording the failed payment of {invoice_id}: {e}"))?;
        Ok(Outcome::Processed)
    }

    pub(super) async fn charge_refunded(
        &self,
        charge: &Value,
        created: i64,
        metadata: &EventMetadata,
    ) -> anyhow::Result<Outcome> {
        let charge_id = text(&charge["id"]).context("the charge has no id")?;
        let invoice_id = id_of(&charge["invoice"]);
        let intent = id_of(&charge["payment_intent"]);
        if invoice_id.is_none() && intent.is_none() {
            return Ok(Outcome::Ignored("the charge is not for an invoice".into()));
        }
        let found: Option<(String, String)> = sqlx::query_as(
            "SELECT invoice_id, subscription_id FROM stripe_payment_intents
             WHERE payment_intent_id = $1 OR invoice_id = $2 LIMIT 1",
        )
        .bind(intent)
        .bind(invoice_id)
        .fetch_optional(&self.pool)
        .await?;
        // The invoice's own event (of the same customer) may still be on its way.
        let Some((invoice_id, subscription_id)) = found else {
            return Err(Waiting(format!(
                "no paid invoice is known yet for charge {charge_id}: waiting for the invoice's event"
            ))
            .into());
        };
        let customer = id_of(&charge["customer"]).context("the charge has no customer")?;
        let member_id = self
            .member_for_customer(customer, &Contact::default(), metadata)
            .await?;
        let command = read::refund(charge, invoice_id, member_id, created)?;
        self.subscriptions
            .execute(&subscription_id, command, metadata.clone())
            .await
            .map_err(|e| anyhow!("recording the refund of {charge_id}: {e}"))?;
        Ok(Outcome::Processed)
    }
}
