//! Kubernetes quantities, enough to compare what a Sandbox asks for with what a policy allows:
//! CPU in millicores and memory or storage in bytes. The parsing is the host's own
//! (`sandman_policy_wire::quantity`), so a policy and the host never read a quantity differently.

use sandman_policy_wire::quantity;

/// `"500m"` → 500, `"2"` → 2000, `"1.5"` → 1500, `"64000000u"` → 64000.
pub fn cpu_millis(text: &str) -> Result<u64, String> {
    non_negative(text, 1000.0).map_err(|_| format!("{text:?} is not a CPU quantity"))
}

/// `"512Mi"` → 536870912, `"1G"` → 1000000000, `"100"` → 100.
pub fn bytes(text: &str) -> Result<u64, String> {
    non_negative(text, 1.0).map_err(|_| format!("{text:?} is not a memory quantity"))
}

fn non_negative(text: &str, scale: f64) -> Result<u64, ()> {
    let value = quantity::value(text.trim()).map_err(|_| ())?;
    if value < 0.0 {
        return Err(());
    }
    // Saturates at u64::MAX: a quantity too large to count is still larger than any cap.
    Ok((value * scale).ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse() {
        assert_eq!(cpu_millis("500m"), Ok(500));
        assert_eq!(cpu_millis("2"), Ok(2000));
        assert_eq!(cpu_millis("1.5"), Ok(1500));
        assert_eq!(cpu_millis("64000000u"), Ok(64000));
        assert_eq!(
            cpu_millis("100n"),
            Ok(1),
            "a sliver of a millicore still counts"
        );
        assert_eq!(bytes("512Mi"), Ok(512 << 20));
        assert_eq!(bytes("1G"), Ok(1_000_000_000));
        assert_eq!(bytes("1e3"), Ok(1000));
        assert!(bytes("lots").is_err());
        assert!(cpu_millis("-1").is_err());
    }
}
