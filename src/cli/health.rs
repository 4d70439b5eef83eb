//! `gpulse health clear GPU|all`: asks a running agent to clear sticky health reasons after a
//! repair (`POST /v1/health/clear`), with the API's bearer token when one is configured.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::{exit, out, say};
use crate::config::files::{DevNull, read_small_file};
use crate::export::api::clear::target;

/// How long the whole request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Largest answer read from the agent.
const MAX_ANSWER: usize = 4096;

#[derive(Debug, Subcommand)]
pub enum HealthCommand {
    /// Clear the sticky health reasons of one GPU (index or UUID) or of `all` after a repair,
    /// on a running agent: reasons whose cause was last seen before now are dropped, new ones
    /// count again; recorded as a `health_cleared` event. Exits 0 cleared, 1 refused or
    /// unreachable, 2 on a usage error.
    Clear(ClearArgs),
}

#[derive(Debug, Args)]
pub struct ClearArgs {
    /// A GPU index, a GPU UUID, or `all`.
    #[arg(value_name = "GPU|all")]
    pub gpu: String,
    /// The agent's base URL (http or https).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9412")]
    pub url: String,
    /// File holding the API's bearer token (the agent's http.bearer_token_file); without a
    /// token, the agent accepts a clear from loopback only.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM CA file to trust for an https URL, besides the built-in roots.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

pub fn main(command: &HealthCommand) -> ExitCode {
    match command {
        HealthCommand::Clear(args) => clear(args),
    }
}

fn read_token(file: &Path) -> Result<String, String> {
    let (bytes, _) = read_small_file(file, DevNull::Refused)
        .map_err(|e| format!("--token-file {}: {e}", file.display()))?;
    let token = String::from_utf8(bytes)
        .map_err(|_| format!("--token-file {}: not UTF-8", file.display()))?;
    let token = token.trim().to_owned();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "--token-file {}: empty, or holds characters a header cannot carry",
            file.display()
        ));
    }
    Ok(token)
}

fn clear(args: &ClearArgs) -> ExitCode {
    let query = format!("gpu={}", args.gpu.trim());
    if let Err(message) = target(&query) {
        say(format!("health clear: {message}"));
        return ExitCode::from(exit::USAGE);
    }
    let token = match args.token_file.as_deref().map(read_token).transpose() {
        Ok(token) => token,
        Err(message) => {
            say(format!("health clear: {message}"));
            return ExitCode::from(exit::USAGE);
        }
    };
    let base = args.url.trim_end_matches('/');
    let url = match reqwest::Url::parse(&format!("{base}/v1/health/clear?{query}")) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => url,
        _ => {
            say(format!(
                "health clear: --url {}: not an http(s) URL",
                args.url
            ));
            return ExitCode::from(exit::USAGE);
        }
    };
    let ca_file = args
        .ca_file
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let tls = match crate::collect::probe::tls::client_config(&ca_file, false) {
        Ok(tls) => tls,
        Err(message) => {
            say(format!("health clear: --ca-file {message}"));
            return ExitCode::from(exit::USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            say(format!("health clear: cannot start: {error}"));
            return ExitCode::from(exit::FAILURE);
        }
    };
    match runtime.block_on(post(url, token, tls)) {
        Ok((200, body)) => {
            // The exit code is the answer; a line that cannot be shown changes nothing.
            let _ = out(&body);
            ExitCode::from(exit::OK)
        }
        Ok((status, body)) => {
            say(format!(
                "health clear: the agent answered {status}: {}",
                body.trim()
            ));
            ExitCode::from(exit::FAILURE)
        }
        Err(message) => {
            say(format!("health clear: {message}"));
            ExitCode::from(exit::FAILURE)
        }
    }
}

/// `tls` is the probes' client TLS settings (`collect::probe::tls::client_config`), handed to
/// reqwest as its preconfigured backend.
async fn post(
    url: reqwest::Url,
    token: Option<String>,
    tls: impl std::any::Any,
) -> Result<(u16, String), String> {
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let mut request = client.post(url.clone());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|e| {
        format!(
            "cannot reach the agent at {url}: {}",
            crate::collect::error_chain(&e)
        )
    })?;
    let status = response.status().as_u16();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| format!("cannot read the agent's answer: {e}"))?;
    let body = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_ANSWER)]).into_owned();
    Ok((status, body))
}
