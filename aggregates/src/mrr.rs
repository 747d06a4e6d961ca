//! Monthly recurring revenue (MRR), in a currency's minor units. Pure integer arithmetic.
//!
//! A Stripe subscription bills in a single currency, so summing its items is sound; summing
//! subscriptions is the caller's business, per currency.

use crate::billing::{BillingInterval, Price, SubscriptionItem, SubscriptionStatus};

/// An item's amount (`unit_amount * quantity`) normalised to one month, in minor units,
/// rounded half away from zero:
///
/// - `month`: `/ interval_count`
/// - `year`: `/ (12 * interval_count)`
/// - `week`: `* 52 / (12 * interval_count)`
/// - `day`: `* 365 / (12 * interval_count)`
///
/// An `interval_count` of 0 counts as 1. Computed in `i128`; a result beyond `i64` saturates.
pub fn monthly_amount(price: &Price, quantity: u32) -> i64 {
    let count = i128::from(price.interval_count.max(1));
    let (per_year, months) = match price.interval {
        BillingInterval::Month => (1, 1),
        BillingInterval::Year => (1, 12),
        BillingInterval::Week => (52, 12),
        BillingInterval::Day => (365, 12),
    };
    let numerator = i128::from(price.unit_amount) * i128::from(quantity) * per_year;
    saturate(divide_rounding_half_away_from_zero(
        numerator,
        months * count,
    ))
}

/// A subscription's MRR: the sum of its items' [`monthly_amount`]s, or 0 when the revenue will
/// not recur.
///
/// MRR counts revenue that will recur next month. A trial has not paid yet and may never pay;
/// an `incomplete` subscription never had its first payment succeed (and `incomplete_expired`
/// never will); a `paused` one does not bill; a `canceled` one is over; and one with
/// `cancel_at_period_end` ends with the current period, so its revenue does not recur either.
/// `past_due` and `unpaid` still count: Stripe is still trying to collect and the member still
/// counts as paying.
pub fn subscription_mrr(
    status: SubscriptionStatus,
    cancel_at_period_end: bool,
    items: &[SubscriptionItem],
) -> i64 {
    let recurs = matches!(
        status,
        SubscriptionStatus::Active | SubscriptionStatus::PastDue | SubscriptionStatus::Unpaid
    );
    if !recurs || cancel_at_period_end {
        return 0;
    }
    let total: i128 = items
        .iter()
        .map(|item| i128::from(monthly_amount(&item.price, item.quantity)))
        .sum();
    saturate(total)
}

/// `numerator / denominator` rounded half away from zero; `denominator` must be positive.
fn divide_rounding_half_away_from_zero(numerator: i128, denominator: i128) -> i128 {
    let denominator = denominator.max(1);
    let magnitude = (numerator.abs() * 2 + denominator) / (denominator * 2);
    if numerator < 0 {
        -magnitude
    } else {
        magnitude
    }
}

fn saturate(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::PurchaseType;

    fn price(unit_amount: i64, interval: BillingInterval, interval_count: u32) -> Price {
        Price {
            price_id: "price_1".into(),
            product_id: Some("prod_1".into()),
            unit_amount,
            currency: "usd".into(),
            interval,
            interval_count,
        }
    }

    fn item(id: &str, price: Price, quantity: u32) -> SubscriptionItem {
        SubscriptionItem {
            item_id: id.into(),
            price,
            quantity,
            site: None,
            purchase_type: PurchaseType::Quantity,
            license_purchase_id: None,
        }
    }

    fn items() -> Vec<SubscriptionItem> {
        vec![
            item("si_1", price(1000, BillingInterval::Month, 1), 1),
            item("si_2", price(12000, BillingInterval::Year, 1), 2),
        ]
    }

    #[test]
    fn a_monthly_price_is_its_own_mrr() {
        assert_eq!(
            monthly_amount(&price(1000, BillingInterval::Month, 1), 1),
            1000
        );
    }

    #[test]
    fn a_yearly_price_is_spread_over_twelve_months() {
        assert_eq!(
            monthly_amount(&price(12000, BillingInterval::Year, 1), 1),
            1000
        );
    }

    #[test]
    fn a_weekly_price_counts_fifty_two_weeks_a_year() {
        // 1200 * 52 / 12 = 5200
        assert_eq!(
            monthly_amount(&price(1200, BillingInterval::Week, 1), 1),
            5200
        );
    }

    #[test]
    fn a_daily_price_counts_three_hundred_sixty_five_days_a_year() {
        // 120 * 365 / 12 = 3650
        assert_eq!(
            monthly_amount(&price(120, BillingInterval::Day, 1), 1),
            3650
        );
    }

    #[test]
    fn an_interval_count_divides_the_amount() {
        assert_eq!(
            monthly_amount(&price(3000, BillingInterval::Month, 3), 1),
            1000
        );
        assert_eq!(
            monthly_amount(&price(36000, BillingInterval::Year, 3), 1),
            1000
        );
    }

    #[test]
    fn quantity_multiplies_the_amount() {
        assert_eq!(
            monthly_amount(&price(1000, BillingInterval::Month, 1), 5),
            5000
        );
    }

    #[test]
    fn a_zero_interval_count_counts_as_one() {
        assert_eq!(
            monthly_amount(&price(1000, BillingInterval::Month, 0), 1),
            1000
        );
    }

    #[test]
    fn zero_quantity_or_amount_is_zero() {
        assert_eq!(
            monthly_amount(&price(1000, BillingInterval::Month, 1), 0),
            0
        );
        assert_eq!(monthly_amount(&price(0, BillingInterval::Year, 1), 3), 0);
    }

    #[test]
    fn amounts_round_half_away_from_zero() {
        // 1000 / 3 = 333.33 -> 333
        assert_eq!(
            monthly_amount(&price(1000, BillingInterval::Month, 3), 1),
            333
        );
        // 2000 / 3 = 666.67 -> 667
        assert_eq!(
            monthly_amount(&price(2000, BillingInterval::Month, 3), 1),
            667
        );
        // 6 / 12 = 0.5 -> 1
        assert_eq!(monthly_amount(&price(6, BillingInterval::Year, 1), 1), 1);
        // 5 / 12 = 0.42 -> 0
        assert_eq!(monthly_amount(&price(5, BillingInterval::Year, 1), 1), 0);
        // -6 / 12 = -0.5 -> -1
        assert_eq!(monthly_amount(&price(-6, BillingInterval::Year, 1), 1), -1);
    }

    #[test]
    fn huge_amounts_saturate_instead_of_overflowing() {
        let huge = price(i64::MAX, BillingInterval::Day, 1);
        assert_eq!(monthly_amount(&huge, u32::MAX), i64::MAX);
        let items = vec![item("si_1", huge.clone(), 1), item("si_2", huge, 1)];
        assert_eq!(
            subscription_mrr(SubscriptionStatus::Active, false, &items),
            i64::MAX
        );
    }

    #[test]
    fn an_active_subscription_sums_its_items() {
        assert_eq!(
            subscription_mrr(SubscriptionStatus::Active, false, &items()),
            3000
        );
    }

    #[test]
    fn past_due_and_unpaid_subscriptions_still_count() {
        assert_eq!(
            subscription_mrr(SubscriptionStatus::PastDue, false, &items()),
            3000
        );
        assert_eq!(
            subscription_mrr(SubscriptionStatus::Unpaid, false, &items()),
            3000
        );
    }

    #[test]
    fn subscriptions_whose_revenue_does_not_recur_count_zero() {
        for status in [
            SubscriptionStatus::Trialing,
            SubscriptionStatus::Incomplete,
            SubscriptionStatus::IncompleteExpired,
            SubscriptionStatus::Canceled,
            SubscriptionStatus::Paused,
        ] {
            assert_eq!(subscription_mrr(status, false, &items()), 0, "{status:?}");
        }
    }

    #[test]
    fn a_subscription_canceling_at_period_end_counts_zero() {
        assert_eq!(
            subscription_mrr(SubscriptionStatus::Active, true, &items()),
            0
        );
    }

    #[test]
    fn a_subscription_without_items_counts_zero() {
        assert_eq!(subscription_mrr(SubscriptionStatus::Active, false, &[]), 0);
    }
}
