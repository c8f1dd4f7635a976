//! Kubernetes quantities (`500m`, `2`, `64000000u`, `512Mi`, `1e3`), parsed by the grammar of
//! `k8s.io/apimachinery/pkg/api/resource`. One parser for the host (caps on pods) and the guest
//! SDK (what a policy compares), so the two can never read a quantity differently.
//!
//! ```text
//! quantity ::= signedNumber suffix
//! number   ::= digits | digits "." digits | digits "." | "." digits
//! suffix   ::= binarySI | decimalSI | ("e" | "E") signedNumber
//! binarySI ::= Ki | Mi | Gi | Ti | Pi | Ei
//! decimalSI::= n | u | m | "" | k | M | G | T | P | E
//! ```

/// Why a text is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAQuantity(pub String);

impl std::fmt::Display for NotAQuantity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} is not a Kubernetes quantity", self.0)
    }
}

impl std::error::Error for NotAQuantity {}

/// The value of a quantity in base units (cores, bytes). Exact for every value a pod can
/// sensibly hold; `f64` keeps 15 significant digits, more than the API server keeps.
pub fn value(text: &str) -> Result<f64, NotAQuantity> {
    let refuse = || NotAQuantity(text.to_string());
    let (number, suffix) = split_number(text).ok_or_else(refuse)?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exponent => {
            let digits = exponent
                .strip_prefix(['e', 'E'])
                .filter(|d| is_signed_integer(d))
                .ok_or_else(refuse)?;
            let power: i32 = digits.parse().map_err(|_| refuse())?;
            10f64.powi(power)
        }
    };
    let number: f64 = number.parse().map_err(|_| refuse())?;
    let value = number * factor;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(refuse())
    }
}

/// Splits `text` into its signed number and its suffix, checking the number's grammar.
fn split_number(text: &str) -> Option<(&str, &str)> {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let end = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let digits = &unsigned[..end];
    let dots = digits.matches('.').count();
    if digits.is_empty() || digits == "." || dots > 1 {
        return None;
    }
    let split = text.len() - unsigned.len() + end;
    Some(text.split_at(split))
}

fn is_signed_integer(text: &str) -> bool {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::value;

    #[test]
    fn every_suffix_parses() {
        let cases = [
            ("500m", 0.5),
            ("2", 2.0),
            ("64000000u", 64.0),
            ("1500000000n", 1.5),
            ("1.5", 1.5),
            (".5", 0.5),
            ("5.", 5.0),
            ("+1k", 1000.0),
            ("1Gi", 1073741824.0),
            ("1e3", 1000.0),
            ("1E-3", 0.001),
            ("12e+2", 1200.0),
            ("512Mi", 536870912.0),
            ("1Ei", 1152921504606846976.0),
        ];
        for (text, expected) in cases {
            let got = value(text).unwrap_or(f64::NAN);
            assert!((got - expected).abs() <= expected * 1e-12, "{text}: {got}");
        }
    }

    #[test]
    fn what_is_not_a_quantity_is_refused() {
        for text in [
            "", "lots", "1.2.3", ".", "1 Gi", " 1", "1gi", "1Ki2", "1e", "1e1.5", "e3", "--1",
            "1mm", "1e400",
        ] {
            assert!(value(text).is_err(), "{text:?} parsed");
        }
    }

    #[test]
    fn binary_and_decimal_compare() {
        assert!(value("1Gi").unwrap_or(0.0) > value("1G").unwrap_or(f64::MAX));
        assert!(value("64000000u").unwrap_or(0.0) > value("2").unwrap_or(f64::MAX));
    }
}
