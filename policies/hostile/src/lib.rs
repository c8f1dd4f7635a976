//! A deliberately hostile policy for the host's limit tests. Its settings say how to misbehave:
//! `{"mode": "loop" | "memory" | "trap" | "huge-output" | "many-tolerations" | "huge-error" |
//! "log-flood" | "error" | "abstain"}`.

use sandman_policy_sdk::types::{Input, IsolationDecision, LogLevel, Toleration};
use sandman_policy_sdk::{Policy, export_policy, log, no_security_overrides, parse_settings};

#[derive(serde::Deserialize)]
struct Settings {
    mode: String,
}

struct Hostile;

impl Policy for Hostile {
    fn isolation(input: Input) -> Result<Option<IsolationDecision>, String> {
        let settings: Settings = parse_settings(&input.settings)?;
        match settings.mode.as_str() {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "trap" => panic!("the hostile policy traps"),
            "huge-output" => Ok(Some(IsolationDecision {
                runtime_class_name: Some("x".repeat(8 << 20)),
                security: no_security_overrides(),
                node_selector: Vec::new(),
                tolerations: Vec::new(),
                network: None,
                reason: "huge".into(),
            })),
            // Empty items cost almost nothing in string bytes: 600,000 of them once reached a pod
            // (100,000 fit in the default 32 Mi of guest memory).
            "many-tolerations" => Ok(Some(IsolationDecision {
                runtime_class_name: None,
                security: no_security_overrides(),
                node_selector: Vec::new(),
                tolerations: (0..100_000)
                    .map(|_| Toleration {
                        key: None,
                        operator: None,
                        value: None,
                        effect: None,
                    })
                    .collect(),
                network: None,
                reason: "flood".into(),
            })),
            "huge-error" => Err(format!(
                "the hostile policy refuses {}",
                "x".repeat(4 << 20)
            )),
            "log-flood" => {
                let forged =
                    "\n2026-01-01T00:00:00.000000Z ERROR sandman::controller: forged by a policy";
                for _ in 0..65_536 {
                    log(LogLevel::Info, &format!("{}{forged}", "y".repeat(1 << 10)));
                }
                Ok(None)
            }
            "error" => Err("the hostile policy refuses".into()),
            _ => Ok(None),
        }
    }
}

export_policy!(Hostile, [isolation]);
