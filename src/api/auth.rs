//! Bearer tokens and roles: the tokens file (hashes only), token generation for
//! `dcguard token new`, and the look-up of a presented token. Never logs or returns a token.
//!
//! # Why SHA-256 and not a password hash
//!
//! A token is 32 bytes from the operating system's CSPRNG (256 bits of entropy), printed
//! once by `dcguard token new`. The daemon keeps only `SHA-256(token)`. Slow password hashes
//! (Argon2, bcrypt) exist to make guessing *low-entropy* secrets expensive; guessing a
//! 256-bit random token is infeasible at any hash speed, so a slow hash would add nothing
//! but CPU per request, which an unauthenticated client could then spend at will. A leak of
//! the tokens file gives no usable token. A presented token is hashed once and compared with
//! every stored hash in constant time (no early exit on the first differing byte or entry).
//!
//! # File format (`[auth] tokens_file`, or the same text in `tokens_env`)
//!
//! ```toml
//! [[tokens]]
//! id = "control-room-1"     # who: shown in the audit chain and the logs (not a secret)
//! role = "operator"         # viewer | operator | security | integrator | admin
//! sha256 = "<64 hex>"       # SHA-256 of the token, as `dcguard token new` prints it
//! ```
//!
//! Unknown keys, duplicate ids, duplicate hashes, an unknown role or a malformed hash are
//! errors naming the entry; the error never repeats a hash.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Prefix of every token: lets secret scanners and people recognise one.
pub const TOKEN_PREFIX: &str = "dcg_";

/// What a token may do. The access matrix (`api::matrix`) lists, per route, the roles
/// allowed; there is no implicit hierarchy beyond what the matrix says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Reads facility state, alarms and incidents.
    Viewer,
    /// A viewer who also acknowledges, shelves, takes alarms out of service, manages
    /// maintenance windows and retries parked deliveries.
    Operator,
    /// Access data: visits, access events, findings review, exports.
    Security,
    /// Machine account of the service desk and the reader gateway: visit tickets in, event
    /// batches in; reads nothing else.
    Integrator,
    /// Everything.
    Admin,
}

impl Role {
    /// Every role, in the order of the documentation.
    pub const ALL: [Role; 5] = [
        Role::Viewer,
        Role::Operator,
        Role::Security,
        Role::Integrator,
        Role::Admin,
    ];

    /// The name in the tokens file and the documentation.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Security => "security",
            Role::Integrator => "integrator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown role {s:?}; expected one of viewer, operator, security, integrator, admin"
                )
            })
    }
}

/// Who made a request: the token's id and role. Never holds the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's id from the tokens file.
    pub id: String,
    /// Its role.
    pub role: Role,
}

/// The tokens file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokensError {
    /// Not TOML of the expected shape.
    #[error("tokens file is not valid: {0}")]
    Format(String),
    /// One entry is wrong.
    #[error("tokens file entry {index} (id {id:?}): {problem}")]
    Entry {
        /// 0-based position in the file.
        index: usize,
        /// Its id as written.
        id: String,
        /// What is wrong (never the hash).
        problem: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    tokens: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    id: String,
    role: String,
    sha256: String,
}

struct Entry {
    principal: Principal,
    hash: [u8; 32],
}

/// The hashed tokens. Built once at start from the tokens file.
#[derive(Default)]
pub struct TokenStore {
    entries: Vec<Entry>,
}

impl fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenStore")
            .field("tokens", &self.entries.len())
            .finish()
    }
}

impl TokenStore {
    /// No token at all: every authenticated route answers 401.
    pub fn empty() -> TokenStore {
        TokenStore::default()
    }

    /// Parses the tokens file's text.
    pub fn parse(text: &str) -> Result<TokenStore, TokensError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            // The TOML error names line and key; it can quote a value, and the only values
            // in this file are ids, roles and hashes of tokens: keep the message, not a
            // quoted hash.
            TokensError::Format(e.message().to_owned())
        })?;
        let mut entries: Vec<Entry> = Vec::with_capacity(raw.tokens.len());
        for (index, e) in raw.tokens.into_iter().enumerate() {
            let fail = |problem: String| TokensError::Entry {
                index,
                id: e.id.clone(),
                problem,
            };
            if e.id.is_empty()
                || !e
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(fail(
                    "id must be non-empty and use only A-Z a-z 0-9 - _ .".to_owned(),
                ));
            }
            let role: Role = e.role.parse().map_err(fail)?;
            let hash = decode_hash(&e.sha256)
                .ok_or_else(|| fail("sha256 must be 64 hexadecimal digits".to_owned()))?;
            if entries.iter().any(|x| x.principal.id == e.id) {
                return Err(fail("the id is used by an earlier entry".to_owned()));
            }
            if entries.iter().any(|x| x.hash == hash) {
                return Err(fail("the same token hash is listed twice".to_owned()));
            }
            entries.push(Entry {
                principal: Principal { id: e.id, role },
                hash,
            });
        }
        Ok(TokenStore { entries })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no token is configured.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The principal of a presented token, if it is one of ours. Hashes the token once and
    /// compares it with every entry in constant time.
    pub fn authenticate(&self, presented: &str) -> Option<Principal> {
        let hash = token_hash(presented);
        let mut found: Option<&Entry> = None;
        for entry in &self.entries {
            if ct_eq(&entry.hash, &hash) {
                found = Some(entry);
            }
        }
        found.map(|e| e.principal.clone())
    }
}

/// SHA-256 of a token's text.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Equality of two hashes without an early exit.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn decode_hash(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A freshly generated token and the tokens-file entry that admits it.
#[derive(Clone)]
pub struct NewToken {
    /// The token: shown once, to be given to its holder; never stored by dcguard.
    pub token: String,
    /// The TOML entry to append to the tokens file.
    pub entry: String,
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewToken")
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Generates a token for `id` with `role`: `dcg_` and 64 hex digits of 32 random bytes
/// from the thread CSPRNG (ChaCha seeded by the operating system).
pub fn new_token(id: &str, role: Role) -> Result<NewToken, String> {
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "token id {id:?}: expected a non-empty name of A-Z a-z 0-9 - _ ."
        ));
    }
    let bytes: [u8; 32] = rand::random();
    let token = format!("{TOKEN_PREFIX}{}", hex(&bytes));
    let entry = format!(
        "[[tokens]]\nid = \"{id}\"\nrole = \"{role}\"\nsha256 = \"{}\"\n",
        hex(&token_hash(&token))
    );
    Ok(NewToken { token, entry })
}

/// `text` with anything shaped like one of our tokens (`dcg_` and 8 or more hex digits)
/// replaced by `dcg_<redacted>`. Applied to every error message and audit record, so a
/// token a client pasted into a path, a query or a body is never echoed back, logged or
/// recorded.
pub fn redact(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(TOKEN_PREFIX) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(TOKEN_PREFIX) {
        out.push_str(&rest[..i]);
        let after = &rest[i + TOKEN_PREFIX.len()..];
        let hex_len = after.bytes().take_while(u8::is_ascii_hexdigit).count();
        if hex_len >= 8 {
            out.push_str("dcg_<redacted>");
            rest = &after[hex_len..];
        } else {
            out.push_str(TOKEN_PREFIX);
            rest = after;
        }
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// A short fingerprint of a presented token for logs and the audit chain: the first 8 hex
/// digits of its SHA-256. Reveals nothing usable of the token.
pub fn fingerprint(token: &str) -> String {
    hex(&token_hash(token)[..4])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A generated token authenticates through its own entry, and only through it.
    #[test]
    fn generated_tokens_authenticate_by_hash() {
        let a = new_token("ops-1", Role::Operator).unwrap();
        let b = new_token("sec-1", Role::Security).unwrap();
        assert!(a.token.starts_with(TOKEN_PREFIX) && a.token.len() == 68);
        assert_ne!(a.token, b.token);
        assert!(!a.entry.contains(&a.token), "the entry holds the hash only");
        let store = TokenStore::parse(&format!("{}\n{}", a.entry, b.entry)).unwrap();
        assert_eq!(store.len(), 2);
        assert_eq!(
            store.authenticate(&a.token),
            Some(Principal {
                id: "ops-1".into(),
                role: Role::Operator
            })
        );
        assert_eq!(store.authenticate(&b.token).unwrap().role, Role::Security);
        assert_eq!(store.authenticate("dcg_nope"), None);
        assert_eq!(store.authenticate(""), None);
        assert!(TokenStore::empty().authenticate(&a.token).is_none());
    }

    /// Bad files name the entry and the problem, never the hash.
    #[test]
    fn bad_files_name_the_entry() {
        let h = "ab".repeat(32);
        let e = TokenStore::parse(&format!(
            "[[tokens]]\nid = \"x\"\nrole = \"root\"\nsha256 = \"{h}\"\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("entry 0 (id \"x\")"), "{e}");
        assert!(e.to_string().contains("unknown role \"root\""), "{e}");
        assert!(!e.to_string().contains(&h));
        let e = TokenStore::parse("[[tokens]]\nid = \"x\"\nrole = \"admin\"\nsha256 = \"zz\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("64 hexadecimal digits"), "{e}");
        let twice = format!(
            "[[tokens]]\nid = \"x\"\nrole = \"admin\"\nsha256 = \"{h}\"\n\
             [[tokens]]\nid = \"y\"\nrole = \"viewer\"\nsha256 = \"{h}\"\n"
        );
        assert!(
            TokenStore::parse(&twice)
                .unwrap_err()
                .to_string()
                .contains("listed twice")
        );
        let e = TokenStore::parse("[[tokens]]\nid = \"x\"\nrole = \"admin\"\ntoken = \"a\"\n")
            .unwrap_err();
        assert!(matches!(e, TokensError::Format(_)), "{e}");
        assert!(new_token("bad id", Role::Admin).is_err());
        assert!(TokenStore::parse("").unwrap().is_empty());
    }

    #[test]
    fn tokens_are_redacted_from_text() {
        let t = new_token("x", Role::Viewer).unwrap().token;
        let text = format!("no site \"{t}\" and {}", &t[..20]);
        let clean = redact(&text);
        assert!(!clean.contains(&t[4..20]), "{clean}");
        assert_eq!(clean, "no site \"dcg_<redacted>\" and dcg_<redacted>");
        assert_eq!(redact("dcg_ not a token"), "dcg_ not a token");
        assert_eq!(redact("plain"), "plain");
    }

    #[test]
    fn roles_round_trip() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!("Admin".parse::<Role>().is_err());
        assert_eq!(fingerprint("x").len(), 8);
    }
}
