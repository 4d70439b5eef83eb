//! Synthetic inference requests: the cheapest real request per server kind, timed.
//!
//! OpenAI-compatible kinds (vllm, sglang, tgi, llamacpp, openai) get a streaming
//! `POST /v1/completions` asking for `inference_max_tokens` tokens; the first streamed choice
//! is the time to first token. Ollama gets a streaming `POST /api/generate` (NDJSON).
//! Triton / KServe get `POST /v2/models/{model}/infer` with the configured input; there the
//! first response byte stands in for the first token. Every request is bounded like a check:
//! one deadline (`inference_timeout`) over the whole exchange and `max_body_bytes` over the
//! streamed body, so a server that trickles or never ends its stream costs one request slot.
//!
//! `gpulse bench` sends the same requests with its own prompt and length ([`Ask`],
//! [`infer_ask`]) and reads the gaps between the stream chunks that carried tokens too.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::config::{ProbeConfig, ProbeKind, Synthetic};
use crate::model::{InferenceSample, ProbeReason};

use super::http::{Failure, Probe, classify, too_large};

/// Longest server error text kept in `detail`.
const MAX_DETAIL: usize = 200;
/// Inter-token gaps kept per request (a stream is also bounded by `max_body_bytes`).
pub const MAX_GAPS: usize = 4096;
/// Ollama's `load_duration` above which a request is taken to have (re)loaded the model: a
/// loaded model still reports a few milliseconds of runner set-up.
const OLLAMA_LOAD_THRESHOLD: Duration = Duration::from_secs(1);

/// What a stream has shown so far; fed one event at a time, so it is tested without a server.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tally {
    /// Since sending, when the first choice (token) arrived.
    pub first_token: Option<Duration>,
    /// Events that carried a non-empty text.
    pub text_events: u64,
    /// The server's own count of generated tokens, when it sent one.
    pub reported_tokens: Option<u64>,
    /// The stream said it is complete (`[DONE]`, `"done": true`, a whole JSON answer).
    pub done: bool,
    /// The server reported an error inside a 2xx answer.
    pub error: Option<String>,
    /// At least one well-formed answer event was seen.
    pub answered: bool,
    /// Ollama: the request (re)loaded the model.
    pub caused_load: bool,
    /// Lines that were not the expected JSON.
    pub bad_lines: u64,
    /// The server's count of prompt tokens, when it sent one.
    pub prompt_tokens: Option<u64>,
    /// When the last chunk that carried text arrived.
    pub last_token: Option<Duration>,
    /// Gaps between successive chunks that carried text (events of one chunk share its
    /// arrival time and make no gap), at most [`MAX_GAPS`].
    pub gaps: Vec<Duration>,
}

impl Tally {
    /// Output tokens: the server's count, else the events that carried text.
    pub fn tokens(&self) -> Option<u64> {
        self.reported_tokens
            .or((self.text_events > 0).then_some(self.text_events))
    }

    /// An event that carried text arrived at `at`.
    fn text_at(&mut self, at: Duration) {
        self.text_events += 1;
        if let Some(last) = self.last_token
            && at > last
            && self.gaps.len() < MAX_GAPS
        {
            self.gaps.push(at - last);
        }
        self.last_token = Some(at);
    }

    /// Parses one JSON event; `None` (counted as a bad line, or kept as the server's error)
    /// when it is not JSON or is an error object.
    fn event(&mut self, text: &str) -> Option<Value> {
        let Ok(event) = serde_json::from_str::<Value>(text) else {
            self.bad_lines += 1;
            return None;
        };
        if let Some(error) = event.get("error") {
            self.error = Some(error_text(error));
            return None;
        }
        Some(event)
    }

    /// One OpenAI completions event (a `data:` payload or a whole JSON answer).
    pub fn feed_openai(&mut self, payload: &str, at: Duration) {
        let payload = payload.trim();
        if payload == "[DONE]" {
            self.done = true;
            return;
        }
        let Some(event) = self.event(payload) else {
            return;
        };
        if let Some(tokens) = event
            .pointer("/usage/completion_tokens")
            .and_then(Value::as_u64)
        {
            self.reported_tokens = Some(tokens);
        }
        if let Some(tokens) = event
            .pointer("/usage/prompt_tokens")
            .and_then(Value::as_u64)
        {
            self.prompt_tokens = Some(tokens);
        }
        let Some(choice) = event
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        else {
            return;
        };
        self.answered = true;
        self.first_token.get_or_insert(at);
        let text = choice
            .get("text")
            .or_else(|| choice.pointer("/delta/content"))
            .or_else(|| choice.pointer("/message/content"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !text.is_empty() {
            self.text_at(at);
        }
    }

    /// One Ollama `/api/generate` NDJSON line.
    pub fn feed_ollama(&mut self, line: &str, at: Duration) {
        let Some(event) = self.event(line.trim()) else {
            return;
        };
        if event.get("response").is_some() {
            self.answered = true;
            self.first_token.get_or_insert(at);
        }
        if event
            .get("response")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty())
        {
            self.text_at(at);
        }
        if event.get("done").and_then(Value::as_bool) == Some(true) {
            self.done = true;
            if let Some(n) = event.get("eval_count").and_then(Value::as_u64) {
                self.reported_tokens = Some(n);
            }
            if let Some(n) = event.get("prompt_eval_count").and_then(Value::as_u64) {
                self.prompt_tokens = Some(n);
            }
            let load = event.get("load_duration").and_then(Value::as_u64);
            self.caused_load = load.is_some_and(|ns| ns >= OLLAMA_LOAD_THRESHOLD.as_nanos() as u64);
        }
    }

    /// One line of a streamed answer: an SSE line (`data:` payloads only) or an NDJSON line.
    fn feed_line(&mut self, format: Format, line: &str, at: Duration) {
        match format {
            Format::OpenAi => {
                if let Some(data) = sse_data(line) {
                    self.feed_openai(data, at);
                }
            }
            Format::Ollama if !line.trim().is_empty() => self.feed_ollama(line, at),
            _ => {}
        }
    }

    /// A whole KServe v2 infer answer: it must carry an `outputs` array.
    pub fn feed_v2(&mut self, body: &str) {
        let Some(answer) = self.event(body) else {
            return;
        };
        if answer.get("outputs").is_some_and(Value::is_array) {
            self.answered = true;
            self.done = true;
        } else {
            self.bad_lines += 1;
        }
    }
}

/// An error field as text: a string, or an object's `message`, bounded.
fn error_text(error: &Value) -> String {
    let text = match error {
        Value::String(s) => s.clone(),
        other => other
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| other.to_string(), str::to_owned),
    };
    bounded(&text)
}

fn bounded(text: &str) -> String {
    let mut end = text.len().min(MAX_DETAIL);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// The payload of an SSE `data:` line, if it is one.
pub fn sse_data(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("data:")?;
    Some(rest.strip_prefix(' ').unwrap_or(rest))
}

/// Splits a byte stream into lines without holding more than the body cap.
#[derive(Default)]
struct Lines {
    pending: Vec<u8>,
}

impl Lines {
    /// Appends a chunk and hands every complete line (without `\r\n`) to `line`.
    fn push(&mut self, chunk: &[u8], mut line: impl FnMut(&str)) {
        self.pending.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(offset) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + offset;
            let text = String::from_utf8_lossy(&self.pending[start..end]);
            line(text.trim_end_matches('\r'));
            start = end + 1;
        }
        self.pending.drain(..start);
    }

    /// The last line when the stream ended without a newline.
    fn finish(&mut self, line: impl FnOnce(&str)) {
        if !self.pending.is_empty() {
            let text = String::from_utf8_lossy(&self.pending);
            line(text.trim_end_matches('\r'));
            self.pending.clear();
        }
    }
}

/// The wire format of an answer.
#[derive(Clone, Copy, PartialEq)]
enum Format {
    /// Server-sent events (`data: {...}`), or one JSON answer when the server did not stream.
    OpenAi,
    /// One JSON object per line.
    Ollama,
    /// One JSON answer.
    V2,
}

/// One request: what the probe sends ([`Ask::probe`]) or what `gpulse bench` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask<'a> {
    /// Named in the request; empty: the server picks.
    pub model: &'a str,
    pub prompt: &'a str,
    pub max_tokens: u32,
    /// Ask for all `max_tokens` even past an end-of-sequence token, where the kind takes it
    /// (`Synthetic::Completions { ignore_eos: true }`), so every answer has the same length.
    pub ignore_eos: bool,
    /// Deadline of the whole exchange.
    pub timeout: Duration,
}

impl<'a> Ask<'a> {
    /// The probe's own synthetic request, naming `model`.
    pub fn probe(config: &'a ProbeConfig, model: &'a str) -> Self {
        Self {
            model,
            prompt: &config.inference_prompt,
            max_tokens: config.inference_max_tokens,
            ignore_eos: false,
            timeout: config.inference_timeout.0,
        }
    }
}

/// The request for `kind`: path and JSON body.
pub fn request_for(kind: ProbeKind, ask: &Ask<'_>, v2_input: &str) -> Option<(String, String)> {
    let Ask {
        model,
        prompt,
        max_tokens,
        ..
    } = *ask;
    let body = match kind.caps().synthetic {
        Synthetic::None => return None,
        Synthetic::V2Infer => {
            return Some((format!("/v2/models/{model}/infer"), v2_input.to_owned()));
        }
        Synthetic::OllamaGenerate => {
            let body = json!({
                "model": model,
                "prompt": prompt,
                "stream": true,
                "options": {"num_predict": max_tokens, "temperature": 0},
            });
            return Some(("/api/generate".to_owned(), body.to_string()));
        }
        Synthetic::Completions { usage, ignore_eos } => {
            let mut body = json!({
                "prompt": prompt,
                "max_tokens": max_tokens,
                "temperature": 0,
                "stream": true,
            });
            if !model.is_empty() {
                body["model"] = json!(model);
            }
            // The usage chunk gives an exact token count; TGI and llama.cpp do not take
            // the option (llama.cpp sends usage anyway).
            if usage {
                body["stream_options"] = json!({"include_usage": true});
            }
            if ignore_eos && ask.ignore_eos {
                body["ignore_eos"] = json!(true);
            }
            body
        }
    };
    Some(("/v1/completions".to_owned(), body.to_string()))
}

/// Sends one synthetic request for `probe`, naming `model` (empty: the server picks).
pub async fn infer(probe: &Probe, model: &str) -> InferenceSample {
    infer_ask(probe, &Ask::probe(probe.config(), model))
        .await
        .sample
}

/// One timed request and what only a stream shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Timed {
    pub sample: InferenceSample,
    /// Gaps between the chunks that carried tokens (empty for a failure).
    pub gaps: Vec<Duration>,
    /// The server's count of prompt tokens, when it sent one.
    pub prompt_tokens: Option<u64>,
}

/// Sends `ask` to `probe`'s server in the kind's format, bounded by `ask.timeout` and the
/// probe's `max_body_bytes`.
pub async fn infer_ask(probe: &Probe, ask: &Ask<'_>) -> Timed {
    let started = Instant::now();
    let outcome = tokio::time::timeout(ask.timeout, exchange(probe, ask, started))
        .await
        .unwrap_or_else(|_| {
            Err((
                ProbeReason::Timeout,
                format!(
                    "no complete answer within {}",
                    humantime::format_duration(ask.timeout)
                ),
            ))
        });
    let duration = started.elapsed();
    let at = SystemTime::now();
    match outcome {
        Ok(tally) => Timed {
            sample: InferenceSample {
                ok: true,
                reason: None,
                detail: String::new(),
                model: ask.model.to_owned(),
                ttft: tally.first_token,
                duration,
                output_tokens: tally.tokens(),
                caused_load: tally.caused_load,
                at,
            },
            gaps: tally.gaps,
            prompt_tokens: tally.prompt_tokens,
        },
        Err((reason, detail)) => Timed {
            sample: InferenceSample {
                ok: false,
                reason: Some(reason),
                detail,
                model: ask.model.to_owned(),
                ttft: None,
                duration,
                output_tokens: None,
                caused_load: false,
                at,
            },
            gaps: Vec::new(),
            prompt_tokens: None,
        },
    }
}

/// The whole exchange; the caller's deadline bounds it.
async fn exchange(probe: &Probe, ask: &Ask<'_>, started: Instant) -> Result<Tally, Failure> {
    let config = probe.config();
    let Some((path, body)) = request_for(config.kind, ask, &config.inference_input) else {
        return Err((
            ProbeReason::BadBody,
            "this kind has no synthetic request".to_owned(),
        ));
    };
    let format = match config.kind.caps().synthetic {
        Synthetic::OllamaGenerate => Format::Ollama,
        Synthetic::V2Infer => Format::V2,
        Synthetic::Completions { .. } | Synthetic::None => Format::OpenAi,
    };
    let url = format!("{}{path}", config.base_url());
    let mut response = probe
        .request(reqwest::Method::POST, &url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| classify(&e))?;
    let headers_at = started.elapsed();
    let status = response.status().as_u16();
    let streamed = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    // SSE and NDJSON are read line by line as they stream; whole answers at the end.
    let line_framed = matches!(format, Format::Ollama) || (format == Format::OpenAi && streamed);
    let max = config.max_body_bytes;
    let mut tally = Tally::default();
    let mut lines = Lines::default();
    let mut whole = Vec::new();
    let mut received = 0usize;
    while let Some(chunk) = response.chunk().await.map_err(|e| classify(&e))? {
        received += chunk.len();
        if received > max {
            return Err(too_large(max));
        }
        let at = started.elapsed();
        if line_framed {
            lines.push(&chunk, |line| tally.feed_line(format, line, at));
        } else {
            whole.extend_from_slice(&chunk);
        }
        if tally.done || tally.error.is_some() {
            // Complete: the server may keep the stream open; the answer is in.
            break;
        }
    }
    let at = started.elapsed();
    if line_framed {
        lines.finish(|line| tally.feed_line(format, line, at));
    } else if format == Format::V2 {
        tally.feed_v2(&String::from_utf8_lossy(&whole));
        tally.first_token = Some(headers_at);
    } else {
        // An OpenAI-compatible server that answered with one JSON document.
        tally.feed_openai(&String::from_utf8_lossy(&whole), headers_at);
        tally.done |= tally.answered;
    }
    if !(200..300).contains(&status) {
        let detail = match &tally.error {
            Some(error) => format!("HTTP {status}: {error}"),
            None => format!("HTTP {status}"),
        };
        return Err((ProbeReason::HttpStatus, detail));
    }
    if let Some(error) = tally.error {
        return Err((ProbeReason::BadBody, format!("server error: {error}")));
    }
    if !tally.answered {
        return Err((
            ProbeReason::BadBody,
            "the answer carried no completion".to_owned(),
        ));
    }
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn openai_stream_times_the_first_choice_and_prefers_the_usage_count() {
        let mut t = Tally::default();
        t.feed_openai(
            r#"{"choices":[{"text":" tienen","index":0,"finish_reason":null}]}"#,
            ms(7),
        );
        t.feed_openai(r#"{"choices":[{"text":"!","index":0}]}"#, ms(9));
        assert_eq!(t.first_token, Some(ms(7)));
        assert_eq!(t.tokens(), Some(2));
        t.feed_openai(
            r#"{"choices":[],"usage":{"completion_tokens":3,"prompt_tokens":2}}"#,
            ms(10),
        );
        t.feed_openai("[DONE]", ms(11));
        assert!(t.done && t.answered);
        assert_eq!(t.tokens(), Some(3));
        assert_eq!(t.first_token, Some(ms(7)));
    }

    #[test]
    fn openai_errors_and_garbage_are_recorded() {
        let mut t = Tally::default();
        t.feed_openai("not json", ms(1));
        assert_eq!(t.bad_lines, 1);
        t.feed_openai(
            r#"{"error":{"message":"model not found","code":404}}"#,
            ms(2),
        );
        assert_eq!(t.error.as_deref(), Some("model not found"));
        assert!(!t.answered);
        let mut t = Tally::default();
        t.feed_openai(&format!(r#"{{"error":"{}"}}"#, "x".repeat(1000)), ms(2));
        assert_eq!(t.error.map(|e| e.len()), Some(MAX_DETAIL));
    }

    #[test]
    fn an_empty_token_still_counts_as_the_first_answer() {
        let mut t = Tally::default();
        t.feed_openai(r#"{"choices":[{"text":""}]}"#, ms(4));
        assert_eq!(t.first_token, Some(ms(4)));
        assert_eq!(t.tokens(), None);
        assert!(t.answered);
    }

    #[test]
    fn ollama_lines_give_timings_tokens_and_loads() {
        let mut t = Tally::default();
        t.feed_ollama(r#"{"model":"m","response":"Hi","done":false}"#, ms(30));
        t.feed_ollama(
            r#"{"model":"m","response":"","done":true,"eval_count":1,"load_duration":2500000000}"#,
            ms(31),
        );
        assert_eq!(t.first_token, Some(ms(30)));
        assert_eq!(t.tokens(), Some(1));
        assert!(t.done && t.caused_load);
        let mut warm = Tally::default();
        warm.feed_ollama(
            r#"{"response":"a","done":true,"load_duration":3000000}"#,
            ms(1),
        );
        assert!(!warm.caused_load);
    }

    #[test]
    fn v2_answers_need_outputs() {
        let mut t = Tally::default();
        t.feed_v2(r#"{"model_name":"iris","outputs":[{"name":"predict","data":[0]}]}"#);
        assert!(t.answered && t.done);
        let mut t = Tally::default();
        t.feed_v2(r#"{"error":"Model nosuch not found"}"#);
        assert_eq!(t.error.as_deref(), Some("Model nosuch not found"));
        let mut t = Tally::default();
        t.feed_v2(r#"{"model_name":"iris"}"#);
        assert!(!t.answered);
    }

    #[test]
    fn lines_split_across_chunks_and_crlf() {
        let mut lines = Lines::default();
        let mut got = Vec::new();
        lines.push(b"data: a\r\nda", |l| got.push(l.to_owned()));
        lines.push(b"ta: b\n\ndata: c", |l| got.push(l.to_owned()));
        lines.finish(|l| got.push(l.to_owned()));
        assert_eq!(got, ["data: a", "data: b", "", "data: c"]);
        assert_eq!(sse_data("data: {}"), Some("{}"));
        assert_eq!(sse_data("data:{}"), Some("{}"));
        assert_eq!(sse_data(": keep-alive"), None);
    }

    fn ask<'a>(model: &'a str, prompt: &'a str, max_tokens: u32) -> Ask<'a> {
        Ask {
            model,
            prompt,
            max_tokens,
            ignore_eos: false,
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn requests_per_kind() {
        let (path, body) = request_for(ProbeKind::Vllm, &ask("m", "hi", 1), "").unwrap();
        assert_eq!(path, "/v1/completions");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["model"], "m");
        assert_eq!(body["max_tokens"], 1);
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert!(body.get("ignore_eos").is_none(), "{body}");
        let (_, body) = request_for(ProbeKind::Llamacpp, &ask("", "hi", 2), "").unwrap();
        let body: Value = serde_json::from_str(&body).unwrap();
        assert!(body.get("model").is_none() && body.get("stream_options").is_none());
        let (path, body) = request_for(ProbeKind::Ollama, &ask("llama3", "hi", 1), "").unwrap();
        assert_eq!(path, "/api/generate");
        assert!(body.contains(r#""num_predict":1"#));
        let input = r#"{"inputs":[]}"#;
        let (path, body) = request_for(ProbeKind::Kserve, &ask("iris", "", 1), input).unwrap();
        assert_eq!(
            (path.as_str(), body.as_str()),
            ("/v2/models/iris/infer", input)
        );
        assert!(request_for(ProbeKind::Tcp, &ask("", "", 1), "").is_none());
    }

    #[test]
    fn ignore_eos_only_where_the_kind_takes_it() {
        let bench = Ask {
            ignore_eos: true,
            ..ask("m", "hi", 64)
        };
        for (kind, sent) in [
            (ProbeKind::Vllm, true),
            (ProbeKind::Sglang, true),
            (ProbeKind::Llamacpp, true),
            (ProbeKind::Tgi, false),
            (ProbeKind::Openai, false),
        ] {
            let (_, body) = request_for(kind, &bench, "").unwrap();
            let body: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body.get("ignore_eos").is_some(), sent, "{kind:?}: {body}");
        }
        let (_, body) = request_for(ProbeKind::Ollama, &bench, "").unwrap();
        assert!(!body.contains("ignore_eos"), "{body}");
    }

    #[test]
    fn gaps_are_between_chunks_that_carried_text() {
        let mut t = Tally::default();
        t.feed_openai(r#"{"choices":[{"text":""}]}"#, ms(5));
        t.feed_openai(r#"{"choices":[{"text":"a"}]}"#, ms(10));
        // Two events of one chunk share its arrival time: no gap between them.
        t.feed_openai(r#"{"choices":[{"text":"b"}]}"#, ms(10));
        t.feed_openai(r#"{"choices":[{"text":"c"}]}"#, ms(25));
        t.feed_openai(
            r#"{"choices":[],"usage":{"completion_tokens":3,"prompt_tokens":9}}"#,
            ms(40),
        );
        assert_eq!(t.first_token, Some(ms(5)));
        assert_eq!(t.gaps, vec![ms(15)]);
        assert_eq!((t.tokens(), t.prompt_tokens), (Some(3), Some(9)));
        let mut o = Tally::default();
        o.feed_ollama(r#"{"response":"a","done":false}"#, ms(3));
        o.feed_ollama(r#"{"response":"b","done":false}"#, ms(7));
        o.feed_ollama(
            r#"{"response":"","done":true,"eval_count":2,"prompt_eval_count":4}"#,
            ms(9),
        );
        assert_eq!(o.gaps, vec![ms(4)]);
        assert_eq!(o.prompt_tokens, Some(4));
        let mut long = Tally::default();
        for i in 0..(MAX_GAPS as u64 + 10) {
            long.feed_openai(r#"{"choices":[{"text":"x"}]}"#, ms(i));
        }
        assert_eq!(long.gaps.len(), MAX_GAPS);
    }
}
