//! Per-address limits kept in memory (each instance counts its own): a fixed window per client
//! that opens at its first counted request. Used for dashboard sign-in attempts and for starting
//! checkouts. A client is an IPv4 address, or an IPv6 /64 (one host usually holds a whole /64,
//! so per-address IPv6 limits would limit nothing); both users of the limiter get this rule.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Beyond this many clients, windows that have ended are dropped (bounded memory under a flood
/// of addresses).
const PRUNE_ABOVE: usize = 4096;

pub struct RateLimiter {
    max: u32,
    window: Duration,
    counts: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// The client an address belongs to: IPv4 (also written IPv4-mapped) as is, IPv6 by its /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

impl RateLimiter {
    /// At most `max` counted requests per client in each `window`.
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

    /// `Err(wait)` when `ip`'s client has used up its window (`wait`: until the window ends).
    /// Counts nothing: a caller that goes on must [`take`](Self::take) instead, or two callers
    /// may both pass the check of the last slot.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let mut counts = self.counts();
        let key = client_key(ip);
        match counts.get(&key) {
            Some((count, since)) if since.elapsed() < self.window => {
                if *count < self.max {
                    Ok(())
                } else {
                    Err(self.window.saturating_sub(since.elapsed()))
                }
            }
            Some(_) => {
                counts.remove(&key);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Counts one request against `ip`'s client, allowed or not.
    pub fn count(&self, ip: IpAddr) {
        let _ = self.slot(ip, true);
    }

    /// Takes one of the client's slots if one is left: checked and counted under one lock, so
    /// however many requests arrive at once, at most `max` get through per window.
    pub fn take(&self, ip: IpAddr) -> Result<(), Duration> {
        self.slot(ip, false)
    }

    /// Counts one request unless the window is used up (`always`: count it even then).
    fn slot(&self, ip: IpAddr, always: bool) -> Result<(), Duration> {
        let mut counts = self.counts();
        if counts.len() > PRUNE_ABOVE {
            let window = self.window;
            counts.retain(|_, (_, since)| since.elapsed() < window);
        }
        let entry = counts.entry(client_key(ip)).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= self.window {
            *entry = (0, Instant::now());
        }
        let full = entry.0 >= self.max;
        if !full || always {
            entry.0 = entry.0.saturating_add(1);
        }
        if full {
            Err(self.window.saturating_sub(entry.1.elapsed()))
        } else {
            Ok(())
        }
    }

    /// Forgets `ip`'s client (a successful sign-in clears its failures).
    pub fn forget(&self, ip: IpAddr) {
        self.counts().remove(&client_key(ip));
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

    #[test]
    fn parallel_takes_get_exactly_max_slots() {
        let limiter = std::sync::Arc::new(RateLimiter::new(5, Duration::from_secs(60)));
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(20));
        let handles: Vec<_> = (0..20)
            .map(|_| {
                let (limiter, barrier) = (limiter.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    limiter.take(ip).is_ok()
                })
            })
            .collect();
        let passed = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|ok| *ok)
            .count();
        assert_eq!(passed, 5);
    }

    #[test]
    fn ipv6_is_limited_per_64_and_ipv4_per_address() {
        let limiter = RateLimiter::new(2, Duration::from_secs(60));
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(limiter.take(a).is_ok() && limiter.take(b).is_ok());
        assert!(limiter.take(a).is_err(), "one /64 shares the window");
        assert!(limiter.take(other_64).is_ok(), "the next /64 has its own");
        let v4: IpAddr = "198.51.100.1".parse().unwrap();
        let v4_next: IpAddr = "198.51.100.2".parse().unwrap();
        let v4_mapped: IpAddr = "::ffff:198.51.100.1".parse().unwrap();
        assert!(limiter.take(v4).is_ok() && limiter.take(v4_mapped).is_ok());
        assert!(limiter.take(v4).is_err(), "IPv4-mapped is the same address");
        assert!(limiter.take(v4_next).is_ok(), "IPv4 is limited per address");
        limiter.forget(b);
        assert!(
            limiter.take(a).is_ok(),
            "forgetting one address frees its /64"
        );
    }
}
