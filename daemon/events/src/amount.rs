//! Amounts on the wire: decimal strings of integer base units (satoshi, duff, wei, token
//! units). Never a float; the number of decimals travels beside the amount.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Largest number of decimal digits an amount may have: 2^256 - 1 has 78 digits, which is
/// the widest integer any supported chain can hold (EVM `uint256`), and PostgreSQL stores it
/// as `NUMERIC(78,0)`.
pub const MAX_DIGITS: usize = 78;

/// A non-negative integer amount in an asset's base units, kept as its canonical decimal
/// digits (no sign, no leading zeros, at most [`MAX_DIGITS`] digits, `"0"` for zero).
///
/// Example: 1.5 ETH is `BaseUnits("1500000000000000000")` with `decimals = 18`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BaseUnits(String);

/// Why a string is not a valid [`BaseUnits`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BaseUnitsError {
    /// The string was empty.
    #[error("amount is empty")]
    Empty,
    /// A character other than `0`-`9` (signs, points and exponents are refused: amounts are
    /// integer base units).
    #[error("amount {value:?} is not an integer in base units (only digits 0-9 are allowed)")]
    NotDigits {
        /// The refused input.
        value: String,
    },
    /// Leading zeros make two spellings of one amount; the canonical form has none.
    #[error("amount {value:?} has leading zeros")]
    LeadingZeros {
        /// The refused input.
        value: String,
    },
    /// More than [`MAX_DIGITS`] digits.
    #[error("amount has {digits} digits, more than the {MAX_DIGITS} a uint256 can hold")]
    TooLong {
        /// How many digits the input had.
        digits: usize,
    },
}

impl BaseUnits {
    /// Zero base units.
    pub fn zero() -> Self {
        Self("0".to_owned())
    }

    /// The canonical decimal digits, e.g. `"1500000000000000000"`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the amount is zero.
    pub fn is_zero(&self) -> bool {
        self.0 == "0"
    }

    /// The amount in whole units with `decimals` fractional digits, trailing zeros trimmed:
    /// `"1500000000000000000"` with 18 decimals is `"1.5"`, `"5"` with 8 decimals is
    /// `"0.00000005"`. Exact string arithmetic, no rounding.
    pub fn to_decimal_string(&self, decimals: u8) -> String {
        let decimals = usize::from(decimals);
        let digits = &self.0;
        let (whole, fraction) = if digits.len() > decimals {
            digits.split_at(digits.len() - decimals)
        } else {
            ("0", digits.as_str())
        };
        let fraction = format!("{fraction:0>decimals$}");
        let fraction = fraction.trim_end_matches('0');
        if fraction.is_empty() {
            whole.to_owned()
        } else {
            format!("{whole}.{fraction}")
        }
    }
}

impl FromStr for BaseUnits {
    type Err = BaseUnitsError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value.is_empty() {
            return Err(BaseUnitsError::Empty);
        }
        if !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BaseUnitsError::NotDigits {
                value: value.to_owned(),
            });
        }
        if value.len() > 1 && value.starts_with('0') {
            return Err(BaseUnitsError::LeadingZeros {
                value: value.to_owned(),
            });
        }
        if value.len() > MAX_DIGITS {
            return Err(BaseUnitsError::TooLong {
                digits: value.len(),
            });
        }
        Ok(Self(value.to_owned()))
    }
}

impl From<u128> for BaseUnits {
    fn from(value: u128) -> Self {
        Self(value.to_string())
    }
}

impl fmt::Display for BaseUnits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BaseUnits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BaseUnits({})", self.0)
    }
}

impl Serialize for BaseUnits {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for BaseUnits {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_canonical_integers() {
        assert_eq!("0".parse::<BaseUnits>().map(|a| a.is_zero()), Ok(true));
        assert_eq!(
            "1500000000000000000"
                .parse::<BaseUnits>()
                .map(|a| a.to_string()),
            Ok("1500000000000000000".to_owned())
        );
        assert_eq!("".parse::<BaseUnits>(), Err(BaseUnitsError::Empty));
        assert!(matches!(
            "-1".parse::<BaseUnits>(),
            Err(BaseUnitsError::NotDigits { .. })
        ));
        assert!(matches!(
            "1.5".parse::<BaseUnits>(),
            Err(BaseUnitsError::NotDigits { .. })
        ));
        assert!(matches!(
            "1e18".parse::<BaseUnits>(),
            Err(BaseUnitsError::NotDigits { .. })
        ));
        assert!(matches!(
            "007".parse::<BaseUnits>(),
            Err(BaseUnitsError::LeadingZeros { .. })
        ));
        let max = "115792089237316195423570985008687907853269984665640564039457584007913129639935";
        assert!(max.parse::<BaseUnits>().is_ok());
        assert_eq!(
            format!("{max}0").parse::<BaseUnits>(),
            Err(BaseUnitsError::TooLong { digits: 79 })
        );
    }

    #[test]
    fn formats_decimals_exactly() {
        let amount = |s: &str| s.parse::<BaseUnits>().expect("valid test amount");
        assert_eq!(amount("1500000000000000000").to_decimal_string(18), "1.5");
        assert_eq!(amount("5").to_decimal_string(8), "0.00000005");
        assert_eq!(amount("100000000").to_decimal_string(8), "1");
        assert_eq!(amount("0").to_decimal_string(18), "0");
        assert_eq!(amount("123").to_decimal_string(0), "123");
    }

    #[test]
    fn json_is_a_string() {
        let json = serde_json::to_string(&BaseUnits::from(42u128)).expect("serializes");
        assert_eq!(json, "\"42\"");
        assert!(serde_json::from_str::<BaseUnits>("42").is_err());
        assert!(serde_json::from_str::<BaseUnits>("\"4.2\"").is_err());
    }
}
