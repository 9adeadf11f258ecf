//! Object metadata helpers: timestamps, uids, generated names, JSON access.

use rand::Rng;
use serde_json::{Map, Value};

/// Characters kube-apiserver uses for generated name suffixes (no vowels, no look-alikes).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Longest base of a generated name: 63 minus the 5-character suffix.
pub const MAX_GENERATED_BASE: usize = 58;

/// `2026-01-02T03:04:05Z`.
pub fn now_rfc3339() -> String {
    format_ts(now_secs())
}

/// RFC 3339 with microseconds, as MicroTime fields carry.
pub fn now_rfc3339_micro() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    match k8s_openapi::jiff::Timestamp::new(d.as_secs() as i64, (d.subsec_micros() * 1000) as i32) {
        Ok(ts) => format!("{ts:.6}"),
        Err(_) => now_rfc3339(),
    }
}

/// Seconds since the epoch as RFC 3339 (UTC, second precision).
pub fn format_ts(secs: i64) -> String {
    match k8s_openapi::jiff::Timestamp::from_second(secs) {
        Ok(ts) => format!("{:.0}", ts),
        Err(_) => "1970-01-01T00:00:00Z".to_string(),
    }
}

/// Seconds since the epoch of an RFC 3339 timestamp.
pub fn parse_ts(s: &str) -> Option<i64> {
    s.parse::<k8s_openapi::jiff::Timestamp>()
        .ok()
        .map(|t| t.as_second())
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A random version 4 UUID.
pub fn new_uid() -> String {
    let mut b: [u8; 16] = rand::rng().random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// `n` random characters from kube-apiserver's name-suffix alphabet.
pub fn random_suffix(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| SUFFIX_ALPHABET[rng.random_range(0..SUFFIX_ALPHABET.len())] as char)
        .collect()
}

/// Maps the decimal digits of `n` through the suffix alphabet (apimachinery's SafeEncodeString).
pub fn safe_encode(n: u32) -> String {
    n.to_string()
        .bytes()
        .map(|b| SUFFIX_ALPHABET[b as usize % SUFFIX_ALPHABET.len()] as char)
        .collect()
}

/// `metadata` of an object (empty if missing).
pub fn metadata(obj: &Value) -> &Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    obj.get("metadata")
        .and_then(Value::as_object)
        .unwrap_or_else(|| EMPTY.get_or_init(Map::new))
}

/// Mutable `metadata`, created if missing or not an object.
pub fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let map = obj.as_object_mut().expect("made an object above");
    let m = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !m.is_object() {
        *m = Value::Object(Map::new());
    }
    m.as_object_mut().expect("made an object above")
}

pub fn name(obj: &Value) -> &str {
    metadata(obj)
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn namespace(obj: &Value) -> &str {
    metadata(obj)
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn uid(obj: &Value) -> &str {
    metadata(obj)
        .get("uid")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn resource_version(obj: &Value) -> &str {
    metadata(obj)
        .get("resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn is_deleting(obj: &Value) -> bool {
    metadata(obj)
        .get("deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

/// A string label of an object.
pub fn label<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    metadata(obj)
        .get("labels")
        .and_then(|l| l.get(key))
        .and_then(Value::as_str)
}

/// The uid of the controller owner of an object.
pub fn controller_uid(obj: &Value) -> Option<&str> {
    metadata(obj)
        .get("ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .and_then(|r| r.get("uid"))
        .and_then(Value::as_str)
}

/// Whether an object lists `uid` among its owners.
pub fn owned_by(obj: &Value, owner_uid: &str) -> bool {
    metadata(obj)
        .get("ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r.get("uid").and_then(Value::as_str) == Some(owner_uid))
        })
}

/// Follows a dotted path of object keys.
pub fn path<'a>(obj: &'a Value, dotted: &str) -> Option<&'a Value> {
    let mut cur = obj;
    for part in dotted.split('.') {
        cur = cur.get(part)?;
    }
    Some(cur)
}

pub fn path_str<'a>(obj: &'a Value, dotted: &str) -> Option<&'a str> {
    path(obj, dotted).and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        let s = format_ts(1_700_000_000);
        assert_eq!(s, "2023-11-14T22:13:20Z");
        assert_eq!(parse_ts(&s), Some(1_700_000_000));
        assert!(now_rfc3339().ends_with('Z'));
    }

    #[test]
    fn uid_shape() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }

    #[test]
    fn suffix_alphabet() {
        let s = random_suffix(5);
        assert_eq!(s.len(), 5);
        assert!(s.bytes().all(|b| SUFFIX_ALPHABET.contains(&b)));
        assert!(safe_encode(123).len() == 3);
    }
}
