//! How a message is printed: one readable line, or its JSON object on one line (NDJSON), on
//! stdout; and the status lines, on stderr.
//!
//! Every field comes from whoever sent the message, so control characters are escaped before
//! they reach the terminal: a text cannot break the one-line layout, move the cursor or change
//! colours.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write as _;

use serde_json::Value;

use super::error::TailError;

/// The readable line of a message: `<ts>  <source>  <from> -> <to>  <text>  [<message_id>]`.
///
/// `data` is the event's data as sent; `message` the same parsed, when it is a JSON object.
pub fn readable_line(data: &str, message: Option<&Value>) -> String {
    let Some(message) = message.filter(|message| message.is_object()) else {
        return format!("(not a message) {}", one_line(data));
    };
    let field = |name: &str| {
        message
            .get(name)
            .and_then(Value::as_str)
            .map_or(Cow::Borrowed("?"), one_line)
    };
    let text = match message.get("text") {
        Some(Value::String(text)) => one_line(text),
        _ => Cow::Borrowed("(no text)"),
    };
    format!(
        "{}  {:<8}  {} -> {}  {}  [{}]",
        field("ts"),
        field("source"),
        field("from"),
        field("to"),
        text,
        field("message_id"),
    )
}

/// The NDJSON line of a message: its data exactly as sent, which the service writes on one
/// line; data spread over several `data:` lines is written compactly instead. `None` when such
/// data is not JSON (no service sends that).
pub fn json_line(data: &str) -> Option<Cow<'_, str>> {
    if !data.contains(['\n', '\r']) {
        return Some(Cow::Borrowed(data));
    }
    serde_json::from_str::<Value>(data)
        .ok()
        .map(|value| Cow::Owned(value.to_string()))
}

/// `text` with line breaks, tabs, backslashes and other control characters escaped as `\n`,
/// `\t`, `\\`, `\u{1b}`, so that it stays on one line and cannot drive the terminal.
pub fn one_line(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            '\\' => escaped.push_str("\\\\"),
            c if needs_escape(c) => {
                let _ = write!(escaped, "{}", c.escape_unicode());
            }
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// Control characters, and the Unicode line and paragraph separators some terminals break at.
fn needs_escape(c: char) -> bool {
    c.is_control() || c == '\\' || c == '\u{2028}' || c == '\u{2029}'
}

/// A message's line on stdout, flushed at once so that a pipe sees it as it comes.
pub fn write_line(line: &str) -> Result<(), TailError> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .map_err(TailError::Output)
}

/// A status line on stderr. One that cannot be written is dropped: it is not worth stopping for.
pub fn status(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "tail: {message}");
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::{json_line, one_line, readable_line};

    fn readable(message: &Value) -> String {
        readable_line(&message.to_string(), Some(message))
    }

    #[test]
    fn a_message_is_one_readable_line() {
        let message = json!({
            "message_id": "m1", "from": "+919876543210", "to": "+14155550100",
            "ts": "2025-01-15T10:00:00Z", "text": "Hello", "source": "webhook",
        });
        assert_eq!(
            readable(&message),
            "2025-01-15T10:00:00Z  webhook   +919876543210 -> +14155550100  Hello  [m1]"
        );
    }

    #[test]
    fn line_breaks_and_terminal_controls_are_escaped_everywhere() {
        let message = json!({
            "message_id": "m\n2", "from": "a\u{1b}[2J", "to": "b", "ts": "t",
            "text": "one\r\ntwo\tthree \\n\u{2028}", "source": "twilio",
        });
        let line = readable(&message);
        assert_eq!(
            line,
            "t  twilio    a\\u{1b}[2J -> b  one\\r\\ntwo\\tthree \\\\n\\u{2028}  [m\\n2]"
        );
        assert!(!line.contains(|c: char| c.is_control()));
    }

    #[test]
    fn a_missing_text_or_field_is_named() {
        let message = json!({ "message_id": "m3", "from": "a", "to": "b", "ts": "t", "text": null });
        assert_eq!(readable(&message), "t  ?         a -> b  (no text)  [m3]");
        assert_eq!(
            readable_line("oops\nnot json", None),
            "(not a message) oops\\nnot json"
        );
    }

    #[test]
    fn json_lines_are_the_data_as_sent_or_compacted_onto_one_line() {
        let data = r#"{"message_id":"m1",  "text":"Hello"}"#;
        assert_eq!(json_line(data).as_deref(), Some(data));
        assert_eq!(
            json_line("{\"b\":1,\n\"a\":\"x\\ny\"}").as_deref(),
            Some(r#"{"b":1,"a":"x\ny"}"#)
        );
        assert_eq!(json_line("not\njson"), None);
        assert_eq!(one_line("plain"), "plain");
    }
}
