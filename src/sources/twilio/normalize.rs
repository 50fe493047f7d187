//! Twilio's form fields into a message (docs/providers.md): `message_id` = `MessageSid`, `from`/`to` =
//! `From`/`To` without a `whatsapp:` prefix, `ts` = the time of receipt, `text` = `Body`.

use serde_json::{Map, Value};

use crate::message::{
    FieldError, LocPart, MAX_MESSAGE_ID_CHARS, MAX_TEXT_CHARS, Message, NewMessage, Source, Timestamp,
    check_msisdn, check_string, required_at,
};

/// The prefix Twilio puts before the numbers of WhatsApp messages.
const WHATSAPP_PREFIX: &str = "whatsapp:";

/// The message of a signed form, received at `received`, or every reason it is not one.
pub fn normalize(params: &[(String, String)], received: Timestamp) -> Result<NewMessage, Vec<FieldError>> {
    let fields: Map<String, Value> = params
        .iter()
        .map(|(name, value)| (name.clone(), Value::String(value.clone())))
        .collect();
    let mut errors = Vec::new();
    let message_id = required(&fields, "MessageSid", &mut errors)
        .and_then(|sid| check_string(sid, loc("MessageSid"), 1, MAX_MESSAGE_ID_CHARS, &mut errors));
    let from = required(&fields, "From", &mut errors).and_then(|from| number(from, "From", &mut errors));
    let to = required(&fields, "To", &mut errors).and_then(|to| number(to, "To", &mut errors));
    let text = match fields.get("Body") {
        None => Some(None),
        Some(body) => check_string(body, loc("Body"), 0, MAX_TEXT_CHARS, &mut errors).map(Some),
    };
    match (message_id, from, to, text) {
        (Some(message_id), Some(from), Some(to), Some(text)) if errors.is_empty() => Ok(NewMessage {
            message: Message {
                message_id,
                from,
                to,
                ts: received,
                text,
                source: Source::Twilio,
            },
            raw: Some(Value::Object(fields).to_string()),
        }),
        _ => Err(errors),
    }
}

fn loc(name: &'static str) -> Vec<LocPart> {
    vec![LocPart::Name("body"), LocPart::Name(name)]
}

fn required<'a>(
    fields: &'a Map<String, Value>,
    name: &'static str,
    errors: &mut Vec<FieldError>,
) -> Option<&'a Value> {
    required_at(fields, name, loc(name), errors)
}

/// The number without a `whatsapp:` prefix, `+` and digits.
fn number(value: &Value, name: &'static str, errors: &mut Vec<FieldError>) -> Option<String> {
    let text = value.as_str().unwrap_or_default();
    let bare = text.strip_prefix(WHATSAPP_PREFIX).unwrap_or(text);
    let checked = check_msisdn(&Value::String(bare.to_owned()), loc(name), errors);
    if checked.is_none() {
        // The entry names what was sent, not what was left once the prefix went.
        if let Some(last) = errors.last_mut() {
            last.input = value.clone();
        }
    }
    checked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn received() -> Timestamp {
        Timestamp::parse("2026-12-07T10:00:00.000000Z").expect("timestamp")
    }

    #[test]
    fn an_sms_and_a_whatsapp_message_through_twilio_become_messages() {
        let sms = normalize(
            &form(&[
                ("MessageSid", "SM1"),
                ("From", "+14155550100"),
                ("To", "+14155550199"),
                ("Body", "Hello"),
            ]),
            received(),
        )
        .expect("an SMS");
        assert_eq!(sms.message.from, "+14155550100");
        assert_eq!(sms.message.text.as_deref(), Some("Hello"));
        assert_eq!(sms.message.ts, received());
        assert_eq!(sms.message.source, Source::Twilio);
        assert_eq!(
            sms.raw.as_deref(),
            Some(r#"{"MessageSid":"SM1","From":"+14155550100","To":"+14155550199","Body":"Hello"}"#)
        );
        let whatsapp = normalize(
            &form(&[
                ("MessageSid", "SM2"),
                ("From", "whatsapp:+14155550100"),
                ("To", "whatsapp:+14155238886"),
            ]),
            received(),
        )
        .expect("a WhatsApp message");
        assert_eq!(
            (whatsapp.message.from.as_str(), whatsapp.message.to.as_str()),
            ("+14155550100", "+14155238886")
        );
        assert_eq!(whatsapp.message.text, None);
    }

    #[test]
    fn missing_fields_and_numbers_that_are_not_e164_are_named() {
        let errors = normalize(
            &form(&[
                ("From", "whatsapp:14155550100"),
                ("To", "MyCompany"),
                ("Body", "a\0b"),
            ]),
            received(),
        )
        .expect_err("refused");
        let found: Vec<(&str, Vec<LocPart>, Value)> = errors
            .into_iter()
            .map(|error| (error.kind, error.loc, error.input))
            .collect();
        assert_eq!(found.len(), 4, "{found:?}");
        assert_eq!(
            (found[0].0, &found[0].1[1]),
            ("missing", &LocPart::Name("MessageSid"))
        );
        assert_eq!(
            (found[1].0, &found[1].1[1], &found[1].2),
            (
                "string_pattern_mismatch",
                &LocPart::Name("From"),
                &Value::from("whatsapp:14155550100")
            )
        );
        assert_eq!(
            (found[2].0, &found[2].1[1]),
            ("string_pattern_mismatch", &LocPart::Name("To"))
        );
        assert_eq!(
            (found[3].0, &found[3].1[1]),
            ("value_error", &LocPart::Name("Body"))
        );
    }
}
