//! Text that leaves the process: cut to a bound, or made safe for one log line.

/// `text` cut to at most `max` bytes (plus a note of how much was cut).
pub fn clip(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let total = text.len();
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(&format!("… ({} more bytes cut)", total - end));
    text
}

/// `text` made safe for one log line: control characters (newlines that would forge another
/// line, terminal escapes) are written as escapes.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
