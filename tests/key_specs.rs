//! RSA, elliptic-curve and HMAC keys inside a real SoftHSM2 cluster: every spec and usage
//! AWS allows is created and described as AWS describes it, and refused where AWS refuses;
//! signatures verify with `openssl` from the public key GetPublicKey returned (and with the
//! `p384` crate for P-384); `openssl` encrypts with that public key what Decrypt opens; an
//! HMAC is the one an independent implementation computes with a known key; a key pair made
//! on three members signs on each of them; wrong usages, algorithms and states get AWS's
//! exceptions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::kms::*;
use common::openssl::{openssl_verifies, write_public_pem};
use common::{TestCluster, TestStore};
use hsm_kms::cluster::{Cluster, MaterialId};
use hsm_kms::error::KmsError;
use hsm_kms::hsm::MaterialSpec;
use hsm_kms::keys::spec::{KeySpec, KeyUsage, SigningAlgorithm};
use hsm_kms::keystore::api::*;
use secrecy::{ExposeSecret, SecretSlice};

fn create_spec(ts: &TestStore, spec: &str, usage: &str) -> Result<KeyMetadata, KmsError> {
    ts.store
        .create_key(
            &ts.caller,
            CreateKeyRequest {
                key_spec: Some(spec.to_owned()),
                key_usage: Some(usage.to_owned()),
                ..Default::default()
            },
        )
        .map(|r| r.key_metadata)
}

fn sign(
    ts: &TestStore,
    key: &str,
    algorithm: &str,
    message: &[u8],
    kind: &str,
) -> Result<Vec<u8>, KmsError> {
    ts.store
        .sign(
            &ts.caller,
            SignRequest {
                key_id: key.to_owned(),
                message: message.to_vec(),
                message_type: Some(kind.to_owned()),
                signing_algorithm: algorithm.to_owned(),
                ..Default::default()
            },
        )
        .map(|r| r.signature)
}

fn verify(
    ts: &TestStore,
    key: &str,
    algorithm: &str,
    message: &[u8],
    signature: &[u8],
) -> Result<VerifyResponse, KmsError> {
    ts.store.verify(
        &ts.caller,
        VerifyRequest {
            key_id: key.to_owned(),
            message: message.to_vec(),
            signature: signature.to_vec(),
            signing_algorithm: algorithm.to_owned(),
            ..Default::default()
        },
    )
}

fn public_key(ts: &TestStore, key: &str) -> GetPublicKeyResponse {
    ts.store
        .get_public_key(
            &ts.caller,
            KeyIdRequest {
                key_id: key.to_owned(),
                ..Default::default()
            },
        )
        .unwrap()
}

#[test]
fn every_allowed_spec_is_created_described_and_signs_as_aws_does() {
    let ts = TestStore::new();
    let dir = tempfile::tempdir().unwrap();
    let message = b"The quick brown fox jumps over the lazy dog";
    for (spec, usage, signing) in [
        ("RSA_2048", "SIGN_VERIFY", 6),
        ("ECC_NIST_P256", "SIGN_VERIFY", 1),
        ("ECC_NIST_P384", "SIGN_VERIFY", 1),
        ("ECC_NIST_P521", "SIGN_VERIFY", 1),
        ("ECC_SECG_P256K1", "SIGN_VERIFY", 1),
    ] {
        let key = create_spec(&ts, spec, usage).unwrap();
        assert_eq!(
            (key.key_spec.as_str(), key.key_usage.as_str()),
            (spec, usage)
        );
        assert_eq!(key.customer_master_key_spec, spec);
        assert!(key.encryption_algorithms.is_empty() && key.mac_algorithms.is_empty());
        assert_eq!(key.signing_algorithms.len(), signing, "{spec}");
        let public = public_key(&ts, &key.key_id);
        assert_eq!(public.key_usage, usage);
        assert_eq!(public.signing_algorithms, key.signing_algorithms);
        let pem = write_public_pem(dir.path(), &public.public_key);
        for name in &key.signing_algorithms {
            let algorithm = SigningAlgorithm::parse(name).unwrap();
            let signature = sign(&ts, &key.key_id, name, message, "RAW").unwrap();
            assert!(
                openssl_verifies(dir.path(), &pem, algorithm, message, &signature),
                "{spec} {name}"
            );
            assert!(
                verify(&ts, &key.key_id, name, message, &signature)
                    .unwrap()
                    .signature_valid
            );
            // DIGEST: the same message hashed by the caller verifies the same way.
            let digest = algorithm.digest().hash(message);
            let signature = sign(&ts, &key.key_id, name, &digest, "DIGEST").unwrap();
            assert!(
                openssl_verifies(dir.path(), &pem, algorithm, message, &signature),
                "{spec} {name} digest"
            );
            // Another message does not verify: KMSInvalidSignatureException.
            let refused = verify(&ts, &key.key_id, name, b"another message", &signature);
            assert_eq!(failure(refused).0, "KMSInvalidSignatureException");
        }
        if spec == "ECC_NIST_P384" {
            use p384::ecdsa::signature::Verifier;
            // The SubjectPublicKeyInfo ends with the uncompressed point (97 bytes for P-384).
            let point = &public.public_key[public.public_key.len() - 97..];
            let verifying = p384::ecdsa::VerifyingKey::from_sec1_bytes(point).unwrap();
            let signature = sign(&ts, &key.key_id, "ECDSA_SHA_384", message, "RAW").unwrap();
            let signature = p384::ecdsa::Signature::from_der(&signature).unwrap();
            verifying.verify(message, &signature).unwrap();
        }
    }
    // A signature openssl makes with a key of our own verifies through Verify? Not possible
    // without the private key; instead a signature made by openssl with another key fails.
    let key = create_spec(&ts, "ECC_NIST_P256", "SIGN_VERIFY").unwrap();
    let stranger = create_spec(&ts, "ECC_NIST_P256", "SIGN_VERIFY").unwrap();
    let signature = sign(&ts, &stranger.key_id, "ECDSA_SHA_256", message, "RAW").unwrap();
    assert_eq!(
        failure(verify(
            &ts,
            &key.key_id,
            "ECDSA_SHA_256",
            message,
            &signature
        ))
        .0,
        "KMSInvalidSignatureException"
    );
    assert_eq!(
        failure(verify(
            &ts,
            &key.key_id,
            "ECDSA_SHA_256",
            message,
            b"not der"
        ))
        .0,
        "KMSInvalidSignatureException"
    );
}

#[test]
fn rsa_encryption_interoperates_with_openssl() {
    let ts = TestStore::new();
    let dir = tempfile::tempdir().unwrap();
    let key = create_spec(&ts, "RSA_3072", "ENCRYPT_DECRYPT").unwrap();
    assert_eq!(
        key.encryption_algorithms,
        ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]
    );
    assert!(key.signing_algorithms.is_empty());
    let public = public_key(&ts, &key.key_id);
    let pem = write_public_pem(dir.path(), &public.public_key);
    for (algorithm, openssl_digest) in [
        ("RSAES_OAEP_SHA_1", "sha1"),
        ("RSAES_OAEP_SHA_256", "sha256"),
    ] {
        // SoftHSM2 2.6 offers OAEP with SHA-1 only: SHA-256 is then refused plainly, and
        // must work wherever the module offers it.
        let probe = ts.store.encrypt(
            &ts.caller,
            EncryptRequest {
                key_id: key.key_id.clone(),
                plaintext: SecretSlice::from(b"probe".to_vec()),
                encryption_algorithm: Some(algorithm.into()),
                ..Default::default()
            },
        );
        if let Err(error) = &probe {
            assert_eq!(algorithm, "RSAES_OAEP_SHA_256", "{error:?}");
            assert_eq!(error.code(), "UnsupportedOperationException", "{error:?}");
            assert!(
                error.message().contains("does not offer RSAES-OAEP"),
                "{error:?}"
            );
            continue;
        }
        // openssl encrypts with the public key; Decrypt opens it.
        let plaintext_path = dir.path().join("plaintext");
        let ciphertext_path = dir.path().join("ciphertext");
        std::fs::write(&plaintext_path, b"secret from outside").unwrap();
        let out = Command::new("openssl")
            .args(["pkeyutl", "-encrypt", "-pubin", "-inkey"])
            .arg(&pem)
            .args(["-pkeyopt", "rsa_padding_mode:oaep"])
            .args(["-pkeyopt", &format!("rsa_oaep_md:{openssl_digest}")])
            .args(["-pkeyopt", &format!("rsa_mgf1_md:{openssl_digest}")])
            .arg("-in")
            .arg(&plaintext_path)
            .arg("-out")
            .arg(&ciphertext_path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let opened = ts
            .store
            .decrypt(
                &ts.caller,
                DecryptRequest {
                    ciphertext_blob: std::fs::read(&ciphertext_path).unwrap(),
                    key_id: Some(key.arn.clone()),
                    encryption_algorithm: Some(algorithm.into()),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(opened.plaintext.expose_secret(), b"secret from outside");
        assert_eq!(opened.encryption_algorithm, algorithm);
        // Encrypt here, decrypt here; the ciphertext is raw RSA output (384 bytes).
        let sealed = ts
            .store
            .encrypt(
                &ts.caller,
                EncryptRequest {
                    key_id: key.key_id.clone(),
                    plaintext: SecretSlice::from(b"inside".to_vec()),
                    encryption_algorithm: Some(algorithm.into()),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(sealed.ciphertext_blob.len(), 384);
        assert_eq!(sealed.encryption_algorithm, algorithm);
    }
    // AWS's limits and refusals.
    let too_long = ts.store.encrypt(
        &ts.caller,
        EncryptRequest {
            key_id: key.key_id.clone(),
            plaintext: SecretSlice::from(vec![7u8; 343]),
            encryption_algorithm: Some("RSAES_OAEP_SHA_1".into()),
            ..Default::default()
        },
    );
    assert_eq!(failure(too_long).0, "ValidationException");
    let no_algorithm = ts.store.encrypt(
        &ts.caller,
        EncryptRequest {
            key_id: key.key_id.clone(),
            plaintext: SecretSlice::from(b"x".to_vec()),
            ..Default::default()
        },
    );
    assert_eq!(failure(no_algorithm).0, "InvalidKeyUsageException");
    let with_context = ts.store.encrypt(
        &ts.caller,
        EncryptRequest {
            key_id: key.key_id.clone(),
            plaintext: SecretSlice::from(b"x".to_vec()),
            encryption_algorithm: Some("RSAES_OAEP_SHA_1".into()),
            encryption_context: ctx(&[("a", "b")]),
            ..Default::default()
        },
    );
    assert_eq!(failure(with_context).0, "ValidationException");
    let garbage = ts.store.decrypt(
        &ts.caller,
        DecryptRequest {
            ciphertext_blob: vec![1u8; 384],
            key_id: Some(key.key_id.clone()),
            encryption_algorithm: Some("RSAES_OAEP_SHA_1".into()),
            ..Default::default()
        },
    );
    assert_eq!(failure(garbage).0, "InvalidCiphertextException");
    // SoftHSM2 answers such a ciphertext with CKR_GENERAL_ERROR: no member is taken for down.
    assert!(ts.store.cluster().members().iter().all(|m| m.is_up()));
    let data_key = ts.store.generate_data_key(
        &ts.caller,
        GenerateDataKeyRequest {
            key_id: key.key_id.clone(),
            key_spec: Some("AES_256".into()),
            ..Default::default()
        },
    );
    assert_eq!(failure(data_key).0, "InvalidKeyUsageException");
}

#[test]
fn hmac_keys_match_an_independent_hmac() {
    use hmac::{KeyInit as _, Mac as _};
    let ts = TestStore::new();
    for (spec, algorithm, length) in [
        ("HMAC_224", "HMAC_SHA_224", 28),
        ("HMAC_256", "HMAC_SHA_256", 32),
        ("HMAC_384", "HMAC_SHA_384", 48),
        ("HMAC_512", "HMAC_SHA_512", 64),
    ] {
        let key = create_spec(&ts, spec, "GENERATE_VERIFY_MAC").unwrap();
        assert_eq!(key.mac_algorithms, [algorithm]);
        assert!(key.encryption_algorithms.is_empty());
        let mac = ts
            .store
            .generate_mac(
                &ts.caller,
                GenerateMacRequest {
                    message: SecretSlice::from(b"token payload".to_vec()),
                    key_id: key.key_id.clone(),
                    mac_algorithm: algorithm.into(),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(mac.mac.len(), length);
        let verify_mac = |mac: Vec<u8>| {
            ts.store.verify_mac(
                &ts.caller,
                VerifyMacRequest {
                    message: SecretSlice::from(b"token payload".to_vec()),
                    key_id: key.key_id.clone(),
                    mac_algorithm: algorithm.into(),
                    mac,
                    ..Default::default()
                },
            )
        };
        assert!(verify_mac(mac.mac.clone()).unwrap().mac_valid);
        let mut wrong = mac.mac.clone();
        wrong[0] ^= 1;
        assert_eq!(failure(verify_mac(wrong)).0, "KMSInvalidMacException");
        let other_algorithm = if algorithm == "HMAC_SHA_256" {
            "HMAC_SHA_384"
        } else {
            "HMAC_SHA_256"
        };
        let refused = ts.store.generate_mac(
            &ts.caller,
            GenerateMacRequest {
                message: SecretSlice::from(b"m".to_vec()),
                key_id: key.key_id.clone(),
                mac_algorithm: other_algorithm.into(),
                ..Default::default()
            },
        );
        assert_eq!(failure(refused).0, "InvalidKeyUsageException");
    }
    // The member's HMAC of a key whose value is known equals the hmac crate's: a generic
    // secret imported into the test token through raw PKCS#11.
    let known = [0x5au8; 32];
    let id = b"test-known-hmac/1".to_vec();
    {
        use cryptoki::object::{Attribute, KeyType, ObjectClass};
        let session = common::raw_session(&ts.cluster, "hsm-a");
        session
            .create_object(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::Token(false),
                Attribute::Sign(true),
                Attribute::Value(known.to_vec()),
                Attribute::Id(id.clone()),
            ])
            .unwrap();
        let mac = session
            .sign(
                &cryptoki::mechanism::Mechanism::Sha256Hmac,
                session.find_objects(&[Attribute::Id(id.clone())]).unwrap()[0],
                b"token payload",
            )
            .unwrap();
        let mut independent = hmac::Hmac::<sha2::Sha256>::new_from_slice(&known).unwrap();
        independent.update(b"token payload");
        assert_eq!(mac, independent.finalize().into_bytes().to_vec());
    }
}

#[test]
fn specs_usages_and_operations_are_refused_as_aws_refuses_them() {
    let ts = TestStore::new();
    let refused = |spec: Option<&str>, usage: Option<&str>| {
        failure(ts.store.create_key(
            &ts.caller,
            CreateKeyRequest {
                key_spec: spec.map(str::to_owned),
                key_usage: usage.map(str::to_owned),
                ..Default::default()
            },
        ))
    };
    assert_eq!(
        refused(Some("RSA_2048"), None),
        (
            "ValidationException".into(),
            "You must specify a KeyUsage value for all KMS keys except for symmetric encryption keys.".into()
        )
    );
    assert_eq!(
        refused(Some("HMAC_256"), Some("SIGN_VERIFY")),
        (
            "ValidationException".into(),
            "KeyUsage SIGN_VERIFY is not compatible with KeySpec HMAC_256".into()
        )
    );
    assert!(
        refused(Some("RSA_1024"), Some("SIGN_VERIFY"))
            .1
            .starts_with("1 validation error detected: Value 'RSA_1024' at 'keySpec'")
    );
    assert_eq!(
        refused(Some("SM2"), Some("SIGN_VERIFY")).0,
        "UnsupportedOperationException"
    );

    let signing = create_spec(&ts, "ECC_NIST_P256", "SIGN_VERIFY").unwrap();
    let symmetric = create(&ts);
    let mac_key = create_spec(&ts, "HMAC_256", "GENERATE_VERIFY_MAC").unwrap();
    // Wrong usage: InvalidKeyUsageException in AWS's words.
    let (code, message) = failure(encrypt(&ts, &signing.key_id, b"x", &[]));
    assert_eq!(code, "InvalidKeyUsageException");
    assert_eq!(
        message,
        format!(
            "{} key usage is SIGN_VERIFY which is not valid for Encrypt.",
            signing.arn
        )
    );
    assert_eq!(
        failure(sign(&ts, &symmetric.key_id, "ECDSA_SHA_256", b"m", "RAW")).0,
        "InvalidKeyUsageException"
    );
    assert_eq!(
        failure(sign(&ts, &mac_key.key_id, "ECDSA_SHA_256", b"m", "RAW")).0,
        "InvalidKeyUsageException"
    );
    assert_eq!(
        failure(sign(
            &ts,
            &signing.key_id,
            "RSASSA_PSS_SHA_256",
            b"m",
            "RAW"
        ))
        .0,
        "InvalidKeyUsageException"
    );
    assert_eq!(
        failure(sign(
            &ts,
            &signing.key_id,
            "ECDSA_SHA_256",
            b"too short",
            "DIGEST"
        )),
        (
            "ValidationException".into(),
            "Digest is invalid length for algorithm ECDSA_SHA_256.".into()
        )
    );
    assert_eq!(
        failure(sign(
            &ts,
            &signing.key_id,
            "ECDSA_SHA_256",
            &[0u8; 4097],
            "RAW"
        ))
        .0,
        "ValidationException"
    );
    assert_eq!(
        failure(sign(&ts, &signing.key_id, "NOPE", b"m", "RAW")).0,
        "ValidationException"
    );
    let public = ts
        .store
        .get_public_key(&ts.caller, key_id(&symmetric.key_id));
    assert_eq!(failure(public).0, "UnsupportedOperationException");
    // No rotation for asymmetric and HMAC keys.
    for key in [&signing, &mac_key] {
        let rotation = ts.store.enable_key_rotation(
            &ts.caller,
            EnableKeyRotationRequest {
                key_id: key.key_id.clone(),
                rotation_period_in_days: None,
            },
        );
        assert_eq!(failure(rotation).0, "UnsupportedOperationException");
        assert_eq!(
            failure(
                ts.store
                    .rotate_key_on_demand(&ts.caller, key_id(&key.key_id))
            )
            .0,
            "UnsupportedOperationException"
        );
    }
    // The state table: a disabled key signs nothing; pending deletion, likewise.
    ts.store
        .disable_key(&ts.caller, key_id(&signing.key_id))
        .unwrap();
    let (code, message) = failure(sign(&ts, &signing.key_id, "ECDSA_SHA_256", b"m", "RAW"));
    assert_eq!(
        (code.as_str(), message),
        ("DisabledException", format!("{} is disabled.", signing.arn))
    );
    let public = ts.store.get_public_key(&ts.caller, key_id(&signing.key_id));
    assert_eq!(failure(public).0, "DisabledException");
    ts.store
        .schedule_key_deletion(
            &ts.caller,
            ScheduleKeyDeletionRequest {
                key_id: mac_key.key_id.clone(),
                pending_window_in_days: Some(7),
            },
        )
        .unwrap();
    let mac = ts.store.generate_mac(
        &ts.caller,
        GenerateMacRequest {
            message: SecretSlice::from(b"m".to_vec()),
            key_id: mac_key.key_id.clone(),
            mac_algorithm: "HMAC_SHA_256".into(),
            ..Default::default()
        },
    );
    assert_eq!(failure(mac).0, "KMSInvalidStateException");
}

#[test]
fn a_key_pair_made_on_three_members_signs_on_each_and_survives_catch_up() {
    let tc = TestCluster::new(3);
    let cluster = Cluster::init("local", &tc.cluster_config()).unwrap();
    let message_digest = SigningAlgorithm::EcdsaSha256.digest().hash(b"m");
    for (spec, usage, algorithm) in [
        (
            KeySpec::EccNistP256,
            KeyUsage::SignVerify,
            SigningAlgorithm::EcdsaSha256,
        ),
        (
            KeySpec::Rsa2048,
            KeyUsage::SignVerify,
            SigningAlgorithm::RsassaPssSha256,
        ),
    ] {
        let material = MaterialId::new(uuid::Uuid::new_v4().to_string(), 1);
        cluster
            .create_material(&material, "pair", MaterialSpec { spec, usage })
            .unwrap();
        let id = material.cka_id();
        let signer = cluster.member("hsm-a").unwrap();
        for member in ["hsm-a", "hsm-b", "hsm-c"] {
            let member = cluster.member(member).unwrap();
            let signature = member
                .sign_digest(&id, algorithm, spec.curve(), &message_digest)
                .unwrap();
            assert!(
                signer
                    .verify_digest(&id, algorithm, spec.curve(), &message_digest, &signature)
                    .unwrap()
            );
        }
        // A member that lost the pair gets both halves back from catch-up.
        let c = cluster.member("hsm-c").unwrap();
        c.destroy_key(&id).unwrap();
        let report = cluster
            .catch_up("hsm-c", std::slice::from_ref(&material))
            .unwrap();
        assert_eq!(report.copied, [material.to_string()], "{report:?}");
        let signature = c
            .sign_digest(&id, algorithm, spec.curve(), &message_digest)
            .unwrap();
        assert!(
            c.verify_digest(&id, algorithm, spec.curve(), &message_digest, &signature)
                .unwrap()
        );
        assert_eq!(c.public_key(&id).unwrap(), signer.public_key(&id).unwrap());
    }
}

#[test]
fn key_agreement_keys_derive_the_secret_openssl_derives() {
    let ts = TestStore::new();
    let dir = tempfile::tempdir().unwrap();
    for (spec, curve) in [
        ("ECC_NIST_P256", "P-256"),
        ("ECC_NIST_P384", "P-384"),
        ("ECC_NIST_P521", "P-521"),
    ] {
        let key = create_spec(&ts, spec, "KEY_AGREEMENT").unwrap();
        assert_eq!(key.key_agreement_algorithms, ["ECDH"]);
        assert!(key.signing_algorithms.is_empty());
        let ours = public_key(&ts, &key.key_id);
        assert_eq!(ours.key_agreement_algorithms, ["ECDH"]);
        let ours_pem = write_public_pem(dir.path(), &ours.public_key);
        // The peer: a key pair openssl makes.
        let peer = dir.path().join("peer.pem");
        let peer_public = dir.path().join("peer.der");
        let run = |args: &[&str]| {
            let out = Command::new("openssl").args(args).output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        run(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            &format!("ec_paramgen_curve:{curve}"),
            "-out",
            peer.to_str().unwrap(),
        ]);
        run(&[
            "pkey",
            "-in",
            peer.to_str().unwrap(),
            "-pubout",
            "-outform",
            "DER",
            "-out",
            peer_public.to_str().unwrap(),
        ]);
        let expected = run(&[
            "pkeyutl",
            "-derive",
            "-inkey",
            peer.to_str().unwrap(),
            "-peerkey",
            ours_pem.to_str().unwrap(),
        ]);
        let derived = ts
            .store
            .derive_shared_secret(
                &ts.caller,
                DeriveSharedSecretRequest {
                    key_id: key.key_id.clone(),
                    key_agreement_algorithm: "ECDH".into(),
                    public_key: std::fs::read(&peer_public).unwrap(),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(
            derived.shared_secret.expose_secret(),
            expected.as_slice(),
            "{spec}"
        );
        assert_eq!(derived.key_origin, "AWS_KMS");
    }
    // A public key of another curve, garbage, a signing key: refused.
    let key = create_spec(&ts, "ECC_NIST_P256", "KEY_AGREEMENT").unwrap();
    let other_curve = public_key(
        &ts,
        &create_spec(&ts, "ECC_NIST_P384", "KEY_AGREEMENT")
            .unwrap()
            .key_id,
    )
    .public_key;
    let derive = |key_id: &str, public_key: Vec<u8>| {
        ts.store.derive_shared_secret(
            &ts.caller,
            DeriveSharedSecretRequest {
                key_id: key_id.to_owned(),
                key_agreement_algorithm: "ECDH".into(),
                public_key,
                ..Default::default()
            },
        )
    };
    assert_eq!(
        failure(derive(&key.key_id, other_curve)).0,
        "ValidationException"
    );
    assert_eq!(
        failure(derive(&key.key_id, b"garbage".to_vec())).0,
        "ValidationException"
    );
    // A point that is not on the curve (right encoding, wrong coordinates).
    let mut off_curve = public_key(&ts, &key.key_id).public_key;
    let last = off_curve.len() - 1;
    off_curve[last] ^= 1;
    let off = failure(derive(&key.key_id, off_curve));
    assert_eq!(off.0, "ValidationException", "{}", off.1);
    assert!(ts.store.cluster().members().iter().all(|m| m.is_up()));
    let signer = create_spec(&ts, "ECC_NIST_P256", "SIGN_VERIFY").unwrap();
    let ours = public_key(&ts, &key.key_id).public_key;
    assert_eq!(
        failure(derive(&signer.key_id, ours)).0,
        "InvalidKeyUsageException"
    );
}

#[test]
fn data_key_pairs_are_pkcs8_openssl_reads_and_decrypt_opens() {
    let ts = TestStore::new();
    let dir = tempfile::tempdir().unwrap();
    let symmetric = create(&ts);
    for spec in [
        "RSA_2048",
        "ECC_NIST_P256",
        "ECC_NIST_P521",
        "ECC_SECG_P256K1",
    ] {
        let pair = ts
            .store
            .generate_data_key_pair(
                &ts.caller,
                GenerateDataKeyPairRequest {
                    key_id: symmetric.key_id.clone(),
                    key_pair_spec: spec.into(),
                    encryption_context: ctx(&[("purpose", "pair")]),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(pair.key_pair_spec, spec);
        assert_eq!(pair.key_id, symmetric.arn);
        // openssl reads the private key and derives the public key returned.
        let private = dir.path().join("private.der");
        std::fs::write(&private, pair.private_key_plaintext.expose_secret()).unwrap();
        let out = Command::new("openssl")
            .args(["pkey", "-inform", "DER", "-in"])
            .arg(&private)
            .args(["-pubout", "-outform", "DER"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{spec}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, pair.public_key, "{spec}");
        // Decrypt, with the same context, gives the same private key back.
        let opened = ts
            .store
            .decrypt(
                &ts.caller,
                DecryptRequest {
                    ciphertext_blob: pair.private_key_ciphertext_blob.clone(),
                    encryption_context: ctx(&[("purpose", "pair")]),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(
            opened.plaintext.expose_secret(),
            pair.private_key_plaintext.expose_secret()
        );
    }
    let without = ts
        .store
        .generate_data_key_pair_without_plaintext(
            &ts.caller,
            GenerateDataKeyPairRequest {
                key_id: symmetric.key_id.clone(),
                key_pair_spec: "ECC_NIST_P384".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let opened = ts
        .store
        .decrypt(
            &ts.caller,
            DecryptRequest {
                ciphertext_blob: without.private_key_ciphertext_blob,
                ..Default::default()
            },
        )
        .unwrap();
    let private = dir.path().join("p384.der");
    std::fs::write(&private, opened.plaintext.expose_secret()).unwrap();
    let out = Command::new("openssl")
        .args(["pkey", "-inform", "DER", "-in"])
        .arg(&private)
        .args(["-pubout", "-outform", "DER"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, without.public_key);
    // Refusals: an asymmetric key cannot seal the pair; unknown and unheld pair specs.
    let signer = create_spec(&ts, "ECC_NIST_P256", "SIGN_VERIFY").unwrap();
    let refused = |key: &str, spec: &str| {
        failure(ts.store.generate_data_key_pair(
            &ts.caller,
            GenerateDataKeyPairRequest {
                key_id: key.to_owned(),
                key_pair_spec: spec.into(),
                ..Default::default()
            },
        ))
        .0
    };
    assert_eq!(
        refused(&signer.key_id, "RSA_2048"),
        "InvalidKeyUsageException"
    );
    assert_eq!(
        refused(&symmetric.key_id, "RSA_1024"),
        "ValidationException"
    );
    assert_eq!(
        refused(&symmetric.key_id, "SM2"),
        "UnsupportedOperationException"
    );
}

#[test]
fn re_encrypt_moves_ciphertexts_between_symmetric_and_rsa_keys() {
    let ts = TestStore::new();
    let symmetric = create(&ts);
    let rsa = create_spec(&ts, "RSA_2048", "ENCRYPT_DECRYPT").unwrap();
    let oaep = "RSAES_OAEP_SHA_1";
    let sealed = encrypt(&ts, &symmetric.key_id, b"moving secret", &[("a", "b")]).unwrap();
    // Symmetric to RSA: the result is raw RSA output, opened by Decrypt with the RSA key.
    let to_rsa = ts
        .store
        .re_encrypt(
            &ts.caller,
            ReEncryptRequest {
                ciphertext_blob: sealed.ciphertext_blob,
                source_encryption_context: ctx(&[("a", "b")]),
                destination_key_id: rsa.key_id.clone(),
                destination_encryption_algorithm: Some(oaep.into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(to_rsa.ciphertext_blob.len(), 256);
    assert_eq!(to_rsa.source_encryption_algorithm, "SYMMETRIC_DEFAULT");
    assert_eq!(to_rsa.destination_encryption_algorithm, oaep);
    // RSA back to symmetric, naming the source key and algorithm.
    let back = ts
        .store
        .re_encrypt(
            &ts.caller,
            ReEncryptRequest {
                ciphertext_blob: to_rsa.ciphertext_blob.clone(),
                source_key_id: Some(rsa.arn.clone()),
                source_encryption_algorithm: Some(oaep.into()),
                destination_key_id: symmetric.key_id.clone(),
                destination_encryption_context: ctx(&[("c", "d")]),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(back.source_key_id, rsa.arn);
    assert_eq!(back.source_encryption_algorithm, oaep);
    assert_eq!(
        decrypt(&ts, &back.ciphertext_blob, &[("c", "d")], None).unwrap(),
        b"moving secret"
    );
    // Without the source key, an RSA ciphertext cannot be named: refused plainly.
    let refused = ts.store.re_encrypt(
        &ts.caller,
        ReEncryptRequest {
            ciphertext_blob: to_rsa.ciphertext_blob,
            source_encryption_algorithm: Some(oaep.into()),
            destination_key_id: symmetric.key_id.clone(),
            ..Default::default()
        },
    );
    assert_eq!(failure(refused).0, "ValidationException");
}
