//! A connection's channel receivers, polled together (what mini-redis does with a
//! `StreamMap` of broadcast streams), without another dependency.
//!
//! Each receiver's `recv` future is kept boxed in a [`ReusableBoxFuture`], so polling
//! is allocation-free and a result is never lost: a finished future is replaced by the
//! next `recv` in the same poll that hands its value out.

use std::borrow::Borrow;
use std::future::poll_fn;
use std::task::{Context, Poll};

use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::ReusableBoxFuture;

type Recv<T> = (Result<T, RecvError>, broadcast::Receiver<T>);

async fn recv<T: Clone>(mut rx: broadcast::Receiver<T>) -> Recv<T> {
    let r = rx.recv().await;
    (r, rx)
}

struct Sub<K, T> {
    key: K,
    fut: ReusableBoxFuture<'static, Recv<T>>,
}

/// Broadcast receivers by key (e.g. a channel name), polled fairly (round robin).
pub struct Subscriptions<K, T> {
    subs: Vec<Sub<K, T>>,
    next: usize,
}

impl<K, T> Default for Subscriptions<K, T> {
    fn default() -> Self {
        Subscriptions {
            subs: Vec::new(),
            next: 0,
        }
    }
}

impl<K: Borrow<str> + Clone, T: Clone + Send + 'static> Subscriptions<K, T> {
    /// Adds (or replaces) the receiver under `key`.
    pub fn insert(&mut self, key: K, rx: broadcast::Receiver<T>) {
        self.remove(key.borrow());
        self.subs.push(Sub {
            key,
            fut: ReusableBoxFuture::new(recv(rx)),
        });
    }

    /// Drops the receiver under `key`; whether there was one.
    pub fn remove(&mut self, key: &str) -> bool {
        let before = self.subs.len();
        self.subs.retain(|s| s.key.borrow() != key);
        before != self.subs.len()
    }

    /// Whether `key` is subscribed.
    pub fn contains(&self, key: &str) -> bool {
        self.subs.iter().any(|s| s.key.borrow() == key)
    }

    /// Number of receivers.
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// The keys, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.subs.iter().map(|s| s.key.borrow())
    }

    /// The next value (or lag report) of any receiver. A closed channel's receiver is
    /// dropped. Pending forever while there are none.
    ///
    /// # Cancel safety
    /// Cancel-safe: nothing is taken from a receiver unless it is returned.
    pub async fn next(&mut self) -> (K, Result<T, RecvError>) {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    /// [`Subscriptions::next`] as a poll function.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<(K, Result<T, RecvError>)> {
        // Every receiver is polled before `Pending` is returned, so each has a waker.
        let len = self.subs.len();
        let mut closed = Vec::new();
        let mut ready = None;
        for k in 0..len {
            let idx = (self.next + k) % len;
            match self.subs[idx].fut.poll(cx) {
                Poll::Pending => {}
                // A finished future must not be polled again: the receiver goes.
                Poll::Ready((Err(RecvError::Closed), _)) => closed.push(idx),
                Poll::Ready((result, rx)) => {
                    self.subs[idx].fut.set(recv(rx));
                    self.next = idx + 1;
                    ready = Some((self.subs[idx].key.clone(), result));
                    break;
                }
            }
        }
        closed.sort_unstable();
        for idx in closed.into_iter().rev() {
            self.subs.remove(idx);
        }
        match ready {
            Some(r) => Poll::Ready(r),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn values_lag_and_closed_channels() {
        let (a_tx, a_rx) = broadcast::channel(2);
        let (b_tx, b_rx) = broadcast::channel(2);
        let mut subs = Subscriptions::<String, _>::default();
        subs.insert("a".into(), a_rx);
        subs.insert("b".into(), b_rx);
        b_tx.send(1).unwrap();
        assert_eq!(subs.next().await, ("b".into(), Ok(1)));
        for v in 10..15 {
            a_tx.send(v).unwrap();
        }
        assert_eq!(subs.next().await, ("a".into(), Err(RecvError::Lagged(3))));
        assert_eq!(subs.next().await, ("a".into(), Ok(13)));
        assert_eq!(subs.next().await, ("a".into(), Ok(14)));
        drop(b_tx);
        let quiet = std::time::Duration::from_millis(20);
        assert!(tokio::time::timeout(quiet, subs.next()).await.is_err());
        assert!(!subs.contains("b"), "closed receivers are dropped");
        a_tx.send(20).unwrap();
        assert_eq!(subs.next().await, ("a".into(), Ok(20)));
        assert!(subs.remove("a"));
        assert!(subs.is_empty());
        assert!(
            tokio::time::timeout(quiet, subs.next()).await.is_err(),
            "no receivers: pending"
        );
    }

    #[tokio::test]
    async fn every_receiver_gets_a_turn() {
        let (a_tx, a_rx) = broadcast::channel(64);
        let (b_tx, b_rx) = broadcast::channel(64);
        let mut subs = Subscriptions::<String, _>::default();
        subs.insert("a".into(), a_rx);
        subs.insert("b".into(), b_rx);
        for v in 0..10 {
            a_tx.send(v).unwrap();
            b_tx.send(v).unwrap();
        }
        let mut first_four = Vec::new();
        for _ in 0..4 {
            first_four.push(subs.next().await.0);
        }
        assert_eq!(first_four.iter().filter(|k| *k == "a").count(), 2);
    }
}
