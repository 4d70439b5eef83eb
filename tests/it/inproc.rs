//! Shared helper: runs the agent in-process (`gpulse::app::run`) on a free loopback port, with
//! a shutdown the test controls, and speaks plain HTTP to it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gpulse::app::{self, GpuSource};
use gpulse::config::Config;
use gpulse::export::api::Credentials;
use gpulse::export::otlp::OtlpSettings;
use gpulse::store::Store;
use tokio::sync::oneshot;

/// An agent running in this process.
pub struct Running {
    /// `http://127.0.0.1:PORT` (the scheme is wrong when TLS is on; use `addr` then).
    pub base: String,
    pub addr: SocketAddr,
    pub credentials: Arc<Credentials>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), app::AppError>>,
}

/// Starts the agent with `config`, loading its TLS and token files like the binary does.
pub async fn start(config: Config, source: GpuSource, otlp: Option<OtlpSettings>) -> Running {
    start_with_store(config, source, otlp, None).await
}

/// [`start`] on a store the test built (`app::new_store`) and can write into.
pub async fn start_with_store(
    config: Config,
    source: GpuSource,
    otlp: Option<OtlpSettings>,
    store: Option<Arc<Store>>,
) -> Running {
    let credentials = Arc::new(Credentials::load(&config.http).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app::run_with(
        config,
        source,
        otlp,
        listener,
        Arc::clone(&credentials),
        store,
        async {
            let _ = stopped.await;
        },
    ));
    Running {
        base: format!("http://{addr}"),
        addr,
        credentials,
        stop: Some(stop),
        task,
    }
}

impl Running {
    /// `GET path` over plain HTTP; the body as text.
    pub async fn get(&self, path: &str) -> String {
        http_get(format!("{}{path}", self.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `GET path` over plain HTTP, parsed as JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        serde_json::from_str(&self.get(path).await).unwrap()
    }

    /// Polls `path` until `ok` holds (10 s at most) and returns the last body.
    pub async fn wait_for(&self, path: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let body = self.get(path).await;
            if ok(&body) {
                return body;
            }
            assert!(Instant::now() < deadline, "never saw {what}:\n{body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the agent and asserts it shut down cleanly within `limit`.
    pub async fn shut_down_within(mut self, limit: Duration) {
        self.stop.take().unwrap().send(()).unwrap();
        let finished = tokio::time::timeout(limit, self.task).await;
        assert!(
            matches!(finished, Ok(Ok(Ok(())))),
            "agent did not stop cleanly in {limit:?}: {finished:?}"
        );
    }

    /// Stops the agent and asserts it shut down cleanly.
    pub async fn shut_down(self) {
        self.shut_down_within(Duration::from_secs(6)).await;
    }
}

/// A reqwest client for tests. reqwest is built without a crypto provider of its own
/// (gpulse installs ring for the whole process), so tests install it before building one.
pub fn client() -> reqwest::Client {
    gpulse::collect::probe::tls::install_crypto_provider();
    reqwest::Client::new()
}

/// `reqwest::get` through [`client`].
pub async fn http_get(url: impl reqwest::IntoUrl) -> reqwest::Result<reqwest::Response> {
    client().get(url).send().await
}
