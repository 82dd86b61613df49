//! Secrets at rest: values sealed with a key-encryption key (KEK) given by
//! configuration, with XChaCha20-Poly1305.
//!
//! A sealed value is `MAGIC` (7 bytes), the format version (1 byte), the id
//! of the KEK that sealed it (8 bytes), a random nonce (24 bytes) and the
//! ciphertext with its tag. The associated data is the header (magic,
//! version and KEK id) followed by the purpose (the table and column) and the
//! row's id, so that a sealed value copied to another row, or to another
//! column, does not open. A value without the magic is a plain one, stored
//! before any KEK was configured (a DER key starts with 0x30; a generated
//! secret starts with the magic with odds of 2^-56).

use std::fmt;

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

const MAGIC: &[u8; 7] = b"USMSEAL";
const VERSION: u8 = 1;
const KEK_ID_LEN: usize = 8;
const HEADER_LEN: usize = MAGIC.len() + 1 + KEK_ID_LEN;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const KEK_LEN: usize = 32;

/// The purpose of a sealed column; part of the associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `service_secrets.value`, by name.
    ServiceSecret,
    /// `playback_signing_keys.private_key`, by kid.
    PlaybackPrivateKey,
    /// `mail_outbox.payload` (a mail's token and texts), by id.
    MailPayload,
}

impl Purpose {
    fn label(self) -> &'static str {
        match self {
            Purpose::ServiceSecret => "service_secrets.value",
            Purpose::PlaybackPrivateKey => "playback_signing_keys.private_key",
            Purpose::MailPayload => "mail_outbox.payload",
        }
    }
}

/// The short public id of a KEK: the first bytes of a hash of it, shown in
/// logs and errors in place of the key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KekId([u8; KEK_ID_LEN]);

impl fmt::Display for KekId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KekId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A key-encryption key. Deliberately not `Debug` beyond its id; the cipher
/// zeroes its key when dropped.
#[derive(Clone)]
pub struct Kek {
    id: KekId,
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kek({})", self.id)
    }
}

impl Kek {
    /// A KEK from its configured text: exactly 32 bytes, as 64 hex digits or
    /// as base64 (standard or URL-safe, padded or not). The error never
    /// contains the text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bytes = Zeroizing::new(decode(text.trim()).ok_or_else(|| {
            "must be exactly 32 bytes, written as 64 hex digits or in base64 \
             (e.g. the output of `openssl rand -base64 32`)"
                .to_owned()
        })?);
        Ok(Self::from_bytes(&bytes))
    }

    fn from_bytes(bytes: &[u8]) -> Self {
        let digest = Sha256::new()
            .chain_update(b"usermgmt key-encryption key id\0")
            .chain_update(bytes)
            .finalize();
        let mut id = [0u8; KEK_ID_LEN];
        id.copy_from_slice(&digest[..KEK_ID_LEN]);
        let cipher = XChaCha20Poly1305::new_from_slice(bytes)
            .unwrap_or_else(|_| unreachable!("decode returns 32 bytes"));
        Kek {
            id: KekId(id),
            cipher,
        }
    }

    pub fn id(&self) -> KekId {
        self.id
    }
}

/// The key's bytes when `text` is 32 bytes in hex or base64.
fn decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let decoded = if text.len() == 2 * KEK_LEN {
        decode_hex(text)
    } else {
        [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(text).ok())
    }?;
    (decoded.len() == KEK_LEN).then_some(decoded)
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    fn digit(byte: u8) -> Option<u8> {
        char::from(byte)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [high, low] => Some(digit(*high)? << 4 | digit(*low)?),
            _ => None,
        })
        .collect()
}

/// Why a stored value does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("it is sealed with key-encryption key {0}, which is not configured")]
    UnknownKek(KekId),
    #[error(
        "it does not open with key-encryption key {0}: it was altered or belongs to another row"
    )]
    Inauthentic(KekId),
    #[error("it is sealed in an unknown format")]
    Malformed,
}

/// How a stored value is sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealing {
    Plain,
    SealedWith(KekId),
}

/// The configured KEKs: the first seals, every one opens (so that a rolling
/// rotation works: see docs/operations.md). Without a sealing KEK, new
/// values are stored plain.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    sealing: Option<Kek>,
    opening: Vec<Kek>,
}

impl Keyring {
    /// A keyring sealing with `sealing` (if any) and opening with it and
    /// `previous`.
    pub fn new(sealing: Option<Kek>, previous: Vec<Kek>) -> Self {
        let mut opening: Vec<Kek> = sealing.iter().cloned().collect();
        for kek in previous {
            if !opening.iter().any(|known| known.id == kek.id) {
                opening.push(kek);
            }
        }
        Keyring { sealing, opening }
    }

    /// The KEK new values are sealed with.
    pub fn sealing_id(&self) -> Option<KekId> {
        self.sealing.as_ref().map(Kek::id)
    }

    /// Every KEK that opens values, the sealing one first.
    pub fn opening_ids(&self) -> Vec<KekId> {
        self.opening.iter().map(Kek::id).collect()
    }

    /// `plain` as stored in the row `row_id` of `purpose`: sealed with the
    /// sealing KEK, or as is without one.
    pub fn seal(&self, purpose: Purpose, row_id: &str, plain: &[u8]) -> Result<Vec<u8>, String> {
        let Some(kek) = &self.sealing else {
            return Ok(plain.to_vec());
        };
        let header = header(kek.id);
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| format!("no randomness: {e}"))?;
        let aad = associated_data(&header, purpose, row_id);
        let ciphertext = kek
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .map_err(|_| "cannot seal a secret".to_owned())?;
        let mut sealed = Vec::with_capacity(HEADER_LEN + NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&header);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    /// The plain value of `stored`, from the row `row_id` of `purpose`.
    pub fn open(
        &self,
        purpose: Purpose,
        row_id: &str,
        stored: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        let Sealing::SealedWith(id) = sealing_of(stored)? else {
            return Ok(Zeroizing::new(stored.to_vec()));
        };
        let kek = self
            .opening
            .iter()
            .find(|kek| kek.id == id)
            .ok_or(OpenError::UnknownKek(id))?;
        let (header, rest) = stored.split_at(HEADER_LEN);
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| OpenError::Malformed)?;
        let aad = associated_data(header, purpose, row_id);
        kek.cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| OpenError::Inauthentic(id))
    }

    /// Whether `stored` is sealed with the sealing KEK already.
    pub fn is_current(&self, stored: &[u8]) -> bool {
        matches!(
            (sealing_of(stored), self.sealing_id()),
            (Ok(Sealing::SealedWith(id)), Some(current)) if id == current
        )
    }
}

/// Whether `stored` is plain or sealed, and with which KEK.
pub fn sealing_of(stored: &[u8]) -> Result<Sealing, OpenError> {
    if !stored.starts_with(MAGIC) {
        return Ok(Sealing::Plain);
    }
    if stored.len() < HEADER_LEN + NONCE_LEN + TAG_LEN || stored[MAGIC.len()] != VERSION {
        return Err(OpenError::Malformed);
    }
    let mut id = [0u8; KEK_ID_LEN];
    id.copy_from_slice(&stored[MAGIC.len() + 1..HEADER_LEN]);
    Ok(Sealing::SealedWith(KekId(id)))
}

fn header(id: KekId) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..MAGIC.len()].copy_from_slice(MAGIC);
    header[MAGIC.len()] = VERSION;
    header[MAGIC.len() + 1..].copy_from_slice(&id.0);
    header
}

fn associated_data(header: &[u8], purpose: Purpose, row_id: &str) -> Vec<u8> {
    let label = purpose.label();
    let mut aad = Vec::with_capacity(header.len() + label.len() + 1 + row_id.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(label.as_bytes());
    aad.push(0);
    aad.extend_from_slice(row_id.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek(byte: u8) -> Kek {
        Kek::from_bytes(&[byte; KEK_LEN])
    }

    #[test]
    fn a_sealed_value_opens_in_its_row_only() {
        let keyring = Keyring::new(Some(kek(1)), vec![]);
        let sealed = keyring
            .seal(Purpose::PlaybackPrivateKey, "pbk_a", b"private")
            .expect("seal");
        assert!(!sealed.windows(7).any(|w| w == b"private"));
        let opened = keyring
            .open(Purpose::PlaybackPrivateKey, "pbk_a", &sealed)
            .expect("open");
        assert_eq!(opened.as_slice(), b"private");
        for (purpose, row) in [
            (Purpose::PlaybackPrivateKey, "pbk_b"),
            (Purpose::ServiceSecret, "pbk_a"),
        ] {
            assert_eq!(
                keyring.open(purpose, row, &sealed),
                Err(OpenError::Inauthentic(kek(1).id()))
            );
        }
    }

    #[test]
    fn previous_keys_open_and_only_the_first_seals() {
        let old = Keyring::new(Some(kek(1)), vec![]);
        let sealed = old.seal(Purpose::ServiceSecret, "s", b"v").expect("seal");
        let rotating = Keyring::new(Some(kek(2)), vec![kek(1)]);
        assert_eq!(
            rotating
                .open(Purpose::ServiceSecret, "s", &sealed)
                .expect("open")
                .as_slice(),
            b"v"
        );
        assert!(!rotating.is_current(&sealed));
        let new = Keyring::new(Some(kek(2)), vec![]);
        assert_eq!(
            new.open(Purpose::ServiceSecret, "s", &sealed),
            Err(OpenError::UnknownKek(kek(1).id()))
        );
    }

    #[test]
    fn plain_values_pass_and_altered_headers_fail() {
        let keyring = Keyring::new(Some(kek(1)), vec![]);
        let der = [0x30, 0x2e, 0x02, 0x01];
        assert_eq!(sealing_of(&der), Ok(Sealing::Plain));
        assert_eq!(
            keyring
                .open(Purpose::PlaybackPrivateKey, "k", &der)
                .expect("plain")
                .as_slice(),
            der
        );
        let mut sealed = keyring
            .seal(Purpose::PlaybackPrivateKey, "k", &der)
            .expect("seal");
        sealed[MAGIC.len()] = 2;
        assert_eq!(
            keyring.open(Purpose::PlaybackPrivateKey, "k", &sealed),
            Err(OpenError::Malformed)
        );
        assert_eq!(
            Keyring::default()
                .seal(Purpose::ServiceSecret, "s", b"v")
                .expect("plain"),
            b"v"
        );
    }

    #[test]
    fn a_kek_is_32_bytes_in_hex_or_base64_and_errors_hide_it() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let base64 = "ABEiM0RVZneImaq7zN3u/wARIjNEVWZ3iJmqu8zd7v8=";
        assert_eq!(
            Kek::parse(hex).expect("hex").id(),
            Kek::parse(base64).expect("base64").id()
        );
        assert!(Kek::parse(base64.trim_end_matches('=')).is_ok());
        for bad in [
            "",
            "short",
            &hex[2..],
            &format!("{hex}00"),
            "zz".repeat(32).as_str(),
        ] {
            let error = Kek::parse(bad).expect_err(bad);
            assert!(bad.is_empty() || !error.contains(bad), "{error}");
        }
    }
}
