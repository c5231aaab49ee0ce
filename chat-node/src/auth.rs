//! Who a connection is, and which rooms it may join.
//!
//! With a JWT key configured every connection must present a token (HS256
//! with a shared secret, or RS256 checked against a public key); `sub` is the
//! user and an optional `rooms` claim lists room patterns such as `team-*`.
//! Without a key the node runs in dev mode: users pick their own display
//! name and may join any room.

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;

/// How tokens are checked.
#[derive(Clone)]
pub enum Authenticator {
    /// Dev mode: no tokens, self-chosen names.
    Disabled,
    Jwt {
        key: DecodingKey,
        validation: Box<Validation>,
    },
}

/// Why a key could not be loaded at start-up.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the RS256 public key is not a valid PEM-encoded RSA public key: {0}")]
    InvalidRsaKey(jsonwebtoken::errors::Error),
    #[error("the HS256 secret is empty")]
    EmptySecret,
}

/// Why a token was refused; sent as the reason of close code 4001.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("authentication required: pass ?token= or send an auth frame first")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token algorithm is not accepted (expected {0})")]
    WrongAlgorithm(&'static str),
    #[error("token is malformed: {0}")]
    Malformed(String),
    #[error("token is invalid: {0}")]
    Invalid(String),
}

/// The user behind a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub rooms: RoomPolicy,
}

/// Rooms an identity may join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomPolicy {
    Any,
    /// Room name patterns where `*` matches any run of characters.
    Patterns(Vec<String>),
}

impl RoomPolicy {
    pub fn allows(&self, room: &str) -> bool {
        match self {
            RoomPolicy::Any => true,
            RoomPolicy::Patterns(patterns) => patterns.iter().any(|p| glob_match(p, room)),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    rooms: Option<Vec<String>>,
}

impl Authenticator {
    pub fn hs256(secret: &[u8]) -> Result<Authenticator, KeyError> {
        if secret.is_empty() {
            return Err(KeyError::EmptySecret);
        }
        Ok(Authenticator::jwt(
            DecodingKey::from_secret(secret),
            Algorithm::HS256,
        ))
    }

    pub fn rs256(public_key_pem: &[u8]) -> Result<Authenticator, KeyError> {
        let key = DecodingKey::from_rsa_pem(public_key_pem).map_err(KeyError::InvalidRsaKey)?;
        Ok(Authenticator::jwt(key, Algorithm::RS256))
    }

    fn jwt(key: DecodingKey, algorithm: Algorithm) -> Authenticator {
        // Only the configured algorithm is accepted: this is what refuses
        // `alg: none` and HS256 tokens forged with an RSA public key.
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 30;
        Authenticator::Jwt {
            key,
            validation: Box::new(validation),
        }
    }

    pub fn is_enabled(&self) -> bool {
        matches!(self, Authenticator::Jwt { .. })
    }

    /// Checks a token and returns who it names.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let Authenticator::Jwt { key, validation } = self else {
            return Err(AuthError::Invalid(
                "authentication is disabled on this node".into(),
            ));
        };
        let expected = match validation.algorithms.first() {
            Some(Algorithm::RS256) => "RS256",
            _ => "HS256",
        };
        let data =
            jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|err| {
                match err.kind() {
                    ErrorKind::ExpiredSignature => AuthError::Expired,
                    ErrorKind::InvalidSignature => AuthError::BadSignature,
                    ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                        AuthError::WrongAlgorithm(expected)
                    }
                    ErrorKind::InvalidToken
                    | ErrorKind::Base64(_)
                    | ErrorKind::Json(_)
                    | ErrorKind::Utf8(_) => AuthError::Malformed(err.to_string()),
                    _ => AuthError::Invalid(err.to_string()),
                }
            })?;
        let claims = data.claims;
        if claims.sub.trim().is_empty() {
            return Err(AuthError::Invalid("`sub` is empty".into()));
        }
        Ok(Identity {
            user: claims.sub,
            rooms: match claims.rooms {
                Some(patterns) => RoomPolicy::Patterns(patterns),
                None => RoomPolicy::Any,
            },
        })
    }
}

/// A display name chosen by a dev-mode user: trimmed, 1–32 characters, no
/// control characters. Anything else becomes a generated guest name.
pub fn dev_identity(requested: Option<&str>, fallback: &str) -> Identity {
    let name = requested
        .map(str::trim)
        .filter(|n| !n.is_empty() && n.chars().count() <= 32 && !n.chars().any(char::is_control))
        .map(str::to_owned)
        .unwrap_or_else(|| fallback.to_owned());
    Identity {
        user: name,
        rooms: RoomPolicy::Any,
    }
}

/// Matches `text` against `pattern`, where `*` matches any run of characters
/// (including none) and every other character matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    // Position of the last `*` seen and the text position it matched up to.
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((star, matched)) = backtrack {
            pi = star + 1;
            ti = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn token(secret: &[u8], claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    #[test]
    fn glob_patterns() {
        assert!(glob_match("team-*", "team-eng"));
        assert!(glob_match("team-*", "team-"));
        assert!(!glob_match("team-*", "teams"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("lobby", "lobby"));
        assert!(!glob_match("lobby", "lobby2"));
    }

    #[test]
    fn accepts_a_valid_token_with_rooms() {
        let auth = Authenticator::hs256(b"secret").unwrap();
        let t = token(
            b"secret",
            json!({"sub": "ann", "exp": now() + 60, "rooms": ["team-*"]}),
        );
        let id = auth.verify(&t).unwrap();
        assert_eq!(id.user, "ann");
        assert!(id.rooms.allows("team-a"));
        assert!(!id.rooms.allows("lobby"));
    }

    #[test]
    fn refuses_expired_wrong_key_and_unsigned_tokens() {
        let auth = Authenticator::hs256(b"secret").unwrap();
        let expired = token(b"secret", json!({"sub": "ann", "exp": now() - 3600}));
        assert_eq!(auth.verify(&expired), Err(AuthError::Expired));
        let forged = token(b"other", json!({"sub": "ann", "exp": now() + 60}));
        assert_eq!(auth.verify(&forged), Err(AuthError::BadSignature));
        // {"alg":"none","typ":"JWT"} . {"sub":"ann","exp":...} . (no signature)
        let unsigned = format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"ann","exp":{}}}"#, now() + 60))
        );
        assert!(auth.verify(&unsigned).is_err());
        assert!(matches!(
            auth.verify("garbage"),
            Err(AuthError::Malformed(_))
        ));
        let no_exp = token(b"secret", json!({"sub": "ann"}));
        assert!(auth.verify(&no_exp).is_err());
    }

    #[test]
    fn dev_names() {
        assert_eq!(dev_identity(Some("  Ann "), "guest").user, "Ann");
        assert_eq!(dev_identity(Some(""), "guest-1").user, "guest-1");
        assert_eq!(dev_identity(Some("a\u{7}b"), "guest-1").user, "guest-1");
        assert_eq!(dev_identity(None, "guest-2").user, "guest-2");
    }
}
