//! CNI spec versions: which ones this plugin speaks, parsing and ordering.

use crate::error::{CniError, DECODING_FAILURE, INCOMPATIBLE_VERSION};

/// The spec version this plugin implements.
pub const LATEST: &str = "1.1.0";

/// Config versions accepted; the result is written in the config's version.
pub const SUPPORTED: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

/// A parsed `major.minor.patch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    /// Parses a Semantic Version core (`1.1.0`); code 6 when it is not one.
    pub fn parse(s: &str) -> Result<Version, CniError> {
        let bad = || {
            CniError::new(
                DECODING_FAILURE,
                "failed to decode cniVersion",
                format!("cniVersion {s:?} is not a semantic version (major.minor.patch)"),
            )
        };
        let mut it = s.split('.');
        let mut num = || -> Result<u32, CniError> {
            let p = it.next().ok_or_else(bad)?;
            if p.is_empty()
                || !p.bytes().all(|b| b.is_ascii_digit())
                || (p.len() > 1 && p.starts_with('0'))
            {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        };
        let v = Version(num()?, num()?, num()?);
        if it.next().is_some() {
            return Err(bad());
        }
        Ok(v)
    }

    /// The version as text.
    pub fn as_string(&self) -> String {
        format!("{}.{}.{}", self.0, self.1, self.2)
    }
}

/// Validates a config's `cniVersion` for an operation that exists from `floor` on
/// (`ADD`/`DEL`: any supported; `CHECK`: 0.4.0; `GC`/`STATUS`: 1.1.0). Missing means 0.1.0,
/// as the reference library reads it.
pub fn check(cni_version: Option<&str>, op: &str, floor: Version) -> Result<Version, CniError> {
    let raw = cni_version.unwrap_or("0.1.0");
    let v = Version::parse(raw)?;
    if v < floor {
        return Err(CniError::new(
            INCOMPATIBLE_VERSION,
            "incompatible CNI versions",
            format!(
                "config version {raw} does not allow {op} (needs {} or later)",
                floor.as_string()
            ),
        ));
    }
    if !SUPPORTED.contains(&raw) {
        return Err(CniError::new(
            INCOMPATIBLE_VERSION,
            "incompatible CNI versions",
            format!("config is {raw:?}, plugin supports {SUPPORTED:?}"),
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_order() {
        assert_eq!(Version::parse("1.1.0").unwrap(), Version(1, 1, 0));
        assert!(Version::parse("0.4.0").unwrap() < Version::parse("1.0.0").unwrap());
        for bad in [
            "", "1", "1.1", "1.1.0.0", "a.b.c", "1.01.0", "1.-1.0", " 1.0.0",
        ] {
            assert_eq!(
                Version::parse(bad).unwrap_err().code,
                DECODING_FAILURE,
                "{bad}"
            );
        }
    }

    #[test]
    fn floors_and_support() {
        let zero = Version(0, 0, 0);
        check(Some("1.1.0"), "ADD", zero).unwrap();
        check(Some("0.4.0"), "ADD", zero).unwrap();
        assert_eq!(
            check(Some("0.3.1"), "ADD", zero).unwrap_err().code,
            INCOMPATIBLE_VERSION
        );
        assert_eq!(
            check(None, "ADD", zero).unwrap_err().code,
            INCOMPATIBLE_VERSION
        );
        assert_eq!(
            check(Some("2.0.0"), "ADD", zero).unwrap_err().code,
            INCOMPATIBLE_VERSION
        );
        let e = check(Some("1.0.0"), "GC", Version(1, 1, 0)).unwrap_err();
        assert_eq!(e.code, INCOMPATIBLE_VERSION);
        assert!(e.details.contains("does not allow GC"));
        assert_eq!(
            check(Some("x"), "GC", Version(1, 1, 0)).unwrap_err().code,
            DECODING_FAILURE
        );
    }
}
