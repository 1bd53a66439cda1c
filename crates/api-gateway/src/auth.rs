//! Who is calling (SPEC §2.1): `X-User-Email` (header mode), a verified JWT's `email` claim
//! (jwt mode), or the first controller identity (disabled mode).

use std::time::{Duration, Instant};

use actix_web::dev::Payload;
use actix_web::http::header::{self, HeaderMap};
use actix_web::{FromRequest, HttpMessage as _, HttpRequest, web};
use anyhow::Context as _;
use cls_domain::ErrorCode;
use cls_domain::identity::{Caller, EmailError, normalize_email};
use futures_util::future::LocalBoxFuture;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

use crate::AppState;
use crate::config::{AuthMode, JwksSource, JwtConfig};
use crate::error::ApiError;

pub const USER_EMAIL_HEADER: &str = "x-user-email";

/// The caller's identity, recorded on the request for the access log.
#[derive(Debug, Clone)]
pub(crate) struct CallerTag(pub(crate) String);

#[derive(Debug)]
pub struct Authenticator {
    mode: Mode,
    controllers: Vec<String>,
}

#[derive(Debug)]
enum Mode {
    Header,
    Jwt(Box<JwtVerifier>),
    Disabled,
}

impl Authenticator {
    /// Builds the authenticator; in jwt mode this loads the JWKS (start-up fails if it cannot).
    pub async fn new(mode: &AuthMode, controllers: Vec<String>) -> anyhow::Result<Authenticator> {
        let mode = match mode {
            AuthMode::Header => Mode::Header,
            AuthMode::Disabled => {
                tracing::warn!(
                    identity = %controllers.first().map(String::as_str).unwrap_or_default(),
                    "AUTHENTICATION IS DISABLED: every request acts as a controller. Local development only."
                );
                Mode::Disabled
            }
            AuthMode::Jwt(config) => Mode::Jwt(Box::new(JwtVerifier::new(config.clone()).await?)),
        };
        Ok(Authenticator { mode, controllers })
    }

    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let email = match &self.mode {
            Mode::Disabled => {
                return Ok(Caller::Controller(
                    self.controllers.first().cloned().unwrap_or_default(),
                ));
            }
            Mode::Header => header_email(headers)?.ok_or_else(|| {
                ApiError::new(
                    ErrorCode::AuthRequired,
                    "authentication required: send X-User-Email",
                )
            })?,
            Mode::Jwt(verifier) => {
                let token = bearer_token(headers)?;
                let email = verifier.verify(token).await?;
                if let Some(sent) = header_email(headers)?
                    && sent != email
                {
                    return Err(ApiError::new(
                        ErrorCode::InvalidToken,
                        "X-User-Email does not match the token's email claim",
                    ));
                }
                email
            }
        };
        Ok(Caller::from_identity(email, &self.controllers))
    }
}

fn header_email(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(raw) = headers.get(USER_EMAIL_HEADER) else {
        return Ok(None);
    };
    let raw = raw.to_str().map_err(|_| invalid_email())?;
    match normalize_email(raw) {
        Ok(email) => Ok(Some(email)),
        Err(EmailError::Missing) => Ok(None),
        Err(EmailError::Malformed) => Err(invalid_email()),
    }
}

fn invalid_email() -> ApiError {
    ApiError::new(
        ErrorCode::InvalidEmail,
        "the caller identity is not a valid email address",
    )
}

fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::new(
            ErrorCode::AuthRequired,
            "authentication required: send a bearer token",
        ));
    };
    let value = value
        .to_str()
        .map_err(|_| invalid_token("malformed Authorization header"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(invalid_token(
            "the Authorization header must be 'Bearer <token>'",
        )),
    }
}

fn invalid_token(why: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidToken, format!("invalid token: {why}"))
}

/// Minimum time between JWKS refreshes triggered by unknown key ids.
const REFRESH_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct JwtVerifier {
    config: JwtConfig,
    keys: RwLock<JwkSet>,
    last_refresh: Mutex<Instant>,
    http: reqwest::Client,
}

#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    email: Option<String>,
}

impl JwtVerifier {
    async fn new(config: JwtConfig) -> anyhow::Result<JwtVerifier> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let keys = load_jwks(&config.jwks, &http).await?;
        Ok(JwtVerifier {
            config,
            keys: RwLock::new(keys),
            last_refresh: Mutex::new(Instant::now()),
            http,
        })
    }

    async fn verify(&self, token: &str) -> Result<String, ApiError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| invalid_token("malformed token"))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(invalid_token("only RS256 and ES256 are accepted"));
        }
        let key = match self.key(header.kid.as_deref(), header.alg).await {
            Some(key) => key,
            None if self.refresh().await => self
                .key(header.kid.as_deref(), header.alg)
                .await
                .ok_or_else(|| invalid_token("unknown signing key"))?,
            None => return Err(invalid_token("unknown signing key")),
        };
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&self.config.issuers);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.config.leeway.as_secs();
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            invalid_token(match e.kind() {
                ErrorKind::ExpiredSignature => "expired",
                ErrorKind::ImmatureSignature => "not valid yet",
                ErrorKind::InvalidAudience => "wrong audience",
                ErrorKind::InvalidIssuer => "wrong issuer",
                ErrorKind::InvalidSignature => "bad signature",
                ErrorKind::MissingRequiredClaim(_) => "missing a required claim",
                _ => "verification failed",
            })
        })?;
        let email = data
            .claims
            .email
            .ok_or_else(|| invalid_token("no email claim"))?;
        normalize_email(&email).map_err(|_| invalid_email())
    }

    /// The key for `kid` (or the only key usable with `alg` when the token names none).
    async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
        let keys = self.keys.read().await;
        let usable = |jwk: &&jsonwebtoken::jwk::Jwk| {
            let family_ok = matches!(
                (&jwk.algorithm, alg),
                (
                    jsonwebtoken::jwk::AlgorithmParameters::RSA(_),
                    Algorithm::RS256
                ) | (
                    jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_),
                    Algorithm::ES256
                )
            );
            let alg_ok = jwk
                .common
                .key_algorithm
                .is_none_or(|a| a.to_string() == format!("{alg:?}"));
            family_ok && alg_ok
        };
        let jwk = match kid {
            Some(kid) => keys
                .keys
                .iter()
                .filter(usable)
                .find(|k| k.common.key_id.as_deref() == Some(kid)),
            None => {
                let mut candidates = keys.keys.iter().filter(usable);
                match (candidates.next(), candidates.next()) {
                    (Some(only), None) => Some(only),
                    _ => None,
                }
            }
        }?;
        DecodingKey::from_jwk(jwk).ok()
    }

    /// Reloads a URL JWKS, at most once per [`REFRESH_INTERVAL`]; whether keys were reloaded.
    async fn refresh(&self) -> bool {
        if !matches!(self.config.jwks, JwksSource::Url(_)) {
            return false;
        }
        let mut last = self.last_refresh.lock().await;
        if last.elapsed() < REFRESH_INTERVAL {
            return false;
        }
        *last = Instant::now();
        match load_jwks(&self.config.jwks, &self.http).await {
            Ok(keys) => {
                *self.keys.write().await = keys;
                true
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "JWKS refresh failed");
                false
            }
        }
    }
}

async fn load_jwks(source: &JwksSource, http: &reqwest::Client) -> anyhow::Result<JwkSet> {
    let keys: JwkSet = match source {
        JwksSource::File(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("JWT_JWKS_FILE: cannot read {}", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("JWT_JWKS_FILE: {} is not a JWKS", path.display()))?
        }
        JwksSource::Url(url) => http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("JWT_JWKS_URL: cannot fetch {url}"))?
            .json()
            .await
            .with_context(|| format!("JWT_JWKS_URL: {url} did not return a JWKS"))?,
    };
    anyhow::ensure!(!keys.keys.is_empty(), "the JWKS has no keys");
    Ok(keys)
}

/// Extractor: the authenticated caller, or a 401 problem.
#[derive(Debug)]
pub struct Authenticated(pub Caller);

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Authenticated, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = req
                .app_data::<web::Data<AppState>>()
                .cloned()
                .ok_or_else(ApiError::internal)?;
            let caller = state.auth.authenticate(req.headers()).await?;
            req.extensions_mut()
                .insert(CallerTag(caller.email().to_owned()));
            // Before any other work of the request: a refused request costs no database time.
            state.rate_limit.check(&caller)?;
            Ok(Authenticated(caller))
        })
    }
}
