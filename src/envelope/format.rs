//! The bytes of an AWS Encryption SDK message, format version 2: the header body (suite,
//! message id, encryption context, encrypted data keys, frame length, commitment), the
//! header authentication tag, framed body parts and the footer. It encodes and parses, and
//! says precisely why a message is malformed; it never sees a key.

use std::collections::BTreeMap;
use std::io::{self, Read};

use super::EnvelopeError;
use super::suite::{AlgorithmSuite, KEY_LEN, MESSAGE_ID_LEN};

/// The message format version this module writes and reads.
pub const VERSION: u8 = 0x02;
/// The first byte of a version-1 message (refused: every version-1 suite is non-committing).
const VERSION_1: u8 = 0x01;
/// Content type byte of framed content.
const FRAMED: u8 = 0x02;
/// Content type byte of non-framed content.
const NON_FRAMED: u8 = 0x01;
/// Length of an AES-GCM IV.
pub const IV_LEN: usize = 12;
/// Length of an AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Sequence-number field value that marks the final frame.
pub const FINAL_FRAME_MARKER: u32 = 0xFFFF_FFFF;
/// Body AAD content string of a regular frame.
const FRAME_LABEL: &[u8] = b"AWSKMSEncryptionClient Frame";
/// Body AAD content string of the final frame.
const FINAL_FRAME_LABEL: &[u8] = b"AWSKMSEncryptionClient Final Frame";
/// Default frame length, as the AWS Encryption SDK's.
pub const DEFAULT_FRAME_LENGTH: u32 = 4096;
/// Largest frame length written or read: a frame is held in memory whole.
pub const MAX_FRAME_LENGTH: u32 = 64 * 1024 * 1024;
/// Prefix of encryption context keys reserved for the SDK itself.
pub const RESERVED_CONTEXT_PREFIX: &str = "aws-crypto-";
/// Encryption context key carrying the signed suites' public verification key.
pub const PUBLIC_KEY_CONTEXT_KEY: &str = "aws-crypto-public-key";

/// A message's encryption context: UTF-8 pairs, serialized sorted by key.
pub type EncryptionContext = BTreeMap<String, String>;

/// One encrypted copy of the data key, as a keyring wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EncryptedDataKey {
    /// Who can decrypt it, e.g. `aws-kms`.
    pub provider_id: String,
    /// Which key of that provider, e.g. a KMS key ARN.
    pub provider_info: Vec<u8>,
    /// The wrapped data key.
    pub ciphertext: Vec<u8>,
}

/// The header body of a version-2 message.
#[derive(Debug, Clone)]
pub struct Header {
    /// The algorithm suite.
    pub suite: AlgorithmSuite,
    /// The message id: random, and the salt of the key derivation.
    pub message_id: [u8; MESSAGE_ID_LEN],
    /// The encryption context, authenticated with every frame.
    pub context: EncryptionContext,
    /// The data key, encrypted once per keyring key.
    pub encrypted_data_keys: Vec<EncryptedDataKey>,
    /// Plaintext bytes per frame.
    pub frame_length: u32,
    /// The suite data: the commitment value of the data key.
    pub commitment: [u8; KEY_LEN],
}

impl Header {
    /// The serialized header body (what the header authentication tag covers).
    pub fn encode(&self) -> Result<Vec<u8>, EnvelopeError> {
        let mut out = Vec::with_capacity(256);
        out.push(VERSION);
        out.extend_from_slice(&self.suite.id().to_be_bytes());
        out.extend_from_slice(&self.message_id);
        let context = encode_context(&self.context)?;
        out.extend_from_slice(&u16_len(context.len(), "the encryption context")?.to_be_bytes());
        out.extend_from_slice(&context);
        let count = u16_len(
            self.encrypted_data_keys.len(),
            "the encrypted data key list",
        )?;
        if count == 0 {
            return Err(EnvelopeError::Format(
                "a message needs at least one encrypted data key".to_owned(),
            ));
        }
        out.extend_from_slice(&count.to_be_bytes());
        for key in &self.encrypted_data_keys {
            put_field(&mut out, key.provider_id.as_bytes(), "a key provider id")?;
            put_field(&mut out, &key.provider_info, "a key provider info")?;
            put_field(&mut out, &key.ciphertext, "an encrypted data key")?;
        }
        out.push(FRAMED);
        out.extend_from_slice(&self.frame_length.to_be_bytes());
        out.extend_from_slice(&self.commitment);
        Ok(out)
    }

    /// Reads a header body from `input`, returning it with its exact bytes.
    ///
    /// `max_encrypted_data_keys` refuses a message carrying more encrypted data keys before
    /// any of them is read.
    pub fn read(
        input: &mut impl Read,
        max_encrypted_data_keys: Option<u16>,
    ) -> Result<(Header, Vec<u8>), EnvelopeError> {
        let mut reader = Recorder {
            input,
            bytes: Vec::with_capacity(256),
        };
        let version = reader.u8()?;
        if version == VERSION_1 {
            return Err(EnvelopeError::Policy(
                "a version-1 message: its algorithm suites do not commit to their key, and \
                 the commitment policy REQUIRE_ENCRYPT_REQUIRE_DECRYPT refuses them"
                    .to_owned(),
            ));
        }
        if version != VERSION {
            return Err(EnvelopeError::Format(format!(
                "not an AWS Encryption SDK message (version byte 0x{version:02X})"
            )));
        }
        let suite = AlgorithmSuite::from_id(reader.u16()?)?;
        let mut message_id = [0u8; MESSAGE_ID_LEN];
        reader.fill(&mut message_id)?;
        let context_len = reader.u16()?;
        let context = decode_context(&reader.take(usize::from(context_len))?)?;
        let count = reader.u16()?;
        if count == 0 {
            return Err(EnvelopeError::Format(
                "the message has no encrypted data key".to_owned(),
            ));
        }
        if let Some(limit) = max_encrypted_data_keys
            && count > limit
        {
            return Err(EnvelopeError::Policy(format!(
                "the message has {count} encrypted data keys; at most {limit} are allowed"
            )));
        }
        let mut encrypted_data_keys = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let provider_id = String::from_utf8(reader.field()?)
                .map_err(|_| EnvelopeError::Format("a key provider id is not UTF-8".to_owned()))?;
            let provider_info = reader.field()?;
            let ciphertext = reader.field()?;
            encrypted_data_keys.push(EncryptedDataKey {
                provider_id,
                provider_info,
                ciphertext,
            });
        }
        match reader.u8()? {
            FRAMED => {}
            NON_FRAMED => {
                return Err(EnvelopeError::Format(
                    "non-framed content is not supported; encrypt with a frame length".to_owned(),
                ));
            }
            other => {
                return Err(EnvelopeError::Format(format!(
                    "unknown content type 0x{other:02X}"
                )));
            }
        }
        let frame_length = reader.u32()?;
        check_frame_length(frame_length)?;
        let mut commitment = [0u8; KEY_LEN];
        reader.fill(&mut commitment)?;
        let header = Header {
            suite,
            message_id,
            context,
            encrypted_data_keys,
            frame_length,
            commitment,
        };
        Ok((header, reader.bytes))
    }
}

/// Refuses a frame length outside 1..=[`MAX_FRAME_LENGTH`].
pub fn check_frame_length(frame_length: u32) -> Result<(), EnvelopeError> {
    if frame_length == 0 || frame_length > MAX_FRAME_LENGTH {
        return Err(EnvelopeError::Format(format!(
            "frame length {frame_length} is outside 1..={MAX_FRAME_LENGTH}"
        )));
    }
    Ok(())
}

/// The serialized encryption context: empty for no pairs, else a count and sorted pairs.
pub fn encode_context(context: &EncryptionContext) -> Result<Vec<u8>, EnvelopeError> {
    if context.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    out.extend_from_slice(&u16_len(context.len(), "the encryption context")?.to_be_bytes());
    // A BTreeMap<String, _> iterates in UTF-8 byte order, the order the format requires.
    for (key, value) in context {
        put_field(&mut out, key.as_bytes(), "an encryption context key")?;
        put_field(&mut out, value.as_bytes(), "an encryption context value")?;
    }
    u16_len(out.len(), "the encryption context")?;
    Ok(out)
}

/// Parses a serialized encryption context, refusing duplicate keys and stray bytes.
fn decode_context(bytes: &[u8]) -> Result<EncryptionContext, EnvelopeError> {
    let mut context = EncryptionContext::new();
    if bytes.is_empty() {
        return Ok(context);
    }
    let mut input = bytes;
    let mut reader = Recorder {
        input: &mut input,
        bytes: Vec::new(),
    };
    let count = reader.u16()?;
    for _ in 0..count {
        let key = utf8(reader.field()?)?;
        let value = utf8(reader.field()?)?;
        if context.insert(key, value).is_some() {
            return Err(EnvelopeError::Format(
                "the encryption context repeats a key".to_owned(),
            ));
        }
    }
    if !input.is_empty() {
        return Err(EnvelopeError::Format(
            "the encryption context has bytes after its last pair".to_owned(),
        ));
    }
    Ok(context)
}

/// The AAD of one body frame.
pub fn frame_aad(
    message_id: &[u8; MESSAGE_ID_LEN],
    final_frame: bool,
    sequence: u32,
    content_len: u64,
) -> Vec<u8> {
    let label = if final_frame {
        FINAL_FRAME_LABEL
    } else {
        FRAME_LABEL
    };
    let mut aad = Vec::with_capacity(MESSAGE_ID_LEN + label.len() + 12);
    aad.extend_from_slice(message_id);
    aad.extend_from_slice(label);
    aad.extend_from_slice(&sequence.to_be_bytes());
    aad.extend_from_slice(&content_len.to_be_bytes());
    aad
}

/// The IV of frame `sequence`: eight zero bytes, then the sequence number.
pub fn frame_iv(sequence: u32) -> [u8; IV_LEN] {
    let mut iv = [0u8; IV_LEN];
    iv[IV_LEN - 4..].copy_from_slice(&sequence.to_be_bytes());
    iv
}

fn utf8(bytes: Vec<u8>) -> Result<String, EnvelopeError> {
    String::from_utf8(bytes)
        .map_err(|_| EnvelopeError::Format("the encryption context is not UTF-8".to_owned()))
}

fn u16_len(len: usize, what: &str) -> Result<u16, EnvelopeError> {
    u16::try_from(len)
        .map_err(|_| EnvelopeError::Format(format!("{what} is longer than 65535 bytes")))
}

fn put_field(out: &mut Vec<u8>, bytes: &[u8], what: &str) -> Result<(), EnvelopeError> {
    out.extend_from_slice(&u16_len(bytes.len(), what)?.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// Reads fields from a stream, keeping every byte read; the end of input is a truncation.
struct Recorder<'a, R: Read> {
    input: &'a mut R,
    bytes: Vec<u8>,
}

impl<R: Read> Recorder<'_, R> {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EnvelopeError> {
        read_exact(self.input, buf)?;
        self.bytes.extend_from_slice(buf);
        Ok(())
    }

    fn take(&mut self, len: usize) -> Result<Vec<u8>, EnvelopeError> {
        let mut buf = vec![0u8; len];
        self.fill(&mut buf)?;
        Ok(buf)
    }

    fn u8(&mut self) -> Result<u8, EnvelopeError> {
        let mut buf = [0u8; 1];
        self.fill(&mut buf)?;
        Ok(buf[0])
    }

    fn u16(&mut self) -> Result<u16, EnvelopeError> {
        let mut buf = [0u8; 2];
        self.fill(&mut buf)?;
        Ok(u16::from_be_bytes(buf))
    }

    fn u32(&mut self) -> Result<u32, EnvelopeError> {
        let mut buf = [0u8; 4];
        self.fill(&mut buf)?;
        Ok(u32::from_be_bytes(buf))
    }

    fn field(&mut self) -> Result<Vec<u8>, EnvelopeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }
}

/// `read_exact` where the end of input is [`EnvelopeError::Truncated`].
pub fn read_exact(input: &mut impl Read, buf: &mut [u8]) -> Result<(), EnvelopeError> {
    input.read_exact(buf).map_err(|error| match error.kind() {
        io::ErrorKind::UnexpectedEof => EnvelopeError::Truncated,
        _ => EnvelopeError::Io(error),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            suite: AlgorithmSuite::Committing,
            message_id: [3u8; MESSAGE_ID_LEN],
            context: [("b", "2"), ("a", "ü")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            encrypted_data_keys: vec![EncryptedDataKey {
                provider_id: "aws-kms".to_owned(),
                provider_info: b"arn".to_vec(),
                ciphertext: vec![9; 5],
            }],
            frame_length: 4096,
            commitment: [4u8; KEY_LEN],
        }
    }

    #[test]
    fn header_round_trips_with_the_same_bytes() {
        let bytes = header().encode().unwrap();
        let (parsed, raw) = Header::read(&mut bytes.as_slice(), None).unwrap();
        assert_eq!(raw, bytes);
        assert_eq!(parsed.context, header().context);
        assert_eq!(parsed.encrypted_data_keys, header().encrypted_data_keys);
        assert_eq!(parsed.encode().unwrap(), bytes);
    }

    #[test]
    fn context_is_sorted_and_empty_context_has_no_count() {
        assert!(
            encode_context(&EncryptionContext::new())
                .unwrap()
                .is_empty()
        );
        let encoded = encode_context(&header().context).unwrap();
        assert_eq!(&encoded[..5], &[0, 2, 0, 1, b'a']);
    }

    #[test]
    fn every_truncated_header_is_refused_as_truncated() {
        let bytes = header().encode().unwrap();
        for len in 0..bytes.len() {
            let outcome = Header::read(&mut &bytes[..len], None);
            assert!(matches!(outcome, Err(EnvelopeError::Truncated)), "{len}");
        }
    }

    #[test]
    fn too_many_encrypted_data_keys_are_refused() {
        let bytes = header().encode().unwrap();
        let outcome = Header::read(&mut bytes.as_slice(), Some(0));
        assert!(matches!(outcome, Err(EnvelopeError::Policy(_))));
    }

    #[test]
    fn frame_iv_carries_the_sequence_number() {
        assert_eq!(frame_iv(0x0102_0304), [0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
    }
}
