use super::*;

/// All orderings of `0..n`, deterministically.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut all = Vec::new();
    for shorter in permutations(n - 1) {
        for at in 0..=shorter.len() {
            let mut longer = shorter.clone();
            longer.insert(at, n - 1);
            all.push(longer);
        }
    }
    all
}

#[tokio::test]
async fn in_order_delivery_ends_canceled_with_the_last_items() {
    let states = lifecycle();
    let (subscription, events) = deliver(&states, &[0, 1, 2, 3, 4, 5, 6]).await;
    assert_eq!(subscription.status(), Some(S::Canceled));
    assert!(subscription.cancel_at_period_end());
    assert_eq!(subscription.canceled_at(), Some(t(400)));
    let mut last_items = states[5].0.items.clone();
    last_items.sort_by(|a, b| a.item_id.cmp(&b.item_id));
    assert_eq!(subscription.items(), &last_items[..]);
    assert_eq!(subscription.mrr(), 0);
    assert_eq!(subscription.newest_observation(), Some(&deleted_at(400)));
    // s7 came after the deletion in its second: stale.
    assert!(events
        .iter()
        .all(|e| e.observed().map(|o| o.event_id.as_str()) != Some("evt_400b")));
}

#[tokio::test]
async fn every_delivery_order_with_redeliveries_converges_on_the_in_order_state() {
    let states = lifecycle();
    let (expected, _) = deliver(&states, &[0, 1, 2, 3, 4, 5, 6]).await;
    let orders = permutations(states.len());
    assert_eq!(orders.len(), 5040);
    for (n, order) in orders.iter().enumerate() {
        // Redeliver one state at once and another at the end.
        let mut deliveries = order.clone();
        deliveries.insert(n % order.len() + 1, order[n % order.len()]);
        deliveries.push(order[(n / 7) % order.len()]);
        let (subscription, events) = deliver(&states, &deliveries).await;
        assert_eq!(subscription, expected, "delivery order {deliveries:?}");

        // The events rebuild the same state.
        let mut rebuilt = Subscription::default();
        for event in events {
            rebuilt.apply(event);
        }
        assert_eq!(rebuilt, expected, "rebuilt from {deliveries:?}");
    }
}
