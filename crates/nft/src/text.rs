//! What makes a string safe in `nft -f` text, whatever its origin: names and comments are
//! built from Kubernetes object names, which the API validates, but the renderer does not rely
//! on that. nft's quoted strings have no escapes (a `"` ends them) and its names cannot be
//! quoted, so a hostile string is rewritten rather than escaped: [`quoted`] drops what would
//! end or break a quoted string and cuts it to what the kernel stores; [`ident`] leaves a valid
//! name alone and turns any other into a valid one, unique by a hash of the original. The
//! netlink path stores the same [`sanitize`]d strings, so both backends program the same.

use std::borrow::Cow;

use sarasa_model::hash::fnv1a64;

/// Longest comment a rule, set or element carries: the kernel keeps 128 bytes with the NUL
/// (NFT_USERDATA_MAXLEN), and sarasa appends ` sarasa:<16 hex>` to some.
pub const MAX_COMMENT: usize = 100;
/// Longest log prefix: NF_LOG_PREFIXLEN is 128 bytes with the NUL.
pub const MAX_LOG_PREFIX: usize = 127;
/// Longest interface name: IFNAMSIZ is 16 bytes with the NUL.
pub const MAX_IFNAME: usize = 15;
/// Longest name [`ident`] makes of an invalid one (nft allows 256 with the NUL).
const MAX_IDENT: usize = 200;

/// `s` with every character that could end or break an nft quoted string (`"`, `\`, `$`,
/// control characters such as newline) replaced by `_`, cut to at most `max` bytes on a
/// character boundary.
pub fn sanitize(s: &str, max: usize) -> Cow<'_, str> {
    let bad = |c: char| c == '"' || c == '\\' || c == '$' || c.is_control();
    if s.len() <= max && !s.chars().any(bad) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars() {
        let c = if bad(c) { '_' } else { c };
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    Cow::Owned(out)
}

/// `"s"`, sanitized ([`sanitize`]).
pub fn quoted(s: &str, max: usize) -> String {
    format!("\"{}\"", sanitize(s, max))
}

/// `name` if nft takes it unquoted as a table, chain or set name; otherwise a valid name made
/// of its safe characters and a hash of the whole (so two different invalid names never meet).
pub fn ident(name: &str) -> Cow<'_, str> {
    if crate::model::check_name(name).is_ok() {
        return Cow::Borrowed(name);
    }
    let mut out = String::from("_");
    for c in name.chars() {
        if out.len() >= MAX_IDENT - 17 {
            break;
        }
        out.push(
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                c
            } else {
                '_'
            },
        );
    }
    out.push_str(&format!("_{:016x}", fnv1a64(name.as_bytes())));
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &[&str] = &[
        "a\" ; flush ruleset ; \"",
        "x\ndelete table inet sarasa\n",
        "}; add rule inet sarasa input drop; {",
        "$var \\ back",
        "\0nul\r\t",
    ];

    #[test]
    fn quoted_strings_keep_one_token() {
        for s in HOSTILE {
            let q = quoted(s, MAX_COMMENT);
            let inner = &q[1..q.len() - 1];
            assert!(q.starts_with('"') && q.ends_with('"'), "{q}");
            assert!(
                !inner.contains(['"', '\n', '\r', '\\', '$', '\0']),
                "{s:?} → {q:?}"
            );
        }
        assert_eq!(
            quoted("allow x/web ingress[0]", 100),
            "\"allow x/web ingress[0]\""
        );
        let long = "é".repeat(100);
        let cut = sanitize(&long, MAX_LOG_PREFIX);
        assert!(cut.len() <= MAX_LOG_PREFIX && cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn idents_are_valid_and_distinct() {
        assert_eq!(ident("ing_default_web"), "ing_default_web");
        let mut seen = std::collections::BTreeSet::new();
        for s in HOSTILE
            .iter()
            .copied()
            .chain(["table", "1abc", "", "a b", "a_b"])
        {
            let i = ident(s);
            assert!(crate::model::check_name(&i).is_ok(), "{s:?} → {i}");
            assert!(seen.insert(i.into_owned()), "{s:?} collides");
        }
        assert_eq!(ident("a b"), ident("a b"), "stable");
        assert_ne!(ident("a b"), "a_b");
    }
}
