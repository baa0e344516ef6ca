//! Rows for PostgreSQL's binary `COPY … FROM STDIN (FORMAT binary)`: how the read models'
//! projection (`projection.rs`) writes `orders`, `trades` and their posting lists.
//!
//! Why binary: with a text `COPY` PostgreSQL parses every field with its column type's input
//! function (decimal text into `numeric`, RFC 3339 into `timestamptz`), on the database's
//! share of the machine's cores. The binary form carries each value as the type's receive
//! function takes it. In `psql`, loading the same 200,000 `orders` rows took 0.77–0.80 s
//! binary against 0.89–0.97 s as text, and 150,000 `trades` rows 0.85 s against 0.97–0.99 s
//! (docs/benchmarks.md, 2026-12-07).
//!
//! Format (PostgreSQL documentation, "COPY", section "Binary Format"): an 11-byte signature,
//! a 32-bit flags field and a 32-bit header extension length (both 0 here); per row a 16-bit
//! field count, then per field a 32-bit byte length (−1 for NULL) and the value in its type's
//! binary form (`int8send`, `textsend`, `numeric_send`, `timestamptz_send`, `uuid_send`,
//! `array_send`); a 16-bit −1 ends the data. Integers are big-endian. The server checks every
//! field's length and form, and refuses the `COPY` (nothing written) if a value does not fit
//! its column.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

/// The binary `COPY` signature: `PGCOPY\n\377\r\n\0`.
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00:00 UTC).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// `numeric`'s base: each binary digit holds four decimal digits.
const NBASE: u128 = 10_000;
/// Most base-10000 digits of a `NUMERIC(78, 0)` (78 decimal digits).
const NUMERIC_DIGITS_MAX: usize = 20;

/// A binary `COPY` stream being written, row by row. Each row starts with [`Self::row`] and
/// then takes exactly that many fields, in the column order of the `COPY` statement.
pub(crate) struct BinaryRows {
    buffer: Vec<u8>,
    rows: usize,
}

impl BinaryRows {
    /// An empty stream (header only) with room for about `capacity` bytes.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        let mut buffer = Vec::with_capacity(capacity.max(SIGNATURE.len() + 10));
        buffer.extend_from_slice(SIGNATURE);
        buffer.extend_from_slice(&0_i32.to_be_bytes()); // flags: no OIDs
        buffer.extend_from_slice(&0_i32.to_be_bytes()); // no header extension
        Self { buffer, rows: 0 }
    }

    /// Rows started so far.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Starts a row of `fields` fields.
    pub(crate) fn row(&mut self, fields: u16) {
        self.rows += 1;
        self.buffer
            .extend_from_slice(&i16::try_from(fields).expect("≤ 1600 columns").to_be_bytes());
    }

    /// A NULL field.
    pub(crate) fn null(&mut self) {
        self.buffer.extend_from_slice(&(-1_i32).to_be_bytes());
    }

    /// A `bigint` field.
    pub(crate) fn int8(&mut self, value: i64) {
        self.field(&value.to_be_bytes());
    }

    /// An `integer` field.
    pub(crate) fn int4(&mut self, value: i32) {
        self.field(&value.to_be_bytes());
    }

    /// A `bigint[]` field: a one-dimensional array of `values`, none NULL (`array_send`'s
    /// form: the number of dimensions, a has-NULLs flag, the element type `int8` (OID 20),
    /// then per dimension its length and lower bound 1, then each element with its length; an
    /// empty array has no dimension).
    pub(crate) fn int8_array(&mut self, values: &[i64]) {
        const INT8_OID: i32 = 20;
        let dimensions = i32::from(!values.is_empty());
        let length = 12 + 8 * usize::from(!values.is_empty()) + 12 * values.len();
        let length = i32::try_from(length).expect("a field is below 2 GiB");
        self.buffer.extend_from_slice(&length.to_be_bytes());
        self.buffer.extend_from_slice(&dimensions.to_be_bytes());
        self.buffer.extend_from_slice(&0_i32.to_be_bytes()); // no NULLs
        self.buffer.extend_from_slice(&INT8_OID.to_be_bytes());
        if values.is_empty() {
            return;
        }
        let count = i32::try_from(values.len()).expect("below 2 GiB");
        self.buffer.extend_from_slice(&count.to_be_bytes());
        self.buffer.extend_from_slice(&1_i32.to_be_bytes()); // lower bound
        for value in values {
            self.int8(*value);
        }
    }

    /// A `text` field (UTF-8, the database's encoding).
    pub(crate) fn text(&mut self, value: &str) {
        self.field(value.as_bytes());
    }

    /// A `text` field, or NULL for `None`.
    pub(crate) fn text_or_null(&mut self, value: Option<&str>) {
        match value {
            Some(value) => self.text(value),
            None => self.null(),
        }
    }

    /// A `uuid` field, or NULL for `None`.
    pub(crate) fn uuid_or_null(&mut self, value: Option<Uuid>) {
        match value {
            Some(value) => self.field(value.as_bytes()),
            None => self.null(),
        }
    }

    /// A `numeric` field holding the non-negative integer `value`.
    pub(crate) fn numeric(&mut self, mut value: u128) {
        // Base-10000 digits, least significant first.
        let mut digits = [0_i16; NUMERIC_DIGITS_MAX];
        let mut count = 0;
        while value > 0 {
            digits[count] = i16::try_from(value % NBASE).expect("a digit is below 10000");
            value /= NBASE;
            count += 1;
        }
        digits[..count].reverse();
        self.numeric_digits(&digits[..count]);
    }

    /// A `numeric` field of `value`, or NULL for `None`.
    pub(crate) fn numeric_or_null(&mut self, value: Option<u128>) {
        match value {
            Some(value) => self.numeric(value),
            None => self.null(),
        }
    }

    /// A `timestamptz` field, `unix_micros` microseconds after the Unix epoch (UTC; sent as
    /// microseconds after PostgreSQL's epoch, 2000-01-01 00:00:00 UTC).
    pub(crate) fn timestamptz(&mut self, unix_micros: i64) {
        let micros = unix_micros
            .checked_sub(POSTGRES_EPOCH_MICROS)
            .expect("stored times are within timestamptz's range");
        self.field(&micros.to_be_bytes());
    }

    /// The stream with its trailer, ready to send.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.buffer.extend_from_slice(&(-1_i16).to_be_bytes());
        self.buffer
    }

    /// A `numeric` field of a non-negative integer from its base-10000 digits, most
    /// significant first, without leading zero digits (`numeric_send`'s form: trailing zero
    /// digits are left out and implied by the weight).
    fn numeric_digits(&mut self, digits: &[i16]) {
        let weight = i16::try_from(digits.len()).expect("≤ 20 digits") - 1;
        let stored = digits
            .iter()
            .rposition(|d| *d != 0)
            .map_or(0, |last| last + 1);
        let length = 8 + 2 * stored;
        self.buffer
            .extend_from_slice(&i32::try_from(length).expect("small").to_be_bytes());
        let ndigits = i16::try_from(stored).expect("≤ 20 digits");
        self.buffer.extend_from_slice(&ndigits.to_be_bytes());
        self.buffer
            .extend_from_slice(&(if stored == 0 { 0 } else { weight }).to_be_bytes());
        self.buffer.extend_from_slice(&0_i16.to_be_bytes()); // sign: positive
        self.buffer.extend_from_slice(&0_i16.to_be_bytes()); // display scale: 0
        for digit in &digits[..stored] {
            self.buffer.extend_from_slice(&digit.to_be_bytes());
        }
    }

    /// A field of `bytes`, with its length.
    fn field(&mut self, bytes: &[u8]) {
        let length = i32::try_from(bytes.len()).expect("a field is below 2 GiB");
        self.buffer.extend_from_slice(&length.to_be_bytes());
        self.buffer.extend_from_slice(bytes);
    }
}

/// The time `value` (RFC 3339) in microseconds since the Unix epoch, rounded to whole
/// microseconds as PostgreSQL's `timestamptz` text input rounds (half to even).
///
/// Errors: `value` is not RFC 3339, or is outside `timestamptz`'s range.
pub(crate) fn unix_micros_of_rfc3339(value: &str) -> Result<i64, String> {
    let at = OffsetDateTime::parse(value, &Rfc3339)
        .map_err(|e| format!("{value:?} is not an RFC 3339 time: {e}"))?;
    let nanos = at.unix_timestamp_nanos();
    let (micros, rest) = (nanos.div_euclid(1_000), nanos.rem_euclid(1_000));
    let micros = if rest > 500 || (rest == 500 && micros % 2 != 0) {
        micros + 1
    } else {
        micros
    };
    i64::try_from(micros)
        .ok()
        .filter(|m| m.checked_sub(POSTGRES_EPOCH_MICROS).is_some())
        .ok_or_else(|| format!("{value} is out of timestamptz's range"))
}

#[cfg(test)]
mod tests {
    use super::{BinaryRows, unix_micros_of_rfc3339};

    /// The bytes one field adds to a stream (after the header and a one-field row start).
    fn field_bytes(write: impl FnOnce(&mut BinaryRows)) -> String {
        let mut rows = BinaryRows::with_capacity(64);
        rows.row(1);
        let start = rows.buffer.len();
        write(&mut rows);
        // Without the 4-byte length, as `numeric_send` / `timestamptz_send` print it.
        hex(&rows.buffer[start + 4..])
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// `numeric` fields are what PostgreSQL 15's `numeric_send` returns for the same values
    /// (`SELECT encode(numeric_send(v::numeric), 'hex')`).
    #[test]
    fn numerics_match_numeric_send() {
        let cases = [
            ("0", "0000000000000000"),
            ("1", "00010000000000000001"),
            ("9999", "0001000000000000270f"),
            ("10000", "00010001000000000001"),
            ("123456789", "0003000200000000000109291a85"),
            ("100000000000000000000", "00010005000000000001"),
            (
                "340282366920938463463374607431768211455",
                "000a00090000000001540b071a2403aa121a18c111ff10dd1aa505af",
            ),
        ];
        for (decimal, sent) in cases {
            let value: u128 = decimal.parse().expect("u128");
            assert_eq!(field_bytes(|rows| rows.numeric(value)), sent, "{decimal}");
        }
    }

    /// `timestamptz` fields are what `timestamptz_send` returns for the same times.
    #[test]
    fn timestamps_match_timestamptz_send() {
        let cases = [
            ("2000-01-01T00:00:00Z", "0000000000000000"),
            ("2026-12-07T12:00:00.123456Z", "00030508bbe17240"),
            ("2026-12-07T13:00:00.123456+01:00", "00030508bbe17240"),
            ("1999-12-31T23:59:59.999999Z", "ffffffffffffffff"),
        ];
        for (text, sent) in cases {
            let micros = unix_micros_of_rfc3339(text).expect("time");
            assert_eq!(field_bytes(|rows| rows.timestamptz(micros)), sent, "{text}");
        }
        assert!(unix_micros_of_rfc3339("yesterday").is_err());
        // Below a microsecond: half to even, as PostgreSQL rounds `…00.0000005`.
        let epoch = super::POSTGRES_EPOCH_MICROS;
        let micros = |text| unix_micros_of_rfc3339(text).map(|m| m - epoch);
        assert_eq!(micros("2000-01-01T00:00:00.0000005Z"), Ok(0));
        assert_eq!(micros("2000-01-01T00:00:00.0000015Z"), Ok(2));
        assert_eq!(micros("2000-01-01T00:00:00.0000006Z"), Ok(1));
    }

    /// `bigint[]` fields are what PostgreSQL 15's `array_send` returns for the same arrays
    /// (`SELECT encode(array_send(ARRAY[7, 300]::bigint[]), 'hex')`).
    #[test]
    fn int8_arrays_match_array_send() {
        assert_eq!(
            field_bytes(|rows| rows.int8_array(&[7, 300])),
            "000000010000000000000014000000020000000100000008000000000000000700000008000000000000012c"
        );
        assert_eq!(
            field_bytes(|rows| rows.int8_array(&[])),
            "000000000000000000000014"
        );
    }

    /// A stream is the signature, two zero words, its rows and the −1 trailer; NULL is a
    /// length of −1.
    #[test]
    fn streams_have_header_rows_and_trailer() {
        let mut rows = BinaryRows::with_capacity(0);
        rows.row(2);
        rows.int8(7);
        rows.text_or_null(None);
        assert_eq!(rows.rows(), 1);
        assert_eq!(
            hex(&rows.finish()),
            "5047434f50590aff0d0a00\
             00000000\
             00000000\
             0002\
             000000080000000000000007\
             ffffffff\
             ffff"
        );
    }
}
