//! JWT mode's test keys and tokens: keys generated in the test, tokens signed by hand.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA256,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};

pub const ISSUER: &str = "https://idp.example.com";
pub const AUDIENCE: &str = "cls-api";

/// An RS256 key (`kid` `rsa-1`) and an ES256 key (`ec-1`), generated for one test.
pub struct Keys {
    rsa: RsaKeyPair,
    ec: EcdsaKeyPair,
}

impl Keys {
    pub fn generate() -> Keys {
        Keys {
            rsa: RsaKeyPair::generate(KeySize::Rsa2048).unwrap(),
            ec: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
        }
    }

    pub fn jwks(&self) -> Value {
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

    /// A token over `claims` with the header's `alg` and `kid` as given, signed by the key
    /// `alg` names (any other `alg` gets a garbage signature).
    pub fn sign(&self, alg: &str, kid: &str, claims: &Value) -> String {
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

pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Valid claims for `email`, for ten minutes.
pub fn claims(email: &str) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "email": email, "iat": now(), "nbf": now() - 10, "exp": now() + 600})
}

/// A JWKS in a directory of its own, removed when dropped.
pub struct JwksFile {
    dir: std::path::PathBuf,
    path: String,
}

impl JwksFile {
    pub fn write(keys: &Keys) -> JwksFile {
        let dir = std::env::temp_dir().join(format!("cls-jwt-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("jwks.json");
        std::fs::write(&path, keys.jwks().to_string()).unwrap();
        let path = path.to_str().unwrap().to_owned();
        JwksFile { dir, path }
    }

    /// The gateway's settings for JWT mode with this JWKS, [`ISSUER`] and [`AUDIENCE`].
    pub fn gateway_vars(&self) -> [(&str, &str); 5] {
        [
            ("AUTH_MODE", "jwt"),
            ("JWT_JWKS_FILE", &self.path),
            ("JWT_ISSUERS", ISSUER),
            ("JWT_AUDIENCE", AUDIENCE),
            ("JWT_LEEWAY", "30"),
        ]
    }
}

impl Drop for JwksFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
