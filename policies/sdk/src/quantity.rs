//! Kubernetes quantities, enough to compare what a Sandbox asks for with what a policy allows:
//! CPU in millicores and memory or storage in bytes.

/// `"500m"` → 500, `"2"` → 2000, `"1.5"` → 1500.
pub fn cpu_millis(quantity: &str) -> Result<u64, String> {
    let q = quantity.trim();
    if let Some(millis) = q.strip_suffix('m') {
        return millis
            .parse()
            .map_err(|_| format!("{quantity:?} is not a CPU quantity"));
    }
    let cores: f64 = q
        .parse()
        .map_err(|_| format!("{quantity:?} is not a CPU quantity"))?;
    if !cores.is_finite() || cores < 0.0 {
        return Err(format!("{quantity:?} is not a CPU quantity"));
    }
    Ok((cores * 1000.0).round() as u64)
}

/// `"512Mi"` → 536870912, `"1G"` → 1000000000, `"100"` → 100.
pub fn bytes(quantity: &str) -> Result<u64, String> {
    const SUFFIXES: [(&str, u64); 12] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("Pi", 1 << 50),
        ("Ei", 1 << 60),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("P", 1_000_000_000_000_000),
        ("E", 1_000_000_000_000_000_000),
    ];
    let q = quantity.trim();
    let (number, factor) = SUFFIXES
        .iter()
        .find_map(|(suffix, factor)| q.strip_suffix(suffix).map(|n| (n, *factor)))
        .unwrap_or((q, 1));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{quantity:?} is not a memory quantity"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("{quantity:?} is not a memory quantity"));
    }
    Ok((value * factor as f64).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse() {
        assert_eq!(cpu_millis("500m"), Ok(500));
        assert_eq!(cpu_millis("2"), Ok(2000));
        assert_eq!(cpu_millis("1.5"), Ok(1500));
        assert_eq!(bytes("512Mi"), Ok(512 << 20));
        assert_eq!(bytes("1G"), Ok(1_000_000_000));
        assert!(bytes("lots").is_err());
        assert!(cpu_millis("-1").is_err());
    }
}
