//! Chunked lists: `limit` and `continue`. A continue token pins the revision of the first page and
//! the last key served, so every page is read at the same revision, as Kubernetes does.

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::status::ApiError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContinueToken {
    /// The revision every page of this list is read at.
    pub rv: i64,
    /// The last key already served; the next page starts after it.
    pub start: String,
}

impl ContinueToken {
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    pub fn decode(text: &str) -> Result<Self, ApiError> {
        let invalid = || ApiError::bad_request(format!("continue key is not valid: {text:?}"));
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| invalid())?;
        serde_json::from_slice(&bytes).map_err(|_| invalid())
    }
}

/// Kubernetes' answer when the revision a continue token pins has been compacted away.
pub fn expired() -> ApiError {
    ApiError::gone(
        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_a_bad_request() {
        let t = ContinueToken {
            rv: 42,
            start: "/registry/core/pods/ns/p1".into(),
        };
        assert_eq!(ContinueToken::decode(&t.encode()).unwrap(), t);
        assert_eq!(ContinueToken::decode("!!!").unwrap_err().code, 400);
    }
}
