//! A stable 64-bit content hash (FNV-1a): the same bytes give the same hash in every build,
//! which the comments stored in the kernel rely on.

pub(crate) fn fnv64<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_vector() {
        assert_eq!(super::fnv64([b"a".as_slice()]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(super::fnv64([b"".as_slice()]), 0xcbf2_9ce4_8422_2325);
    }
}
