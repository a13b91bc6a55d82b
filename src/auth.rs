//! Bearer tokens: where they come from (a profile, an environment variable,
//! a file), how they are kept (never printed), and the constant-time check
//! of an `Authorization` header against them.

use std::fmt;
use std::path::PathBuf;
use subtle::ConstantTimeEq;

/// A token; its Debug and Display never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself, for the one place it is sent (an outgoing
    /// request's `Authorization`); never for a log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Where a token comes from: the profile, an environment variable, a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    Literal(Secret),
    Env(String),
    File(PathBuf),
}

impl TokenSource {
    /// Reads the token; the error says what is missing (naming the field,
    /// for the caller to put its section in front), never the token.
    pub fn resolve(&self) -> Result<Secret, String> {
        let token = match self {
            TokenSource::Literal(s) => return Ok(s.clone()),
            TokenSource::Env(name) => std::env::var(name)
                .map_err(|_| format!("token_env: environment variable {name} is not set"))?,
            TokenSource::File(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("token_file: cannot read {}: {e}", path.display()))?,
        };
        let token = token.trim();
        if token.is_empty() {
            return Err("the token is empty".into());
        }
        Ok(Secret(token.to_owned()))
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    Missing,
    Wrong,
}

/// Checks an `Authorization` header value against `token` (no token: open).
pub fn check(header: Option<&[u8]>, token: Option<&Secret>) -> Result<(), Denied> {
    let Some(token) = token else { return Ok(()) };
    let header = header.ok_or(Denied::Missing)?;
    let presented = header
        .strip_prefix(b"Bearer ")
        .or_else(|| header.strip_prefix(b"bearer "))
        .ok_or(Denied::Missing)?;
    let presented = presented.trim_ascii();
    if bool::from(presented.ct_eq(token.0.as_bytes())) {
        Ok(())
    } else {
        Err(Denied::Wrong)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_bearer_tokens() {
        let t = Secret::new("s3cret");
        assert_eq!(check(None, None), Ok(()));
        assert_eq!(check(None, Some(&t)), Err(Denied::Missing));
        assert_eq!(check(Some(b"Basic xyz"), Some(&t)), Err(Denied::Missing));
        assert_eq!(check(Some(b"Bearer nope"), Some(&t)), Err(Denied::Wrong));
        assert_eq!(check(Some(b"Bearer s3cre"), Some(&t)), Err(Denied::Wrong));
        assert_eq!(check(Some(b"Bearer s3cret"), Some(&t)), Ok(()));
        assert_eq!(
            format!("{t:?}"),
            "Secret(..)",
            "a token must never be printed"
        );
    }

    #[test]
    fn tokens_come_from_env_or_file() {
        let dir = std::env::temp_dir().join(format!("ffwhep-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        assert_eq!(
            TokenSource::File(file).resolve(),
            Ok(Secret::new("from-file"))
        );
        let e = TokenSource::Env("FFWHEP_TEST_UNSET_VARIABLE".into())
            .resolve()
            .unwrap_err();
        assert!(e.contains("FFWHEP_TEST_UNSET_VARIABLE is not set"), "{e}");
    }
}
