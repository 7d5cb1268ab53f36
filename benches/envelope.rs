//! Benchmark of client-side envelope encryption on a throw-away two-member SoftHSM2
//! cluster: streaming a message with the default suite (4 KiB frames) versus the raw
//! `aes-gcm` crate sealing the same buffer in 4 KiB pieces, with the process's peak RSS
//! (`VmHWM`) after each size, so that memory independent of the input shows; cached
//! get-encryption-materials per second; and key store calls per N messages with the data-key
//! cache. It prints figures next to the goals as verdicts and never asserts a timing.
//!
//! Run: `cargo bench --bench envelope` (64 MiB) or `cargo bench --bench envelope -- --full`
//! (64 MiB, then 1 GiB). The plaintext is generated in 1 MiB chunks and the ciphertext
//! discarded, so neither is held in memory.

mod common;

use std::hint::black_box;
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use secrecy::SecretSlice;

use hsm_kms::cluster::Cluster;
use hsm_kms::envelope::keyring::GeneratedDataKey;
use hsm_kms::envelope::materials::EncryptionRequest;
use hsm_kms::envelope::{
    AlgorithmSuite, CacheLimits, CachingMaterialsManager, DefaultMaterialsManager, EncryptOptions,
    EncryptionContext, Encryptor, KmsCallError, KmsClient, KmsKeyring, LocalKms, MaterialsCache,
    MaterialsManager,
};
use hsm_kms::keystore::api::CreateKeyRequest;
use hsm_kms::keystore::{Caller, KeyStore};

use common::{Res, load_average, met};

const MIB: u64 = 1024 * 1024;
const CHUNK: usize = 1024 * 1024;
const FRAME: usize = 4096;
/// Cached lookups timed for the materials rate.
const LOOKUPS: u32 = 1_000_000;
/// Messages and messages per data key of the key store call count.
const MESSAGES: usize = 1000;
const PER_KEY: u64 = 100;

/// Counts GenerateDataKey calls passed on to the key store.
struct CountingKms {
    inner: LocalKms,
    generated: AtomicUsize,
}

impl KmsClient for CountingKms {
    fn generate_data_key(
        &self,
        key_id: &str,
        context: &EncryptionContext,
    ) -> Result<GeneratedDataKey, KmsCallError> {
        self.generated.fetch_add(1, Ordering::Relaxed);
        self.inner.generate_data_key(key_id, context)
    }

    fn encrypt(
        &self,
        key_id: &str,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<(Vec<u8>, String), KmsCallError> {
        self.inner.encrypt(key_id, plaintext, context)
    }

    fn decrypt(
        &self,
        key_id: &str,
        ciphertext_blob: &[u8],
        context: &EncryptionContext,
    ) -> Result<(SecretSlice<u8>, String), KmsCallError> {
        self.inner.decrypt(key_id, ciphertext_blob, context)
    }
}

/// The process's peak RSS (`VmHWM`) in KiB, or 0 when the system does not tell.
fn peak_rss_kib() -> u64 {
    common::status_kib("VmHWM").unwrap_or(0)
}

/// Streams `total` bytes through an [`Encryptor`] into a sink; returns seconds.
fn envelope_run(manager: &dyn MaterialsManager, chunk: &[u8], total: u64) -> Res<f64> {
    let started = Instant::now();
    let mut encryptor = Encryptor::new(io::sink(), manager, &EncryptOptions::default())?;
    let mut left = total;
    while left > 0 {
        let take = left.min(chunk.len() as u64) as usize;
        encryptor.write_all(&chunk[..take])?;
        left -= take as u64;
    }
    encryptor.finish()?;
    Ok(started.elapsed().as_secs_f64())
}

/// Seals `total` bytes with raw AES-256-GCM in [`FRAME`]-byte pieces; returns seconds.
fn raw_run(chunk: &[u8], total: u64) -> Res<f64> {
    let cipher = Aes256Gcm::new_from_slice(&[7u8; 32]).map_err(|_| "key length")?;
    let mut buffer = chunk.to_vec();
    let started = Instant::now();
    let mut left = total;
    let mut counter = 0u32;
    while left > 0 {
        let take = left.min(buffer.len() as u64) as usize;
        for piece in buffer[..take].chunks_mut(FRAME) {
            counter += 1;
            let mut iv = [0u8; 12];
            iv[8..].copy_from_slice(&counter.to_be_bytes());
            let tag = cipher
                .encrypt_inout_detached(&Nonce::from(iv), b"aad", piece.into())
                .map_err(|_| "seal")?;
            black_box(tag);
        }
        black_box(&buffer);
        left -= take as u64;
    }
    Ok(started.elapsed().as_secs_f64())
}

fn throughput(manager: &dyn MaterialsManager, chunk: &[u8], total: u64) -> Res<()> {
    // Alternate three rounds each so load from elsewhere hits both alike; best of three.
    let mut envelope = f64::MAX;
    let mut raw = f64::MAX;
    for _ in 0..3 {
        envelope = envelope.min(envelope_run(manager, chunk, total)?);
        raw = raw.min(raw_run(chunk, total)?);
    }
    let mib = total as f64 / MIB as f64;
    let ratio = raw / envelope;
    println!(
        "stream {:>5} MiB: envelope {:>7.1} MiB/s, raw aes-gcm {:>7.1} MiB/s, ratio {:.2} (goal >= 0.8: {}), peak RSS {} KiB",
        total / MIB,
        mib / envelope,
        mib / raw,
        ratio,
        met(ratio >= 0.8),
        peak_rss_kib(),
    );
    Ok(())
}

fn main() -> Res<()> {
    // SAFETY: first thing in `main`, before any thread starts.
    #[allow(unsafe_code)]
    unsafe {
        hsm_kms::hsm::prepare_switches(["SOFTHSM2_CONF"])
    };
    let full = std::env::args().any(|arg| arg == "--full");
    let dir = tempfile::tempdir()?;
    let config = common::make_cluster(dir.path(), 2)?;
    drop(Cluster::init(
        &config.default_cluster,
        config.default_cluster()?,
    )?);
    let store = KeyStore::open(&config)?;
    let caller = Caller::local(store.scope());
    let key = store
        .create_key(&caller, CreateKeyRequest::default())?
        .key_metadata
        .arn;
    let kms = Arc::new(CountingKms {
        inner: LocalKms::new(Arc::new(store)),
        generated: AtomicUsize::new(0),
    });
    let keyring = Arc::new(KmsKeyring::strict(kms.clone(), vec![key])?);
    let direct: Arc<dyn MaterialsManager> = Arc::new(DefaultMaterialsManager::new(keyring));

    println!(
        "envelope encryption, default suite, {FRAME}-byte frames; {} CPU(s), load average {}",
        common::cpus(),
        load_average()
    );
    println!("peak RSS before streaming: {} KiB", peak_rss_kib());
    let chunk: Vec<u8> = (0..CHUNK).map(|i| (i * 31 % 251) as u8).collect();
    throughput(direct.as_ref(), &chunk, 64 * MIB)?;
    if full {
        throughput(direct.as_ref(), &chunk, 1024 * MIB)?;
    }

    // Cached get-encryption-materials per second.
    let cache = Arc::new(MaterialsCache::new(16));
    let caching = CachingMaterialsManager::new(
        direct.clone(),
        cache,
        CacheLimits::with_max_age(Duration::from_secs(3600)),
        None,
    )?;
    let context: EncryptionContext = [("tenant".to_owned(), "bench".to_owned())].into();
    let request = EncryptionRequest {
        context: &context,
        suite: AlgorithmSuite::Committing,
        plaintext_length: Some(100),
    };
    caching.encryption_materials(&request)?;
    let started = Instant::now();
    for _ in 0..LOOKUPS {
        black_box(caching.encryption_materials(black_box(&request))?);
    }
    let rate = f64::from(LOOKUPS) / started.elapsed().as_secs_f64();
    println!(
        "cached get encryption materials: {:.2} M/s (goal >= 1 M/s: {})",
        rate / 1e6,
        met(rate >= 1e6)
    );

    // Key store calls per N messages.
    let mut limits = CacheLimits::with_max_age(Duration::from_secs(3600));
    limits.max_messages = PER_KEY;
    let counted =
        CachingMaterialsManager::new(direct, Arc::new(MaterialsCache::new(16)), limits, None)?;
    let before = kms.generated.load(Ordering::Relaxed);
    for _ in 0..MESSAGES {
        let options = EncryptOptions {
            plaintext_length: Some(64),
            ..Default::default()
        };
        let mut encryptor = Encryptor::new(io::sink(), &counted, &options)?;
        encryptor.write_all(&chunk[..64])?;
        encryptor.finish()?;
    }
    let calls = kms.generated.load(Ordering::Relaxed) - before;
    let expected = MESSAGES / PER_KEY as usize;
    println!(
        "{MESSAGES} messages with max {PER_KEY} messages per data key: {calls} GenerateDataKey calls (expected {expected}: {})",
        met(calls == expected)
    );
    Ok(())
}
