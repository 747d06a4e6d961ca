//! Monthly recurring revenue (MRR), in a currency's minor units. Pure integer arithmetic.
//!
//! A Stripe subscription bills in a single currency, so summing its items is sound; summing
//! subscriptions is the caller's business, per currency.

use crate::billing::{
    BillingInterval, Discount, DiscountOff, Price, SubscriptionItem, SubscriptionStatus,
};

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
    let period = i128::from(price.unit_amount) * i128::from(quantity);
    saturate(per_month(period, price.interval, price.interval_count, 1))
}

/// `period_amount / scale` (an amount billed each `interval_count` `interval`s) normalised
/// to one month as [`monthly_amount`] does, with a single rounding at the end.
fn per_month(
    period_amount: i128,
    interval: BillingInterval,
    interval_count: u32,
    scale: i128,
) -> i128 {
    let count = i128::from(interval_count.max(1));
    let (per_year, months) = match interval {
        BillingInterval::Month => (1, 1),
        BillingInterval::Year => (1, 12),
        BillingInterval::Week => (52, 12),
        BillingInterval::Day => (365, 12),
    };
    divide_rounding_half_away_from_zero(period_amount * per_year, months * count * scale.max(1))
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
    if !recurs(status, cancel_at_period_end) {
        return 0;
    }
    let total: i128 = items
        .iter()
        .map(|item| i128::from(monthly_amount(&item.price, item.quantity)))
        .sum();
    saturate(total)
}

/// A subscription's MRR with the discounts in force on it: [`subscription_mrr`] when there
/// are none, else the discounted amount of each invoice normalised to a month.
///
/// A Stripe discount applies to the whole invoice, each billing period: a percentage takes
/// `amount * (100 - p) / 100`, an amount off `max(0, amount - off)` of the period's total
/// (an amount off in another currency than the items' is not applied; Stripe refuses it).
/// Several discounts apply one after the other, in the order given. The discounted period
/// amount is then normalised to a month as [`monthly_amount`] normalises a price (a yearly
/// price's discounted amount divided by 12), rounded once, half away from zero: the arithmetic
/// Ghost's MRR uses for an offer (`amount * (100 - discount) / 100`, or `amount - discount`,
/// then `/ 12` for a year), in integers.
///
/// The items of a Stripe subscription share one interval; were they not, each group of items
/// sharing one would be discounted apart (the amount off taken from the first group by item
/// order).
pub fn discounted_mrr(
    status: SubscriptionStatus,
    cancel_at_period_end: bool,
    items: &[SubscriptionItem],
    discounts: &[Discount],
) -> i64 {
    if discounts.is_empty() {
        return subscription_mrr(status, cancel_at_period_end, items);
    }
    if !recurs(status, cancel_at_period_end) {
        return 0;
    }
    // Items grouped by (interval, interval_count), in item order.
    let mut groups: Vec<((BillingInterval, u32), i128, &str)> = Vec::new();
    for item in items {
        let key = (item.price.interval, item.price.interval_count.max(1));
        let amount = i128::from(item.price.unit_amount) * i128::from(item.quantity);
        match groups.iter_mut().find(|(k, _, _)| *k == key) {
            Some((_, total, _)) => *total += amount,
            None => groups.push((key, amount, item.price.currency.as_str())),
        }
    }
    let mut total: i128 = 0;
    for (at, ((interval, count), period, currency)) in groups.into_iter().enumerate() {
        // The period amount as a fraction `numerator / scale`, kept exact until the end.
        let mut numerator = period;
        let mut scale: i128 = 1;
        for discount in discounts {
            match &discount.off {
                DiscountOff::PercentHundredths(p) => {
                    let kept = 10_000 - i128::from((*p).min(10_000));
                    // Exact while it fits (a handful of discounts); rounded past that.
                    match (numerator.checked_mul(kept), scale.checked_mul(10_000)) {
                        (Some(n), Some(s)) if s <= 1_000_000_000_000_000_000 => {
                            numerator = n;
                            scale = s;
                        }
                        _ => {
                            numerator = divide_rounding_half_away_from_zero(
                                numerator.saturating_mul(kept),
                                10_000,
                            );
                        }
                    }
                }
                DiscountOff::Amount {
                    amount,
                    currency: off_currency,
                } => {
                    if at == 0 && off_currency.eq_ignore_ascii_case(currency) {
                        numerator = (numerator - i128::from(*amount) * scale).max(0);
                    }
                }
            }
        }
        total += per_month(numerator, interval, count, scale);
    }
    saturate(total)
}

fn recurs(status: SubscriptionStatus, cancel_at_period_end: bool) -> bool {
    matches!(
        status,
        SubscriptionStatus::Active | SubscriptionStatus::PastDue | SubscriptionStatus::Unpaid
    ) && !cancel_at_period_end
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

    fn discount(off: DiscountOff) -> Discount {
        Discount {
            discount_id: Some("di_1".into()),
            coupon_id: Some("co_1".into()),
            off,
            duration: crate::billing::DiscountDuration::Forever,
            end: None,
        }
    }

    fn percent(p: u32) -> Discount {
        discount(DiscountOff::PercentHundredths(p * 100))
    }

    fn amount_off(amount: i64) -> Discount {
        discount(DiscountOff::Amount {
            amount,
            currency: "usd".into(),
        })
    }

    fn monthly(unit_amount: i64) -> Vec<SubscriptionItem> {
        vec![item(
            "si_1",
            price(unit_amount, BillingInterval::Month, 1),
            1,
        )]
    }

    fn yearly(unit_amount: i64) -> Vec<SubscriptionItem> {
        vec![item(
            "si_1",
            price(unit_amount, BillingInterval::Year, 1),
            1,
        )]
    }

    #[test]
    fn a_percentage_off_takes_its_share_of_the_amount() {
        let active = SubscriptionStatus::Active;
        assert_eq!(
            discounted_mrr(active, false, &monthly(500), &[percent(20)]),
            400
        );
        // 25.5 % of 1000: 745
        let odd = discount(DiscountOff::PercentHundredths(2550));
        assert_eq!(discounted_mrr(active, false, &monthly(1000), &[odd]), 745);
        assert_eq!(
            discounted_mrr(active, false, &monthly(500), &[percent(100)]),
            0
        );
    }

    #[test]
    fn an_amount_off_is_taken_from_each_period_and_never_below_zero() {
        let active = SubscriptionStatus::Active;
        assert_eq!(
            discounted_mrr(active, false, &monthly(500), &[amount_off(150)]),
            350
        );
        assert_eq!(
            discounted_mrr(active, false, &monthly(500), &[amount_off(900)]),
            0
        );
        // In another currency than the items': Stripe would refuse it; not applied.
        let euros = discount(DiscountOff::Amount {
            amount: 100,
            currency: "eur".into(),
        });
        assert_eq!(discounted_mrr(active, false, &monthly(500), &[euros]), 500);
    }

    #[test]
    fn a_yearly_price_is_discounted_then_spread_over_twelve_months_rounded_once() {
        let active = SubscriptionStatus::Active;
        // 5000 * 80 % = 4000 a year: 333.33 a month -> 333
        assert_eq!(
            discounted_mrr(active, false, &yearly(5000), &[percent(20)]),
            333
        );
        // 5000 - 1000 = 4000 a year -> 333
        assert_eq!(
            discounted_mrr(active, false, &yearly(5000), &[amount_off(1000)]),
            333
        );
        // 5000 * 85 % = 4250 a year: 354.17 -> 354
        assert_eq!(
            discounted_mrr(active, false, &yearly(5000), &[percent(15)]),
            354
        );
        // 1 * 50 % = 0.5 a year: 0.04 a month -> 0
        assert_eq!(discounted_mrr(active, false, &yearly(1), &[percent(50)]), 0);
    }

    #[test]
    fn the_discount_applies_to_the_whole_invoice_of_several_items() {
        let items = vec![
            item("si_1", price(1000, BillingInterval::Month, 1), 1),
            item("si_2", price(500, BillingInterval::Month, 1), 2),
        ];
        let active = SubscriptionStatus::Active;
        assert_eq!(discounted_mrr(active, false, &items, &[percent(10)]), 1800);
        assert_eq!(
            discounted_mrr(active, false, &items, &[amount_off(1500)]),
            500
        );
        // Stacked: 10 % off, then 300 off: 2000 * 0.9 - 300
        assert_eq!(
            discounted_mrr(active, false, &items, &[percent(10), amount_off(300)]),
            1500
        );
    }

    #[test]
    fn without_discounts_or_while_not_recurring_it_is_the_plain_mrr() {
        assert_eq!(
            discounted_mrr(SubscriptionStatus::Active, false, &items(), &[]),
            subscription_mrr(SubscriptionStatus::Active, false, &items())
        );
        for status in [SubscriptionStatus::Trialing, SubscriptionStatus::Canceled] {
            assert_eq!(
                discounted_mrr(status, false, &monthly(500), &[percent(20)]),
                0
            );
        }
        assert_eq!(
            discounted_mrr(
                SubscriptionStatus::Active,
                true,
                &monthly(500),
                &[percent(20)]
            ),
            0
        );
    }

    #[test]
    fn a_subscription_without_items_counts_zero() {
        assert_eq!(subscription_mrr(SubscriptionStatus::Active, false, &[]), 0);
    }
}
