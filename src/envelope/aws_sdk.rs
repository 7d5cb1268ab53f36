//! The AWS KMS wire protocol through the AWS SDK for Rust (`aws-sdk-kms`) as a
//! [`KmsClient`], behind the `envelope-aws-sdk` cargo feature: the caller builds the SDK
//! client (credential chain, region, retries, timeouts, endpoint resolution or
//! `endpoint_url`), so the same keyring works against `hsm-kms serve` and AWS KMS. The
//! keyring is synchronous; this client runs the SDK's futures on a runtime of its own, so
//! it can be called from any thread. It never logs or returns a data key outside a
//! zeroizing type (the SDK's own response buffers are not zeroized).

use std::collections::HashMap;
use std::future::Future;
use std::sync::mpsc;

use aws_sdk_kms::Client;
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use secrecy::SecretSlice;
use zeroize::Zeroizing;

use super::EnvelopeError;
use super::format::EncryptionContext;
use super::keyring::{GeneratedDataKey, KmsCallError, KmsClient, data_key};

/// A KMS endpoint reached through an `aws_sdk_kms::Client`.
pub struct SdkKms {
    client: Client,
    /// `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
}

impl SdkKms {
    /// A key store client over `client`, e.g. built from `aws_config::load_from_env()`
    /// for AWS KMS, or with `endpoint_url` for `hsm-kms serve`. The client needs an HTTP
    /// client (`aws-sdk-kms` without default features has none of its own).
    pub fn new(client: Client) -> Result<SdkKms, EnvelopeError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("envelope-aws-sdk")
            .enable_all()
            .build()?;
        Ok(SdkKms {
            client,
            runtime: Some(runtime),
        })
    }

    /// Runs `future` on this client's runtime and waits for its output, from any thread
    /// (a blocking wait: from async code, call the keyring in `spawn_blocking`).
    fn run<T: Send + 'static>(
        &self,
        future: impl Future<Output = Result<T, KmsCallError>> + Send + 'static,
    ) -> Result<T, KmsCallError> {
        let Some(runtime) = &self.runtime else {
            return Err(internal("the AWS SDK client is shut down".to_owned()));
        };
        let (sender, receiver) = mpsc::sync_channel(1);
        runtime.spawn(async move {
            // The receiver waits for this answer, so it cannot be gone.
            let _ = sender.send(future.await);
        });
        receiver
            .recv()
            .map_err(|_| internal("the AWS SDK call was cancelled".to_owned()))?
    }
}

impl Drop for SdkKms {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside async code; this does not.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn internal(message: String) -> KmsCallError {
    KmsCallError {
        exception: "KMSInternalException".to_owned(),
        message,
    }
}

/// The AWS exception and message of a failed call; a call that got no answer (no
/// connection, timeout after the SDK's retries) is a `KMSInternalException`.
fn call_error<E, R>(error: SdkError<E, R>) -> KmsCallError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match error.code() {
        Some(code) => KmsCallError {
            exception: code.to_owned(),
            message: error.message().unwrap_or_default().to_owned(),
        },
        None => internal(format!(
            "cannot reach the key store: {}",
            DisplayErrorContext(&error)
        )),
    }
}

fn context_param(context: &EncryptionContext) -> Option<HashMap<String, String>> {
    (!context.is_empty()).then(|| context.clone().into_iter().collect())
}

/// The blob of a response field, zeroized on drop.
fn required_blob(blob: Option<Blob>, name: &str) -> Result<Zeroizing<Vec<u8>>, KmsCallError> {
    blob.map(|blob| Zeroizing::new(blob.into_inner()))
        .ok_or_else(|| internal(format!("the response has no {name}")))
}

fn required_key_id(key_id: Option<String>) -> Result<String, KmsCallError> {
    key_id.ok_or_else(|| internal("the response has no KeyId".to_owned()))
}

impl KmsClient for SdkKms {
    fn generate_data_key(
        &self,
        key_id: &str,
        context: &EncryptionContext,
    ) -> Result<GeneratedDataKey, KmsCallError> {
        let request = self
            .client
            .generate_data_key()
            .key_id(key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(context_param(context));
        let output = self.run(async move { request.send().await.map_err(call_error) })?;
        let plaintext = required_blob(output.plaintext, "Plaintext")?;
        Ok(GeneratedDataKey {
            plaintext: data_key(&plaintext).map_err(|error| internal(error.to_string()))?,
            ciphertext_blob: required_blob(output.ciphertext_blob, "CiphertextBlob")?.to_vec(),
            key_arn: required_key_id(output.key_id)?,
        })
    }

    fn encrypt(
        &self,
        key_id: &str,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<(Vec<u8>, String), KmsCallError> {
        let request = self
            .client
            .encrypt()
            .key_id(key_id)
            .plaintext(Blob::new(plaintext))
            .set_encryption_context(context_param(context));
        let output = self.run(async move { request.send().await.map_err(call_error) })?;
        Ok((
            required_blob(output.ciphertext_blob, "CiphertextBlob")?.to_vec(),
            required_key_id(output.key_id)?,
        ))
    }

    fn decrypt(
        &self,
        key_id: &str,
        ciphertext_blob: &[u8],
        context: &EncryptionContext,
    ) -> Result<(SecretSlice<u8>, String), KmsCallError> {
        let request = self
            .client
            .decrypt()
            .key_id(key_id)
            .ciphertext_blob(Blob::new(ciphertext_blob))
            .set_encryption_context(context_param(context));
        let output = self.run(async move { request.send().await.map_err(call_error) })?;
        let plaintext = required_blob(output.plaintext, "Plaintext")?;
        Ok((
            SecretSlice::from(plaintext.to_vec()),
            required_key_id(output.key_id)?,
        ))
    }
}
