//! FNV-1a, 32 and 64 bits: the one stable hash of the project.
//!
//! std's hasher is randomized per process; these are not, so names derived from them (host veths,
//! per-Service chains and shard tables, policy sets and nflog prefixes, content hashes in nftables
//! comments, pod-template-hash) stay the same across builds, processes and restarts. Changing the
//! function renames kernel objects and interfaces: the tests pin values for each user's inputs.

const OFFSET_64: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME_64: u64 = 0x0100_0000_01b3;
const OFFSET_32: u32 = 0x811c_9dc5;
const PRIME_32: u32 = 0x0100_0193;

/// FNV-1a 64 of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    fnv1a64_parts([bytes])
}

/// FNV-1a 64 of the concatenation of `parts` (no separator is added).
pub fn fnv1a64_parts<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut h = OFFSET_64;
    for part in parts {
        for b in part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME_64);
        }
    }
    h
}

/// FNV-1a 32 of `bytes` (apimachinery's `fnv.New32a`, behind pod-template-hash).
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut h = OFFSET_32;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(PRIME_32);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foo"), 0xdcb2_7518_fed9_d577);
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a64_parts([&b"fo"[..], b"o"]), fnv1a64(b"foo"));
        assert_eq!(fnv1a64_parts(std::iter::empty()), fnv1a64(b""));
    }

    /// The inputs each former private copy hashed, with the values those copies produced.
    #[test]
    fn pinned_for_every_user() {
        // sarasa-cni: network prefix of the host veths of network "pods", attachment "abc"+eth0.
        assert_eq!(fnv1a64(b"pods") & 0xfff, 0xc2d);
        assert_eq!(fnv1a64(b"abc\0eth0") & 0xff_ffff_ffff, 0xe8_1be8_1b20);
        // sarasa-proxy: shard of Service default/web (the shard tests pin `% 16 == 11`).
        assert_eq!(
            fnv1a64_parts([&b"default"[..], b"/", b"web"]),
            0x9d2b_a508_24d6_34bb
        );
        // sarasa-policy: a pod key too long for an nflog prefix, and a chain name too long for nft.
        let long_pod = format!("x/{}", "p".repeat(250));
        assert_eq!(fnv1a64(long_pod.as_bytes()), 0xa9f9_287a_4f57_d8b8);
        let long_chain = format!("ing_x_{}", "p".repeat(250));
        assert_eq!(fnv1a64(long_chain.as_bytes()), 0x954c_eab1_8002_ad61);
        // sarasa-nft: the content hash of a rendered chain is over its lines, each with "\n"
        // (the golden rulesets of nft, proxy and policy pin whole tables).
        assert_eq!(
            fnv1a64_parts([&b"accept"[..], b"\n"]),
            0x0cd8_93e9_d3f7_6619
        );
        // sarasa-apiserver: pod-template-hash of template {"metadata":{"labels":{"app":"x"}}}.
        assert_eq!(
            fnv1a32(br#"{"metadata":{"labels":{"app":"x"}}}"#),
            0x679f_1b90
        );
    }
}
