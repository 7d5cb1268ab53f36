//! Reading a request body within the endpoint's limits: at most `max_bytes` (a larger
//! `Content-Length` is refused before anything is read) and within `timeout` of the headers.
//! The body lands in one buffer sized up front and zeroized when dropped, since it may carry
//! a plaintext; the HTTP layer's own chunks are wiped as they are consumed when nothing else
//! holds them.

use std::pin::Pin;
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::http::HeaderMap;
use zeroize::{Zeroize, Zeroizing};

use crate::error::KmsError;

/// The limits on one request body.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub timeout: Duration,
}

/// Reads the whole body, or refuses it: `RequestEntityTooLarge` over the size limit,
/// `RequestTimeout` when it does not arrive in time.
pub async fn read(
    body: Body,
    headers: &HeaderMap,
    limits: &BodyLimits,
) -> Result<Zeroizing<Vec<u8>>, KmsError> {
    let declared = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limits.max_bytes) {
        return Err(too_large(limits.max_bytes));
    }
    let capacity = declared.unwrap_or(limits.max_bytes).min(limits.max_bytes);
    tokio::time::timeout(limits.timeout, collect(body, capacity, limits.max_bytes))
        .await
        .map_err(|_| {
            KmsError::RequestTimeout(format!(
                "The request body did not arrive within {} ms.",
                limits.timeout.as_millis()
            ))
        })?
}

async fn collect(
    mut body: Body,
    capacity: usize,
    max_bytes: usize,
) -> Result<Zeroizing<Vec<u8>>, KmsError> {
    let mut collected = Zeroizing::new(Vec::with_capacity(capacity));
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame
            .map_err(|_| KmsError::Serialization("The request body could not be read.".into()))?;
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        if collected.len() + chunk.len() > max_bytes {
            return Err(too_large(max_bytes));
        }
        if collected.len() + chunk.len() > collected.capacity() {
            // Grow by moving into a new buffer, so the old one is zeroized rather than freed.
            let mut larger = Zeroizing::new(Vec::with_capacity(max_bytes));
            larger.extend_from_slice(&collected);
            collected = larger;
        }
        collected.extend_from_slice(&chunk);
        if let Ok(mut unique) = chunk.try_into_mut() {
            let bytes: &mut [u8] = &mut unique;
            bytes.zeroize();
        }
    }
    Ok(collected)
}

fn too_large(max_bytes: usize) -> KmsError {
    KmsError::RequestEntityTooLarge(format!(
        "The request body is larger than the {max_bytes} bytes this endpoint accepts."
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;

    fn limits() -> BodyLimits {
        BodyLimits {
            max_bytes: 16,
            timeout: Duration::from_secs(5),
        }
    }

    fn declaring(length: usize) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("content-length", length.into());
        headers
    }

    #[tokio::test]
    async fn a_body_within_the_limit_is_read_whole() {
        let body = read(Body::from("{\"Limit\": 5}"), &declaring(12), &limits())
            .await
            .unwrap();
        assert_eq!(body.as_slice(), b"{\"Limit\": 5}");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_declared_or_not() {
        let declared = read(Body::from("x"), &declaring(17), &limits())
            .await
            .unwrap_err();
        assert_eq!(declared.code(), "RequestEntityTooLargeException");
        assert_eq!(declared.http_status(), 413);
        let undeclared = read(Body::from("y".repeat(17)), &HeaderMap::new(), &limits())
            .await
            .unwrap_err();
        assert_eq!(undeclared.code(), "RequestEntityTooLargeException");
    }
}
