//! The on-disk envelope of one record: it owns the byte layout, the format version
//! and the checksum, and refuses (fails closed on) anything that does not verify. It
//! never looks inside the payload, and its errors never quote it.
//!
//! Layout, version 1:
//!
//! ```text
//! "HKR" | version u8 = 1 | revision u64 BE | payload | CRC-32 u32 BE
//! ```
//!
//! The CRC-32 (ISO-HDLC, as `crc32fast` computes it) covers the table name, the key
//! (length-prefixed) and every envelope byte before it, so a record that lands under
//! the wrong key is caught too. It guards against corruption, not tampering: anyone
//! who can write the files could recompute any unkeyed hash, so SHA-256 would buy no
//! security here, and a CRC-32 detects every burst error up to 32 bits at a fraction
//! of the cost (it is already built for sled).

use super::{Record, StoreError, Table};

const MAGIC: &[u8; 3] = b"HKR";
const VERSION: u8 = 1;
const HEADER_LEN: usize = MAGIC.len() + 1 + 8;
const CRC_LEN: usize = 4;

/// Wraps `payload` at `revision` for storage under `table`/`key`.
pub(super) fn encode(table: Table, key: &[u8], revision: u64, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len() + CRC_LEN);
    bytes.extend_from_slice(MAGIC);
    bytes.push(VERSION);
    bytes.extend_from_slice(&revision.to_be_bytes());
    bytes.extend_from_slice(payload);
    let crc = checksum(table, key, &bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    bytes
}

/// Unwraps the stored `bytes` of `table`/`key`, or says why they cannot be trusted.
pub(super) fn decode(table: Table, key: &[u8], bytes: &[u8]) -> Result<Record, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        table,
        key: hex::encode(key),
        reason,
    };
    let Some((header, rest)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(corrupt(format!(
            "truncated envelope of {} bytes",
            bytes.len()
        )));
    };
    if &header[..MAGIC.len()] != MAGIC {
        return Err(corrupt("not a record envelope".to_owned()));
    }
    let version = header[MAGIC.len()];
    if version != VERSION {
        return Err(corrupt(format!(
            "unsupported envelope version {version} (this build reads version {VERSION})"
        )));
    }
    let Some((payload, stored_crc)) = rest.split_last_chunk::<CRC_LEN>() else {
        return Err(corrupt(format!(
            "truncated envelope of {} bytes",
            bytes.len()
        )));
    };
    let covered = &bytes[..bytes.len() - CRC_LEN];
    if checksum(table, key, covered) != u32::from_be_bytes(*stored_crc) {
        return Err(corrupt("checksum mismatch".to_owned()));
    }
    let mut revision = [0; 8];
    revision.copy_from_slice(&header[MAGIC.len() + 1..]);
    let revision = u64::from_be_bytes(revision);
    Ok(Record {
        payload: payload.to_vec(),
        revision,
    })
}

fn checksum(table: Table, key: &[u8], envelope: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(table.name().as_bytes());
    hasher.update(&(key.len() as u64).to_be_bytes());
    hasher.update(key);
    hasher.update(envelope);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: &[u8] = b"{\"Description\":\"payroll\"}";

    fn sample() -> (Record, Vec<u8>) {
        let record = Record {
            payload: PAYLOAD.to_vec(),
            revision: 0x0102_0304_0506_0708,
        };
        let bytes = encode(Table::Keys, b"key-1", record.revision, &record.payload);
        (record, bytes)
    }

    fn reason(result: Result<Record, StoreError>) -> String {
        match result {
            Err(StoreError::Corrupt {
                table: Table::Keys,
                key,
                reason,
            }) => {
                assert_eq!(key, "6b65792d31");
                reason
            }
            other => panic!("expected Corrupt for keys/key-1, got {other:?}"),
        }
    }

    #[test]
    fn round_trips_and_has_the_documented_layout() {
        let (record, bytes) = sample();
        assert_eq!(&bytes[..4], b"HKR\x01");
        assert_eq!(&bytes[4..12], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&bytes[12..bytes.len() - 4], PAYLOAD);
        assert_eq!(decode(Table::Keys, b"key-1", &bytes).unwrap(), record);
        let empty = Record {
            payload: vec![],
            revision: 1,
        };
        let bytes = encode(Table::Meta, b"", empty.revision, &empty.payload);
        assert_eq!(decode(Table::Meta, b"", &bytes).unwrap(), empty);
    }

    #[test]
    fn every_single_bit_flip_is_refused() {
        let (_, bytes) = sample();
        for index in 0..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.clone();
                flipped[index] ^= 1 << bit;
                reason(decode(Table::Keys, b"key-1", &flipped));
            }
        }
    }

    #[test]
    fn truncated_and_extended_envelopes_are_refused() {
        let (_, bytes) = sample();
        for len in 0..bytes.len() {
            reason(decode(Table::Keys, b"key-1", &bytes[..len]));
        }
        let mut extended = bytes.clone();
        extended.push(0);
        assert_eq!(
            reason(decode(Table::Keys, b"key-1", &extended)),
            "checksum mismatch"
        );
    }

    #[test]
    fn a_record_under_another_key_or_table_is_refused() {
        let (_, bytes) = sample();
        assert!(matches!(
            decode(Table::Keys, b"key-2", &bytes),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            decode(Table::Aliases, b"key-1", &bytes),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn reasons_are_specific_and_never_quote_the_payload() {
        let (_, bytes) = sample();
        let mut future = bytes.clone();
        future[3] = 2;
        let mut foreign = bytes.clone();
        foreign[0] = b'X';
        let mut damaged = bytes.clone();
        damaged[20] ^= 0xff;
        let cases = [
            (&bytes[..5], "truncated envelope of 5 bytes"),
            (&foreign[..], "not a record envelope"),
            (
                &future[..],
                "unsupported envelope version 2 (this build reads version 1)",
            ),
            (&damaged[..], "checksum mismatch"),
        ];
        for (stored, expected) in cases {
            let err = decode(Table::Keys, b"key-1", stored).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("metadata store record keys/6b65792d31 is corrupt: {expected}")
            );
        }
    }
}
