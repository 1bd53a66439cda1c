//! Who is calling (SPEC §2): email identities, controllers, and what a caller may see.

use std::fmt;

/// Why an identity string is not an acceptable email address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("identity is missing")]
    Missing,
    #[error("identity is not a valid email address")]
    Malformed,
}

/// Maximum length of an email identity, in characters.
pub const MAX_EMAIL_LEN: usize = 254;

/// Normalises an identity per SPEC §2.1: trimmed; exactly one `@`; non-empty local part; a
/// domain containing a `.`; at most 254 characters; no whitespace or control characters.
/// Identities are compared case-insensitively, so the result is lower-cased.
pub fn normalize_email(raw: &str) -> Result<String, EmailError> {
    let email = raw.trim();
    if email.is_empty() {
        return Err(EmailError::Missing);
    }
    if email.chars().count() > MAX_EMAIL_LEN
        || email.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(EmailError::Malformed);
    }
    let mut parts = email.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(EmailError::Malformed);
    };
    let domain_ok = domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..");
    if local.is_empty() || !domain_ok {
        return Err(EmailError::Malformed);
    }
    Ok(email.to_lowercase())
}

/// Parses `CONTROLLER_IDENTITIES` (comma-separated emails; blanks ignored).
pub fn parse_controller_identities(raw: &str) -> Result<Vec<String>, String> {
    let mut identities = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let email = normalize_email(item).map_err(|_| format!("'{item}' is not a valid email"))?;
        if !identities.contains(&email) {
            identities.push(email);
        }
    }
    if identities.is_empty() {
        return Err("at least one controller identity is required".to_owned());
    }
    Ok(identities)
}

/// The default value of `CONTROLLER_IDENTITIES`.
pub const DEFAULT_CONTROLLER_IDENTITY: &str = "controller@system.local";

/// An authenticated caller. There is exactly one notion of privilege: controller or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A user: sees only the clusters it created and their nodepools, never deleted ones.
    User(String),
    /// A controller: sees every resource, deleted ones included (by id; in lists on request).
    Controller(String),
}

impl Caller {
    /// Classifies a normalised identity against the configured controller identities.
    pub fn from_identity(email: String, controllers: &[String]) -> Caller {
        if controllers.iter().any(|c| c == &email) {
            Caller::Controller(email)
        } else {
            Caller::User(email)
        }
    }

    pub fn email(&self) -> &str {
        match self {
            Caller::User(email) | Caller::Controller(email) => email,
        }
    }

    pub fn is_controller(&self) -> bool {
        matches!(self, Caller::Controller(_))
    }

    /// The owner every query must be restricted to, or `None` for a controller.
    pub fn owner_filter(&self) -> Option<&str> {
        match self {
            Caller::User(email) => Some(email),
            Caller::Controller(_) => None,
        }
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.email())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str, expected: Result<&str, EmailError>) {
        assert_eq!(
            normalize_email(raw).as_deref().map_err(|e| *e),
            expected,
            "input {raw:?}"
        );
    }

    #[test]
    fn email_rules() {
        check("  Alice@Example.COM ", Ok("alice@example.com"));
        check("a@b.c", Ok("a@b.c"));
        check("", Err(EmailError::Missing));
        check("   ", Err(EmailError::Missing));
        check("alice", Err(EmailError::Malformed));
        check("a@b@c.d", Err(EmailError::Malformed));
        check("@example.com", Err(EmailError::Malformed));
        check("alice@localhost", Err(EmailError::Malformed));
        check("alice@.com", Err(EmailError::Malformed));
        check("alice@example.", Err(EmailError::Malformed));
        check("al ice@example.com", Err(EmailError::Malformed));
        check("alice@exa\u{7}mple.com", Err(EmailError::Malformed));
        let long = format!("{}@example.com", "a".repeat(242));
        assert_eq!(long.len(), 254);
        check(&long, Ok(&long));
        check(&format!("a{long}"), Err(EmailError::Malformed));
    }

    #[test]
    fn controller_identities_are_parsed_normalised_and_deduplicated() {
        assert_eq!(
            parse_controller_identities(" Ctl@System.Local, ,b@x.io,ctl@system.local").unwrap(),
            vec!["ctl@system.local".to_owned(), "b@x.io".to_owned()]
        );
        assert!(
            parse_controller_identities("nope")
                .unwrap_err()
                .contains("'nope'")
        );
        assert!(parse_controller_identities(" , ").is_err());
    }

    #[test]
    fn callers_are_classified_by_identity() {
        let controllers = vec![DEFAULT_CONTROLLER_IDENTITY.to_owned()];
        let ctl = Caller::from_identity("controller@system.local".into(), &controllers);
        let user = Caller::from_identity("u@x.io".into(), &controllers);
        assert!(ctl.is_controller());
        assert_eq!(ctl.owner_filter(), None);
        assert!(!user.is_controller());
        assert_eq!(user.owner_filter(), Some("u@x.io"));
    }
}
