//! Parsing the limits a SandboxPolicy writes as text: Go durations and Kubernetes quantities.

use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("10").is_err());
    }

    #[test]
    fn memory() {
        assert_eq!(parse_memory("32Mi"), Ok(32 << 20));
        assert_eq!(parse_memory("1G"), Ok(1_000_000_000));
        assert_eq!(parse_memory("4096"), Ok(4096));
        assert!(parse_memory("lots").is_err());
    }
}
