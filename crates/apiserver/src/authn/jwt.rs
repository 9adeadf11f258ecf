//! ServiceAccount tokens as JSON Web Tokens (RFC 7519) signed with ES256 (ECDSA P-256, SHA-256),
//! carrying kube-apiserver's claims: `iss`, `sub`, `aud`, `exp`/`iat`/`nbf`, `jti` and the private
//! `kubernetes.io` claim naming the namespace, the ServiceAccount and the bound pod. This module
//! only signs and checks signatures and times; whether the named objects still exist is the
//! authenticator's business.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED,
    ECDSA_P256_SHA256_FIXED_SIGNING,
};
use serde::{Deserialize, Serialize};

/// Clock skew tolerated on `nbf` and `exp`, as kube-apiserver's 60 s leeway.
pub const LEEWAY_SECONDS: i64 = 60;

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("token is not a compact JWS (three base64url parts)")]
    Malformed,
    #[error("unsupported signing algorithm {0:?}")]
    Algorithm(String),
    #[error("invalid signature")]
    Signature,
    #[error("invalid claims: {0}")]
    Claims(String),
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("invalid issuer")]
    Issuer,
    #[error("token audiences {0:?} do not match the API's")]
    Audience(Vec<String>),
    #[error("signing key: {0}")]
    Key(String),
}

/// A name and uid in the `kubernetes.io` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub name: String,
    pub uid: String,
}

/// The `kubernetes.io` private claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    pub namespace: String,
    pub serviceaccount: ObjectRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
}

/// The claims of a ServiceAccount token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// `system:serviceaccount:<namespace>:<name>`.
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: String,
}

/// Signs and verifies tokens with one ECDSA P-256 key.
pub struct Signer {
    key: EcdsaKeyPair,
    kid: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid).finish()
    }
}

impl Signer {
    /// From a PKCS#8 DER ECDSA P-256 private key.
    pub fn from_pkcs8(der: &[u8]) -> Result<Signer, JwtError> {
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new())
                .map_err(|e| JwtError::Key(format!("not a PKCS#8 ECDSA P-256 key: {e}")))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, key.public_key().as_ref());
        let kid = B64.encode(digest.as_ref());
        Ok(Signer { key, kid })
    }

    /// The key id (`kid` header): base64url SHA-256 of the public point.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The compact JWS of `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String, JwtError> {
        let header = Header {
            alg: "ES256".into(),
            kid: self.kid.clone(),
        };
        let enc = |v: &[u8]| B64.encode(v);
        let h = serde_json::to_vec(&header).map_err(|e| JwtError::Claims(e.to_string()))?;
        let c = serde_json::to_vec(claims).map_err(|e| JwtError::Claims(e.to_string()))?;
        let input = format!("{}.{}", enc(&h), enc(&c));
        let sig = self
            .key
            .sign(&SystemRandom::new(), input.as_bytes())
            .map_err(|_| JwtError::Key("signing failed".into()))?;
        Ok(format!("{input}.{}", enc(sig.as_ref())))
    }

    /// Checks signature, issuer, audience (one of `audiences`) and times against `now` (Unix
    /// seconds); returns the claims.
    pub fn verify(
        &self,
        token: &str,
        issuer: &str,
        audiences: &[String],
        now: i64,
    ) -> Result<Claims, JwtError> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let dec = |p: &str| B64.decode(p).map_err(|_| JwtError::Malformed);
        let header: Header = serde_json::from_slice(&dec(h)?).map_err(|_| JwtError::Malformed)?;
        if header.alg != "ES256" {
            return Err(JwtError::Algorithm(header.alg));
        }
        let public =
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.key.public_key().as_ref());
        let signed = &token[..h.len() + 1 + c.len()];
        public
            .verify(signed.as_bytes(), &dec(s)?)
            .map_err(|_| JwtError::Signature)?;
        let claims: Claims =
            serde_json::from_slice(&dec(c)?).map_err(|e| JwtError::Claims(e.to_string()))?;
        if claims.iss != issuer {
            return Err(JwtError::Issuer);
        }
        if !claims.aud.iter().any(|a| audiences.contains(a)) {
            return Err(JwtError::Audience(claims.aud));
        }
        if now > claims.exp + LEEWAY_SECONDS {
            return Err(JwtError::Expired);
        }
        if now + LEEWAY_SECONDS < claims.nbf {
            return Err(JwtError::NotYetValid);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        let der =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        Signer::from_pkcs8(der.as_ref()).unwrap()
    }

    fn claims(now: i64) -> Claims {
        Claims {
            iss: "https://issuer".into(),
            sub: "system:serviceaccount:ns:sa".into(),
            aud: vec!["api".into()],
            exp: now + 600,
            iat: now,
            nbf: now,
            jti: "j".into(),
            kubernetes: KubernetesClaims {
                namespace: "ns".into(),
                serviceaccount: ObjectRef {
                    name: "sa".into(),
                    uid: "u1".into(),
                },
                pod: None,
            },
        }
    }

    #[test]
    fn a_signed_token_verifies_and_carries_kubernetes_claims() {
        let s = signer();
        let t = s.sign(&claims(1000)).unwrap();
        let c = s
            .verify(&t, "https://issuer", &["api".into()], 1000)
            .unwrap();
        assert_eq!(c, claims(1000));
        let payload: serde_json::Value =
            serde_json::from_slice(&B64.decode(t.split('.').nth(1).unwrap()).unwrap()).unwrap();
        assert_eq!(payload["kubernetes.io"]["serviceaccount"]["uid"], "u1");
        let header: serde_json::Value =
            serde_json::from_slice(&B64.decode(t.split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"], s.kid());
    }

    #[test]
    fn tampering_other_keys_audience_issuer_and_time_are_refused() {
        let s = signer();
        let t = s.sign(&claims(1000)).unwrap();
        let aud = ["api".to_string()];
        // Another key's signature.
        assert_eq!(
            signer().verify(&t, "https://issuer", &aud, 1000),
            Err(JwtError::Signature)
        );
        // A changed payload.
        let mut c = claims(1000);
        c.sub = "system:serviceaccount:ns:admin".into();
        let forged = s.sign(&c).unwrap();
        let mixed = format!(
            "{}.{}.{}",
            t.split('.').next().unwrap(),
            forged.split('.').nth(1).unwrap(),
            t.split('.').nth(2).unwrap()
        );
        assert_eq!(
            s.verify(&mixed, "https://issuer", &aud, 1000),
            Err(JwtError::Signature)
        );
        assert_eq!(
            s.verify(&t, "https://other", &aud, 1000),
            Err(JwtError::Issuer)
        );
        assert!(matches!(
            s.verify(&t, "https://issuer", &["x".into()], 1000),
            Err(JwtError::Audience(_))
        ));
        assert_eq!(
            s.verify(&t, "https://issuer", &aud, 1000 + 600 + LEEWAY_SECONDS + 1),
            Err(JwtError::Expired)
        );
        assert_eq!(
            s.verify(&t, "https://issuer", &aud, 1000 - LEEWAY_SECONDS - 1),
            Err(JwtError::NotYetValid)
        );
        assert_eq!(
            s.verify("a.b", "https://issuer", &aud, 1000),
            Err(JwtError::Malformed)
        );
        // alg "none" is never accepted.
        let none = format!(
            "{}.{}.",
            B64.encode(br#"{"alg":"none"}"#),
            t.split('.').nth(1).unwrap()
        );
        assert_eq!(
            s.verify(&none, "https://issuer", &aud, 1000),
            Err(JwtError::Algorithm("none".into()))
        );
    }
}
