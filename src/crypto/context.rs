//! The encryption context and its canonical byte form.
//!
//! This module owns [`EncryptionContext`]: the caller's string-to-string map
//! that is authenticated (never encrypted) with the ciphertext. Its canonical
//! bytes are unambiguous and independent of the order the pairs arrived in, so
//! the same context always authenticates and any change to a key or value
//! (including moving characters between them) does not. It does no
//! cryptography itself.

use std::collections::BTreeMap;

use crate::error::KmsError;

/// An encryption context: exact, case-sensitive pairs, order-insensitive.
///
/// Not secret: AWS records it in CloudTrail.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct EncryptionContext(BTreeMap<String, String>);

impl EncryptionContext {
    /// A context from its pairs. Every length must fit the 32-bit prefixes of
    /// [`canonical_bytes`](Self::canonical_bytes); otherwise `ValidationException`.
    pub fn new(pairs: BTreeMap<String, String>) -> Result<Self, KmsError> {
        let fits = |n: usize| u32::try_from(n).is_ok();
        if !fits(pairs.len()) || !pairs.iter().all(|(k, v)| fits(k.len()) && fits(v.len())) {
            return Err(KmsError::Validation(
                "Encryption context is too large.".to_owned(),
            ));
        }
        Ok(EncryptionContext(pairs))
    }

    /// The pairs, sorted by key.
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// True when there are no pairs (the same as no context at all).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The canonical form: the pair count as a big-endian `u32`, then for each
    /// pair in ascending byte order of its key: key length (`u32` BE), key
    /// UTF-8 bytes, value length (`u32` BE), value UTF-8 bytes.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.canonical_len());
        self.write_canonical(&mut out);
        out
    }

    /// The length of [`EncryptionContext::canonical_bytes`].
    pub fn canonical_len(&self) -> usize {
        4 + self
            .0
            .iter()
            .map(|(k, v)| 8 + k.len() + v.len())
            .sum::<usize>()
    }

    /// Appends [`EncryptionContext::canonical_bytes`] to `out`.
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        put_len(out, self.0.len());
        // `String`'s order is the byte order of its UTF-8 encoding.
        for (key, value) in &self.0 {
            put_len(out, key.len());
            out.extend_from_slice(key.as_bytes());
            put_len(out, value.len());
            out.extend_from_slice(value.as_bytes());
        }
    }
}

/// Appends `n` as a big-endian `u32`; [`EncryptionContext::new`] guarantees it fits.
fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;

    fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
        EncryptionContext::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn empty_context_is_a_zero_count() {
        let c = EncryptionContext::default();
        assert!(c.is_empty());
        assert_eq!(c.canonical_bytes(), [0, 0, 0, 0]);
        assert_eq!(ctx(&[]), c);
    }

    #[test]
    fn layout_is_count_then_length_prefixed_pairs() {
        let c = ctx(&[("b", "xy"), ("a", "")]);
        assert_eq!(
            c.canonical_bytes(),
            [
                0, 0, 0, 2, // two pairs
                0, 0, 0, 1, b'a', 0, 0, 0, 0, // "a" -> ""
                0, 0, 0, 1, b'b', 0, 0, 0, 2, b'x', b'y', // "b" -> "xy"
            ]
        );
    }

    #[test]
    fn moving_characters_between_key_and_value_changes_the_bytes() {
        assert_ne!(
            ctx(&[("ab", "c")]).canonical_bytes(),
            ctx(&[("a", "bc")]).canonical_bytes()
        );
        assert_ne!(
            ctx(&[("a", "b"), ("c", "d")]).canonical_bytes(),
            ctx(&[("a", "bcd")]).canonical_bytes()
        );
    }

    #[test]
    fn order_of_arrival_does_not_matter_but_case_does() {
        let mut forward = BTreeMap::new();
        let mut backward = BTreeMap::new();
        let pairs = [("tenant", "acme"), ("purpose", "backup"), ("Ab", "c")];
        for (k, v) in pairs {
            forward.insert(k.to_string(), v.to_string());
        }
        for (k, v) in pairs.iter().rev() {
            backward.insert(k.to_string(), v.to_string());
        }
        let a = EncryptionContext::new(forward).unwrap();
        let b = EncryptionContext::new(backward).unwrap();
        assert_eq!(a.canonical_bytes(), b.canonical_bytes());
        assert_ne!(
            ctx(&[("Tenant", "acme")]).canonical_bytes(),
            ctx(&[("tenant", "acme")]).canonical_bytes()
        );
        assert_ne!(
            ctx(&[("tenant", "Acme")]).canonical_bytes(),
            ctx(&[("tenant", "acme")]).canonical_bytes()
        );
    }

    #[test]
    fn pairs_are_sorted_by_utf8_bytes() {
        // 'Z' (0x5a) < 'a' (0x61) < 'é' (0xc3 0xa9): byte order, not locale order.
        let c = ctx(&[("é", "3"), ("a", "2"), ("Z", "1")]);
        let bytes = c.canonical_bytes();
        let keys: Vec<&str> = c.as_map().keys().map(String::as_str).collect();
        assert_eq!(keys, ["Z", "a", "é"]);
        assert_eq!(&bytes[8..9], b"Z");
        assert_eq!(&bytes[18..19], b"a");
        assert_eq!(&bytes[28..30], "é".as_bytes());
        assert_eq!(bytes.len(), 4 + 3 * 8 + (1 + 1 + 2) + 3);
    }

    #[test]
    fn missing_or_extra_pairs_change_the_bytes() {
        let full = ctx(&[("a", "1"), ("b", "2")]).canonical_bytes();
        assert_ne!(ctx(&[("a", "1")]).canonical_bytes(), full);
        assert_ne!(
            ctx(&[("a", "1"), ("b", "2"), ("c", "3")]).canonical_bytes(),
            full
        );
        assert_ne!(ctx(&[("a", "1"), ("b", "3")]).canonical_bytes(), full);
    }
}
