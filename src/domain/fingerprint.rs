//! Short names of secrets, safe to show and to log.

/// The first 6 bytes of a secret's SHA-256 digest, as 12 lowercase hex
/// digits. Runs on every API-key call, hence no `format!` per byte.
pub fn of_digest(digest: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut fingerprint = String::with_capacity(12);
    for byte in digest.iter().take(6) {
        fingerprint.push(char::from(HEX[usize::from(byte >> 4)]));
        fingerprint.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    fingerprint
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_the_first_six_bytes_in_hex() {
        assert_eq!(
            of_digest(&[0x00, 0x0f, 0xa0, 0xff, 0x12, 0x9b, 0x77]),
            "000fa0ff129b"
        );
        assert_eq!(of_digest(&[0xab]), "ab");
    }
}
