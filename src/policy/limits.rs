//! Parsing the limits a SandboxPolicy writes as text: Go durations and Kubernetes quantities.

use std::time::Duration;

/// What one policy may consume per evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub timeout: Duration,
    pub memory_bytes: usize,
    /// The largest decision (summed string lengths) the host accepts.
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(100),
            memory_bytes: 32 << 20,
            output_bytes: 64 << 10,
        }
    }
}

/// What the operator gives a policy that sets no limits, and the most one may set: a
/// platform's ceiling, so that a policy cannot hold a reconcile for minutes.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyLimitBounds {
    pub default: Limits,
    pub max: Limits,
}

impl Default for PolicyLimitBounds {
    fn default() -> Self {
        Self {
            default: Limits::default(),
            max: Limits {
                timeout: Duration::from_secs(5),
                memory_bytes: 256 << 20,
                ..Limits::default()
            },
        }
    }
}

impl PolicyLimitBounds {
    /// The limits a SandboxPolicy's `limits` ask for, with these defaults and maximums applied.
    pub fn apply(&self, asked: &crate::api::PolicyLimits) -> Result<Limits, String> {
        self.resolve(asked.timeout.as_deref(), asked.memory.as_deref())
    }

    /// The limits for a policy that writes `timeout` and `memory` (each optional); the error
    /// names the field.
    pub fn resolve(&self, timeout: Option<&str>, memory: Option<&str>) -> Result<Limits, String> {
        let mut limits = self.default;
        if let Some(text) = timeout {
            limits.timeout = parse_duration(text).map_err(|e| format!("limits.timeout: {e}"))?;
            if limits.timeout.is_zero() {
                return Err("limits.timeout: must be more than zero".into());
            }
            if limits.timeout > self.max.timeout {
                return Err(format!(
                    "limits.timeout: {text} is more than this operator allows ({:?})",
                    self.max.timeout
                ));
            }
        }
        if let Some(text) = memory {
            limits.memory_bytes = parse_memory(text).map_err(|e| format!("limits.memory: {e}"))?;
            if limits.memory_bytes > self.max.memory_bytes {
                return Err(format!(
                    "limits.memory: {text} is more than this operator allows ({} bytes)",
                    self.max.memory_bytes
                ));
            }
        }
        Ok(limits)
    }

    /// Checks that the defaults fit under the maximums.
    pub fn validate(&self) -> Result<(), String> {
        if self.default.timeout > self.max.timeout {
            return Err(format!(
                "the default policy timeout {:?} is more than the maximum {:?}",
                self.default.timeout, self.max.timeout
            ));
        }
        if self.default.memory_bytes > self.max.memory_bytes {
            return Err(format!(
                "the default policy memory {} is more than the maximum {}",
                self.default.memory_bytes, self.max.memory_bytes
            ));
        }
        Ok(())
    }
}

/// A Go-style duration such as `100ms`, `2s`, `1m30s` or `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("invalid duration {text:?}"))?;
        let seconds = match unit {
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            _ => {
                return Err(format!(
                    "invalid duration {text:?}: unit must be ms, s, m or h"
                ));
            }
        };
        total += Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("invalid duration {text:?}"))?;
        rest = next;
    }
    Ok(total)
}

/// `bytes` as a Kubernetes quantity, in the largest binary unit that divides it.
pub fn format_memory(bytes: usize) -> String {
    for (suffix, shift) in [("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        if bytes != 0 && bytes.is_multiple_of(1 << shift) {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// A Kubernetes memory quantity such as `32Mi`, `1Gi`, `500M` or `1048576`, in bytes.
pub fn parse_memory(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let value: usize = number
        .parse()
        .map_err(|_| format!("invalid memory quantity {text:?}"))?;
    let factor: usize = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        _ => return Err(format!("invalid memory quantity {text:?}")),
    };
    value
        .checked_mul(factor)
        .ok_or_else(|| format!("memory quantity {text:?} is too large"))
}

/// The numeric value of a Kubernetes quantity (`500m`, `2`, `64000000u`, `512Mi`, `1e3`), for
/// comparing a request against a cap. `None` when it is not a quantity. The parser is the one the
/// guest SDK uses (`sandman_policy_wire::quantity`).
pub fn quantity_value(text: &str) -> Option<f64> {
    sandman_policy_wire::quantity::value(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_limits_take_the_operator_defaults() {
        let bounds = PolicyLimitBounds {
            default: Limits {
                timeout: Duration::from_millis(250),
                memory_bytes: 64 << 20,
                ..Limits::default()
            },
            ..PolicyLimitBounds::default()
        };
        let limits = bounds.resolve(None, Some("16Mi")).expect("valid");
        assert_eq!(limits.timeout, Duration::from_millis(250));
        assert_eq!(limits.memory_bytes, 16 << 20);
    }

    #[test]
    fn limits_above_the_maximum_are_refused_with_the_field() {
        let bounds = PolicyLimitBounds::default();
        let error = bounds
            .resolve(Some("1m"), None)
            .expect_err("over the maximum");
        assert!(
            error.starts_with("limits.timeout: 1m is more than"),
            "{error}"
        );
        let error = bounds
            .resolve(None, Some("1Gi"))
            .expect_err("over the maximum");
        assert!(
            error.starts_with("limits.memory: 1Gi is more than"),
            "{error}"
        );
        let error = bounds.resolve(Some("0s"), None).expect_err("zero");
        assert!(error.contains("more than zero"), "{error}");
        assert!(bounds.resolve(Some("5s"), Some("256Mi")).is_ok());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("10").is_err());
    }

    #[test]
    fn memory_formats_back_to_a_quantity() {
        assert_eq!(format_memory(32 << 20), "32Mi");
        assert_eq!(format_memory(1 << 30), "1Gi");
        assert_eq!(format_memory(1536), "1536");
        assert_eq!(format_memory(0), "0");
    }

    #[test]
    fn memory() {
        assert_eq!(parse_memory("32Mi"), Ok(32 << 20));
        assert_eq!(parse_memory("1G"), Ok(1_000_000_000));
        assert_eq!(parse_memory("4096"), Ok(4096));
        assert!(parse_memory("lots").is_err());
    }
}
