//! What time it is for the scheduler: the system clock in production, a clock tests set by hand.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};

/// UTC milliseconds now, and a way to wait until a given time.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
    /// Resolves once `now_ms() >= at_ms`.
    fn sleep_until(&self, at_ms: i64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The machine's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::store::now_millis()
    }

    fn sleep_until(&self, at_ms: i64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let wait = at_ms.saturating_sub(self.now_ms()).max(0) as u64;
        Box::pin(tokio::time::sleep(std::time::Duration::from_millis(wait)))
    }
}

/// A clock that moves only when told to (tests); sleepers wake when it reaches their time.
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicI64,
    moved: tokio::sync::watch::Sender<i64>,
}

impl ManualClock {
    pub fn new(start_ms: i64) -> Self {
        Self { now: AtomicI64::new(start_ms), moved: tokio::sync::watch::Sender::new(start_ms) }
    }

    pub fn set(&self, ms: i64) {
        self.now.store(ms, Ordering::SeqCst);
        self.moved.send_replace(ms);
    }

    pub fn advance(&self, by: std::time::Duration) {
        self.set(self.now_ms() + by.as_millis() as i64);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }

    fn sleep_until(&self, at_ms: i64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let mut rx = self.moved.subscribe();
        Box::pin(async move {
            while self.now_ms() < at_ms {
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
    }
}
