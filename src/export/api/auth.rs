//! Bearer-token authentication for everything but `GET /healthz` and `GET /readyz`.
//!
//! The token is read from `http.bearer_token_file` (trailing whitespace trimmed) at startup
//! and reloaded with the TLS files, or once at startup from the environment variable named by
//! `http.bearer_token_env` (for platforms with no secret files, e.g. an Akash SDL). Requests compare the presented token with
//! [`subtle::ConstantTimeEq`]; a missing or wrong token gets `401` with `WWW-Authenticate:
//! Bearer` and a short body holding no data. The token is never logged or printed.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::reload::{LoadError, Reloadable, Source};

/// Config key of the token file.
pub const TOKEN_KEY: &str = "http.bearer_token_file";

/// Config key naming the token's environment variable.
pub const TOKEN_ENV_KEY: &str = "http.bearer_token_env";

/// The token in use.
pub type BearerToken = Reloadable<Token>;

/// Where the token comes from: a file (reloaded) or an environment variable (read once: a
/// process's environment does not change under it).
#[derive(Debug)]
pub enum TokenSource {
    File(BearerToken),
    Env(Arc<Token>),
}

impl TokenSource {
    /// The token in use.
    pub fn current(&self) -> Arc<Token> {
        match self {
            Self::File(file) => file.current(),
            Self::Env(token) => Arc::clone(token),
        }
    }

    /// The file-backed token, which is the only one that reloads.
    pub fn file(&self) -> Option<&BearerToken> {
        match self {
            Self::File(file) => Some(file),
            Self::Env(_) => None,
        }
    }
}

/// The token held by the variable `var`, read through `env`. The error names the key and the
/// variable, never the value.
pub fn from_env(var: &str, env: impl Fn(&str) -> Option<String>) -> Result<Token, String> {
    let value = env(var).unwrap_or_default();
    let token = value.trim_ascii();
    if token.is_empty() {
        return Err(format!(
            "names the variable {var}, which is unset or empty; set it to the bearer token"
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "the token in {var} holds spaces, control or non-ASCII characters; use visible ASCII only"
        ));
    }
    Ok(Token(token.as_bytes().into()))
}

/// A bearer token. `Debug` does not show it.
pub struct Token(Box<[u8]>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Whether `presented` is this token, in time that depends only on the lengths.
    pub fn matches(&self, presented: &[u8]) -> bool {
        // `ct_eq` on slices returns early only when the lengths differ, which reveals the
        // length and nothing about the bytes.
        self.0.ct_eq(presented).into()
    }
}

/// Reads the token file; an empty file, or a token with characters that cannot travel in a
/// header, is an error naming the key and the file.
/// Reading the file waits at most `deadline`.
pub fn load(file: PathBuf, deadline: Duration) -> Result<BearerToken, LoadError> {
    Reloadable::load(
        "bearer token",
        vec![Source::new(TOKEN_KEY, file)],
        read_token,
        deadline,
    )
}

fn read_token(sources: &[Source], warnings: &mut Vec<String>) -> Result<Token, LoadError> {
    let [file] = sources else {
        return Err(LoadError {
            key: TOKEN_KEY,
            path: PathBuf::new(),
            message: "internal error: expected one token file".to_owned(),
        });
    };
    let (bytes, meta) = file.read_with_metadata()?;
    warnings.extend(file.readable_by_others(&meta));
    let token = bytes.trim_ascii_end();
    if token.is_empty() {
        return Err(file.error("is empty; write the bearer token into it"));
    }
    // RFC 6750's b64token is a subset of visible ASCII; anything else could never be sent.
    if !token.iter().all(|b| b.is_ascii_graphic()) {
        return Err(file.error(
            "the token holds spaces, control or non-ASCII characters; use visible ASCII only",
        ));
    }
    Ok(Token(token.into()))
}

/// Paths anyone may GET: liveness and readiness probes carry no data.
fn is_public(request: &Request) -> bool {
    matches!(*request.method(), Method::GET | Method::HEAD)
        && matches!(request.uri().path(), "/healthz" | "/readyz")
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn presented(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let space = value.iter().position(|b| *b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii())
}

/// axum middleware: lets public paths and requests with the right token through.
pub async fn require_bearer(
    State(token): State<Arc<TokenSource>>,
    request: Request,
    next: Next,
) -> Response {
    if is_public(&request) {
        return next.run(request).await;
    }
    match presented(request.headers()) {
        Some(given) if token.current().matches(given) => next.run(request).await,
        Some(_) => unauthorized(
            r#"Bearer realm="gpulse", error="invalid_token""#,
            "unauthorized: invalid bearer token\n",
        ),
        None => unauthorized(
            r#"Bearer realm="gpulse""#,
            "unauthorized: send Authorization: Bearer <token>\n",
        ),
    }
}

fn unauthorized(challenge: &'static str, body: &'static str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        )],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn trailing_newline_is_trimmed_and_comparison_is_exact() {
        let (_dir, path) = token_file("s3cret-Token\n");
        let token = load(path, Duration::from_secs(1)).unwrap().current();
        assert!(token.matches(b"s3cret-Token"));
        assert!(!token.matches(b"s3cret-Token\n"));
        assert!(!token.matches(b"s3cret-Tokem"));
        assert!(!token.matches(b"s3cret"));
        assert!(!token.matches(b""));
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
    }

    #[test]
    fn empty_or_unsendable_tokens_are_refused() {
        for text in ["", "\n", "  \n\t", "two words\n"] {
            let (_dir, path) = token_file(text);
            let err = load(path.clone(), Duration::from_secs(1)).unwrap_err();
            assert_eq!((err.key, err.path), (TOKEN_KEY, path), "{text:?}");
        }
    }

    #[test]
    fn a_token_from_the_environment_is_trimmed_and_never_shown() {
        let env = |name: &str| (name == "GPULSE_TOKEN").then(|| " s3cret-Env\n".to_owned());
        let token = from_env("GPULSE_TOKEN", env).unwrap();
        assert!(token.matches(b"s3cret-Env"));
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
        let err = from_env("OTHER", env).unwrap_err();
        assert!(err.contains("OTHER") && err.contains("unset"), "{err}");
        let bad = |_: &str| Some("s3cret with space".to_owned());
        let err = from_env("GPULSE_TOKEN", bad).unwrap_err();
        assert!(
            err.contains("GPULSE_TOKEN") && !err.contains("s3cret"),
            "{err}"
        );
    }

    #[test]
    fn bearer_scheme_is_parsed_case_insensitively() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(presented(&headers), Some(&b"abc"[..]));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  abc "),
        );
        assert_eq!(presented(&headers), Some(&b"abc"[..]));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(presented(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer"));
        assert_eq!(presented(&headers), None);
    }

    #[cfg(unix)]
    #[test]
    fn a_token_file_others_can_read_gets_a_warning() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, path) = token_file("s3cret\n");
        for (mode, warned) in [(0o600, false), (0o640, true), (0o604, true), (0o400, false)] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let warnings = load(path.clone(), Duration::from_secs(1))
                .unwrap()
                .take_startup_warnings();
            assert_eq!(!warnings.is_empty(), warned, "{mode:o}: {warnings:?}");
            // The warning names the file, never the token.
            assert!(
                warnings.iter().all(|w| !w.contains("s3cret")),
                "{warnings:?}"
            );
        }
    }
}
