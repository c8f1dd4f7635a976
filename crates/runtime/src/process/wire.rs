//! `process.Process` messages in proto3's JSON mapping (`spec/envd/process/process.proto` in
//! e2b-dev/E2B): camelCase names (the proto names are accepted too), oneofs as the one field
//! set, bytes as base64.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProcessConfig {
    pub cmd: String,
    pub args: Vec<String>,
    pub envs: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Size {
    pub cols: u32,
    pub rows: u32,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Pty {
    pub size: Size,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StartRequest {
    pub process: ProcessConfig,
    pub pty: Option<Pty>,
    pub tag: Option<String>,
    pub stdin: Option<bool>,
}

/// Which process a call means: by pid or by the tag it was started with.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Selector {
    pub pid: Option<u32>,
    pub tag: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SelectorRequest {
    pub process: Selector,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct UpdateRequest {
    pub process: Selector,
    pub pty: Option<Pty>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Input {
    #[serde(with = "base64_opt")]
    pub stdin: Option<Vec<u8>>,
    #[serde(with = "base64_opt")]
    pub pty: Option<Vec<u8>>,
}

impl Input {
    pub fn bytes(self) -> Vec<u8> {
        self.stdin.or(self.pty).unwrap_or_default()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SendInputRequest {
    pub process: Selector,
    pub input: Input,
}

/// `SIGNAL_SIGTERM` or `SIGNAL_SIGKILL`, by name or number.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SendSignalRequest {
    pub process: Selector,
    pub signal: serde_json::Value,
}

/// One message of `StreamInput`'s request stream.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct StreamInputRequest {
    pub start: Option<SelectorRequest>,
    pub data: Option<StreamInputData>,
    pub keepalive: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct StreamInputData {
    pub input: Input,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessInfo {
    pub config: ProcessConfig,
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ListResponse {
    pub processes: Vec<ProcessInfo>,
}

/// How a process ended.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct End {
    pub exit_code: i32,
    pub exited: bool,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What `Start` and `Connect` stream: `{"event": {…}}`.
#[derive(Debug, Clone, Serialize)]
pub struct EventMessage {
    pub event: Event,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Event {
    Start { pid: u32 },
    Data(Data),
    End(End),
    Keepalive {},
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Data {
    Stdout(#[serde(with = "base64_bytes")] bytes::Bytes),
    Stderr(#[serde(with = "base64_bytes")] bytes::Bytes),
    Pty(#[serde(with = "base64_bytes")] bytes::Bytes),
}

#[derive(Debug, Serialize)]
pub struct Empty {}

mod base64_bytes {
    use base64::Engine;
    use serde::Serializer;

    pub fn serialize<S: Serializer>(bytes: &bytes::Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }
}

mod base64_opt {
    use base64::Engine;
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        // proto3 JSON accepts standard and URL-safe base64, padded or not.
        let engines = [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::URL_SAFE,
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        engines
            .iter()
            .find_map(|engine| engine.decode(&text).ok())
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom("bytes that are not base64"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn events_use_proto3_json_oneof_names() {
        let data = EventMessage {
            event: Event::Data(Data::Stdout(bytes::Bytes::from_static(b"hi"))),
        };
        assert_eq!(
            serde_json::to_value(&data).unwrap(),
            serde_json::json!({"event": {"data": {"stdout": "aGk="}}})
        );
        let start = EventMessage {
            event: Event::Start { pid: 7 },
        };
        assert_eq!(
            serde_json::to_value(&start).unwrap(),
            serde_json::json!({"event": {"start": {"pid": 7}}})
        );
        let keepalive = EventMessage {
            event: Event::Keepalive {},
        };
        assert_eq!(
            serde_json::to_value(&keepalive).unwrap(),
            serde_json::json!({"event": {"keepalive": {}}})
        );
    }

    #[test]
    fn a_start_request_reads_as_the_sdk_sends_it() {
        let request: StartRequest = serde_json::from_value(serde_json::json!({
            "process": {"cmd": "/bin/bash", "args": ["-l", "-c", "echo hi"], "envs": {"A": "1"}, "cwd": "/tmp"},
            "stdin": false,
            "tag": "t"
        }))
        .unwrap();
        assert_eq!(request.process.args.len(), 3);
        assert_eq!(request.tag.as_deref(), Some("t"));
        let input: SendInputRequest = serde_json::from_value(
            serde_json::json!({"process": {"pid": 3}, "input": {"stdin": "aGk"}}),
        )
        .unwrap();
        assert_eq!(input.input.bytes(), b"hi");
    }
}
