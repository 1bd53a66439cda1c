//! Optional shared-token authentication between CLS services: when configured, every call
//! must carry `authorization: Bearer <token>`; the comparison is constant-time.

use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

/// The token both sides of an internal gRPC connection are configured with.
#[derive(Clone)]
pub struct SharedToken(Option<String>);

impl std::fmt::Debug for SharedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.write_str(if self.0.is_some() {
            "SharedToken(set)"
        } else {
            "SharedToken(none)"
        })
    }
}

impl SharedToken {
    /// No authentication.
    pub fn none() -> SharedToken {
        SharedToken(None)
    }

    pub fn new(token: impl Into<String>) -> SharedToken {
        SharedToken(Some(token.into()))
    }

    pub fn from_option(token: Option<String>) -> SharedToken {
        SharedToken(token)
    }

    /// Server side: lets a request through when no token is configured or it carries the token.
    #[allow(clippy::result_large_err, reason = "tonic's interceptor signature")]
    pub fn check(&self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.0 else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
            Ok(request)
        } else {
            Err(Status::unauthenticated(
                "missing or wrong internal service token",
            ))
        }
    }

    /// Client side: adds the token, if configured, to an outgoing request.
    #[allow(clippy::result_large_err, reason = "tonic's interceptor signature")]
    pub fn attach(&self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.0 {
            let value = MetadataValue::try_from(format!("Bearer {token}"))
                .map_err(|_| Status::internal("the internal service token is not ASCII"))?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

/// Client side as a tonic interceptor: `Client::with_interceptor(channel, token)`.
/// The client side of every internal call: the token, and the W3C trace context of the
/// current span (see [`crate::trace::client_span`]) as `traceparent` metadata.
impl tonic::service::Interceptor for SharedToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let mut request = self.attach(request)?;
        crate::trace::inject(&mut request);
        Ok(request)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_when_configured() {
        let token = SharedToken::new("s3cret");
        let request = token.attach(Request::new(())).unwrap();
        assert!(token.check(request).is_ok());
        let wrong = SharedToken::new("other").attach(Request::new(())).unwrap();
        assert_eq!(
            token.check(wrong).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            token.check(Request::new(())).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert!(SharedToken::none().check(Request::new(())).is_ok());
        assert_eq!(format!("{token:?}"), "SharedToken(set)");
    }
}
