//! The note of an Event, bounded to what the API server accepts.

/// The API server refuses Event notes over 1 KiB, and the Event is then lost without a word.
const EVENT_NOTE_BYTES: usize = 1000;

pub fn event_note(note: &str) -> String {
    crate::text::clip(note.to_string(), EVENT_NOTE_BYTES - 40)
}
