//! The per-socket budget of `subscribe` frames: a pure fixed-window counter,
//! so a client cannot make the node replay from Postgres without bound.

use std::time::{Duration, Instant};

/// `subscribe` frames allowed per socket per minute (each one replays from
/// Postgres); a fixed window, reset each minute.
pub(super) struct SubscribeBudget {
    pub(super) per_minute: u32,
    window_start: Instant,
    used: u32,
}

impl SubscribeBudget {
    pub(super) fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            window_start: Instant::now(),
            used: 0,
        }
    }

    /// Takes one; `Err(wait)` when the window is spent.
    pub(super) fn take(&mut self) -> Result<(), Duration> {
        let window = Duration::from_secs(60);
        let elapsed = self.window_start.elapsed();
        if elapsed >= window {
            self.window_start = Instant::now();
            self.used = 0;
        }
        if self.used >= self.per_minute {
            return Err(window.saturating_sub(elapsed));
        }
        self.used += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spent_window_refuses_with_the_wait_until_it_resets() {
        let mut budget = SubscribeBudget::new(2);
        assert_eq!(budget.take(), Ok(()));
        assert_eq!(budget.take(), Ok(()));
        let wait = budget.take().expect_err("the third subscribe in a minute");
        assert!(
            wait <= Duration::from_secs(60) && wait > Duration::from_secs(50),
            "{wait:?}"
        );
        // A window that has run out starts again.
        budget.window_start = Instant::now()
            .checked_sub(Duration::from_secs(61))
            .expect("the clock is past a minute");
        assert_eq!(budget.take(), Ok(()));
    }
}
