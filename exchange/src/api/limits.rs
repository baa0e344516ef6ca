//! Rate limits of the member API, in memory, per process (GCRA, the `governor` crate).
//!
//! Two limits, both a sustained rate in requests per second plus a burst in requests:
//!
//! - **per API key** ([`RateLimits::requests_per_second`], [`RateLimits::burst`]): charged
//!   once per signed request, only after its signature and timestamp verified and its nonce
//!   was found unused, so nobody without the key's secret can spend a member's budget (not
//!   with unsigned requests, forged signatures, nor replays of a captured request). A refused
//!   request is answered `429 rate_limited` before its nonce is recorded: it ran nothing,
//!   and the very same signed request may be sent again after `Retry-After` seconds (while
//!   its timestamp is still within `max_clock_skew_secs`).
//! - **per client network** for requests that fail authentication
//!   ([`RateLimits::unauthenticated_requests_per_second`],
//!   [`RateLimits::unauthenticated_burst`]): every `401` costs its sender's network one
//!   request (an IPv4 address, or the /64 prefix of an IPv6 address: one IPv6 host usually
//!   holds a whole /64). Once the budget is spent the failing request is answered `429`
//!   instead of `401`, and every further signed-route request from that network is answered
//!   `429` *before* the key lookup and the HMAC until one request's worth has refilled; so a
//!   flood of bad requests costs at most that rate of database lookups and HMACs. Members
//!   who sign correctly are never charged here. The address is the TCP peer's; behind a
//!   reverse proxy every client shares the proxy's budget (`X-Forwarded-For` is not
//!   trusted).
//!
//! Public routes (`/healthz`, `/v1/markets`, `/v1/depth/…`) are not limited here.
//!
//! Memory stays bounded: the key limiter holds at most one entry per API key that signed a
//! valid request recently (creating keys takes the operator); the failure limiter at most
//! one per network that failed authentication recently. [`Limiter::prune`], called every
//! [`LIMITER_PRUNE_INTERVAL`] by [`super::serve`], drops every entry whose budget is full
//! again (`governor`'s `retain_recent`, indistinguishable from a fresh entry, so dropping
//! it changes no decision) and frees the space. The blocked-network map holds only networks
//! still waiting, at most [`BLOCKED_NETWORKS_MAX`]; when full, expired entries are dropped
//! first, and if none expired a new network is not recorded there (its requests are then
//! verified and refused by the failure limiter itself: still limited, only not before the
//! HMAC).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};

use super::keys::KeyId;
use crate::config::{ApiConfig, ConfigError};

/// How often [`Limiter::prune`] runs under [`super::serve`].
pub const LIMITER_PRUNE_INTERVAL: Duration = Duration::from_secs(10);
/// Most client networks remembered as blocked at once (see the module docs).
pub const BLOCKED_NETWORKS_MAX: usize = 100_000;

/// Default sustained rate per API key, in requests per second.
pub const REQUESTS_PER_SECOND_DEFAULT: u32 = 15;
/// Default burst per API key, in requests.
pub const BURST_DEFAULT: u32 = 30;
/// Default sustained rate of failed authentications per client network, in requests per
/// second.
pub const UNAUTHENTICATED_REQUESTS_PER_SECOND_DEFAULT: u32 = 5;
/// Default burst of failed authentications per client network, in requests.
pub const UNAUTHENTICATED_BURST_DEFAULT: u32 = 20;

/// The four numbers of the API's rate limits (`[api]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Sustained rate per API key, in requests per second.
    pub requests_per_second: NonZeroU32,
    /// Requests one API key may send at once after being idle (the bucket's size), in
    /// requests.
    pub burst: NonZeroU32,
    /// Sustained rate of requests failing authentication per client network, in requests
    /// per second.
    pub unauthenticated_requests_per_second: NonZeroU32,
    /// Requests failing authentication one client network may send at once, in requests.
    pub unauthenticated_burst: NonZeroU32,
}

impl RateLimits {
    /// Limits from `requests_per_second` and `burst` per key and
    /// `unauthenticated_requests_per_second` and `unauthenticated_burst` per network.
    pub fn new(
        requests_per_second: NonZeroU32,
        burst: NonZeroU32,
        unauthenticated_requests_per_second: NonZeroU32,
        unauthenticated_burst: NonZeroU32,
    ) -> Self {
        Self {
            requests_per_second,
            burst,
            unauthenticated_requests_per_second,
            unauthenticated_burst,
        }
    }
}

impl Default for RateLimits {
    /// 15 requests per second with a burst of 30 per key; 5 per second with a burst of 20
    /// failed authentications per network.
    fn default() -> Self {
        let nonzero = |value| NonZeroU32::new(value).expect("the defaults are not zero");
        Self::new(
            nonzero(REQUESTS_PER_SECOND_DEFAULT),
            nonzero(BURST_DEFAULT),
            nonzero(UNAUTHENTICATED_REQUESTS_PER_SECOND_DEFAULT),
            nonzero(UNAUTHENTICATED_BURST_DEFAULT),
        )
    }
}

impl TryFrom<&ApiConfig> for RateLimits {
    type Error = ConfigError;

    /// The limits of `[api]`.
    ///
    /// Errors: [`ConfigError::Invalid`] naming the key that is 0 (a loaded
    /// [`crate::config::Config`] was checked already).
    fn try_from(config: &ApiConfig) -> Result<Self, Self::Error> {
        let nonzero = |key: &str, value: u32| {
            NonZeroU32::new(value).ok_or_else(|| ConfigError::Invalid {
                key: format!("api.{key}"),
                reason: "must be at least 1".into(),
            })
        };
        Ok(Self::new(
            nonzero("requests_per_second", config.requests_per_second)?,
            nonzero("burst", config.burst)?,
            nonzero(
                "unauthenticated_requests_per_second",
                config.unauthenticated_requests_per_second,
            )?,
            nonzero("unauthenticated_burst", config.unauthenticated_burst)?,
        ))
    }
}

/// Where a request came from, as the failure limit counts it: an IPv4 address (also an
/// IPv4-mapped IPv6 one), the /64 prefix of an IPv6 address, or `Unknown` when the server
/// was not told the peer's address (a router served without connect info; all such
/// requests share one budget).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientNetwork {
    /// One IPv4 address.
    V4(Ipv4Addr),
    /// The upper 64 bits of an IPv6 address.
    V6Prefix(u64),
    /// No peer address known.
    Unknown,
}

impl ClientNetwork {
    /// The network of `address`.
    pub fn of(address: IpAddr) -> Self {
        match address.to_canonical() {
            IpAddr::V4(v4) => Self::V4(v4),
            IpAddr::V6(v6) => Self::V6Prefix(
                u64::try_from(v6.to_bits() >> 64).expect("the upper half of 128 bits fits"),
            ),
        }
    }
}

/// Why a request was refused, and how long until the same request would be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// How long to wait, at least.
    pub retry_after: Duration,
}

impl Refusal {
    /// [`Refusal::retry_after`] in whole seconds, rounded up, at least 1 (the value of the
    /// `Retry-After` header).
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        secs.max(1)
    }
}

/// The API's rate limiters (see the module docs). Shared by every request; thread-safe.
pub struct Limiter {
    limits: RateLimits,
    keys: DefaultKeyedRateLimiter<KeyId>,
    failures: DefaultKeyedRateLimiter<ClientNetwork>,
    /// Networks whose failure budget is spent, until when.
    blocked: Mutex<HashMap<ClientNetwork, Instant>>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("limits", &self.limits)
            .field("keys", &self.keys.len())
            .field("failures", &self.failures.len())
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// Limiters with `limits`, every budget full.
    pub fn new(limits: RateLimits) -> Self {
        let quota = |per_second, burst| Quota::per_second(per_second).allow_burst(burst);
        Self {
            limits,
            keys: DefaultKeyedRateLimiter::keyed(quota(limits.requests_per_second, limits.burst)),
            failures: DefaultKeyedRateLimiter::keyed(quota(
                limits.unauthenticated_requests_per_second,
                limits.unauthenticated_burst,
            )),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    /// The limits.
    pub fn limits(&self) -> RateLimits {
        self.limits
    }

    /// Spends one request of `key`'s budget, or says how long to wait (nothing spent).
    ///
    /// Errors: [`Refusal`] when the budget is empty.
    pub fn check_key(&self, key: &KeyId) -> Result<(), Refusal> {
        self.keys.check_key(key).map_err(|not_until| Refusal {
            retry_after: not_until.wait_time_from(self.keys.clock().now()),
        })
    }

    /// Whether `network` must wait before its next signed request is even verified, and
    /// how long.
    ///
    /// Errors: [`Refusal`] while the network's failure budget is spent.
    pub fn check_network(&self, network: ClientNetwork) -> Result<(), Refusal> {
        let now = Instant::now();
        let mut blocked = self
            .blocked
            .lock()
            .expect("no panic while holding the lock");
        match blocked.get(&network) {
            Some(until) if *until > now => Err(Refusal {
                retry_after: *until - now,
            }),
            Some(_) => {
                blocked.remove(&network);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Spends one request of `network`'s failure budget for a request that failed
    /// authentication; when there is none left the network is blocked until there is.
    ///
    /// Errors: [`Refusal`] when the budget was already empty (answer `429`, not `401`).
    pub fn record_failure(&self, network: ClientNetwork) -> Result<(), Refusal> {
        let Err(not_until) = self.failures.check_key(&network) else {
            return Ok(());
        };
        let retry_after = not_until.wait_time_from(self.failures.clock().now());
        let now = Instant::now();
        let mut blocked = self
            .blocked
            .lock()
            .expect("no panic while holding the lock");
        if blocked.len() >= BLOCKED_NETWORKS_MAX {
            blocked.retain(|_, until| *until > now);
        }
        if blocked.len() < BLOCKED_NETWORKS_MAX || blocked.contains_key(&network) {
            blocked.insert(network, now + retry_after);
        }
        Err(Refusal { retry_after })
    }

    /// Drops every entry whose budget is full again or whose block expired, and frees the
    /// space (see the module docs). Returns the entries left: `(keys, networks)`.
    pub fn prune(&self) -> (usize, usize) {
        self.keys.retain_recent();
        self.keys.shrink_to_fit();
        self.failures.retain_recent();
        self.failures.shrink_to_fit();
        let now = Instant::now();
        let mut blocked = self
            .blocked
            .lock()
            .expect("no panic while holding the lock");
        blocked.retain(|_, until| *until > now);
        blocked.shrink_to_fit();
        (self.keys.len(), self.failures.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nonzero(value: u32) -> NonZeroU32 {
        NonZeroU32::new(value).expect("not zero")
    }

    fn key(last: char) -> KeyId {
        format!("ck_{}{last}", "0".repeat(31))
            .parse()
            .expect("key id")
    }

    /// A key gets its burst, then a refusal with a positive wait; another key is unaffected.
    #[test]
    fn keys_get_their_burst_each() {
        let limiter = Limiter::new(RateLimits::new(
            nonzero(1),
            nonzero(3),
            nonzero(1),
            nonzero(1),
        ));
        for _ in 0..3 {
            assert_eq!(limiter.check_key(&key('a')), Ok(()));
        }
        let refusal = limiter.check_key(&key('a')).expect_err("burst spent");
        assert!(refusal.retry_after > Duration::ZERO);
        assert!(refusal.retry_after <= Duration::from_secs(1));
        assert_eq!(refusal.retry_after_secs(), 1);
        assert_eq!(limiter.check_key(&key('b')), Ok(()));
    }

    /// Failures block a network after its burst; other networks are unaffected; an IPv6
    /// /64 is one network.
    #[test]
    fn failures_block_the_network() {
        let limiter = Limiter::new(RateLimits::new(
            nonzero(1),
            nonzero(1),
            nonzero(1),
            nonzero(2),
        ));
        let one = ClientNetwork::of("10.0.0.1".parse().expect("ip"));
        assert_eq!(limiter.check_network(one), Ok(()));
        assert_eq!(limiter.record_failure(one), Ok(()));
        assert_eq!(limiter.record_failure(one), Ok(()));
        assert!(limiter.record_failure(one).is_err());
        assert!(limiter.check_network(one).is_err());
        let other = ClientNetwork::of("10.0.0.2".parse().expect("ip"));
        assert_eq!(limiter.check_network(other), Ok(()));
        assert_eq!(
            ClientNetwork::of("2001:db8::1".parse().expect("ip")),
            ClientNetwork::of("2001:db8::ffff:1".parse().expect("ip"))
        );
        assert_ne!(
            ClientNetwork::of("2001:db8::1".parse().expect("ip")),
            ClientNetwork::of("2001:db8:0:1::1".parse().expect("ip"))
        );
        assert_eq!(
            ClientNetwork::of("::ffff:10.0.0.1".parse().expect("ip")),
            one
        );
    }

    /// Pruning drops entries whose budget is full, and keeps the others.
    #[test]
    fn prune_drops_full_budgets_only() {
        // 1000 per second refill within a millisecond; 1 per second does not.
        let fast = Limiter::new(RateLimits::new(
            nonzero(1000),
            nonzero(1),
            nonzero(1000),
            nonzero(1),
        ));
        assert_eq!(fast.check_key(&key('a')), Ok(()));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(fast.prune(), (0, 0));
        let slow = Limiter::new(RateLimits::new(
            nonzero(1),
            nonzero(5),
            nonzero(1),
            nonzero(5),
        ));
        assert_eq!(slow.check_key(&key('a')), Ok(()));
        assert_eq!(slow.record_failure(ClientNetwork::Unknown), Ok(()));
        assert_eq!(slow.prune(), (1, 1));
    }

    /// Retry-After is whole seconds, rounded up, at least 1.
    #[test]
    fn retry_after_rounds_up() {
        let secs = |millis| {
            Refusal {
                retry_after: Duration::from_millis(millis),
            }
            .retry_after_secs()
        };
        assert_eq!(secs(0), 1);
        assert_eq!(secs(1), 1);
        assert_eq!(secs(1000), 1);
        assert_eq!(secs(1001), 2);
        assert_eq!(secs(2500), 3);
    }
}
