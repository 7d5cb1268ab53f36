//! The ciphertext blob: the self-describing bytes Encrypt, GenerateDataKey and
//! ReEncrypt return and Decrypt takes (format v1, see `docs/ciphertext-format.md`).
//!
//! This module owns the byte layout and the additional authenticated data
//! (AAD) bound into AES-256-GCM. It never encrypts or decrypts: that happens
//! inside the HSM. Layout, big-endian:
//!
//! | offset | length | field |
//! |---|---|---|
//! | 0 | 2 | magic `HK` |
//! | 2 | 1 | format version: `0x01` (the key id is a UUID) or `0x02` (a multi-Region key id) |
//! | 3 | 16 | key id (UUID bytes, or the 16 bytes of `mrk-` + 32 hex digits) |
//! | 19 | 4 | key material version (`u32`) |
//! | 23 | 12 | IV |
//! | 35 | n + 16 | ciphertext of n bytes (1 ≤ n ≤ 4096), then the 16-byte GCM tag |
//!
//! The AAD is the 23-byte [`BlobHeader`] (everything before the IV) followed by
//! the canonical encryption context. The IV is left out of the AAD because
//! GCM already authenticates it (a changed IV fails the tag) and because some
//! HSMs (AWS CloudHSM) choose the IV themselves during `C_Encrypt`, after the
//! AAD has to be fixed. Every malformed blob is `InvalidCiphertextException`
//! with no message, like AWS, and like a failed tag: the answer does not tell
//! which check failed.

use crate::crypto::context::EncryptionContext;
use crate::error::KmsError;
use crate::ids::KeyId;

/// The first two bytes of every blob.
pub const MAGIC: [u8; 2] = *b"HK";
/// The format version of a blob under a single-Region key (its key id is a UUID).
pub const FORMAT_VERSION: u8 = 0x01;
/// The format version of a blob under a multi-Region key: the same layout, its key id the
/// 16 bytes of an `mrk-` id, so every Region holding a replica finds the key by it.
pub const FORMAT_VERSION_MULTI_REGION: u8 = 0x02;
/// Length of the authenticated header: magic, version, key id, material version.
pub const HEADER_LEN: usize = 23;
/// Length of the GCM IV.
pub const IV_LEN: usize = 12;
/// Length of the GCM tag.
pub const TAG_LEN: usize = 16;
/// Largest plaintext a blob can hold (Encrypt's limit; data keys are smaller).
pub const MAX_PLAINTEXT_LEN: usize = 4096;
/// Shortest valid blob: one byte of ciphertext.
pub const MIN_BLOB_LEN: usize = HEADER_LEN + IV_LEN + 1 + TAG_LEN;
/// Longest valid blob: [`MAX_PLAINTEXT_LEN`] bytes of ciphertext.
pub const MAX_BLOB_LEN: usize = HEADER_LEN + IV_LEN + MAX_PLAINTEXT_LEN + TAG_LEN;

/// What a blob says about its key: which key and which of its material versions.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BlobHeader {
    key_id: KeyId,
    material_version: u32,
}

impl BlobHeader {
    /// The header for a ciphertext under `key_id`'s material `material_version`.
    pub fn new(key_id: KeyId, material_version: u32) -> Self {
        BlobHeader {
            key_id,
            material_version,
        }
    }

    /// The key whose material encrypted the blob.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The version of the key's material that encrypted the blob.
    pub fn material_version(&self) -> u32 {
        self.material_version
    }

    /// The 23 header bytes: magic, format version, key id, material version.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..2].copy_from_slice(&MAGIC);
        out[2] = if self.key_id.is_multi_region() {
            FORMAT_VERSION_MULTI_REGION
        } else {
            FORMAT_VERSION
        };
        out[3..19].copy_from_slice(self.key_id.as_bytes());
        out[19..23].copy_from_slice(&self.material_version.to_be_bytes());
        out
    }

    /// The AAD for GCM: the header bytes, then `context.canonical_bytes()`.
    /// Never empty (at least 27 bytes).
    pub fn aad(&self, context: &EncryptionContext) -> Vec<u8> {
        let mut aad = Vec::with_capacity(HEADER_LEN + context.canonical_len());
        aad.extend_from_slice(&self.to_bytes());
        context.write_canonical(&mut aad);
        aad
    }

    /// The blob: header, `iv`, then `ciphertext_and_tag` as the HSM returned
    /// it. A `ciphertext_and_tag` that cannot come from 1–4096 bytes of
    /// plaintext is `KMSInternalException` (the HSM misbehaved).
    pub fn encode(
        &self,
        iv: &[u8; IV_LEN],
        ciphertext_and_tag: &[u8],
    ) -> Result<Vec<u8>, KmsError> {
        let n = ciphertext_and_tag.len();
        if !(1 + TAG_LEN..=MAX_PLAINTEXT_LEN + TAG_LEN).contains(&n) {
            return Err(KmsError::KmsInternal(format!(
                "The HSM returned {n} bytes of ciphertext and tag; expected {} to {}.",
                1 + TAG_LEN,
                MAX_PLAINTEXT_LEN + TAG_LEN
            )));
        }
        let mut out = Vec::with_capacity(HEADER_LEN + IV_LEN + n);
        out.extend_from_slice(&self.to_bytes());
        out.extend_from_slice(iv);
        out.extend_from_slice(ciphertext_and_tag);
        Ok(out)
    }
}

/// A parsed blob, borrowing its ciphertext from the input.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CiphertextBlob<'a> {
    header: BlobHeader,
    iv: [u8; IV_LEN],
    ciphertext_and_tag: &'a [u8],
}

impl<'a> CiphertextBlob<'a> {
    /// Parses a v1 blob. Too short, too long, wrong magic or an unknown format
    /// version is `InvalidCiphertextException` with no message. Authenticity
    /// is not checked here: decrypting with [`BlobHeader::aad`] does that.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, KmsError> {
        let invalid = || KmsError::InvalidCiphertext(String::new());
        if !(MIN_BLOB_LEN..=MAX_BLOB_LEN).contains(&bytes.len()) {
            return Err(invalid());
        }
        let (header, rest) = bytes.split_at(HEADER_LEN);
        let (iv, ciphertext_and_tag) = rest.split_at(IV_LEN);
        let key_id: [u8; 16] = header[3..19].try_into().map_err(|_| invalid())?;
        let key_id = match (header[..2] == MAGIC, header[2]) {
            (true, FORMAT_VERSION) => KeyId::from_bytes(key_id),
            (true, FORMAT_VERSION_MULTI_REGION) => KeyId::multi_region_from_bytes(key_id),
            _ => return Err(invalid()),
        };
        let version: [u8; 4] = header[19..23].try_into().map_err(|_| invalid())?;
        let iv: [u8; IV_LEN] = iv.try_into().map_err(|_| invalid())?;
        Ok(CiphertextBlob {
            header: BlobHeader::new(key_id, u32::from_be_bytes(version)),
            iv,
            ciphertext_and_tag,
        })
    }

    /// The key id and material version the blob names.
    pub fn header(&self) -> &BlobHeader {
        &self.header
    }

    /// The GCM IV.
    pub fn iv(&self) -> &[u8; IV_LEN] {
        &self.iv
    }

    /// The ciphertext followed by the 16-byte tag, as `C_Decrypt` takes it.
    pub fn ciphertext_and_tag(&self) -> &'a [u8] {
        self.ciphertext_and_tag
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    use std::collections::BTreeMap;

    use aes_gcm::Aes256Gcm;
    use aes_gcm::aead::{Aead, KeyInit, Payload};

    use super::*;

    /// The format document; its test vectors must match this module.
    const DOC: &str = include_str!("../../docs/ciphertext-format.md");

    struct Vector {
        key: &'static str,
        key_id: &'static str,
        material_version: u32,
        iv: &'static str,
        context: &'static [(&'static str, &'static str)],
        plaintext: &'static str,
        aad: &'static str,
        blob: &'static str,
    }

    /// The test vectors of `docs/ciphertext-format.md` (computed independently
    /// with Python's `cryptography` package).
    const VECTORS: [Vector; 2] = [
        Vector {
            key: "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            key_id: "1234abcd-12ab-34cd-56ef-1234567890ab",
            material_version: 1,
            iv: "000102030405060708090a0b",
            context: &[],
            plaintext: "48656c6c6f2c2068736d2d6b6d7321",
            aad: "484b011234abcd12ab34cd56ef1234567890ab0000000100000000",
            blob: "484b011234abcd12ab34cd56ef1234567890ab00000001000102030405060708090a0b\
                   0f67ba77aac9e273fe2cbae0dc9a5925f5cb65d39f42af1e930bfb80b4a04f",
        },
        Vector {
            key: "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
            key_id: "0f0e0d0c-0b0a-4908-8706-050403020100",
            material_version: 7,
            iv: "cafebabefacedbaddecaf888",
            context: &[("tenant", "acme"), ("purpose", "backup"), ("Ab", "c")],
            plaintext: "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            aad: "484b010f0e0d0c0b0a490887060504030201000000000700000003000000024162000000\
                  016300000007707572706f7365000000066261636b75700000000674656e616e740000\
                  000461636d65",
            blob: "484b010f0e0d0c0b0a4908870605040302010000000007cafebabefacedbaddecaf888\
                   a726ea73eb43d77c9e977070dbf5c1cf17fb32dd01592c00282dbf507172dfc263b5fe\
                   a210224582fe6af5355c793660",
        },
    ];

    fn unhex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        hex::decode(digits).expect("hex digits")
    }

    fn context(pairs: &[(&str, &str)]) -> EncryptionContext {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        EncryptionContext::new(map).unwrap()
    }

    fn cipher(key: &[u8]) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(key).unwrap()
    }

    /// Encrypts as the HSM does: AES-256-GCM, 12-byte IV, AAD, output ct||tag.
    fn seal(v: &Vector) -> Vec<u8> {
        let header = BlobHeader::new(KeyId::parse(v.key_id).unwrap(), v.material_version);
        let iv: [u8; IV_LEN] = unhex(v.iv).try_into().unwrap();
        let aad = header.aad(&context(v.context));
        assert_eq!(hex::encode(&aad), hex::encode(unhex(v.aad)));
        let ct = cipher(&unhex(v.key))
            .encrypt(
                &iv.into(),
                Payload {
                    msg: &unhex(v.plaintext),
                    aad: &aad,
                },
            )
            .unwrap();
        header.encode(&iv, &ct).unwrap()
    }

    /// Parses and decrypts as the key store does; `None` on any failure.
    fn open(key: &[u8], blob: &[u8], ctx: &EncryptionContext) -> Option<Vec<u8>> {
        let parsed = CiphertextBlob::parse(blob).ok()?;
        let aad = parsed.header().aad(ctx);
        cipher(key)
            .decrypt(
                &(*parsed.iv()).into(),
                Payload {
                    msg: parsed.ciphertext_and_tag(),
                    aad: &aad,
                },
            )
            .ok()
    }

    #[test]
    fn test_vectors_recompute_and_appear_in_the_document() {
        let doc: String = DOC.split_whitespace().collect();
        for v in &VECTORS {
            let blob = seal(v);
            assert_eq!(
                hex::encode(&blob),
                hex::encode(unhex(v.blob)),
                "vector for {}",
                v.key_id
            );
            let plain = open(&unhex(v.key), &blob, &context(v.context)).unwrap();
            assert_eq!(plain, unhex(v.plaintext));
            for field in [v.key, v.key_id, v.iv, v.plaintext] {
                assert!(doc.contains(field), "document lacks {field}");
            }
            for field in [v.aad, v.blob] {
                let joined: String = field.split_whitespace().collect();
                assert!(doc.contains(&joined), "document lacks {joined}");
            }
        }
    }

    #[test]
    fn parse_reads_every_field() {
        let v = &VECTORS[1];
        let blob = unhex(v.blob);
        let parsed = CiphertextBlob::parse(&blob).unwrap();
        assert_eq!(parsed.header().key_id(), KeyId::parse(v.key_id).unwrap());
        assert_eq!(parsed.header().material_version(), 7);
        assert_eq!(parsed.iv().as_slice(), unhex(v.iv).as_slice());
        assert_eq!(parsed.ciphertext_and_tag(), &blob[HEADER_LEN + IV_LEN..]);
        assert_eq!(parsed.ciphertext_and_tag().len(), 32 + TAG_LEN);
        assert_eq!(parsed.header().to_bytes().as_slice(), &blob[..HEADER_LEN]);
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        for v in &VECTORS {
            let key = unhex(v.key);
            let ctx = context(v.context);
            let blob = unhex(v.blob);
            assert!(open(&key, &blob, &ctx).is_some());
            for bit in 0..blob.len() * 8 {
                let mut flipped = blob.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                assert!(
                    open(&key, &flipped, &ctx).is_none(),
                    "flip of bit {bit} accepted"
                );
            }
        }
    }

    #[test]
    fn truncated_or_extended_blobs_are_rejected() {
        let v = &VECTORS[0];
        let key = unhex(v.key);
        let ctx = context(v.context);
        let blob = unhex(v.blob);
        for len in 0..blob.len() {
            assert!(
                open(&key, &blob[..len], &ctx).is_none(),
                "truncated to {len}"
            );
        }
        for extra in [&[0u8][..], &[0, 0, 0, 0], &blob] {
            let mut longer = blob.clone();
            longer.extend_from_slice(extra);
            assert!(
                open(&key, &longer, &ctx).is_none(),
                "extended by {}",
                extra.len()
            );
        }
    }

    #[test]
    fn changed_missing_or_extra_context_pairs_are_rejected() {
        let v = &VECTORS[1];
        let key = unhex(v.key);
        let blob = unhex(v.blob);
        assert!(open(&key, &blob, &context(v.context)).is_some());
        let reordered = [("Ab", "c"), ("purpose", "backup"), ("tenant", "acme")];
        assert!(open(&key, &blob, &context(&reordered)).is_some());
        for wrong in [
            &[][..],
            &[("tenant", "acme"), ("purpose", "backup")],
            &[
                ("tenant", "acme"),
                ("purpose", "backup"),
                ("Ab", "c"),
                ("x", "y"),
            ],
            &[("tenant", "ACME"), ("purpose", "backup"), ("Ab", "c")],
            &[("Tenant", "acme"), ("purpose", "backup"), ("Ab", "c")],
            &[("tenant", "acme"), ("purpose", "backup"), ("A", "bc")],
        ] {
            assert!(open(&key, &blob, &context(wrong)).is_none(), "{wrong:?}");
        }
    }

    #[test]
    fn malformed_blobs_are_invalid_ciphertext_without_a_message() {
        let good = unhex(VECTORS[0].blob);
        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        let mut bad_version = good.clone();
        bad_version[2] = 0x03;
        let mut version_zero = good.clone();
        version_zero[2] = 0x00;
        let too_long = [good.clone(), vec![0; MAX_BLOB_LEN]].concat();
        for bad in [
            vec![],
            good[..MIN_BLOB_LEN - 1].to_vec(),
            bad_magic,
            bad_version,
            version_zero,
            too_long,
        ] {
            let e = CiphertextBlob::parse(&bad).unwrap_err();
            assert_eq!((e.code(), e.message()), ("InvalidCiphertextException", ""));
        }
    }

    #[test]
    fn length_limits_follow_the_plaintext_limits() {
        let header = BlobHeader::new(KeyId::new_random(), 3);
        let iv = [7u8; IV_LEN];
        for n in [1 + TAG_LEN, MAX_PLAINTEXT_LEN + TAG_LEN] {
            let blob = header.encode(&iv, &vec![0xa5; n]).unwrap();
            assert_eq!(blob.len(), HEADER_LEN + IV_LEN + n);
            let parsed = CiphertextBlob::parse(&blob).unwrap();
            assert_eq!(parsed.header(), &header);
            assert_eq!(parsed.iv(), &iv);
        }
        for n in [0, TAG_LEN, MAX_PLAINTEXT_LEN + TAG_LEN + 1] {
            let e = header.encode(&iv, &vec![0; n]).unwrap_err();
            assert_eq!(e.code(), "KMSInternalException");
        }
        assert_eq!(MIN_BLOB_LEN, 52);
        assert_eq!(MAX_BLOB_LEN, 4147);
    }

    #[test]
    fn header_bytes_follow_the_documented_layout() {
        let header = BlobHeader::new(
            KeyId::parse("1234abcd-12ab-34cd-56ef-1234567890ab").unwrap(),
            0x0102_0304,
        );
        assert_eq!(
            hex::encode(header.to_bytes()),
            "484b01\
             1234abcd12ab34cd56ef1234567890ab\
             01020304"
        );
        assert_eq!(
            header.aad(&EncryptionContext::default()).len(),
            HEADER_LEN + 4
        );
    }

    #[test]
    fn a_multi_region_key_id_is_told_by_its_format_version() {
        let mrk = KeyId::parse("mrk-1234abcd12ab34cd56ef1234567890ab").unwrap();
        let header = BlobHeader::new(mrk, 1);
        assert_eq!(
            hex::encode(header.to_bytes()),
            "484b02\
             1234abcd12ab34cd56ef1234567890ab\
             00000001"
        );
        let blob = header.encode(&[0; IV_LEN], &[0xa5; 1 + TAG_LEN]).unwrap();
        let parsed = CiphertextBlob::parse(&blob).unwrap();
        assert_eq!(parsed.header().key_id(), mrk);
        assert!(parsed.header().key_id().is_multi_region());
    }
}
