//! The circuit breaker in front of Redis: after a failure, callers skip Redis
//! (and use their per-node fallback) for a cooldown, then one caller probes.
//!
//! Without it every request waited out each Redis call's own timeout — about
//! six calls per chat message — so a hung Redis made every message some
//! thirty times slower. A pure state machine over the caller's clock, so it
//! is tested without a runtime.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    /// Skipping Redis until then.
    Open {
        until: Instant,
    },
    /// One caller is probing; the others keep skipping until then.
    Probing {
        until: Instant,
    },
}

#[derive(Debug)]
pub struct Breaker {
    cooldown: Duration,
    state: Mutex<State>,
}

impl Breaker {
    pub fn new(cooldown: Duration) -> Self {
        Self {
            cooldown,
            state: Mutex::new(State::Closed),
        }
    }

    /// Whether a call may go to Redis now.
    pub fn allow(&self) -> bool {
        self.allow_at(Instant::now())
    }

    pub fn allow_at(&self, now: Instant) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return true;
        };
        match *s {
            State::Closed => true,
            State::Open { until } | State::Probing { until } if now < until => false,
            // The cooldown is over (or a probe never came back): this caller probes.
            State::Open { .. } | State::Probing { .. } => {
                *s = State::Probing {
                    until: now + self.cooldown,
                };
                true
            }
        }
    }

    /// A call failed; answers true when this opened the breaker.
    pub fn failed(&self) -> bool {
        self.failed_at(Instant::now())
    }

    pub fn failed_at(&self, now: Instant) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        let was_closed = *s == State::Closed;
        *s = State::Open {
            until: now + self.cooldown,
        };
        was_closed
    }

    /// A call succeeded; answers true when this closed the breaker.
    pub fn succeeded(&self) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        let was_open = *s != State::Closed;
        *s = State::Closed;
        was_open
    }

    /// True while Redis is being skipped or probed.
    pub fn is_open(&self) -> bool {
        self.state.lock().is_ok_and(|s| *s != State::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_allows_everything() {
        let b = Breaker::new(Duration::from_secs(2));
        assert!(b.allow() && b.allow());
        assert!(!b.is_open());
    }

    #[test]
    fn a_failure_skips_until_the_cooldown_then_one_probe() {
        let b = Breaker::new(Duration::from_secs(2));
        let t0 = Instant::now();
        assert!(b.failed_at(t0), "the first failure opens");
        assert!(!b.failed_at(t0), "a second does not open again");
        assert!(!b.allow_at(t0 + Duration::from_secs(1)));
        let later = t0 + Duration::from_secs(3);
        assert!(b.allow_at(later), "one probe after the cooldown");
        assert!(
            !b.allow_at(later),
            "the others keep skipping while it probes"
        );
        assert!(b.succeeded(), "its success closes");
        assert!(b.allow_at(later));
        assert!(!b.succeeded(), "already closed");
    }

    #[test]
    fn a_failed_probe_reopens_and_a_lost_one_is_retried() {
        let b = Breaker::new(Duration::from_secs(2));
        let t0 = Instant::now();
        b.failed_at(t0);
        assert!(b.allow_at(t0 + Duration::from_secs(2)));
        b.failed_at(t0 + Duration::from_secs(3));
        assert!(!b.allow_at(t0 + Duration::from_secs(4)));
        // A probe that never reports back does not hold the breaker forever.
        assert!(b.allow_at(t0 + Duration::from_secs(5)));
        assert!(b.allow_at(t0 + Duration::from_secs(8)));
        assert!(b.is_open());
    }
}
