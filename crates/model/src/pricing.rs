//! Prices, and what usage costs under them (§7.2).
//!
//! The default table is AWS's public us-east-1 price list. An operator may override any
//! figure for everyone and per account, in a JSON file:
//!
//! ```json
//! { "default":  { "free_tier": true },
//!   "accounts": { "111111111111": { "request": 0.0000001, "x86_64": { "gb_second": 0.00001 } } } }
//! ```
//!
//! Tiers and the free tier are monthly allowances, so they apply to a total (an account's
//! month); a row of a grouped report is priced at the first tier, before any free tier.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ledger::Usage;

/// A cheaper tier of duration pricing: `gb_second` applies from `from_gb_seconds` of monthly
/// cumulative use on (until the next tier).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tier {
    pub from_gb_seconds: f64,
    pub gb_second: f64,
}

/// Duration prices of one architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ArchPrices {
    /// Price of one GB-second in the first tier.
    pub gb_second: f64,
    /// Cheaper tiers after the first, in order.
    pub tiers: Vec<Tier>,
    /// Provisioned concurrency: per configured GB-second, and per GB-second used.
    pub provisioned_gb_second: f64,
    pub provisioned_duration_gb_second: f64,
}

impl ArchPrices {
    fn x86_64() -> Self {
        Self {
            gb_second: 0.000_016_666_7,
            tiers: vec![
                Tier { from_gb_seconds: 6.0e9, gb_second: 0.000_015 },
                Tier { from_gb_seconds: 15.0e9, gb_second: 0.000_013_333_4 },
            ],
            provisioned_gb_second: 0.000_004_166_7,
            provisioned_duration_gb_second: 0.000_009_722_2,
        }
    }

    fn arm64() -> Self {
        Self {
            gb_second: 0.000_013_333_4,
            tiers: vec![
                Tier { from_gb_seconds: 7.5e9, gb_second: 0.000_012_000_1 },
                Tier { from_gb_seconds: 18.75e9, gb_second: 0.000_010_666_7 },
            ],
            provisioned_gb_second: 0.000_003_333_3,
            provisioned_duration_gb_second: 0.000_007_777_8,
        }
    }

    /// The cost of a month's first `gb_seconds`.
    fn duration_cost(&self, gb_seconds: f64) -> f64 {
        let mut cost = 0.0;
        let (mut from, mut price) = (0.0, self.gb_second);
        for t in &self.tiers {
            if gb_seconds <= t.from_gb_seconds {
                break;
            }
            cost += (t.from_gb_seconds - from).max(0.0) * price;
            (from, price) = (t.from_gb_seconds.max(from), t.gb_second);
        }
        cost + (gb_seconds - from).max(0.0) * price
    }
}

impl Default for ArchPrices {
    fn default() -> Self {
        Self::x86_64()
    }
}

/// The free tier: monthly, across architectures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FreeTier {
    pub requests: i64,
    pub gb_seconds: f64,
}

impl Default for FreeTier {
    fn default() -> Self {
        Self { requests: 1_000_000, gb_seconds: 400_000.0 }
    }
}

/// A complete price table, in US dollars.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Prices {
    /// Per request.
    pub request: f64,
    pub x86_64: ArchPrices,
    pub arm64: ArchPrices,
    /// Whether the monthly free tier is deducted from totals.
    pub free_tier: bool,
    pub free_tier_allowance: FreeTier,
}

impl Default for Prices {
    /// AWS's public us-east-1 prices, without the free tier.
    fn default() -> Self {
        Self {
            request: 0.000_000_2,
            x86_64: ArchPrices::x86_64(),
            arm64: ArchPrices::arm64(),
            free_tier: false,
            free_tier_allowance: FreeTier::default(),
        }
    }
}

/// What a piece of usage costs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    pub requests_usd: f64,
    pub duration_usd: f64,
    /// Deducted for the free tier (totals only).
    pub free_tier_usd: f64,
    pub total_usd: f64,
}

impl Prices {
    pub fn arch(&self, architecture: &str) -> &ArchPrices {
        if architecture == "arm64" { &self.arm64 } else { &self.x86_64 }
    }

    /// One row of a report, at first-tier prices, before any free tier.
    pub fn row_cost(&self, u: &Usage) -> Cost {
        let requests_usd = u.requests as f64 * self.request;
        let duration_usd = u.gb_seconds() * self.arch(&u.architecture).gb_second;
        Cost { requests_usd, duration_usd, free_tier_usd: 0.0, total_usd: requests_usd + duration_usd }
    }

    /// A month's (or any period's) total: tiers by architecture, then the free tier.
    pub fn total_cost(&self, by_arch: &[Usage]) -> Cost {
        let mut cost = Cost::default();
        let (mut requests, mut gbs) = (0i64, 0.0);
        let mut free_rate = 0.0f64;
        for u in by_arch {
            let a = self.arch(&u.architecture);
            cost.requests_usd += u.requests as f64 * self.request;
            cost.duration_usd += a.duration_cost(u.gb_seconds());
            requests += u.requests;
            gbs += u.gb_seconds();
            free_rate = free_rate.max(a.gb_second);
        }
        if self.free_tier {
            let free = &self.free_tier_allowance;
            // The allowance covers the first GB-seconds used; with both architectures the
            // higher rate is credited (what AWS's bill does when x86 is used).
            cost.free_tier_usd =
                requests.min(free.requests) as f64 * self.request + gbs.min(free.gb_seconds) * free_rate;
        }
        cost.total_usd = (cost.requests_usd + cost.duration_usd - cost.free_tier_usd).max(0.0);
        cost
    }
}

/// Prices for everyone and per account, as the prices file gives them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PriceBook {
    /// Overrides of AWS's prices for every account.
    pub default: serde_json::Value,
    /// Further overrides by account id.
    pub accounts: BTreeMap<String, serde_json::Value>,
}

/// Why a prices file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid prices: {0}")]
pub struct PriceError(String);

fn merge(base: &mut serde_json::Value, over: &serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

impl PriceBook {
    /// Parses and checks a prices file (every account's table must be complete and valid).
    pub fn parse(text: &str) -> Result<Self, PriceError> {
        let book: PriceBook = serde_json::from_str(text).map_err(|e| PriceError(e.to_string()))?;
        book.prices(None)?;
        for account in book.accounts.keys() {
            if !crate::names::is_account_id(account) {
                return Err(PriceError(format!("{account:?} is not a 12-digit account id")));
            }
            book.prices(Some(account))?;
        }
        Ok(book)
    }

    /// The prices an account pays.
    pub fn prices(&self, account: Option<&str>) -> Result<Prices, PriceError> {
        let mut v = serde_json::to_value(Prices::default()).map_err(|e| PriceError(e.to_string()))?;
        if !self.default.is_null() {
            merge(&mut v, &self.default);
        }
        if let Some(o) = account.and_then(|a| self.accounts.get(a)) {
            merge(&mut v, o);
        }
        let p: Prices = serde_json::from_value(v).map_err(|e| PriceError(e.to_string()))?;
        let figures = [p.request, p.x86_64.gb_second, p.arm64.gb_second];
        if figures.iter().any(|f| !f.is_finite() || *f < 0.0) {
            return Err(PriceError("prices must be finite and not negative".into()));
        }
        Ok(p)
    }

    /// Like [`PriceBook::prices`], falling back to the defaults (the book was checked).
    pub fn for_account(&self, account: &str) -> Prices {
        self.prices(Some(account)).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(arch: &str, requests: i64, gb_seconds: f64) -> Usage {
        Usage { architecture: arch.into(), requests, mb_ms: (gb_seconds * 1024.0 * 1000.0) as i64, ..Usage::default() }
    }

    #[test]
    fn default_prices_are_aws_us_east_1() {
        let p = Prices::default();
        // 1M requests at 128 MB for 100 ms: 12,500 GB-s.
        let c = p.row_cost(&usage("x86_64", 1_000_000, 12_500.0));
        assert!((c.requests_usd - 0.20).abs() < 1e-9);
        assert!((c.duration_usd - 0.208_333_75).abs() < 1e-9, "{c:?}");
        let arm = p.row_cost(&usage("arm64", 0, 12_500.0));
        assert!((arm.duration_usd - 0.166_667_5).abs() < 1e-9, "{arm:?}");
    }

    #[test]
    fn tiers_apply_to_the_total() {
        let p = Prices::default();
        let c = p.total_cost(&[usage("x86_64", 0, 7.0e9)]);
        let expected = 6.0e9 * 0.000_016_666_7 + 1.0e9 * 0.000_015;
        assert!((c.duration_usd - expected).abs() / expected < 1e-9, "{c:?}");
    }

    #[test]
    fn free_tier_is_deducted_when_on() {
        let mut p = Prices::default();
        let u = [usage("x86_64", 2_000_000, 500_000.0)];
        let gross = p.total_cost(&u);
        p.free_tier = true;
        let net = p.total_cost(&u);
        let credit = 0.20 + 400_000.0 * 0.000_016_666_7;
        assert!((gross.total_usd - net.total_usd - credit).abs() < 1e-6, "{gross:?} {net:?}");
        assert_eq!(p.total_cost(&[usage("x86_64", 10, 1.0)]).total_usd, 0.0);
    }

    #[test]
    fn price_book_overrides_per_account() {
        let book = PriceBook::parse(
            r#"{"default":{"free_tier":true},"accounts":{"111111111111":{"request":0.000001,"arm64":{"gb_second":0.00001}}}}"#,
        )
        .unwrap();
        let a = book.for_account("111111111111");
        assert_eq!(a.request, 0.000001);
        assert_eq!(a.arm64.gb_second, 0.00001);
        assert_eq!(a.x86_64, Prices::default().x86_64);
        assert!(a.free_tier);
        assert_eq!(book.for_account("222222222222").request, Prices::default().request);
        assert!(PriceBook::parse(r#"{"accounts":{"12":{}}}"#).is_err());
        assert!(PriceBook::parse(r#"{"default":{"request":-1}}"#).is_err());
        assert!(PriceBook::parse(r#"{"defualt":{}}"#).is_err());
    }
}
