//! The AWS SDK for Rust (`aws-sdk-kms`) against a real `hsm-kms serve` over a two-member
//! SoftHSM2 cluster: the binary is spawned on a free loopback port, the client is pointed at
//! it with `endpoint_url` and signs with the development credential from the cluster's
//! shared-credentials file; the envelope keyring over the SDK (`SdkKms`) round-trips AWS
//! Encryption SDK messages with it and with the in-process keyring of the CLI. Behind the
//! `aws-sdk-tests` feature, so default builds skip the SDK:
//! `cargo test --features aws-sdk-tests --test aws_sdk`.
#![cfg(feature = "aws-sdk-tests")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::process::Output;
use std::sync::Arc;

use aws_sdk_kms::Client;
use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kms::error::SdkError;
use aws_sdk_kms::operation::encrypt::EncryptError;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use aws_smithy_http_client::tls;
use common::TestCluster;
use common::server::{AccessKey, Server};
use hsm_kms::envelope::{
    AlgorithmSuite, DecryptOptions, Decryptor, DefaultMaterialsManager, EncryptOptions, Encryptor,
    EnvelopeError, KmsKeyring, SdkKms,
};

/// The access key and secret of profile `hsm-kms` in the shared-credentials file.
fn dev_credentials(cluster: &TestCluster) -> Credentials {
    let key = AccessKey::of(cluster);
    Credentials::new(
        key.id,
        key.secret,
        None,
        None,
        "hsm-kms shared-credentials file",
    )
}

fn client(server: &Server, credentials: Credentials) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(format!("http://{}", server.address))
        .credentials_provider(credentials)
        .http_client(http)
        .build();
    Client::from_conf(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_sdk_creates_encrypts_decrypts_and_sees_typed_errors() {
    let cluster = TestCluster::new(2);
    cluster.init();
    let mut server = Server::start(&cluster);
    let kms = client(&server, dev_credentials(&cluster));

    let created = kms
        .create_key()
        .description("aws-sdk-kms")
        .send()
        .await
        .unwrap();
    let metadata = created.key_metadata().unwrap();
    let key_id = metadata.key_id().to_owned();
    let arn = metadata.arn().unwrap().to_owned();
    assert_eq!(
        arn,
        format!("arn:aws:kms:us-east-1:111122223333:key/{key_id}")
    );
    assert!(metadata.creation_date().unwrap().secs() > 1_700_000_000);

    let encrypted = kms
        .encrypt()
        .key_id(&key_id)
        .plaintext(Blob::new(b"from rust".as_slice()))
        .encryption_context("purpose", "sdk")
        .send()
        .await
        .unwrap();
    assert_eq!(encrypted.key_id(), Some(arn.as_str()));
    let blob = encrypted.ciphertext_blob().unwrap().clone();
    let decrypted = kms
        .decrypt()
        .ciphertext_blob(blob)
        .encryption_context("purpose", "sdk")
        .send()
        .await
        .unwrap();
    assert_eq!(decrypted.plaintext().unwrap().as_ref(), b"from rust");
    assert_eq!(decrypted.key_id(), Some(arn.as_str()));

    let data_key = kms
        .generate_data_key()
        .key_id(&arn)
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await
        .unwrap();
    assert_eq!(data_key.plaintext().unwrap().as_ref().len(), 32);
    let opened = kms
        .decrypt()
        .ciphertext_blob(data_key.ciphertext_blob().unwrap().clone())
        .send()
        .await
        .unwrap();
    assert_eq!(opened.plaintext(), data_key.plaintext());

    let listed = kms.list_keys().send().await.unwrap();
    assert!(
        listed
            .keys()
            .iter()
            .any(|entry| entry.key_arn() == Some(arn.as_str()))
    );

    kms.disable_key().key_id(&key_id).send().await.unwrap();
    let refused = kms
        .encrypt()
        .key_id(&key_id)
        .plaintext(Blob::new(b"x".as_slice()))
        .send()
        .await
        .unwrap_err();
    let SdkError::ServiceError(service_error) = &refused else {
        panic!("expected a service error, got {refused:?}");
    };
    let EncryptError::DisabledException(disabled) = service_error.err() else {
        panic!("expected DisabledException, got {:?}", service_error.err());
    };
    assert_eq!(
        disabled.message(),
        Some(format!("{arn} is disabled.").as_str())
    );
    assert_eq!(service_error.raw().status().as_u16(), 400);

    let mut wrong = dev_credentials(&cluster);
    wrong = Credentials::new(wrong.access_key_id(), "not the secret", None, None, "wrong");
    let unsigned = client(&server, wrong).list_keys().send().await.unwrap_err();
    let SdkError::ServiceError(service_error) = &unsigned else {
        panic!("expected a service error, got {unsigned:?}");
    };
    assert_eq!(
        aws_sdk_kms::error::ProvideErrorMetadata::code(service_error.err()),
        Some("InvalidSignatureException")
    );

    server.stop();
}

fn succeeded(output: Output) -> Output {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `hsm-kms decrypt-file` in-process (no server), requiring the encryption context pair.
fn decrypt_in_process(cluster: &TestCluster, arn: &str, input: &str, output: &str) {
    succeeded(cluster.cli(&[
        "decrypt-file",
        "--key-id",
        arn,
        "--input",
        input,
        "--output",
        output,
        "--encryption-context",
        "tenant=Zürich",
    ]));
}

#[test]
fn the_envelope_keyring_over_the_sdk_interoperates_with_the_in_process_keyring() {
    let cluster = TestCluster::new(2);
    succeeded(cluster.cli(&["cluster", "init"]));
    let created: serde_json::Value =
        serde_json::from_slice(&succeeded(cluster.cli(&["create-key"])).stdout).unwrap();
    let arn = created["KeyMetadata"]["Arn"].as_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let plaintext: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(path("plain"), &plaintext).unwrap();
    // A message made by the in-process keyring, before any server runs.
    succeeded(cluster.cli(&[
        "encrypt-file",
        "--key-id",
        &arn,
        "--input",
        &path("plain"),
        "--output",
        &path("in-process"),
        "--encryption-context",
        "tenant=Zürich",
    ]));

    let mut server = Server::start(&cluster);
    let kms = Arc::new(SdkKms::new(client(&server, dev_credentials(&cluster))).unwrap());
    let manager = DefaultMaterialsManager::new(Arc::new(
        KmsKeyring::strict(kms.clone(), vec![arn.clone()]).unwrap(),
    ));
    let decrypt = |message: &[u8]| -> Result<Vec<u8>, EnvelopeError> {
        let mut decryptor = Decryptor::new(message, &manager, &DecryptOptions::default())?;
        let mut opened = Vec::new();
        decryptor
            .read_to_end(&mut opened)
            .map_err(EnvelopeError::from_io)?;
        Ok(opened)
    };

    let options = EncryptOptions {
        suite: AlgorithmSuite::CommittingSigned,
        frame_length: 1000,
        context: [("tenant".to_owned(), "Zürich".to_owned())].into(),
        plaintext_length: None,
    };
    let mut encryptor = Encryptor::new(Vec::new(), &manager, &options).unwrap();
    for chunk in plaintext.chunks(777) {
        encryptor.write_all(chunk).unwrap();
    }
    let message = encryptor.finish().unwrap();
    assert_eq!(decrypt(&message).unwrap(), plaintext);
    let in_process = std::fs::read(path("in-process")).unwrap();
    assert_eq!(decrypt(&in_process).unwrap(), plaintext);

    // A KMS error reaches the caller with its AWS exception name.
    let missing = format!(
        "arn:aws:kms:us-east-1:111122223333:key/{}",
        uuid::Uuid::new_v4()
    );
    let unknown = DefaultMaterialsManager::new(Arc::new(
        KmsKeyring::strict(kms.clone(), vec![missing]).unwrap(),
    ));
    match Encryptor::new(Vec::new(), &unknown, &EncryptOptions::default()) {
        Err(EnvelopeError::Kms(error)) => assert_eq!(error.exception, "NotFoundException"),
        Err(other) => panic!("expected NotFoundException, got {other}"),
        Ok(_) => panic!("a keyring of an unknown key encrypted"),
    }
    server.stop();

    // The message made over the SDK opens in-process, with the context it was given.
    std::fs::write(path("over-sdk"), &message).unwrap();
    decrypt_in_process(&cluster, &arn, &path("over-sdk"), &path("opened"));
    assert_eq!(std::fs::read(path("opened")).unwrap(), plaintext);
}
