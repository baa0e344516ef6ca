//! Markets: `[markets.<name>]` tables and exact conversions between base units and the
//! matcher's integer ticks and lots.
//!
//! ```toml
//! [markets.btc_usdt]            # key: 1-32 of a-z 0-9 _ (TOML- and env-friendly)
//! base = "BTC"                  # asset symbols as in the ledger
//! quote = "USDT"
//! tick_size = "1000"            # quote base units per lot, per tick (price step)
//! lot_size = "1000"             # base units per lot (quantity step)
//! min_quantity = "10000"        # base units; a multiple of lot_size; default one lot
//! maker_fee_bps = 10            # 0..=10000
//! taker_fee_bps = 20            # 0..=10000
//! ```
//!
//! Prices: an order's `price` is the number of **quote base units paid for one lot**
//! (`lot_size` base units of the base asset); it must be a whole multiple of `tick_size`.
//! So a trade of `q` lots at `p` ticks costs exactly `p × tick_size × q` quote base units.
//! Quantities are base units and must be whole multiples of `lot_size`. Nothing is rounded:
//! an off-tick price or off-lot quantity is refused.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::ledger::AssetSymbol;

/// One checked market.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Market {
    /// The `[markets.<name>]` key, e.g. `btc_usdt`.
    pub name: String,
    /// Base asset (what is bought and sold).
    pub base: AssetSymbol,
    /// Quote asset (what prices are in).
    pub quote: AssetSymbol,
    /// Quote base units per lot per tick.
    pub tick_size: u128,
    /// Base units per lot.
    pub lot_size: u128,
    /// Smallest order, in lots.
    pub min_lots: u64,
    /// Fee of the resting side, basis points of the quote notional.
    pub maker_fee_bps: u32,
    /// Fee of the incoming side, basis points of the quote notional.
    pub taker_fee_bps: u32,
}

/// Why an amount does not convert.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// Not a decimal integer string.
    #[error("{field} {value:?} is not a positive integer of base units")]
    NotAnInteger {
        /// Which field.
        field: &'static str,
        /// The value given.
        value: String,
    },
    /// Zero.
    #[error("{field} is zero")]
    Zero {
        /// Which field.
        field: &'static str,
    },
    /// Not a whole number of steps.
    #[error("{field} {value} is not a multiple of {step}")]
    OffStep {
        /// Which field.
        field: &'static str,
        /// The value.
        value: u128,
        /// The step.
        step: u128,
    },
    /// Too many steps for the matcher's `u64`, or a product overflows `u128`.
    #[error("{field} {value} is too large")]
    TooLarge {
        /// Which field.
        field: &'static str,
        /// The value.
        value: String,
    },
}

impl Market {
    /// Parses a decimal integer of base units (no sign, no fraction, no exponent).
    ///
    /// Errors: [`ConvertError::NotAnInteger`], [`ConvertError::TooLarge`].
    pub fn parse_units(field: &'static str, value: &str) -> Result<u128, ConvertError> {
        if value.is_empty() || value.len() > 39 || !value.bytes().all(|b| b.is_ascii_digit()) {
            let too_long = value.len() > 39 && value.bytes().all(|b| b.is_ascii_digit());
            return Err(if too_long {
                ConvertError::TooLarge {
                    field,
                    value: value.to_owned(),
                }
            } else {
                ConvertError::NotAnInteger {
                    field,
                    value: value.to_owned(),
                }
            });
        }
        value.parse::<u128>().map_err(|_| ConvertError::TooLarge {
            field,
            value: value.to_owned(),
        })
    }

    /// `units` as a whole number of `step`s, refusing zero, remainders and overflow.
    fn steps(field: &'static str, units: u128, step: u128) -> Result<u64, ConvertError> {
        assert!(step > 0, "market steps are checked positive at load");
        if units == 0 {
            return Err(ConvertError::Zero { field });
        }
        if !units.is_multiple_of(step) {
            return Err(ConvertError::OffStep {
                field,
                value: units,
                step,
            });
        }
        u64::try_from(units / step).map_err(|_| ConvertError::TooLarge {
            field,
            value: units.to_string(),
        })
    }

    /// Price (quote base units per lot) → ticks.
    ///
    /// Errors: [`ConvertError`].
    pub fn price_ticks(&self, price: u128) -> Result<u64, ConvertError> {
        Self::steps("price", price, self.tick_size)
    }

    /// Quantity (base units) → lots.
    ///
    /// Errors: [`ConvertError`].
    pub fn quantity_lots(&self, quantity: u128) -> Result<u64, ConvertError> {
        Self::steps("quantity", quantity, self.lot_size)
    }

    /// Quote budget (quote base units) → matcher budget units (`ticks × lots`).
    ///
    /// Errors: [`ConvertError`].
    pub fn quote_budget(&self, quote_amount: u128) -> Result<u64, ConvertError> {
        Self::steps("quote_amount", quote_amount, self.tick_size)
    }

    /// Ticks → price in quote base units per lot.
    pub fn price_units(&self, ticks: u64) -> u128 {
        u128::from(ticks)
            .checked_mul(self.tick_size)
            .expect("a price accepted by the market fits u128")
    }

    /// Lots → base units.
    pub fn base_units(&self, lots: u64) -> u128 {
        u128::from(lots)
            .checked_mul(self.lot_size)
            .expect("a quantity accepted by the market fits u128")
    }

    /// Quote base units of `lots` at `ticks`: `ticks × tick_size × lots`, or `None` on
    /// overflow.
    pub fn notional(&self, ticks: u64, lots: u64) -> Option<u128> {
        u128::from(ticks)
            .checked_mul(u128::from(lots))?
            .checked_mul(self.tick_size)
    }

    /// Fee of `bps` basis points on `notional`, rounded down (never more than quoted).
    pub fn fee(notional: u128, bps: u32) -> u128 {
        assert!(bps <= 10_000, "fees are checked at load");
        // notional / 10000 * bps + (notional % 10000) * bps / 10000: no overflow.
        (notional / 10_000) * u128::from(bps) + (notional % 10_000) * u128::from(bps) / 10_000
    }
}

/// `[markets.<name>]` tables as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct MarketsConfig(pub BTreeMap<String, MarketConfig>);

/// One `[markets.<name>]` table as written; [`MarketsConfig::checked`] validates it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketConfig {
    /// Base asset symbol.
    pub base: String,
    /// Quote asset symbol.
    pub quote: String,
    /// Quote base units per lot per tick, decimal string (or integer).
    pub tick_size: UnitsValue,
    /// Base units per lot.
    pub lot_size: UnitsValue,
    /// Smallest order in base units (multiple of `lot_size`); default one lot.
    #[serde(default)]
    pub min_quantity: Option<UnitsValue>,
    /// Maker fee, basis points, 0 to 10000.
    #[serde(default)]
    pub maker_fee_bps: u32,
    /// Taker fee, basis points, 0 to 10000.
    #[serde(default)]
    pub taker_fee_bps: u32,
}

/// Base units written as a string (`"1000"`) or, e.g. from the environment, an integer.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum UnitsValue {
    /// `"1000"`.
    Text(String),
    /// `1000`.
    Integer(u64),
}

impl UnitsValue {
    fn text(&self) -> String {
        match self {
            Self::Text(text) => text.clone(),
            Self::Integer(value) => value.to_string(),
        }
    }
}

/// A market table that does not check out; `key` is the dotted config key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config key `{key}`: {reason}")]
pub struct MarketConfigError {
    /// Dotted key, e.g. `markets.btc_usdt.tick_size`.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl MarketsConfig {
    /// Checks every table and returns the markets by name.
    ///
    /// Errors: [`MarketConfigError`] naming the key.
    pub fn checked(&self) -> Result<BTreeMap<String, Market>, MarketConfigError> {
        let mut markets = BTreeMap::new();
        for (name, raw) in &self.0 {
            let err = |field: &str, reason: String| MarketConfigError {
                key: if field.is_empty() {
                    format!("markets.{name}")
                } else {
                    format!("markets.{name}.{field}")
                },
                reason,
            };
            let name_ok = (1..=32).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !name_ok {
                return Err(err("", "market names are 1-32 of a-z, 0-9 and _".into()));
            }
            let base: AssetSymbol = raw.base.parse().map_err(|e| err("base", format!("{e}")))?;
            let quote: AssetSymbol = raw
                .quote
                .parse()
                .map_err(|e| err("quote", format!("{e}")))?;
            if base.as_str().eq_ignore_ascii_case(quote.as_str()) {
                return Err(err("quote", "must differ from base".into()));
            }
            let positive = |field: &'static str, value: &UnitsValue| {
                let units = Market::parse_units(field, &value.text())
                    .map_err(|e| err(field, e.to_string()))?;
                if units == 0 {
                    return Err(err(field, "must be positive".into()));
                }
                Ok(units)
            };
            let tick_size = positive("tick_size", &raw.tick_size)?;
            let lot_size = positive("lot_size", &raw.lot_size)?;
            let min_lots = match &raw.min_quantity {
                None => 1,
                Some(value) => {
                    let units = positive("min_quantity", value)?;
                    if !units.is_multiple_of(lot_size) {
                        return Err(err(
                            "min_quantity",
                            format!("{units} is not a multiple of lot_size {lot_size}"),
                        ));
                    }
                    u64::try_from(units / lot_size)
                        .map_err(|_| err("min_quantity", "too large".into()))?
                }
            };
            for (field, bps) in [
                ("maker_fee_bps", raw.maker_fee_bps),
                ("taker_fee_bps", raw.taker_fee_bps),
            ] {
                if bps > 10_000 {
                    return Err(err(field, "must be 0 to 10000".into()));
                }
            }
            markets.insert(
                name.clone(),
                Market {
                    name: name.clone(),
                    base,
                    quote,
                    tick_size,
                    lot_size,
                    min_lots,
                    maker_fee_bps: raw.maker_fee_bps,
                    taker_fee_bps: raw.taker_fee_bps,
                },
            );
        }
        Ok(markets)
    }
}

/// A `btc_usdt` market for unit tests: tick 100 USDT base units, lot 1,000 BTC base units,
/// fees 10 / 20 basis points.
#[cfg(test)]
pub(crate) fn sample_market() -> Market {
    Market {
        name: "btc_usdt".into(),
        base: "BTC".parse().expect("symbol"),
        quote: "USDT".parse().expect("symbol"),
        tick_size: 100,
        lot_size: 1_000,
        min_lots: 1,
        maker_fee_bps: 10,
        taker_fee_bps: 20,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Off-step, zero and oversized amounts are refused, never rounded.
    #[test]
    fn conversions_are_exact() {
        let m = sample_market();
        assert_eq!(m.price_ticks(12_300), Ok(123));
        assert!(matches!(
            m.price_ticks(12_345),
            Err(ConvertError::OffStep { .. })
        ));
        assert_eq!(m.quantity_lots(5_000), Ok(5));
        assert!(matches!(
            m.quantity_lots(5_001),
            Err(ConvertError::OffStep { .. })
        ));
        assert!(matches!(m.quantity_lots(0), Err(ConvertError::Zero { .. })));
        assert!(matches!(
            m.quantity_lots(u128::MAX - (u128::MAX % 1000)),
            Err(ConvertError::TooLarge { .. })
        ));
        assert!(matches!(
            Market::parse_units("quantity", "-5"),
            Err(ConvertError::NotAnInteger { .. })
        ));
        assert!(matches!(
            Market::parse_units("quantity", "1.5"),
            Err(ConvertError::NotAnInteger { .. })
        ));
        assert_eq!(m.notional(3, 7), Some(2_100));
        assert_eq!(Market::fee(9_999, 20), 19);
        assert_eq!(Market::fee(u128::MAX, 10_000), u128::MAX);
    }

    /// Each bad field is named in the error.
    #[test]
    fn config_errors_name_the_key() {
        let parse = |text: &str| -> Result<BTreeMap<String, Market>, MarketConfigError> {
            let raw: BTreeMap<String, MarketConfig> = toml_like(text);
            MarketsConfig(raw).checked()
        };
        let ok = parse(r#"{"btc_usdt": {"base":"BTC","quote":"USDT","tick_size":"100","lot_size":1000,"min_quantity":"2000","taker_fee_bps":20}}"#)
            .expect("valid");
        assert_eq!(ok["btc_usdt"].min_lots, 2);
        let bad =
            parse(r#"{"btc_usdt": {"base":"BTC","quote":"USDT","tick_size":"0","lot_size":"1"}}"#)
                .expect_err("zero tick");
        assert_eq!(bad.key, "markets.btc_usdt.tick_size");
        let bad = parse(r#"{"btc_usdt": {"base":"BTC","quote":"USDT","tick_size":"1","lot_size":"10","min_quantity":"15"}}"#)
            .expect_err("off-lot min");
        assert_eq!(bad.key, "markets.btc_usdt.min_quantity");
        let bad =
            parse(r#"{"BTC/USDT": {"base":"BTC","quote":"USDT","tick_size":"1","lot_size":"1"}}"#)
                .expect_err("bad name");
        assert_eq!(bad.key, "markets.BTC/USDT");
        let bad = parse(r#"{"x": {"base":"BTC","quote":"USDT","tick_size":"1","lot_size":"1","maker_fee_bps":10001}}"#)
            .expect_err("fee");
        assert_eq!(bad.key, "markets.x.maker_fee_bps");
    }

    fn toml_like(json: &str) -> BTreeMap<String, MarketConfig> {
        serde_json::from_str(json).expect("test json")
    }
}
