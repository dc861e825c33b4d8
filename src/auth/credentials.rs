//! Validated sign-up input. A value of these types has passed its checks, so
//! bad data cannot travel further than the handler that parsed it.

use std::fmt;

/// Each failure names the field, so the client can point at it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    #[error("email: {0}")]
    Email(&'static str),
    #[error("password: {0}")]
    Password(&'static str),
    #[error("username: {0}")]
    Username(&'static str),
}

/// An email address, trimmed; compared case-insensitively by the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, CredentialError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(CredentialError::Email("is required"));
        }
        if s.len() > 254 {
            return Err(CredentialError::Email("is longer than 254 characters"));
        }
        let Some((local, domain)) = s.rsplit_once('@') else {
            return Err(CredentialError::Email("is not a valid address"));
        };
        let bad_char = |c: char| {
            c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"' | ',' | ';' | '@')
        };
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
        if local.is_empty() || local.len() > 64 || local.chars().any(bad_char) || !domain_ok {
            return Err(CredentialError::Email("is not a valid address"));
        }
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A username: 3–32 of `A-Z a-z 0-9 _ -`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Self, CredentialError> {
        let s = raw.trim();
        if s.chars().count() < 3 || s.chars().count() > 32 {
            return Err(CredentialError::Username("must be 3 to 32 characters"));
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(CredentialError::Username(
                "may contain only letters, digits, '_' and '-'",
            ));
        }
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password that meets the policy (NIST 800-63B: length over composition rules).
pub struct Password(String);

impl Password {
    pub const MIN_CHARS: usize = 10;
    pub const MAX_BYTES: usize = 256;

    pub fn parse(raw: &str, email: &Email, username: &Username) -> Result<Self, CredentialError> {
        if raw.chars().count() < Self::MIN_CHARS {
            return Err(CredentialError::Password("must be at least 10 characters"));
        }
        // argon2 cost does not grow with length, but we bound work and storage anyway.
        if raw.len() > Self::MAX_BYTES {
            return Err(CredentialError::Password("must be at most 256 bytes"));
        }
        let distinct = {
            let mut c: Vec<char> = raw.chars().collect();
            c.sort_unstable();
            c.dedup();
            c.len()
        };
        let lower = raw.to_lowercase();
        if distinct < 4
            || lower == email.as_str().to_lowercase()
            || lower == username.as_str().to_lowercase()
            || COMMON_PASSWORDS.contains(&lower.as_str())
        {
            return Err(CredentialError::Password("is too easy to guess"));
        }
        Ok(Self(raw.to_owned()))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

/// The most common passwords of the length we accept; the long tail is argon2's job.
const COMMON_PASSWORDS: &[&str] = &[
    "1234567890",
    "12345678910",
    "123456789a",
    "1q2w3e4r5t",
    "password12",
    "password123",
    "password1234",
    "qwertyuiop",
    "qwerty1234",
    "1qaz2wsx3edc",
    "iloveyou12",
    "letmein123",
    "welcome123",
    "administrator",
    "passw0rd123",
    "abcdefghij",
    "0987654321",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (Email, Username) {
        (
            Email::parse("ada@example.com").unwrap(),
            Username::parse("ada").unwrap(),
        )
    }

    #[test]
    fn emails() {
        for ok in ["a@b.co", " Ada.Lovelace+x@Example.COM ", "x@sub.domain.org"] {
            assert!(Email::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "plain",
            "@x.com",
            "a@",
            "a@b",
            "a b@c.com",
            "a@b..com",
            "a@-b.com",
            "a@b.com.",
            "<a>@b.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
        assert!(Email::parse(&format!("{}@b.com", "a".repeat(65))).is_err());
    }

    #[test]
    fn usernames() {
        assert!(Username::parse("ada_l-1").is_ok());
        for bad in ["ab", "a".repeat(33).as_str(), "ada lovelace", "ada!", "ádá"] {
            assert!(Username::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords() {
        let (e, u) = ids();
        assert!(Password::parse("correct horse battery", &e, &u).is_ok());
        for bad in [
            "short",
            "aaaaaaaaaaaa",
            "ababababab",
            "Password123",
            "ada@example.com",
        ] {
            assert!(Password::parse(bad, &e, &u).is_err(), "{bad}");
        }
        assert!(Password::parse(&"x1y2".repeat(100), &e, &u).is_err());
        assert_eq!(
            format!(
                "{:?}",
                Password::parse("correct horse battery", &e, &u).unwrap()
            ),
            "Password([redacted])"
        );
    }
}
