//! A WhatsApp Cloud API notification into messages (docs/providers.md).
//!
//! Each `entry[].changes[]` whose `field` is `messages` may hold `value.messages[]`; each of those
//! is one message. Everything else (`statuses[]`, other fields) is acknowledged and not stored.
//! The walk collects every broken field before answering, each named by its full path, as a
//! FastAPI model of the payload would (`["body","entry",0,"changes",0,"value","messages",1,"timestamp"]`).

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::macros::format_description;

use crate::message::{
    FieldError, LocPart, MAX_MESSAGE_ID_CHARS, MAX_TEXT_CHARS, Message, NewMessage, Source, Timestamp,
    check_msisdn, check_string, parse_object, required_at,
};

/// What one notification holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Notification {
    /// Its messages, in the order of the payload.
    pub messages: Vec<NewMessage>,
    /// How many changes carried something other than messages (status updates, other fields).
    pub other_changes: usize,
}

/// Reads a signed notification, or every reason it is not one.
pub fn normalize(body: &[u8]) -> Result<Notification, Vec<FieldError>> {
    let root = parse_object(body)?;
    let mut walk = Walk::default();
    let entries = walk.array(&root, "entry", &Path::body());
    for (e, entry) in entries.into_iter().flatten().enumerate() {
        let entry_path = Path::body().then("entry").at(e);
        let Some(entry) = walk.object(entry, &entry_path) else {
            continue;
        };
        let changes = walk.array(entry, "changes", &entry_path);
        for (c, change) in changes.into_iter().flatten().enumerate() {
            walk.change(change, &entry_path.then("changes").at(c));
        }
    }
    if walk.errors.is_empty() {
        Ok(walk.notification)
    } else {
        Err(walk.errors)
    }
}

/// A `loc`, built step by step.
#[derive(Debug, Clone)]
struct Path(Vec<LocPart>);

impl Path {
    fn body() -> Path {
        Path(vec![LocPart::Name("body")])
    }

    fn then(&self, name: &'static str) -> Path {
        let mut steps = self.0.clone();
        steps.push(LocPart::Name(name));
        Path(steps)
    }

    fn at(&self, index: usize) -> Path {
        let mut steps = self.0.clone();
        steps.push(LocPart::Index(index));
        Path(steps)
    }

    fn loc(&self) -> Vec<LocPart> {
        self.0.clone()
    }
}

#[derive(Default)]
struct Walk {
    notification: Notification,
    errors: Vec<FieldError>,
}

impl Walk {
    fn change(&mut self, change: &Value, path: &Path) {
        let Some(change) = self.object(change, path) else {
            return;
        };
        let field = self
            .required(change, "field", path)
            .and_then(|field| check_string(field, path.then("field").loc(), 1, usize::MAX, &mut self.errors));
        let value_path = path.then("value");
        let value = self
            .required(change, "value", path)
            .and_then(|value| self.object(value, &value_path));
        let (Some(field), Some(value)) = (field, value) else {
            return;
        };
        match value.get("messages") {
            Some(messages) if field == "messages" => self.messages(value, messages, &value_path),
            _ => self.notification.other_changes += 1,
        }
    }

    /// The messages of one change; `to` is the business number of its metadata.
    fn messages(&mut self, value: &Map<String, Value>, messages: &Value, path: &Path) {
        let messages_path = path.then("messages");
        let Some(messages) = self.list(messages, &messages_path) else {
            return;
        };
        if messages.is_empty() {
            self.notification.other_changes += 1;
            return;
        }
        let to = self.business_number(value, path);
        for (m, message) in messages.iter().enumerate() {
            let message_path = messages_path.at(m);
            if let Some(message) = self.message(message, to.as_deref(), &message_path) {
                self.notification.messages.push(message);
            }
        }
    }

    /// `+` and the digits of `metadata.display_phone_number` (Meta writes it with or without
    /// spaces, dashes and a `+`).
    fn business_number(&mut self, value: &Map<String, Value>, path: &Path) -> Option<String> {
        let metadata_path = path.then("metadata");
        let metadata = self
            .required(value, "metadata", path)
            .and_then(|metadata| self.object(metadata, &metadata_path))?;
        let number_path = metadata_path.then("display_phone_number");
        let number = self.required(metadata, "display_phone_number", &metadata_path)?;
        let Value::String(text) = number else {
            self.errors.push(string_type(number_path.loc(), number));
            return None;
        };
        let digits: String = text
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.' | '+'))
            .collect();
        check_msisdn(
            &Value::String(format!("+{digits}")),
            number_path.loc(),
            &mut self.errors,
        )
    }

    fn message(&mut self, message: &Value, to: Option<&str>, path: &Path) -> Option<NewMessage> {
        let fields = self.object(message, path)?;
        let message_id = self.required(fields, "id", path).and_then(|id| {
            check_string(
                id,
                path.then("id").loc(),
                1,
                MAX_MESSAGE_ID_CHARS,
                &mut self.errors,
            )
        });
        let from = self
            .required(fields, "from", path)
            .and_then(|from| self.sender(from, path));
        let ts = self
            .required(fields, "timestamp", path)
            .and_then(|timestamp| self.timestamp(timestamp, &path.then("timestamp")));
        let text = self.text(fields, path);
        Some(NewMessage {
            message: Message {
                message_id: message_id?,
                from: from?,
                to: to?.to_owned(),
                ts: ts?,
                text: text?,
                source: Source::Whatsapp,
            },
            raw: Some(message.to_string()),
        })
    }

    /// `+` and the sender's `wa_id`.
    fn sender(&mut self, from: &Value, path: &Path) -> Option<String> {
        let loc = path.then("from").loc();
        match from {
            Value::String(digits) => {
                check_msisdn(&Value::String(format!("+{digits}")), loc, &mut self.errors)
            }
            other => {
                self.errors.push(string_type(loc, other));
                None
            }
        }
    }

    /// Unix seconds, as digits in a string (Meta's form) or as a number, into `ts`.
    fn timestamp(&mut self, timestamp: &Value, path: &Path) -> Option<Timestamp> {
        let seconds = match timestamp {
            Value::String(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                digits.parse::<i64>().ok()
            }
            Value::Number(number) => number.as_i64(),
            _ => None,
        };
        let ts = seconds
            .and_then(format_unix_seconds)
            .and_then(|text| Timestamp::parse(&text));
        if ts.is_none() {
            self.errors.push(FieldError::at(
                "value_error",
                path.loc(),
                "Value error, expected Unix seconds (digits) of an instant in years 1970 to 9999",
                timestamp.clone(),
            ));
        }
        ts
    }

    /// `text.body`, else the `caption` of the message's own type (media), else the title of a
    /// button or interactive reply, else null. A value in one of those places must be text.
    fn text(&mut self, fields: &Map<String, Value>, path: &Path) -> Option<Option<String>> {
        let kind = fields.get("type").and_then(Value::as_str).unwrap_or_default();
        let places: [(&str, &'static str, Option<&'static str>); 5] = [
            ("text", "body", None),
            (kind, "caption", None),
            ("button", "text", None),
            ("interactive", "button_reply", Some("title")),
            ("interactive", "list_reply", Some("title")),
        ];
        for (outer, inner, innermost) in places {
            let Some(found) = lookup(fields, outer, inner, innermost) else {
                continue;
            };
            let loc = text_loc(path, outer, inner, innermost);
            return check_string(found, loc, 0, MAX_TEXT_CHARS, &mut self.errors).map(Some);
        }
        Some(None)
    }

    fn required<'a>(
        &mut self,
        fields: &'a Map<String, Value>,
        name: &'static str,
        path: &Path,
    ) -> Option<&'a Value> {
        required_at(fields, name, path.then(name).loc(), &mut self.errors)
    }

    fn object<'a>(&mut self, value: &'a Value, path: &Path) -> Option<&'a Map<String, Value>> {
        if let Value::Object(fields) = value {
            return Some(fields);
        }
        self.errors.push(FieldError::at(
            "model_type",
            path.loc(),
            "Input should be a valid dictionary or instance of a model",
            value.clone(),
        ));
        None
    }

    fn list<'a>(&mut self, value: &'a Value, path: &Path) -> Option<&'a Vec<Value>> {
        if let Value::Array(items) = value {
            return Some(items);
        }
        self.errors.push(FieldError::at(
            "list_type",
            path.loc(),
            "Input should be a valid list",
            value.clone(),
        ));
        None
    }

    /// The required array `name` of `fields`.
    fn array<'a>(
        &mut self,
        fields: &'a Map<String, Value>,
        name: &'static str,
        path: &Path,
    ) -> Option<&'a Vec<Value>> {
        let value = self.required(fields, name, path)?;
        self.list(value, &path.then(name))
    }
}

/// The value at `outer.inner` (or `outer.inner.innermost`), when `outer` is an object that has
/// it and it is not null.
fn lookup<'a>(
    fields: &'a Map<String, Value>,
    outer: &str,
    inner: &str,
    innermost: Option<&str>,
) -> Option<&'a Value> {
    let mut found = fields.get(outer)?.as_object()?.get(inner)?;
    if let Some(innermost) = innermost {
        found = found.as_object()?.get(innermost)?;
    }
    (!found.is_null()).then_some(found)
}

/// The `loc` of a text found by [`lookup`].
fn text_loc(path: &Path, outer: &str, inner: &'static str, innermost: Option<&'static str>) -> Vec<LocPart> {
    let mut loc = path.loc();
    loc.push(LocPart::Key(outer.to_owned()));
    loc.push(LocPart::Name(inner));
    if let Some(innermost) = innermost {
        loc.push(LocPart::Name(innermost));
    }
    loc
}

fn string_type(loc: Vec<LocPart>, value: &Value) -> FieldError {
    FieldError::at(
        "string_type",
        loc,
        "Input should be a valid string",
        value.clone(),
    )
}

/// `YYYY-MM-DDTHH:MM:SSZ` for Unix seconds from 1970 on; `None` past year 9999.
fn format_unix_seconds(seconds: i64) -> Option<String> {
    if seconds < 0 {
        return None;
    }
    let instant = OffsetDateTime::from_unix_timestamp(seconds).ok()?;
    instant
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
        ))
        .ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Meta's published example of each message type (tests/fixtures/whatsapp), and the text
    /// the mapping takes from it (docs/providers.md).
    const EXAMPLES: [(&str, &str, Option<&str>); 13] = [
        (
            "text",
            include_str!("../../../tests/fixtures/whatsapp/text.json"),
            Some("this is a text message"),
        ),
        (
            "image",
            include_str!("../../../tests/fixtures/whatsapp/image.json"),
            Some("This is a caption"),
        ),
        (
            "video",
            include_str!("../../../tests/fixtures/whatsapp/video.json"),
            Some("A video caption"),
        ),
        (
            "audio",
            include_str!("../../../tests/fixtures/whatsapp/audio.json"),
            None,
        ),
        (
            "document",
            include_str!("../../../tests/fixtures/whatsapp/document.json"),
            Some("Lucky Shrub Invoice"),
        ),
        (
            "sticker",
            include_str!("../../../tests/fixtures/whatsapp/sticker.json"),
            None,
        ),
        (
            "location",
            include_str!("../../../tests/fixtures/whatsapp/location.json"),
            None,
        ),
        (
            "contacts",
            include_str!("../../../tests/fixtures/whatsapp/contacts.json"),
            None,
        ),
        (
            "button",
            include_str!("../../../tests/fixtures/whatsapp/button.json"),
            Some("Unsubscribe from Promos"),
        ),
        (
            "interactive button reply",
            include_str!("../../../tests/fixtures/whatsapp/interactive_button_reply.json"),
            Some("Cancel"),
        ),
        (
            "interactive list reply",
            include_str!("../../../tests/fixtures/whatsapp/interactive_list_reply.json"),
            Some("Priority Mail Express"),
        ),
        (
            "reaction",
            include_str!("../../../tests/fixtures/whatsapp/reaction.json"),
            None,
        ),
        (
            "unsupported",
            include_str!("../../../tests/fixtures/whatsapp/unsupported.json"),
            None,
        ),
    ];

    fn loc_of(error: &FieldError) -> Value {
        serde_json::to_value(&error.loc).expect("loc")
    }

    #[test]
    fn every_published_message_type_becomes_one_message_with_its_text() {
        for (kind, payload, text) in EXAMPLES {
            let notification =
                normalize(payload.as_bytes()).unwrap_or_else(|errors| panic!("{kind}: {errors:?}"));
            assert_eq!(notification.other_changes, 0, "{kind}");
            let [new] = notification.messages.as_slice() else {
                panic!("{kind}: {:?}", notification.messages);
            };
            let message = &new.message;
            assert_eq!(message.from, "+16315551181", "{kind}");
            assert_eq!(message.to, "+16505551111", "{kind}");
            assert_eq!(message.ts.as_str(), "2017-09-08T20:36:28Z", "{kind}");
            assert_eq!(message.text.as_deref(), text, "{kind}");
            assert_eq!(message.source, Source::Whatsapp);
            let payload: Value = serde_json::from_str(payload).expect("json");
            let raw: Value = serde_json::from_str(new.raw.as_deref().expect("raw")).expect("raw json");
            assert_eq!(
                raw, payload["entry"][0]["changes"][0]["value"]["messages"][0],
                "{kind}"
            );
            assert_eq!(message.message_id, raw["id"], "{kind}");
        }
    }

    #[test]
    fn status_updates_and_other_fields_are_counted_not_stored() {
        let statuses = include_str!("../../../tests/fixtures/whatsapp/statuses.json");
        assert_eq!(
            normalize(statuses.as_bytes()).expect("statuses"),
            Notification {
                messages: Vec::new(),
                other_changes: 1
            }
        );
        let other_field = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
            {"field": "account_update", "value": {"event": "VERIFIED_ACCOUNT"}},
        ]}]});
        assert_eq!(
            normalize(other_field.to_string().as_bytes())
                .expect("ok")
                .other_changes,
            1
        );
    }

    #[test]
    fn every_message_of_every_entry_and_change_is_taken_in_order() {
        let message = |id: &str| json!({"from": "447700900123", "id": id, "timestamp": "1700000000", "type": "text", "text": {"body": id}});
        let change = |ids: &[&str]| {
            json!({"field": "messages", "value": {
                "metadata": {"display_phone_number": "+1 555-078-3881", "phone_number_id": "1"},
                "messages": ids.iter().map(|id| message(id)).collect::<Vec<_>>(),
            }})
        };
        let payload = json!({"object": "whatsapp_business_account", "entry": [
            {"id": "1", "changes": [change(&["a", "b"]), change(&["c"])]},
            {"id": "2", "changes": [change(&["d"])]},
        ]});
        let notification = normalize(payload.to_string().as_bytes()).expect("ok");
        let ids: Vec<&str> = notification
            .messages
            .iter()
            .map(|new| new.message.message_id.as_str())
            .collect();
        assert_eq!(ids, ["a", "b", "c", "d"]);
        assert!(
            notification
                .messages
                .iter()
                .all(|new| new.message.to == "+15550783881")
        );
        assert!(
            notification
                .messages
                .iter()
                .all(|new| new.message.from == "+447700900123")
        );
    }

    #[test]
    fn every_broken_field_is_named_by_its_whole_path() {
        let payload = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
            {"field": "messages", "value": {
                "metadata": {"display_phone_number": "16505551111"},
                "messages": [
                    {"from": "16315551181", "id": "ok", "timestamp": "1504902988", "type": "text", "text": {"body": "fine"}},
                    {"from": "16315551181", "id": "bad-ts", "timestamp": "yesterday", "type": "text", "text": {"body": "x"}},
                    {"from": "not a number", "id": "", "type": "image", "image": {"caption": 7}},
                ],
            }},
        ]}]});
        let errors = normalize(payload.to_string().as_bytes()).expect_err("refused");
        let found: Vec<(&str, Value)> = errors.iter().map(|error| (error.kind, loc_of(error))).collect();
        let at = |rest: Value| {
            let mut loc = json!(["body", "entry", 0, "changes", 0, "value", "messages"]);
            loc.as_array_mut()
                .expect("array")
                .extend(rest.as_array().expect("array").iter().cloned());
            loc
        };
        assert_eq!(
            found,
            vec![
                ("value_error", at(json!([1, "timestamp"]))),
                ("string_too_short", at(json!([2, "id"]))),
                ("string_pattern_mismatch", at(json!([2, "from"]))),
                ("missing", at(json!([2, "timestamp"]))),
                ("string_type", at(json!([2, "image", "caption"]))),
            ]
        );
    }

    #[test]
    fn bodies_of_another_shape_are_refused() {
        for (body, kind, loc) in [
            (json!({"object": "page"}), "missing", json!(["body", "entry"])),
            (json!({"entry": {}}), "list_type", json!(["body", "entry"])),
            (json!({"entry": [3]}), "model_type", json!(["body", "entry", 0])),
            (
                json!({"entry": [{"changes": [{"value": {}}]}]}),
                "missing",
                json!(["body", "entry", 0, "changes", 0, "field"]),
            ),
            (
                json!({"entry": [{"changes": [{"field": "messages", "value": {"messages": [{"id": "x", "from": "1", "timestamp": "1"}]}}]}]}),
                "missing",
                json!(["body", "entry", 0, "changes", 0, "value", "metadata"]),
            ),
            (json!([1, 2]), "model_attributes_type", json!(["body"])),
        ] {
            let errors = normalize(body.to_string().as_bytes()).expect_err("refused");
            assert_eq!((errors[0].kind, loc_of(&errors[0])), (kind, loc), "{body}");
        }
    }

    #[test]
    fn timestamps_are_unix_seconds_as_digits_or_a_number() {
        for (given, expected) in [
            (json!("0"), Some("1970-01-01T00:00:00Z")),
            (json!(1_504_902_988), Some("2017-09-08T20:36:28Z")),
            (json!("253402300799"), Some("9999-12-31T23:59:59Z")),
            (json!("253402300800"), None),
            (json!("-1"), None),
            (json!("1.5"), None),
            (json!(""), None),
            (json!(null), None),
        ] {
            let mut walk = Walk::default();
            let ts = walk.timestamp(&given, &Path::body());
            assert_eq!(ts.as_ref().map(Timestamp::as_str), expected, "{given}");
        }
    }
}
