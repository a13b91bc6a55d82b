//! One event as hooks are told it: as environment variables for a command,
//! and as a JSON body for a POST. Pure.

use crate::profile::hooks::EventKind;
use serde::Serialize;
use std::time::{SystemTime, UNIX_EPOCH};

/// Something that happened to a stream, with what a hook may want to know.
/// Fields that do not apply to the event are left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    #[serde(rename = "event", serialize_with = "kind_name")]
    pub kind: EventKind,
    pub stream: String,
    /// When it happened, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<u32>,
    /// The viewer's label (the first 8 digits of its session: never the
    /// whole session URL, which is its holder's secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub viewer: Option<String>,
    /// The viewer's HTTP address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// Viewers of the stream after a join or leave.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub viewers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Restarts since the backoff was last reset, counting this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// The push's index in the profile's `whip:` list, its endpoint (without
    /// the query) and its new state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_state: Option<&'static str>,
}

fn kind_name<S: serde::Serializer>(k: &EventKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(k.name())
}

impl Event {
    /// An event of `kind` for `stream`, now, with no details yet.
    pub fn new(kind: EventKind, stream: &str) -> Self {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self {
            kind,
            stream: stream.to_owned(),
            unix_ms,
            run: None,
            viewer: None,
            remote: None,
            viewers: None,
            reason: None,
            exit_code: None,
            signal: None,
            attempt: None,
            delay_ms: None,
            push: None,
            push_url: None,
            push_state: None,
        }
    }

    /// The event as `FFWHEP_*` environment variables, for a command.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("FFWHEP_EVENT", self.kind.name().to_owned()),
            ("FFWHEP_STREAM", self.stream.clone()),
            ("FFWHEP_UNIX_MS", self.unix_ms.to_string()),
        ];
        let mut add = |name, v: Option<String>| {
            if let Some(v) = v {
                env.push((name, v));
            }
        };
        add("FFWHEP_RUN", self.run.map(|v| v.to_string()));
        add("FFWHEP_VIEWER", self.viewer.clone());
        add("FFWHEP_REMOTE", self.remote.clone());
        add("FFWHEP_VIEWERS", self.viewers.map(|v| v.to_string()));
        add("FFWHEP_REASON", self.reason.clone());
        add("FFWHEP_EXIT_CODE", self.exit_code.map(|v| v.to_string()));
        add("FFWHEP_SIGNAL", self.signal.map(|v| v.to_string()));
        add("FFWHEP_ATTEMPT", self.attempt.map(|v| v.to_string()));
        add("FFWHEP_DELAY_MS", self.delay_ms.map(|v| v.to_string()));
        add("FFWHEP_PUSH", self.push.map(|v| v.to_string()));
        add("FFWHEP_PUSH_URL", self.push_url.clone());
        add("FFWHEP_PUSH_STATE", self.push_state.map(str::to_owned));
        env
    }

    /// The event as the JSON body of a POST.
    pub fn json(&self) -> String {
        // Strings, numbers and options only: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leave_is_told_alike_in_the_environment_and_in_json() {
        let e = Event {
            viewer: Some("ab12cd34".into()),
            remote: Some("127.0.0.1:5000".into()),
            viewers: Some(0),
            reason: Some("delete".into()),
            run: Some(2),
            ..Event::new(EventKind::ViewerLeave, "cam")
        };
        let env: std::collections::HashMap<_, _> = e.env().into_iter().collect();
        assert_eq!(env["FFWHEP_EVENT"], "viewer_leave");
        assert_eq!(env["FFWHEP_STREAM"], "cam");
        assert_eq!(env["FFWHEP_VIEWER"], "ab12cd34");
        assert_eq!(env["FFWHEP_REMOTE"], "127.0.0.1:5000");
        assert_eq!(env["FFWHEP_REASON"], "delete");
        assert_eq!(env["FFWHEP_VIEWERS"], "0");
        assert_eq!(env["FFWHEP_RUN"], "2");
        assert!(!env.contains_key("FFWHEP_EXIT_CODE"));
        let json: serde_json::Value = serde_json::from_str(&e.json()).unwrap();
        assert_eq!(json["event"], "viewer_leave");
        assert_eq!(json["viewer"], "ab12cd34");
        assert_eq!(json["viewers"], 0);
        assert_eq!(json["unix_ms"].as_u64(), Some(e.unix_ms));
        assert!(json.get("exit_code").is_none(), "{json}");
    }
}
