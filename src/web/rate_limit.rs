//! Per-address limits kept in memory (each instance counts its own): a fixed window per client
//! IP that opens at the address's first counted request. Used for dashboard sign-in failures
//! and for starting checkouts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Beyond this many addresses, windows that have ended are dropped (bounded memory under a
/// flood of addresses).
const PRUNE_ABOVE: usize = 4096;

pub struct RateLimiter {
    max: u32,
    window: Duration,
    counts: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl RateLimiter {
    /// At most `max` counted requests per address in each `window`.
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            counts: Mutex::new(HashMap::new()),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (u32, Instant)>> {
        // A panic elsewhere while holding the lock leaves counts that are still counts.
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Err(wait)` when `ip` has used up its window (`wait`: until the window ends).
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let mut counts = self.counts();
        match counts.get(&ip) {
            Some((count, since)) if since.elapsed() < self.window => {
                if *count < self.max {
                    Ok(())
                } else {
                    Err(self.window.saturating_sub(since.elapsed()))
                }
            }
            Some(_) => {
                counts.remove(&ip);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Counts one request against `ip`.
    pub fn count(&self, ip: IpAddr) {
        let mut counts = self.counts();
        let (count, _) = self.window_of(&mut counts, ip);
        *count = count.saturating_add(1);
    }

    /// [`check`](Self::check), and when allowed [`count`](Self::count), as one step under one
    /// lock: requests arriving together cannot all pass on the same last unit.
    pub fn take(&self, ip: IpAddr) -> Result<(), Duration> {
        let mut counts = self.counts();
        let (count, since) = self.window_of(&mut counts, ip);
        if *count >= self.max {
            return Err(self.window.saturating_sub(since.elapsed()));
        }
        *count += 1;
        Ok(())
    }

    /// `ip`'s count and window start, the window new when the last one ended.
    fn window_of<'a>(
        &self,
        counts: &'a mut HashMap<IpAddr, (u32, Instant)>,
        ip: IpAddr,
    ) -> (&'a mut u32, &'a mut Instant) {
        if counts.len() > PRUNE_ABOVE {
            let window = self.window;
            counts.retain(|_, (_, since)| since.elapsed() < window);
        }
        let entry = counts.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= self.window {
            *entry = (0, Instant::now());
        }
        (&mut entry.0, &mut entry.1)
    }

    /// Forgets `ip` (a successful sign-in clears its failures).
    pub fn forget(&self, ip: IpAddr) {
        self.counts().remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_max_per_window_and_a_wait() {
        let limiter = RateLimiter::new(3, Duration::from_millis(200));
        let a: IpAddr = "198.51.100.1".parse().unwrap();
        let b: IpAddr = "198.51.100.2".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.take(a).is_ok());
        }
        let wait = limiter.take(a).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(200));
        assert!(
            limiter.take(b).is_ok(),
            "another address has its own window"
        );
        std::thread::sleep(Duration::from_millis(220));
        assert!(limiter.take(a).is_ok(), "a new window");
        limiter.forget(b);
        assert!(limiter.check(b).is_ok());
    }

    #[test]
    fn check_alone_counts_nothing_and_ended_windows_are_pruned() {
        let limiter = RateLimiter::new(1, Duration::from_millis(50));
        let a: IpAddr = "198.51.100.1".parse().unwrap();
        for _ in 0..10 {
            assert!(limiter.check(a).is_ok());
        }
        limiter.count(a);
        assert!(limiter.check(a).is_err());
        for i in 0..=PRUNE_ABOVE as u32 {
            limiter.count(IpAddr::from(std::net::Ipv4Addr::from(i)));
        }
        std::thread::sleep(Duration::from_millis(60));
        limiter.count(a);
        assert_eq!(limiter.counts().len(), 1, "ended windows were dropped");
    }
}
