//! The probe's bounded HTTP client: one reqwest client per probe (bounded redirects, no
//! proxy, no idle connections), its headers and rotating bearer token, and `fetch`, which
//! reads a body chunk by chunk and abandons it past a size cap. Errors become a bounded
//! [`ProbeReason`] ([`classify`]). The check, the synthetic request and the scrape all go
//! through here; deadlines are the caller's.

use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use crate::config::ProbeConfig;
use crate::model::ProbeReason;

/// Redirects followed before `redirect_loop`.
const MAX_REDIRECTS: usize = 3;

/// A failed request, already classified.
pub(crate) type Failure = (ProbeReason, String);

/// One response: status and a body of at most `max_body_bytes`.
pub(crate) struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A configured probe, ready to check.
pub struct Probe {
    pub(super) config: ProbeConfig,
    client: reqwest::Client,
    token: TokenSource,
    /// The first model the last check listed: synthetic requests that name none use it.
    pub(super) listed_model: Mutex<Option<String>>,
}

impl Probe {
    /// Builds the client. TLS files were checked at start ([`super::check_files`]); one that went
    /// bad since is logged and the probe runs with the built-in roots.
    pub fn new(config: ProbeConfig) -> Self {
        Self::try_new(config.clone()).unwrap_or_else(|error| {
            tracing::warn!(probe = %config.name, error = %error, "Probe TLS settings refused; using the built-in roots.");
            // Without a preconfigured backend reqwest would use the platform verifier (the
            // system bundle), not the built-in roots this message promises.
            let client = super::tls::client_config("", false)
                .ok()
                .and_then(|tls| {
                    client_builder(&config)
                        .tls_backend_preconfigured(tls)
                        .build()
                        .ok()
                })
                .unwrap_or_default();
            Self::with_client(config, client)
        })
    }

    /// Builds the client; an error names what is wrong with the TLS settings.
    pub fn try_new(config: ProbeConfig) -> Result<Self, String> {
        super::tls::install_crypto_provider();
        let tls = super::tls::client_config(&config.tls_ca_file, config.tls_insecure_skip_verify)?;
        let client = client_builder(&config)
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| format!("HTTP client settings refused: {e}"))?;
        Ok(Self::with_client(config, client))
    }

    fn with_client(config: ProbeConfig, client: reqwest::Client) -> Self {
        let token = TokenSource::new(&config);
        Self {
            config,
            client,
            token,
            listed_model: Mutex::new(None),
        }
    }

    pub fn config(&self) -> &ProbeConfig {
        &self.config
    }

    /// The model a synthetic request names: `inference_model`, else `expected_model`, else
    /// the first model the last check listed; empty lets the server pick.
    pub fn inference_model(&self) -> String {
        if !self.config.inference_model.is_empty() {
            return self.config.inference_model.clone();
        }
        if let Some(expected) = &self.config.expected_model {
            return expected.clone();
        }
        self.listed_model
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_default()
    }

    /// A request to `url` with the probe's headers and current token.
    pub(crate) fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let mut request = self.client.request(method, url);
        for (name, value) in &self.config.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if let Some(token) = self.token.current(&self.config.name) {
            request = request.bearer_auth(token);
        }
        request
    }

    /// `GET base+path`, body capped at `max_body_bytes`. The caller's deadline bounds it.
    pub(super) async fn get(&self, path: &str) -> Result<Response, Failure> {
        let url = format!("{}{path}", self.config.base_url());
        self.fetch(&url, self.config.max_body_bytes).await
    }

    /// `GET url`, body capped at `max`. The caller's deadline bounds it.
    pub(crate) async fn fetch(&self, url: &str, max: usize) -> Result<Response, Failure> {
        let request = self.request(reqwest::Method::GET, url);
        let mut response = request.send().await.map_err(|e| classify(&e))?;
        let status = response.status().as_u16();
        if response.content_length().is_some_and(|n| n > max as u64) {
            return Err(too_large(max));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| classify(&e))? {
            if body.len() + chunk.len() > max {
                return Err(too_large(max));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response { status, body })
    }
}

pub(crate) fn too_large(max: usize) -> Failure {
    (
        ProbeReason::BodyTooLarge,
        format!("body larger than {max} bytes"),
    )
}

pub(super) fn io_reason(error: &std::io::Error) -> ProbeReason {
    match error.kind() {
        std::io::ErrorKind::TimedOut => ProbeReason::Timeout,
        std::io::ErrorKind::ConnectionRefused => ProbeReason::ConnectRefused,
        _ if error.to_string().contains("lookup") => ProbeReason::Dns,
        _ => ProbeReason::ConnectRefused,
    }
}

/// Maps a client error to a bounded reason by walking its cause chain.
pub(crate) fn classify(error: &reqwest::Error) -> Failure {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    let mut io_kind = None;
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
        }
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    let lower = text.to_ascii_lowercase();
    let reason = if error.is_redirect() {
        ProbeReason::RedirectLoop
    } else if error.is_timeout() || io_kind == Some(std::io::ErrorKind::TimedOut) {
        ProbeReason::Timeout
    } else if io_kind == Some(std::io::ErrorKind::ConnectionRefused) {
        ProbeReason::ConnectRefused
    } else if lower.contains("dns") || lower.contains("lookup") || lower.contains("resolve") {
        ProbeReason::Dns
    } else if lower.contains("tls") || lower.contains("certificate") {
        ProbeReason::Tls
    } else if error.is_connect() {
        ProbeReason::ConnectRefused
    } else if error.is_body() || error.is_decode() {
        ProbeReason::BadBody
    } else {
        ProbeReason::HttpStatus
    };
    (reason, text)
}

/// The client settings every probe shares: bounded redirects, no proxy, connect deadline,
/// and no idle connections kept. A probe asks every few seconds, so reuse saves little, while
/// an idle keep-alive connection can cost the server a worker: llama.cpp's fixed HTTP pool
/// (`n_parallel + 4` threads) gives each one a thread for 5 s, which was seen to delay real
/// requests under load.
fn client_builder(config: &ProbeConfig) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
        .no_proxy()
        .connect_timeout(config.timeout.0)
        .pool_max_idle_per_host(0)
}

/// The probe's bearer token: from a variable (read once) or a file, re-read when the file's
/// size or modification time changes. A file that cannot be read keeps the last token.
struct TokenSource {
    file: String,
    fixed: Option<String>,
    cached: Mutex<Option<(FileStamp, Option<String>)>>,
}

/// What tells that a token file changed.
type FileStamp = (Option<SystemTime>, u64);

impl TokenSource {
    fn new(config: &ProbeConfig) -> Self {
        let fixed = if config.bearer_token_file.is_empty() && !config.bearer_token_env.is_empty() {
            match std::env::var(&config.bearer_token_env) {
                Ok(text) => trimmed(&text),
                Err(_) => {
                    tracing::warn!(probe = %config.name, variable = %config.bearer_token_env, "The probe's bearer token variable is not set; probing without a token.");
                    None
                }
            }
        } else {
            None
        };
        Self {
            file: config.bearer_token_file.clone(),
            fixed,
            cached: Mutex::new(None),
        }
    }

    fn current(&self, probe: &str) -> Option<String> {
        if self.file.is_empty() {
            return self.fixed.clone();
        }
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        let stamp = std::fs::metadata(&self.file)
            .map(|m| (m.modified().ok(), m.len()))
            .map_err(|e| e.to_string());
        match (&stamp, cached.as_ref()) {
            (Ok(now), Some((seen, token))) if now == seen => token.clone(),
            (Ok(now), _) => match std::fs::read_to_string(&self.file) {
                Ok(text) => {
                    let token = trimmed(&text);
                    if cached.is_some() {
                        tracing::info!(probe, file = %self.file, "Probe bearer token file changed; using the new token.");
                    }
                    *cached = Some((*now, token.clone()));
                    token
                }
                Err(error) => Self::unreadable(probe, &self.file, &error.to_string(), &mut cached),
            },
            (Err(error), _) => Self::unreadable(probe, &self.file, error, &mut cached),
        }
    }

    /// Logs once per state change and keeps the last token read.
    fn unreadable(
        probe: &str,
        file: &str,
        error: &str,
        cached: &mut Option<(FileStamp, Option<String>)>,
    ) -> Option<String> {
        let unreadable: FileStamp = (None, u64::MAX);
        if cached.as_ref().is_none_or(|(seen, _)| *seen != unreadable) {
            tracing::warn!(
                probe,
                file,
                error,
                "Cannot read the probe's bearer token file; keeping the last token read."
            );
        }
        let last = cached.as_ref().and_then(|(_, token)| token.clone());
        *cached = Some((unreadable, last.clone()));
        last
    }
}

fn trimmed(text: &str) -> Option<String> {
    let token = text.trim();
    (!token.is_empty()).then(|| token.to_owned())
}
