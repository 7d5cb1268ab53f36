//! Client-side envelope encryption (AWS Encryption SDK message format) over a real key
//! store on a two-member SoftHSM2 cluster: round trips for both suites and several frame
//! lengths, tampering (every bit flip, every truncation), key commitment, keyring rules,
//! and the data-key cache's thresholds, alone and shared by 8 threads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::TestStore;
use hsm_kms::envelope::keyring::GeneratedDataKey;
use hsm_kms::envelope::{
    AlgorithmSuite, CacheLimits, CachingMaterialsManager, DecryptOptions, Decryptor,
    DefaultMaterialsManager, DiscoveryFilter, EncryptOptions, EncryptionContext, Encryptor,
    EnvelopeError, Header, KmsCallError, KmsClient, KmsKeyring, LocalKms, MaterialsCache,
    MaterialsManager,
};
use hsm_kms::keystore::api::CreateKeyRequest;
use secrecy::SecretSlice;

const SUITES: [AlgorithmSuite; 2] = [AlgorithmSuite::Committing, AlgorithmSuite::CommittingSigned];

/// A key store client that counts the calls it passes on (for the cache tests).
struct CountingKms {
    inner: LocalKms,
    generated: AtomicUsize,
    decrypted: AtomicUsize,
}

impl KmsClient for CountingKms {
    fn generate_data_key(
        &self,
        key_id: &str,
        context: &EncryptionContext,
    ) -> Result<GeneratedDataKey, KmsCallError> {
        self.generated.fetch_add(1, Ordering::SeqCst);
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
        self.decrypted.fetch_add(1, Ordering::SeqCst);
        self.inner.decrypt(key_id, ciphertext_blob, context)
    }
}

/// A key store with `keys` fresh keys, and a counting client over it.
struct Fixture {
    _ts: common::TestCluster,
    kms: Arc<CountingKms>,
    arns: Vec<String>,
}

fn fixture(keys: usize) -> Fixture {
    let TestStore {
        cluster,
        store,
        caller,
        ..
    } = TestStore::new();
    let arns = (0..keys)
        .map(|_| {
            store
                .create_key(&caller, CreateKeyRequest::default())
                .unwrap()
                .key_metadata
                .arn
        })
        .collect();
    let kms = Arc::new(CountingKms {
        inner: LocalKms::new(Arc::new(store)),
        generated: AtomicUsize::new(0),
        decrypted: AtomicUsize::new(0),
    });
    Fixture {
        _ts: cluster,
        kms,
        arns,
    }
}

impl Fixture {
    fn manager(&self, key_ids: &[&str]) -> DefaultMaterialsManager {
        let keyring = KmsKeyring::strict(
            self.kms.clone(),
            key_ids.iter().map(|id| id.to_string()).collect(),
        )
        .unwrap();
        DefaultMaterialsManager::new(Arc::new(keyring))
    }
}

fn context(pairs: &[(&str, &str)]) -> EncryptionContext {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn encrypt(manager: &dyn MaterialsManager, plaintext: &[u8], options: &EncryptOptions) -> Vec<u8> {
    let mut encryptor = Encryptor::new(Vec::new(), manager, options).unwrap();
    // Odd-sized writes, so frames fill across write calls.
    for chunk in plaintext.chunks(7) {
        encryptor.write_all(chunk).unwrap();
    }
    encryptor.finish().unwrap()
}

fn decrypt(manager: &dyn MaterialsManager, message: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    let mut decryptor = Decryptor::new(message, manager, &DecryptOptions::default())?;
    let mut plaintext = Vec::new();
    decryptor
        .read_to_end(&mut plaintext)
        .map_err(EnvelopeError::from_io)?;
    Ok(plaintext)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn messages_round_trip_for_both_suites_frame_lengths_and_sizes() {
    let f = fixture(2);
    let writer = f.manager(&[&f.arns[0], &f.arns[1]]);
    // Each key alone can decrypt: the second one by key id, not ARN.
    let second_id = f.arns[1].rsplit('/').next().unwrap().to_owned();
    let readers = [f.manager(&[&f.arns[0]]), f.manager(&[&second_id])];
    let context = context(&[("purpose", "テスト"), ("ü-key", "naïve ✓")]);
    for suite in SUITES {
        for frame_length in [1u32, 64, 4096] {
            let frame = frame_length as usize;
            for len in [0, 1, frame, frame + 1, 3 * frame, 3 * frame + 5] {
                let plaintext = pattern(len);
                let options = EncryptOptions {
                    suite,
                    frame_length,
                    context: context.clone(),
                    plaintext_length: Some(len as u64),
                };
                let message = encrypt(&writer, &plaintext, &options);
                let (header, _) = Header::read(&mut message.as_slice(), None).unwrap();
                assert_eq!(header.suite, suite);
                assert_eq!(header.frame_length, frame_length);
                assert_eq!(header.encrypted_data_keys.len(), 2);
                assert_eq!(header.context["purpose"], "テスト");
                assert_eq!(
                    header.context.contains_key("aws-crypto-public-key"),
                    suite.is_signed()
                );
                if len >= 16 {
                    assert!(
                        !message.windows(16).any(|w| w == &plaintext[..16]),
                        "plaintext in the message"
                    );
                }
                for reader in &readers {
                    assert_eq!(
                        decrypt(reader, &message).unwrap(),
                        plaintext,
                        "{suite:?} frame {frame_length} len {len}"
                    );
                }
            }
        }
    }
}

/// Every single-bit flip and every truncation of `message` is refused; a flip in the
/// header (body and tag) already when the header is read, before any plaintext.
fn assert_tamper_proof(manager: &dyn MaterialsManager, message: &[u8], plaintext: &[u8]) {
    assert_eq!(decrypt(manager, message).unwrap(), plaintext);
    let (_, body) = Header::read(&mut &message[..], None).unwrap();
    let header_len = body.len() + 16;
    for bit in 0..message.len() * 8 {
        let mut tampered = message.to_vec();
        tampered[bit / 8] ^= 1 << (bit % 8);
        if bit / 8 < header_len {
            let outcome = Decryptor::new(tampered.as_slice(), manager, &DecryptOptions::default());
            assert!(
                outcome.is_err(),
                "flipping header bit {bit} (byte {}) went unnoticed",
                bit / 8
            );
        } else {
            assert!(
                decrypt(manager, &tampered).is_err(),
                "flipping bit {bit} (byte {}) went unnoticed",
                bit / 8
            );
        }
    }
    for len in 0..message.len() {
        match decrypt(manager, &message[..len]) {
            Err(EnvelopeError::Truncated) => {}
            other => panic!("truncation at {len} of {}: {other:?}", message.len()),
        }
    }
    let mut trailing = message.to_vec();
    trailing.push(0);
    assert!(
        decrypt(manager, &trailing).is_err(),
        "trailing byte accepted"
    );
}

#[test]
fn every_bit_flip_and_every_truncation_is_refused() {
    let f = fixture(1);
    let manager = f.manager(&[&f.arns[0]]);
    let plaintext = pattern(40);
    for suite in SUITES {
        let options = EncryptOptions {
            suite,
            frame_length: 16,
            context: context(&[("a", "b")]),
            plaintext_length: None,
        };
        let message = encrypt(&manager, &plaintext, &options);
        assert_tamper_proof(&manager, &message, &plaintext);
    }
}

#[test]
fn a_header_whose_commitment_does_not_match_is_refused_before_any_plaintext() {
    let f = fixture(1);
    let manager = f.manager(&[&f.arns[0]]);
    let message = encrypt(&manager, b"secret", &EncryptOptions::default());
    let (_, body) = Header::read(&mut message.as_slice(), None).unwrap();
    let mut tampered = message.clone();
    tampered[body.len() - 1] ^= 0x80; // the last byte of the commitment value
    let outcome = Decryptor::new(tampered.as_slice(), &manager, &DecryptOptions::default());
    assert!(matches!(outcome, Err(EnvelopeError::Commitment)));
}

#[test]
fn keyrings_decrypt_only_what_they_may() {
    let f = fixture(2);
    let writer = f.manager(&[&f.arns[0]]);
    let message = encrypt(&writer, b"data", &EncryptOptions::default());

    // A strict keyring of another key.
    let other = f.manager(&[&f.arns[1]]);
    assert!(matches!(
        decrypt(&other, &message),
        Err(EnvelopeError::NoDecryptableKey(_))
    ));

    // Discovery: any key of the account, but not of another account or partition.
    let discovery = |filter| {
        DefaultMaterialsManager::new(Arc::new(KmsKeyring::discovery(f.kms.clone(), filter)))
    };
    assert_eq!(decrypt(&discovery(None), &message).unwrap(), b"data");
    let filter = |partition: &str, account: &str| {
        Some(DiscoveryFilter {
            partition: partition.to_owned(),
            accounts: vec![account.to_owned()],
        })
    };
    assert_eq!(
        decrypt(&discovery(filter("aws", "111122223333")), &message).unwrap(),
        b"data"
    );
    for refused in [
        filter("aws", "444455556666"),
        filter("aws-cn", "111122223333"),
    ] {
        assert!(matches!(
            decrypt(&discovery(refused), &message),
            Err(EnvelopeError::NoDecryptableKey(_))
        ));
    }

    // The limit on encrypted data keys.
    let two = f.manager(&[&f.arns[0], &f.arns[1]]);
    let message = encrypt(&two, b"data", &EncryptOptions::default());
    let limited = DecryptOptions {
        max_encrypted_data_keys: Some(1),
    };
    assert!(matches!(
        Decryptor::new(message.as_slice(), &writer, &limited),
        Err(EnvelopeError::Policy(_))
    ));

    // Reserved context keys are the SDK's.
    let reserved = EncryptOptions {
        context: context(&[("aws-crypto-public-key", "x")]),
        ..Default::default()
    };
    assert!(matches!(
        Encryptor::new(Vec::new(), &writer, &reserved),
        Err(EnvelopeError::InvalidInput(_))
    ));
}

#[test]
fn an_encryptor_refuses_a_plaintext_of_another_length_than_announced() {
    let f = fixture(1);
    let manager = f.manager(&[&f.arns[0]]);
    let options = EncryptOptions {
        plaintext_length: Some(4),
        ..Default::default()
    };
    let mut encryptor = Encryptor::new(Vec::new(), &manager, &options).unwrap();
    assert!(encryptor.write_all(b"12345").is_err());
    let mut short = Encryptor::new(Vec::new(), &manager, &options).unwrap();
    short.write_all(b"123").unwrap();
    assert!(matches!(
        short.finish(),
        Err(EnvelopeError::InvalidInput(_))
    ));
}

/// The first encrypted data key of a fresh message of `len` bytes encrypted by `manager`.
fn data_key_of_new_message(manager: &dyn MaterialsManager, len: usize) -> Vec<u8> {
    let options = EncryptOptions {
        plaintext_length: Some(len as u64),
        context: context(&[("tenant", "a")]),
        ..Default::default()
    };
    let message = encrypt(manager, &pattern(len), &options);
    let (header, _) = Header::read(&mut message.as_slice(), None).unwrap();
    header.encrypted_data_keys[0].ciphertext.clone()
}

/// Encrypts messages of the given lengths through `manager`; returns, per message, the
/// index of the data key it used (in order of first use).
fn data_key_per_message(manager: &dyn MaterialsManager, lengths: &[usize]) -> Vec<usize> {
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    lengths
        .iter()
        .map(|&len| {
            let next = seen.len();
            *seen
                .entry(data_key_of_new_message(manager, len))
                .or_insert(next)
        })
        .collect()
}

fn caching(f: &Fixture, limits: CacheLimits) -> CachingMaterialsManager {
    CachingMaterialsManager::new(
        Arc::new(f.manager(&[&f.arns[0]])),
        Arc::new(MaterialsCache::new(16)),
        limits,
        None,
    )
    .unwrap()
}

#[test]
fn cache_max_messages_forces_a_new_data_key_after_that_many_messages() {
    let f = fixture(1);
    let mut limits = CacheLimits::with_max_age(Duration::from_secs(3600));
    limits.max_messages = 3;
    let manager = caching(&f, limits);
    assert_eq!(
        data_key_per_message(&manager, &[10; 7]),
        [0, 0, 0, 1, 1, 1, 2]
    );
    assert_eq!(f.kms.generated.load(Ordering::SeqCst), 3);
    let stats = manager.cache().statistics();
    assert_eq!((stats.hits, stats.misses, stats.evictions), (4, 3, 2));
}

#[test]
fn cache_max_bytes_forces_a_new_data_key_before_the_limit_is_passed() {
    let f = fixture(1);
    let mut limits = CacheLimits::with_max_age(Duration::from_secs(3600));
    limits.max_bytes = 100;
    let manager = caching(&f, limits);
    // 40 + 40 + 20 = 100 fits; the next byte does not.
    assert_eq!(
        data_key_per_message(&manager, &[40, 40, 20, 1, 60, 40]),
        [0, 0, 0, 1, 1, 2]
    );
    // A message larger than max bytes bypasses the cache: a key of its own, not cached.
    let before = f.kms.generated.load(Ordering::SeqCst);
    assert_eq!(data_key_per_message(&manager, &[101, 101]), [0, 1]);
    assert_eq!(f.kms.generated.load(Ordering::SeqCst), before + 2);
}

#[test]
fn cache_max_age_forces_a_new_data_key_once_an_entry_is_older() {
    let f = fixture(1);
    let young = caching(&f, CacheLimits::with_max_age(Duration::from_secs(3600)));
    assert_eq!(data_key_per_message(&young, &[10, 10, 10]), [0, 0, 0]);
    let manager = caching(&f, CacheLimits::with_max_age(Duration::from_millis(300)));
    let first = data_key_of_new_message(&manager, 10);
    std::thread::sleep(Duration::from_millis(400));
    let second = data_key_of_new_message(&manager, 10);
    assert_ne!(first, second, "an entry older than max age was used");
    assert_eq!(f.kms.generated.load(Ordering::SeqCst), 3);
    assert_eq!(manager.cache().statistics().evictions, 1);
}

#[test]
fn cache_serves_decryption_of_the_same_data_key_once() {
    let f = fixture(1);
    let manager = caching(&f, CacheLimits::with_max_age(Duration::from_secs(3600)));
    let options = EncryptOptions {
        plaintext_length: Some(5),
        ..Default::default()
    };
    let message = encrypt(&manager, b"hello", &options);
    for _ in 0..3 {
        assert_eq!(decrypt(&manager, &message).unwrap(), b"hello");
    }
    assert_eq!(f.kms.decrypted.load(Ordering::SeqCst), 1);
}

#[test]
fn a_cache_shared_by_8_threads_never_overuses_a_data_key() {
    let f = fixture(1);
    let mut limits = CacheLimits::with_max_age(Duration::from_secs(3600));
    limits.max_messages = 10;
    let manager = Arc::new(caching(&f, limits));
    let messages: Vec<Vec<u8>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|thread| {
                let manager = Arc::clone(&manager);
                scope.spawn(move || {
                    (0..40)
                        .map(|i| {
                            let plaintext = format!("thread {thread} message {i}").into_bytes();
                            let options = EncryptOptions {
                                plaintext_length: Some(plaintext.len() as u64),
                                ..Default::default()
                            };
                            let message = encrypt(manager.as_ref(), &plaintext, &options);
                            assert_eq!(decrypt(manager.as_ref(), &message).unwrap(), plaintext);
                            message
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap())
            .collect()
    });
    let mut uses: HashMap<Vec<u8>, usize> = HashMap::new();
    for message in &messages {
        let (header, _) = Header::read(&mut message.as_slice(), None).unwrap();
        *uses
            .entry(header.encrypted_data_keys[0].ciphertext.clone())
            .or_default() += 1;
    }
    assert!(uses.values().all(|&n| n <= 10), "{uses:?}");
    assert!(uses.len() >= 32, "320 messages at 10 per key need 32 keys");
    assert_eq!(f.kms.generated.load(Ordering::SeqCst), uses.len());
    let stats = manager.cache().statistics();
    // Each thread encrypts and decrypts: 640 lookups in all.
    assert_eq!(stats.hits + stats.misses, 640);
}

#[test]
fn the_cli_encrypts_and_decrypts_files_in_process_and_leaves_nothing_on_failure() {
    let tc = common::TestCluster::new(2);
    let ok = |output: std::process::Output| {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    };
    ok(tc.cli(&["cluster", "init"]));
    let created: serde_json::Value =
        serde_json::from_slice(&ok(tc.cli(&["create-key"])).stdout).unwrap();
    let arn = created["KeyMetadata"]["Arn"].as_str().unwrap().to_owned();
    ok(tc.cli(&[
        "create-alias",
        "--alias-name",
        "alias/files",
        "--target-key-id",
        &arn,
    ]));

    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let plaintext = pattern(50_000);
    std::fs::write(path("plain"), &plaintext).unwrap();
    ok(tc.cli(&[
        "encrypt-file",
        "--key-id",
        "alias/files",
        "--input",
        &path("plain"),
        "--output",
        &path("message"),
        "--encryption-context",
        "tenant=a",
        "--suite",
        "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384",
        "--frame-length",
        "1000",
    ]));
    ok(tc.cli(&[
        "decrypt-file",
        "--key-id",
        &arn,
        "--input",
        &path("message"),
        "--output",
        &path("decrypted"),
        "--encryption-context",
        "tenant=a",
    ]));
    assert_eq!(std::fs::read(path("decrypted")).unwrap(), plaintext);

    // A context pair the message lacks, and a message whose signature no longer verifies
    // (after 49 frames were authenticated): refused, and no output file, partial or not.
    let mut tampered = std::fs::read(path("message")).unwrap();
    *tampered.last_mut().unwrap() ^= 1;
    std::fs::write(path("tampered"), &tampered).unwrap();
    for (input, context, reason) in [
        ("message", "tenant=b", "lacks the pair"),
        (
            "tampered",
            "tenant=a",
            "the signature failed authentication",
        ),
    ] {
        let output = tc.cli(&[
            "decrypt-file",
            "--key-id",
            &arn,
            "--input",
            &path(input),
            "--output",
            &path("refused"),
            "--encryption-context",
            context,
        ]);
        assert_eq!(output.status.code(), Some(1), "{input} {context}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(reason), "{stderr}");
    }
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["decrypted", "message", "plain", "tampered"]);
}
