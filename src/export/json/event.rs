//! `gpulse.event/v1`: one event of the event log, as stored in the state store, served by
//! `/v1/events` and mapped onto an OTLP log record. It deserializes too (the log reads its
//! own records back).
//!
//! The body is kept as raw JSON: a sentence (a JSON string) for the events gpulse derives,
//! the report itself (an object, byte for byte as it was appended) for a score report, so a
//! signature over the report's bytes still verifies after a round trip through the log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Schema id of [`EventV1`].
pub const EVENT_SCHEMA_V1: &str = "gpulse.event/v1";

/// One event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventV1 {
    pub schema: String,
    /// Monotonic across restarts (the state store keeps it); gaps never appear, but the
    /// oldest events leave the log at its bound.
    pub seq: u64,
    /// When it happened (the source's own time: the transition, the Xid, the outage's start
    /// or end, the job event), RFC 3339.
    pub time: String,
    /// When gpulse recorded it in the log.
    pub observed_time: String,
    /// `health_transition`, `xid`, `probe_outage_started`, `probe_outage_ended`,
    /// `job_started`, `job_ready`, `job_finished`, `score_report` (kinds may be added).
    pub kind: String,
    /// `info`, `warn` or `error`.
    pub severity: String,
    pub node: String,
    /// Typed values under OpenTelemetry-style names (`gpulse.gpu.index`, `hw.id`, …).
    pub attributes: BTreeMap<String, AttrV1>,
    /// A JSON string (a sentence) or, for `score_report`, the report's JSON verbatim.
    pub body: Box<RawValue>,
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AttrV1 {
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(String),
    List(Vec<String>),
}

impl EventV1 {
    /// The body as text: the sentence, or the JSON text of an object body.
    pub fn body_text(&self) -> String {
        match serde_json::from_str::<String>(self.body.get()) {
            Ok(text) => text,
            Err(_) => self.body.get().to_owned(),
        }
    }

    /// Decodes one stored event.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }

    /// Encodes it for the log.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        serde_json::to_vec(self).map_err(|e| e.to_string())
    }
}

/// A body that is a sentence.
pub fn text_body(text: &str) -> Result<Box<RawValue>, String> {
    let json = serde_json::to_string(text).map_err(|e| e.to_string())?;
    RawValue::from_string(json).map_err(|e| e.to_string())
}

/// A body that is a JSON document, kept byte for byte; an error when it is not JSON.
pub fn json_body(json: String) -> Result<Box<RawValue>, String> {
    RawValue::from_string(json).map_err(|e| format!("the body is not JSON: {e}"))
}

/// Stored bytes as a raw JSON value, for serving without decoding; an error when they are
/// not UTF-8 JSON.
pub fn raw_event(bytes: Vec<u8>) -> Result<Box<RawValue>, String> {
    let text = String::from_utf8(bytes).map_err(|e| e.to_string())?;
    RawValue::from_string(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_round_trips_with_typed_attributes_and_a_verbatim_body() {
        let report = r#"{"b":1,  "a":[2.50,"x"],"sig":"abc"}"#;
        let event = EventV1 {
            schema: EVENT_SCHEMA_V1.to_owned(),
            seq: 7,
            time: "2026-01-05T10:00:00.000Z".to_owned(),
            observed_time: "2026-01-05T10:00:01.000Z".to_owned(),
            kind: "score_report".to_owned(),
            severity: "info".to_owned(),
            node: "n1".to_owned(),
            attributes: BTreeMap::from([
                ("b".to_owned(), AttrV1::Bool(true)),
                ("i".to_owned(), AttrV1::Int(-3)),
                ("d".to_owned(), AttrV1::Double(35.0)),
                ("s".to_owned(), AttrV1::Str("x".to_owned())),
                ("l".to_owned(), AttrV1::List(vec!["kmsg".to_owned()])),
            ]),
            body: json_body(report.to_owned()).unwrap(),
        };
        let bytes = event.encode().unwrap();
        let back = EventV1::decode(&bytes).unwrap();
        assert_eq!(back.attributes, event.attributes);
        assert_eq!(back.body.get(), report, "the body is kept byte for byte");
        assert_eq!(back.body_text(), report);
        let text = text_body("GPU 0 is \"hot\"").unwrap();
        assert_eq!(text.get(), r#""GPU 0 is \"hot\"""#);
        assert!(json_body("{not json".to_owned()).is_err());
        assert!(raw_event(bytes).is_ok());
        assert!(raw_event(vec![0xff, 0x00]).is_err());
    }
}
