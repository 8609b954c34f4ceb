//! Service account tokens as JSON Web Tokens signed with ES256 (ECDSA P-256, SHA-256) by the
//! API server's service-account key, and their verification.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use rustls::pki_types::{PrivateKeyDer, pem::PemObject};
use serde_json::{Value, json};
use sha2::Digest;

/// The issuer (and default audience) of the tokens this API server signs.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

pub struct Signer {
    key: EcdsaKeyPair,
    kid: String,
    rng: SystemRandom,
}

/// Reads the service-account key at `path`, or makes one (private to the owner) when there is
/// none, so tokens stay valid across restarts.
pub fn load_or_create_key(path: &Path) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(pem) => return Ok(pem),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot read {}", path.display()));
        }
        Err(_) => {}
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| anyhow!("cannot generate the service-account key: {e}"))?;
    let pem = key.serialize_pem();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(pem.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(pem)
}

impl Signer {
    pub fn from_pem(pem: &str) -> Result<Signer> {
        let der = match PrivateKeyDer::from_pem_slice(pem.as_bytes())
            .context("the service-account key is not valid PEM")?
        {
            PrivateKeyDer::Pkcs8(der) => der,
            _ => anyhow::bail!("the service-account key must be a PKCS#8 ECDSA P-256 key"),
        };
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            der.secret_pkcs8_der(),
            &rng,
        )
        .map_err(|e| anyhow!("the service-account key is not an ECDSA P-256 key: {e}"))?;
        let kid = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(key.public_key().as_ref()));
        Ok(Signer { key, kid, rng })
    }

    pub fn sign(&self, claims: &Value) -> Result<String> {
        let header = json!({"alg": "ES256", "kid": self.kid});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?)
        );
        let signature = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|_| anyhow!("signing the token failed"))?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }

    /// The claims of a token this key signed, still valid at `now` (seconds), for `ISSUER`'s
    /// audience. Err says why not (for the server's log, never the client).
    pub fn verify(&self, token: &str, now: i64) -> Result<Value, String> {
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a JWT".into());
        };
        let decode = |s: &str| {
            URL_SAFE_NO_PAD
                .decode(s)
                .map_err(|e| format!("bad base64: {e}"))
        };
        let header: Value =
            serde_json::from_slice(&decode(header)?).map_err(|e| format!("bad header: {e}"))?;
        if header.get("alg").and_then(Value::as_str) != Some("ES256") {
            return Err("not signed with ES256".into());
        }
        let signing_input = &token[..token.rfind('.').unwrap_or(0)];
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.key.public_key().as_ref())
            .verify(signing_input.as_bytes(), &decode(signature)?)
            .map_err(|_| "the signature does not verify".to_string())?;
        let claims: Value =
            serde_json::from_slice(&decode(claims)?).map_err(|e| format!("bad claims: {e}"))?;
        if claims.get("iss").and_then(Value::as_str) != Some(ISSUER) {
            return Err("issued by someone else".into());
        }
        let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        if exp <= now {
            return Err("expired".into());
        }
        // A minute of leeway for clocks, as Kubernetes allows.
        if claims.get("nbf").and_then(Value::as_i64).unwrap_or(0) > now + 60 {
            return Err("not valid yet".into());
        }
        let audiences: Vec<&str> = match claims.get("aud") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !audiences.contains(&ISSUER) {
            return Err("meant for another audience".into());
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("pki/sa.key");
        let pem = load_or_create_key(&path).unwrap();
        assert_eq!(load_or_create_key(&path).unwrap(), pem, "the key persists");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        Signer::from_pem(&pem).unwrap()
    }

    fn claims(exp: i64, aud: &str) -> Value {
        json!({"iss": ISSUER, "sub": "system:serviceaccount:default:default", "aud": [aud],
               "iat": 1000, "nbf": 1000, "exp": exp})
    }

    #[test]
    fn signed_tokens_verify_until_they_expire() {
        let s = signer();
        let token = s.sign(&claims(2000, ISSUER)).unwrap();
        assert_eq!(token.split('.').count(), 3);
        let got = s.verify(&token, 1500).unwrap();
        assert_eq!(got["sub"], "system:serviceaccount:default:default");
        assert_eq!(s.verify(&token, 2000).unwrap_err(), "expired");
        assert!(s.verify(&token, 950).is_ok(), "a minute of clock skew");
        assert!(s.verify(&token, 900).is_err());
    }

    #[test]
    fn forged_or_foreign_tokens_fail() {
        let s = signer();
        let other = signer();
        let token = other.sign(&claims(2000, ISSUER)).unwrap();
        assert_eq!(
            s.verify(&token, 1500).unwrap_err(),
            "the signature does not verify"
        );
        let good = s.sign(&claims(2000, ISSUER)).unwrap();
        let mut parts: Vec<&str> = good.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(9999, ISSUER)).unwrap());
        parts[1] = &forged;
        assert!(s.verify(&parts.join("."), 1500).is_err());
        let elsewhere = s.sign(&claims(2000, "vault")).unwrap();
        assert!(s.verify(&elsewhere, 1500).is_err());
        assert!(s.verify("a.b", 1500).is_err());
        assert!(s.verify("", 1500).is_err());
    }
}
