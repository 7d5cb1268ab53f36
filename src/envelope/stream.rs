//! Streaming encryption and decryption in constant memory: [`Encryptor`] is an
//! [`io::Write`] that emits the header at once and a frame for every `frame_length` bytes;
//! [`Decryptor`] is an [`io::Read`] that checks the key commitment and the header tag
//! before anything else, and releases a frame's plaintext only after its tag verified (the
//! last frame also after the signature verified). A message that ends early, or has bytes
//! after its end, is an error, never a short read.

use std::io::{self, Read, Write};
use std::sync::Arc;

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Nonce, Tag};
use p384::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p384::ecdsa::{DerSignature, Signature, VerifyingKey};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha384};
use zeroize::Zeroizing;

use super::EnvelopeError;
use super::format::{
    self, DEFAULT_FRAME_LENGTH, EncryptionContext, FINAL_FRAME_MARKER, Header, IV_LEN, TAG_LEN,
};
use super::materials::{
    DecryptionRequest, EncryptionMaterials, EncryptionRequest, MaterialsManager,
};
use super::suite::{self, AlgorithmSuite, MESSAGE_ID_LEN, MessageKeys};

/// How a message is written.
#[derive(Debug, Clone)]
pub struct EncryptOptions {
    /// The algorithm suite; by default the committing suite without signature.
    pub suite: AlgorithmSuite,
    /// Plaintext bytes per frame.
    pub frame_length: u32,
    /// The encryption context, authenticated and stored in the header.
    pub context: EncryptionContext,
    /// The exact plaintext length when known; the encryptor then refuses any other length.
    /// The caching materials manager caches only messages of known length.
    pub plaintext_length: Option<u64>,
}

impl Default for EncryptOptions {
    fn default() -> Self {
        EncryptOptions {
            suite: AlgorithmSuite::Committing,
            frame_length: DEFAULT_FRAME_LENGTH,
            context: EncryptionContext::new(),
            plaintext_length: None,
        }
    }
}

/// What a reader accepts.
#[derive(Debug, Clone, Default)]
pub struct DecryptOptions {
    /// Refuse messages with more encrypted data keys than this (`None`: no limit).
    pub max_encrypted_data_keys: Option<u16>,
}

/// The AAD-less, empty-plaintext GCM tag over the header body, with the all-zero IV.
fn header_tag(keys: &MessageKeys, header_body: &[u8]) -> Result<Tag, EnvelopeError> {
    keys.cipher
        .encrypt_inout_detached(
            &Nonce::from([0u8; IV_LEN]),
            header_body,
            (&mut [] as &mut [u8]).into(),
        )
        .map_err(|_| EnvelopeError::Format("the header is too long to authenticate".to_owned()))
}

/// Writes one message to `W`.
pub struct Encryptor<W: Write> {
    output: W,
    keys: MessageKeys,
    message_id: [u8; MESSAGE_ID_LEN],
    frame_length: usize,
    /// Plaintext of the frame being filled; sealed in place.
    frame: Zeroizing<Vec<u8>>,
    sequence: u32,
    materials: Arc<EncryptionMaterials>,
    signature_hash: Option<Sha384>,
    expected_length: Option<u64>,
    written: u64,
    failed: bool,
}

impl<W: Write> Encryptor<W> {
    /// Gets materials from `manager` and writes the message header to `output`.
    pub fn new(
        mut output: W,
        manager: &dyn MaterialsManager,
        options: &EncryptOptions,
    ) -> Result<Encryptor<W>, EnvelopeError> {
        format::check_frame_length(options.frame_length)?;
        let materials = manager.encryption_materials(&EncryptionRequest {
            context: &options.context,
            suite: options.suite,
            plaintext_length: options.plaintext_length,
        })?;
        let mut message_id = [0u8; MESSAGE_ID_LEN];
        getrandom::fill(&mut message_id)
            .map_err(|_| EnvelopeError::Random("the operating system's generator failed"))?;
        let keys = suite::derive(
            materials.suite,
            materials.data_key.expose_secret(),
            &message_id,
        )?;
        let header = Header {
            suite: materials.suite,
            message_id,
            context: materials.context.clone(),
            encrypted_data_keys: materials.encrypted_data_keys.clone(),
            frame_length: options.frame_length,
            commitment: *keys.commitment,
        };
        let mut bytes = header.encode()?;
        bytes.extend_from_slice(&header_tag(&keys, &bytes)?);
        let mut signature_hash = materials.signing_key.as_ref().map(|_| Sha384::new());
        if let Some(hash) = signature_hash.as_mut() {
            hash.update(&bytes);
        }
        output.write_all(&bytes)?;
        let frame_length = usize::try_from(options.frame_length)
            .map_err(|_| EnvelopeError::Format("frame length too large".to_owned()))?;
        Ok(Encryptor {
            output,
            keys,
            message_id,
            frame_length,
            frame: Zeroizing::new(Vec::with_capacity(frame_length)),
            sequence: 1,
            materials,
            signature_hash,
            expected_length: options.plaintext_length,
            written: 0,
            failed: false,
        })
    }

    /// Writes bytes of the message, adding them to the signature's hash.
    fn emit(&mut self, bytes: &[u8]) -> Result<(), EnvelopeError> {
        if let Some(hash) = self.signature_hash.as_mut() {
            hash.update(bytes);
        }
        self.output.write_all(bytes)?;
        Ok(())
    }

    /// Seals the buffered plaintext as frame `self.sequence` and writes it.
    fn seal_frame(&mut self, final_frame: bool) -> Result<(), EnvelopeError> {
        let sequence = self.sequence;
        let content_len = self.frame.len() as u64;
        let aad = format::frame_aad(&self.message_id, final_frame, sequence, content_len);
        let iv = format::frame_iv(sequence);
        let tag = self
            .keys
            .cipher
            .encrypt_inout_detached(&Nonce::from(iv), &aad, self.frame.as_mut_slice().into())
            .map_err(|_| EnvelopeError::Format("a frame is too long".to_owned()))?;
        let mut prefix = Vec::with_capacity(24);
        if final_frame {
            prefix.extend_from_slice(&FINAL_FRAME_MARKER.to_be_bytes());
        }
        prefix.extend_from_slice(&sequence.to_be_bytes());
        prefix.extend_from_slice(&iv);
        if final_frame {
            let len = u32::try_from(self.frame.len())
                .map_err(|_| EnvelopeError::Format("a frame is too long".to_owned()))?;
            prefix.extend_from_slice(&len.to_be_bytes());
        }
        self.emit(&prefix)?;
        let sealed = std::mem::take(&mut *self.frame);
        let outcome = self.emit(&sealed).and_then(|()| self.emit(&tag));
        self.frame = Zeroizing::new(sealed);
        self.frame.clear();
        outcome?;
        self.sequence = sequence
            .checked_add(1)
            .filter(|next| *next != FINAL_FRAME_MARKER)
            .ok_or_else(|| {
                EnvelopeError::InvalidInput(
                    "the message has more frames than the format allows".to_owned(),
                )
            })?;
        Ok(())
    }

    /// Writes the final frame and, for the signed suite, the signature; returns the writer.
    pub fn finish(mut self) -> Result<W, EnvelopeError> {
        if self.failed {
            return Err(EnvelopeError::InvalidInput(
                "an earlier write failed; the message is incomplete".to_owned(),
            ));
        }
        if let Some(expected) = self.expected_length
            && expected != self.written
        {
            return Err(EnvelopeError::InvalidInput(format!(
                "the plaintext was announced as {expected} bytes but {} were written",
                self.written
            )));
        }
        self.seal_frame(true)?;
        if let (Some(hash), Some(key)) = (
            self.signature_hash.take(),
            self.materials.signing_key.as_ref(),
        ) {
            let signature: Signature = key
                .sign_prehash(&hash.finalize())
                .map_err(|_| EnvelopeError::Format("ECDSA signing failed".to_owned()))?;
            let der: DerSignature = signature.to_der();
            let len = u16::try_from(der.as_bytes().len())
                .map_err(|_| EnvelopeError::Format("signature too long".to_owned()))?;
            self.output.write_all(&len.to_be_bytes())?;
            self.output.write_all(der.as_bytes())?;
        }
        self.output.flush()?;
        Ok(self.output)
    }

    fn write_plaintext(&mut self, mut buf: &[u8]) -> Result<(), EnvelopeError> {
        if let Some(expected) = self.expected_length
            && self.written + buf.len() as u64 > expected
        {
            return Err(EnvelopeError::InvalidInput(format!(
                "more plaintext than the announced {expected} bytes"
            )));
        }
        self.written += buf.len() as u64;
        while !buf.is_empty() {
            // A full frame is sealed only once more plaintext follows: the last frame,
            // even a full one, must be the final frame.
            if self.frame.len() == self.frame_length {
                self.seal_frame(false)?;
            }
            let room = self.frame_length - self.frame.len();
            let take = room.min(buf.len());
            self.frame.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
        }
        Ok(())
    }
}

impl<W: Write> Write for Encryptor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::Error::other(EnvelopeError::InvalidInput(
                "an earlier write failed; the message is incomplete".to_owned(),
            )));
        }
        match self.write_plaintext(buf) {
            Ok(()) => Ok(buf.len()),
            Err(error) => {
                self.failed = true;
                Err(error.into_io())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.output.flush()
    }
}

/// Reads one message from `R`, yielding authenticated plaintext.
pub struct Decryptor<R: Read> {
    input: R,
    header: Header,
    keys: MessageKeys,
    frame_length: usize,
    /// Ciphertext then plaintext of the current frame.
    frame: Zeroizing<Vec<u8>>,
    released: usize,
    sequence: u32,
    verifying_key: Option<VerifyingKey>,
    signature_hash: Option<Sha384>,
    done: bool,
    failure: Option<String>,
}

impl<R: Read> Decryptor<R> {
    /// Reads and authenticates the header: the data key from `manager`, the key
    /// commitment, then the header tag. No plaintext is read yet.
    pub fn new(
        mut input: R,
        manager: &dyn MaterialsManager,
        options: &DecryptOptions,
    ) -> Result<Decryptor<R>, EnvelopeError> {
        let (header, body) = Header::read(&mut input, options.max_encrypted_data_keys)?;
        let materials = manager.decryption_materials(&DecryptionRequest {
            suite: header.suite,
            context: &header.context,
            encrypted_data_keys: &header.encrypted_data_keys,
        })?;
        if materials.suite != header.suite {
            return Err(EnvelopeError::Format(
                "the materials are for another algorithm suite".to_owned(),
            ));
        }
        let keys = suite::derive(
            header.suite,
            materials.data_key.expose_secret(),
            &header.message_id,
        )?;
        if !keys.commits_to(&header.commitment) {
            return Err(EnvelopeError::Commitment);
        }
        let mut tag = [0u8; TAG_LEN];
        format::read_exact(&mut input, &mut tag)?;
        let expected = header_tag(&keys, &body)?;
        if !bool::from(subtle::ConstantTimeEq::ct_eq(expected.as_slice(), &tag[..])) {
            return Err(EnvelopeError::Authentication("the header"));
        }
        let signature_hash = materials.verifying_key.map(|_| {
            let mut hash = Sha384::new();
            hash.update(&body);
            hash.update(tag);
            hash
        });
        let frame_length = usize::try_from(header.frame_length)
            .map_err(|_| EnvelopeError::Format("frame length too large".to_owned()))?;
        Ok(Decryptor {
            input,
            keys,
            frame_length,
            frame: Zeroizing::new(Vec::with_capacity(frame_length)),
            released: 0,
            sequence: 1,
            verifying_key: materials.verifying_key,
            signature_hash,
            done: false,
            failure: None,
            header,
        })
    }

    /// The authenticated header: suite, encryption context, encrypted data keys.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Reads message bytes, adding them to the signature's hash.
    fn take(&mut self, buf: &mut [u8]) -> Result<(), EnvelopeError> {
        format::read_exact(&mut self.input, buf)?;
        if let Some(hash) = self.signature_hash.as_mut() {
            hash.update(&*buf);
        }
        Ok(())
    }

    fn u32(&mut self) -> Result<u32, EnvelopeError> {
        let mut buf = [0u8; 4];
        self.take(&mut buf)?;
        Ok(u32::from_be_bytes(buf))
    }

    /// Reads, authenticates and decrypts the next frame into `self.frame`.
    fn next_frame(&mut self) -> Result<(), EnvelopeError> {
        let mut sequence = self.u32()?;
        let final_frame = sequence == FINAL_FRAME_MARKER;
        if final_frame {
            sequence = self.u32()?;
        }
        if sequence != self.sequence {
            return Err(EnvelopeError::Format(format!(
                "frame {sequence} where frame {} was expected",
                self.sequence
            )));
        }
        let mut iv = [0u8; IV_LEN];
        self.take(&mut iv)?;
        if iv != format::frame_iv(sequence) {
            return Err(EnvelopeError::Authentication("a frame IV"));
        }
        let content_len = if final_frame {
            let len = usize::try_from(self.u32()?).unwrap_or(usize::MAX);
            if len > self.frame_length {
                return Err(EnvelopeError::Format(
                    "the final frame is longer than the frame length".to_owned(),
                ));
            }
            len
        } else {
            self.frame_length
        };
        let mut frame = std::mem::take(&mut *self.frame);
        frame.clear();
        frame.resize(content_len, 0);
        let mut tag = [0u8; TAG_LEN];
        let outcome = self
            .take(&mut frame)
            .and_then(|()| self.take(&mut tag))
            .and_then(|()| {
                let aad = format::frame_aad(
                    &self.header.message_id,
                    final_frame,
                    sequence,
                    content_len as u64,
                );
                self.keys
                    .cipher
                    .decrypt_inout_detached(
                        &Nonce::from(iv),
                        &aad,
                        frame.as_mut_slice().into(),
                        &Tag::from(tag),
                    )
                    .map_err(|_| EnvelopeError::Authentication("a frame"))
            });
        if outcome.is_err() {
            zeroize::Zeroize::zeroize(&mut frame);
        }
        self.frame = Zeroizing::new(frame);
        outcome?;
        self.released = 0;
        if final_frame {
            self.finish_message().inspect_err(|_| self.frame.clear())?;
            self.done = true;
        } else {
            self.sequence = sequence.checked_add(1).ok_or_else(|| {
                EnvelopeError::Format("the message has too many frames".to_owned())
            })?;
        }
        Ok(())
    }

    /// After the final frame: the signature (signed suite), then the end of input.
    fn finish_message(&mut self) -> Result<(), EnvelopeError> {
        if let (Some(hash), Some(key)) = (self.signature_hash.take(), self.verifying_key.as_ref()) {
            let mut len = [0u8; 2];
            format::read_exact(&mut self.input, &mut len)?;
            let mut der = vec![0u8; usize::from(u16::from_be_bytes(len))];
            format::read_exact(&mut self.input, &mut der)?;
            let signature = Signature::from_der(&der)
                .map_err(|_| EnvelopeError::Authentication("the signature"))?;
            key.verify_prehash(&hash.finalize(), &signature)
                .map_err(|_| EnvelopeError::Authentication("the signature"))?;
        }
        let mut probe = [0u8; 1];
        loop {
            match self.input.read(&mut probe) {
                Ok(0) => return Ok(()),
                Ok(_) => {
                    return Err(EnvelopeError::Format(
                        "bytes follow the end of the message".to_owned(),
                    ));
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(EnvelopeError::Io(error)),
            }
        }
    }
}

impl<R: Read> Read for Decryptor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(failure) = &self.failure {
            return Err(io::Error::new(io::ErrorKind::InvalidData, failure.clone()));
        }
        while self.released == self.frame.len() {
            if self.done || buf.is_empty() {
                return Ok(0);
            }
            if let Err(error) = self.next_frame() {
                self.failure = Some(error.to_string());
                return Err(error.into_io());
            }
        }
        let available = &self.frame[self.released..];
        let count = available.len().min(buf.len());
        buf[..count].copy_from_slice(&available[..count]);
        self.released += count;
        Ok(count)
    }
}
