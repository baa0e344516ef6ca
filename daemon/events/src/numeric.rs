//! Base units in PostgreSQL: [`BaseUnits`] to and from `NUMERIC(78,0)` via [`BigDecimal`],
//! exactly (no floats, no `u64`/`u128` on the way).

use std::str::FromStr;

use crate::amount::{BaseUnits, BaseUnitsError};
use bigdecimal::BigDecimal;
use bigdecimal::num_bigint::{BigInt, Sign};

/// Why a `NUMERIC` value read from the database is not a [`BaseUnits`] amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NumericError {
    /// The value has a fractional part.
    #[error("amount {value} is not an integer")]
    NotInteger {
        /// The value, as plain decimal text.
        value: String,
    },
    /// The value is below zero.
    #[error("amount {value} is negative")]
    Negative {
        /// The value, as plain decimal text.
        value: String,
    },
    /// The value does not fit [`BaseUnits`] (more than 78 digits).
    #[error("amount does not fit base units: {0}")]
    OutOfRange(#[from] BaseUnitsError),
}

/// The integer value of `units` (scale 0), for binding to a `NUMERIC(78,0)` parameter.
pub fn to_bigint(units: &BaseUnits) -> BigInt {
    BigInt::from_str(units.as_str()).expect("BaseUnits holds only ASCII digits")
}

/// `units` as a scale-0 [`BigDecimal`], for binding to a `NUMERIC(78,0)` parameter.
pub fn to_numeric(units: &BaseUnits) -> BigDecimal {
    BigDecimal::new(to_bigint(units), 0)
}

/// A signed scale-0 [`BigDecimal`] from an integer, for binding to a `NUMERIC(78,0)` parameter.
pub fn bigint_to_numeric(value: BigInt) -> BigDecimal {
    BigDecimal::new(value, 0)
}

/// The exact integer of a `NUMERIC` read from the database.
///
/// Errors: [`NumericError::NotInteger`] if it has a non-zero fractional part.
pub fn numeric_to_bigint(value: &BigDecimal) -> Result<BigInt, NumericError> {
    if !value.is_integer() {
        return Err(NumericError::NotInteger {
            value: value.to_plain_string(),
        });
    }
    let (digits, scale) = value.with_scale(0).into_bigint_and_scale();
    assert_eq!(scale, 0, "with_scale(0) yields scale 0");
    Ok(digits)
}

/// A `NUMERIC` read from the database as [`BaseUnits`].
///
/// Errors: [`NumericError`] if it is fractional, negative or wider than 78 digits.
pub fn from_numeric(value: &BigDecimal) -> Result<BaseUnits, NumericError> {
    let digits = numeric_to_bigint(value)?;
    if digits.sign() == Sign::Minus {
        return Err(NumericError::Negative {
            value: digits.to_string(),
        });
    }
    Ok(digits.to_string().parse()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_uint256_max_exactly() {
        let max = "115792089237316195423570985008687907853269984665640564039457584007913129639935";
        let units: BaseUnits = max.parse().expect("valid amount");
        let numeric = to_numeric(&units);
        assert_eq!(numeric.to_plain_string(), max);
        assert_eq!(from_numeric(&numeric), Ok(units));
    }

    #[test]
    fn reads_other_scales_of_integers() {
        let value = BigDecimal::from_str("1500.000").expect("decimal");
        assert_eq!(
            from_numeric(&value).map(|u| u.to_string()),
            Ok("1500".to_owned())
        );
        let value = BigDecimal::from_str("1e30").expect("decimal");
        assert_eq!(
            from_numeric(&value).map(|u| u.to_string()),
            Ok(format!("1{}", "0".repeat(30)))
        );
        assert_eq!(
            from_numeric(&BigDecimal::from(0)).map(|u| u.is_zero()),
            Ok(true)
        );
    }

    #[test]
    fn refuses_fractions_and_negatives() {
        let half = BigDecimal::from_str("0.5").expect("decimal");
        assert!(matches!(
            from_numeric(&half),
            Err(NumericError::NotInteger { .. })
        ));
        let minus = BigDecimal::from(-3);
        assert!(matches!(
            from_numeric(&minus),
            Err(NumericError::Negative { .. })
        ));
    }
}
