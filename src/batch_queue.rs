//! A queue whose workers take everything waiting at once: what the group commits share (the
//! creations' `store::group_commit`, every append's `store::appender`, the webhook intake's
//! `stripe::inbox::intake`).
//!
//! Each worker, when free, takes whatever is queued (up to a limit) and hands it to the
//! commit function as one batch; one worker takes at a time. Nothing waits for a batch to
//! fill: on an idle server an item is taken at once, alone, and batches grow only while the
//! workers are busy. With two workers one batch is built while the other commits.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, Mutex};

/// Starts `workers` tasks that take batches of at most `max` from the returned queue and run
/// `commit` on each; they stop once the queue's sender is dropped. Needs a Tokio runtime.
/// Unbounded: each item waiting is a caller awaiting its answer, so the callers bound it.
pub fn start<T, F, Fut>(workers: usize, max: usize, commit: F) -> mpsc::UnboundedSender<T>
where
    T: Send + 'static,
    F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (queue, waiting) = mpsc::unbounded_channel();
    let waiting = Arc::new(Mutex::new(waiting));
    let commit = Arc::new(commit);
    for _ in 0..workers {
        let waiting = waiting.clone();
        let commit = commit.clone();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(max);
            loop {
                if waiting.lock().await.recv_many(&mut batch, max).await == 0 {
                    return;
                }
                commit(std::mem::take(&mut batch)).await;
            }
        });
    }
    queue
}
