//! JWT mode: RS256 and ES256 tokens verified against a JWKS (file or URL) with issuer,
//! audience, expiry and not-before checks, with keys generated in the test (`common::jwt`).

#![allow(clippy::unwrap_used, reason = "tests fail loudly by panicking")]

mod common;

use common::jwt::*;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn list_with(app: &TestApp, token: &str, email_header: Option<&str>) -> (StatusCode, Value) {
    let mut request = app
        .request(Method::GET, "/api/v1/clusters", None)
        .bearer_auth(token);
    if let Some(email) = email_header {
        request = request.header("X-User-Email", email);
    }
    read(request.send().await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_rs256_and_es256_tokens_identify_the_caller() {
    let keys = Keys::generate();
    let jwks = JwksFile::write(&keys);
    let app = TestApp::spawn_with(&jwks.gateway_vars()).await;

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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused() {
    let keys = Keys::generate();
    let jwks = JwksFile::write(&keys);
    let app = TestApp::spawn_with(&jwks.gateway_vars()).await;
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
