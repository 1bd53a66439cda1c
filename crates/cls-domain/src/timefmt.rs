//! Timestamp formats used on the wire.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// RFC 3339 in UTC with exactly nine fractional digits, as event bodies carry it.
pub fn rfc3339_nanos(t: OffsetDateTime) -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");
    // Formatting a valid UTC date-time with this description cannot fail.
    t.to_offset(UtcOffset::UTC).format(&fmt).unwrap_or_default()
}

/// Parses an RFC 3339 timestamp (any offset, any precision).
pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// Serde adapter: RFC 3339 in UTC (trailing `Z`), sub-second digits as needed.
pub mod rfc3339_utc {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::format_description::well_known::Rfc3339;
    use time::{OffsetDateTime, UtcOffset};

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        let text = t
            .to_offset(UtcOffset::UTC)
            .format(&Rfc3339)
            .map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let text = String::deserialize(d)?;
        OffsetDateTime::parse(&text, &Rfc3339)
            .map_err(|_| serde::de::Error::custom("must be an RFC 3339 timestamp"))
    }

    /// The same for `Option<OffsetDateTime>`; `null` and absent are `None`.
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};
        use time::OffsetDateTime;

        pub fn serialize<S: Serializer>(
            t: &Option<OffsetDateTime>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<OffsetDateTime>, D::Error> {
            match Option::<String>::deserialize(d)? {
                None => Ok(None),
                Some(text) => crate::timefmt::parse_rfc3339(&text)
                    .map(Some)
                    .ok_or_else(|| serde::de::Error::custom("must be an RFC 3339 timestamp")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn nanos_format_pads_to_nine_digits_in_utc() {
        assert_eq!(
            rfc3339_nanos(datetime!(2026-11-24 08:00:00.5 +02:00)),
            "2026-11-24T06:00:00.500000000Z"
        );
        assert_eq!(
            rfc3339_nanos(datetime!(2026-01-02 03:04:05 UTC)),
            "2026-01-02T03:04:05.000000000Z"
        );
    }

    #[test]
    fn parses_offsets_and_rejects_garbage() {
        assert_eq!(
            parse_rfc3339("2026-11-24T08:00:00+01:00"),
            Some(datetime!(2026-11-24 07:00:00 UTC))
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_rfc3339("2026-11-24 08:00:00"), None);
    }
}
