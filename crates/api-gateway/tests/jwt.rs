//! JWT mode: RS256 and ES256 tokens verified against a JWKS (file or URL) with issuer,
//! audience, expiry and not-before checks. Keys are generated here; tokens are signed by hand.

#![allow(clippy::unwrap_used, reason = "tests fail loudly by panicking")]

mod common;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA256,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ISSUER: &str = "https://idp.example.com";
const AUDIENCE: &str = "cls-api";

struct Keys {
    rsa: RsaKeyPair,
    ec: EcdsaKeyPair,
}

impl Keys {
    fn generate() -> Keys {
        Keys {
            rsa: RsaKeyPair::generate(KeySize::Rsa2048).unwrap(),
            ec: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
        }
    }

    fn jwks(&self) -> Value {
        let rsa = self.rsa.public_key();
        let point = self.ec.public_key().as_ref();
        json!({"keys": [
            {"kty": "RSA", "kid": "rsa-1", "alg": "RS256", "use": "sig",
             "n": B64.encode(rsa.modulus().big_endian_without_leading_zero()),
             "e": B64.encode(rsa.exponent().big_endian_without_leading_zero())},
            {"kty": "EC", "kid": "ec-1", "alg": "ES256", "use": "sig", "crv": "P-256",
             "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])},
        ]})
    }

    fn sign(&self, alg: &str, kid: &str, claims: &Value) -> String {
        let header = json!({"alg": alg, "typ": "JWT", "kid": kid});
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let signature = match alg {
            "RS256" => {
                let mut sig = vec![0; self.rsa.public_modulus_len()];
                self.rsa
                    .sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig)
                    .unwrap();
                sig
            }
            "ES256" => self
                .ec
                .sign(&rng, input.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
            _ => b"not-a-signature".to_vec(),
        };
        format!("{input}.{}", B64.encode(signature))
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn claims(email: &str) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "email": email, "iat": now(), "nbf": now() - 10, "exp": now() + 600})
}

async fn jwt_app(keys: &Keys, dir: &std::path::Path) -> TestApp {
    let path = dir.join("jwks.json");
    std::fs::write(&path, keys.jwks().to_string()).unwrap();
    TestApp::spawn_with(&[
        ("AUTH_MODE", "jwt"),
        ("JWT_JWKS_FILE", path.to_str().unwrap()),
        ("JWT_ISSUERS", ISSUER),
        ("JWT_AUDIENCE", AUDIENCE),
        ("JWT_LEEWAY", "30"),
    ])
    .await
}

async fn list_with(app: &TestApp, token: &str, email_header: Option<&str>) -> (StatusCode, Value) {
    let mut request = app
        .request(Method::GET, "/api/v1/clusters", None)
        .bearer_auth(token);
    if let Some(email) = email_header {
        request = request.header("X-User-Email", email);
    }
    read(request.send().await.unwrap()).await
}

fn temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cls-jwt-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_rs256_and_es256_tokens_identify_the_caller() {
    let keys = Keys::generate();
    let dir = temp_dir();
    let app = jwt_app(&keys, &dir).await;

    let token = keys.sign("RS256", "rsa-1", &claims("Alice@Example.com"));
    let response = app
        .request(Method::POST, "/api/v1/clusters", None)
        .bearer_auth(&token)
        .json(&cli_cluster("c1"))
        .send()
        .await
        .unwrap();
    let (status, cluster) = read(response).await;
    assert_eq!(status, StatusCode::CREATED, "{cluster}");
    assert_eq!(cluster["created_by"], ALICE, "email claim, normalised");

    let token = keys.sign("ES256", "ec-1", &claims(ALICE));
    let (status, list) = list_with(&app, &token, None).await;
    assert_eq!((status, list["total"].clone()), (StatusCode::OK, json!(1)));
    // A matching X-User-Email is fine; the controller identity works through JWT too.
    assert_eq!(
        list_with(&app, &token, Some("alice@example.com")).await.0,
        StatusCode::OK
    );
    let controller = keys.sign("ES256", "ec-1", &claims(CONTROLLER));
    let (_, all) = list_with(&app, &controller, None).await;
    assert_eq!(all["total"], 1);
    let bob = keys.sign("RS256", "rsa-1", &claims(BOB));
    let (_, none) = list_with(&app, &bob, None).await;
    assert_eq!(none["total"], 0);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused() {
    let keys = Keys::generate();
    let dir = temp_dir();
    let app = jwt_app(&keys, &dir).await;
    let forger = Keys::generate();
    let with = |patch: Value| {
        let mut c = claims(ALICE);
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let cases = [
        (
            "expired",
            keys.sign("RS256", "rsa-1", &with(json!({"exp": now() - 120}))),
        ),
        (
            "not yet valid",
            keys.sign("ES256", "ec-1", &with(json!({"nbf": now() + 600}))),
        ),
        ("forged", forger.sign("RS256", "rsa-1", &claims(ALICE))),
        ("forged ec", forger.sign("ES256", "ec-1", &claims(ALICE))),
        (
            "wrong audience",
            keys.sign("RS256", "rsa-1", &with(json!({"aud": "someone-else"}))),
        ),
        (
            "wrong issuer",
            keys.sign(
                "RS256",
                "rsa-1",
                &with(json!({"iss": "https://evil.example.com"})),
            ),
        ),
        ("unknown key", keys.sign("RS256", "rsa-9", &claims(ALICE))),
        ("alg none", keys.sign("none", "rsa-1", &claims(ALICE))),
        ("hs256", keys.sign("HS256", "rsa-1", &claims(ALICE))),
        (
            "rsa key with es256",
            keys.sign("ES256", "rsa-1", &claims(ALICE)),
        ),
        (
            "no email",
            keys.sign(
                "RS256",
                "rsa-1",
                &json!({"iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600}),
            ),
        ),
        (
            "no exp",
            keys.sign(
                "RS256",
                "rsa-1",
                &json!({"iss": ISSUER, "aud": AUDIENCE, "email": ALICE}),
            ),
        ),
        ("garbage", "not.a.token".to_owned()),
    ];
    for (name, token) in cases {
        let (status, body) = list_with(&app, &token, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}: {body}");
        assert_eq!(body["code"], "INVALID_TOKEN", "{name}: {body}");
    }
    // Within the leeway an expired token still passes.
    let lenient = keys.sign("RS256", "rsa-1", &with(json!({"exp": now() - 5})));
    assert_eq!(list_with(&app, &lenient, None).await.0, StatusCode::OK);
    // A different X-User-Email than the claim.
    let token = keys.sign("RS256", "rsa-1", &claims(ALICE));
    let (status, body) = list_with(&app, &token, Some(BOB)).await;
    assert_problem(status, &body, 401, "INVALID_TOKEN");
    // No token at all; a header identity alone is not enough in jwt mode.
    let (status, body) = app.get("/api/v1/clusters", ALICE).await;
    assert_problem(status, &body, 401, "AUTH_REQUIRED");
    let response = app
        .request(Method::GET, "/api/v1/clusters", None)
        .header("Authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    let (status, body) = read(response).await;
    assert_problem(status, &body, 401, "INVALID_TOKEN");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_can_come_from_a_url() {
    let keys = Keys::generate();
    let jwks = keys.jwks().to_string();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let jwks_url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    let server = actix_web::HttpServer::new(move || {
        let jwks = jwks.clone();
        actix_web::App::new().route(
            "/.well-known/jwks.json",
            actix_web::web::get().to(move || {
                let jwks = jwks.clone();
                async move {
                    actix_web::HttpResponse::Ok()
                        .content_type("application/json")
                        .body(jwks)
                }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    let app = TestApp::spawn_with(&[
        ("AUTH_MODE", "jwt"),
        ("JWT_JWKS_URL", &jwks_url),
        ("JWT_ISSUERS", ISSUER),
        ("JWT_AUDIENCE", AUDIENCE),
    ])
    .await;
    let token = keys.sign("ES256", "ec-1", &claims(ALICE));
    assert_eq!(list_with(&app, &token, None).await.0, StatusCode::OK);
}
