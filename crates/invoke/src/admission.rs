//! Admission: the account's concurrency limit, functions' reserved concurrency, and the
//! per-function scaling rate (docs/lambda-contract.md §6).
//!
//! Concurrency is invocations in flight. A function with reserved concurrency R may have at
//! most R in flight and never competes with others for them; every other function shares what
//! the account limit leaves unreserved. New environments are started at most at the scaling
//! rate (a token bucket: 1,000 per 10 s by default, refilled continuously, not accumulated
//! beyond its size).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use model::{LambdaError, ThrottleReason};

/// Account-wide counters.
#[derive(Debug)]
pub struct Account {
    pub limit: usize,
    /// Sum of every function's reserved concurrency.
    pub reserved_sum: AtomicUsize,
    /// Invocations in flight of functions without a reservation.
    pub unreserved_in_flight: AtomicUsize,
    /// In a cluster, this node's share of the unreserved concurrency (the nodes' grants never
    /// add up to more than the account's); unlimited outside a cluster.
    pub grant: AtomicUsize,
    /// The most unreserved invocations in flight since the grant was last renewed, and how
    /// many were refused for the grant meanwhile: what the next request for a grant asks.
    pub peak: AtomicUsize,
    pub refused: AtomicUsize,
}

impl Account {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            reserved_sum: AtomicUsize::new(0),
            unreserved_in_flight: AtomicUsize::new(0),
            grant: AtomicUsize::new(usize::MAX),
            peak: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
        }
    }

    /// What the account leaves to functions without a reservation.
    pub fn unreserved(&self) -> usize {
        self.limit.saturating_sub(self.reserved_sum.load(Ordering::Acquire))
    }

    /// What this node may run of it (its grant, in a cluster).
    fn admissible(&self) -> usize {
        self.unreserved().min(self.grant.load(Ordering::Acquire))
    }
}

/// Takes one unit of `counter` if it is below `limit`.
fn take(counter: &AtomicUsize, limit: usize) -> bool {
    let mut cur = counter.load(Ordering::Acquire);
    loop {
        if cur >= limit {
            return false;
        }
        match counter.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return true,
            Err(now) => cur = now,
        }
    }
}

/// A function's concurrency counters.
#[derive(Debug, Default)]
pub struct FunctionConcurrency {
    pub in_flight: AtomicUsize,
}

/// One admitted invocation; dropping it gives the concurrency back.
#[derive(Debug)]
pub struct Permit {
    function: Arc<FunctionConcurrency>,
    account: Option<Arc<Account>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.function.in_flight.fetch_sub(1, Ordering::AcqRel);
        if let Some(a) = &self.account {
            a.unreserved_in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Admits one invocation of a function with reservation `reserved`, or says why not.
pub fn admit(
    account: &Arc<Account>,
    function: &Arc<FunctionConcurrency>,
    reserved: Option<u32>,
) -> Result<Permit, LambdaError> {
    match reserved {
        Some(r) => {
            if !take(&function.in_flight, r as usize) {
                return Err(LambdaError::throttled(ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded));
            }
            Ok(Permit { function: function.clone(), account: None })
        }
        None => {
            if !take(&account.unreserved_in_flight, account.admissible()) {
                account.refused.fetch_add(1, Ordering::AcqRel);
                return Err(LambdaError::throttled(ThrottleReason::ConcurrentInvocationLimitExceeded));
            }
            account.peak.fetch_max(account.unreserved_in_flight.load(Ordering::Acquire), Ordering::AcqRel);
            function.in_flight.fetch_add(1, Ordering::AcqRel);
            Ok(Permit { function: function.clone(), account: Some(account.clone()) })
        }
    }
}

/// A token bucket for starting environments.
#[derive(Debug)]
pub struct ScalingRate {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    at: Instant,
}

impl ScalingRate {
    /// `burst` new environments, refilled at `burst` per `window`.
    pub fn new(burst: u32, window: Duration) -> Self {
        let capacity = f64::from(burst.max(1));
        Self { capacity, per_second: capacity / window.as_secs_f64().max(0.001), tokens: capacity, at: Instant::now() }
    }

    /// Takes a token if one is left.
    pub fn try_start(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.per_second).min(self.capacity);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::ErrorCode;

    #[test]
    fn reserved_functions_have_their_own_limit() {
        let account = Arc::new(Account::new(10));
        account.reserved_sum.store(3, Ordering::Release);
        let f = Arc::new(FunctionConcurrency::default());
        let a = admit(&account, &f, Some(2)).unwrap();
        let _b = admit(&account, &f, Some(2)).unwrap();
        let err = admit(&account, &f, Some(2)).unwrap_err();
        assert_eq!(err.reason, Some(ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded));
        drop(a);
        assert!(admit(&account, &f, Some(2)).is_ok(), "a finished invocation gives its unit back");
        assert_eq!(account.unreserved_in_flight.load(Ordering::Acquire), 0);
        let zero = Arc::new(FunctionConcurrency::default());
        assert_eq!(admit(&account, &zero, Some(0)).unwrap_err().code, ErrorCode::TooManyRequests);
    }

    #[test]
    fn unreserved_functions_share_what_is_left() {
        let account = Arc::new(Account::new(5));
        account.reserved_sum.store(3, Ordering::Release);
        let (f, g) = (Arc::new(FunctionConcurrency::default()), Arc::new(FunctionConcurrency::default()));
        let _p1 = admit(&account, &f, None).unwrap();
        let _p2 = admit(&account, &g, None).unwrap();
        let err = admit(&account, &f, None).unwrap_err();
        assert_eq!(err.reason, Some(ThrottleReason::ConcurrentInvocationLimitExceeded));
    }

    #[test]
    fn a_grant_bounds_what_this_node_admits_and_records_the_demand() {
        let account = Arc::new(Account::new(100));
        account.grant.store(2, Ordering::Release);
        let f = Arc::new(FunctionConcurrency::default());
        let _p1 = admit(&account, &f, None).unwrap();
        let _p2 = admit(&account, &f, None).unwrap();
        assert!(admit(&account, &f, None).is_err(), "over the grant, under the account's limit");
        assert_eq!(account.peak.load(Ordering::Acquire), 2);
        assert_eq!(account.refused.load(Ordering::Acquire), 1);
        assert_eq!(account.unreserved(), 100, "the account's own figure is unchanged");
    }

    #[test]
    fn scaling_rate_refills_over_time() {
        let mut r = ScalingRate::new(2, Duration::from_millis(100));
        assert!(r.try_start() && r.try_start());
        assert!(!r.try_start(), "burst spent");
        std::thread::sleep(Duration::from_millis(60));
        assert!(r.try_start(), "refilled");
    }
}
