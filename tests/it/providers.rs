//! The providers (docs/providers.md): WhatsApp Cloud API and Twilio as sources, `source` on every
//! message, `?source=`, `/stats` per source and `GET /messages/{message_id}`, on every backend.

use reqwest::StatusCode;
use serde_json::{Value, json};
use webhook_inbox::config::ProviderArgs;
use webhook_inbox::signature::signer;
use webhook_inbox::sources::{Providers, twilio};

use crate::common::{Backend, Options, TestApp, ids, json_of, message, metric, metrics_text};

pub const APP_SECRET: &str = "meta-app-secret-0123456789abcdef";
pub const VERIFY_TOKEN: &str = "meta-verify-token";
pub const AUTH_TOKEN: &str = "twilio-auth-token-0123456789abcd";
pub const PUBLIC_URL: &str = "https://inbox.example.com";

/// Both providers configured.
pub fn with_providers(backend: Backend) -> Options {
    Options {
        providers: Providers::from_args(&ProviderArgs {
            whatsapp_app_secret: Some(APP_SECRET.to_owned()),
            whatsapp_app_secret_previous: Some("meta-app-secret-of-last-year".to_owned()),
            whatsapp_verify_token: Some(VERIFY_TOKEN.to_owned()),
            twilio_auth_token: Some(AUTH_TOKEN.to_owned()),
            twilio_auth_token_previous: None,
            public_url: Some(PUBLIC_URL.to_owned()),
        })
        .expect("providers"),
        ..Options::new(backend)
    }
}

pub fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/whatsapp/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

pub async fn post_whatsapp(app: &TestApp, body: &str) -> reqwest::Response {
    app.client
        .post(app.url("/webhook/whatsapp"))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signer::github(APP_SECRET, body.as_bytes()))
        .body(body.to_owned())
        .send()
        .await
        .expect("request")
}

pub fn twilio_form(sid: &str, from: &str, body: &str) -> Vec<(String, String)> {
    [
        ("MessageSid", sid),
        ("SmsSid", sid),
        ("AccountSid", "AC00000000000000000000000000000000"),
        ("From", from),
        ("To", "+14155238886"),
        ("Body", body),
        ("NumMedia", "0"),
    ]
    .iter()
    .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
    .collect()
}

/// POSTs `form` to `/webhook/twilio` + `query`, signed as Twilio signs it for `PUBLIC_URL`.
pub async fn post_twilio(app: &TestApp, query: &str, form: &[(String, String)]) -> reqwest::Response {
    let signature = twilio::sign(AUTH_TOKEN, &format!("{PUBLIC_URL}/webhook/twilio{query}"), form);
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    app.client
        .post(app.url(&format!("/webhook/twilio{query}")))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(body)
        .send()
        .await
        .expect("request")
}

async fn detail(app: &TestApp, id: &str) -> (StatusCode, Value) {
    let encoded: String = form_urlencoded::byte_serialize(id.as_bytes()).collect();
    app.get_json(&format!("/messages/{}", encoded.replace('+', "%20")))
        .await
}

async fn the_handshake_echoes_the_challenge_only_for_the_verify_token(app: TestApp) {
    let ok = app
        .get(&format!(
            "/webhook/whatsapp?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444"
        ))
        .await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert!(
        ok.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/plain")
    );
    assert_eq!(ok.text().await.expect("body"), "1158201444");
    for query in [
        "hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1",
        "hub.mode=unsubscribe&hub.verify_token=meta-verify-token&hub.challenge=1",
        "hub.mode=subscribe&hub.verify_token=meta-verify-token",
        "hub.mode=subscribe&hub.challenge=1",
        "",
    ] {
        let (status, body) = app.get_json(&format!("/webhook/whatsapp?{query}")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{query}");
        assert_eq!(body, json!({"detail": "verification failed"}), "{query}");
    }
}

async fn every_published_whatsapp_type_is_stored_with_its_text_and_raw(app: TestApp) {
    let expected = [
        ("text", "wamid.text", Some("this is a text message")),
        ("image", "wamid.image", Some("This is a caption")),
        ("video", "wamid.video", Some("A video caption")),
        ("audio", "wamid.audio", None),
        ("document", "wamid.document", Some("Lucky Shrub Invoice")),
        ("sticker", "wamid.sticker", None),
        ("location", "wamid.location", None),
        ("contacts", "wamid.contacts", None),
        ("button", "wamid.button", Some("Unsubscribe from Promos")),
        ("interactive_button_reply", "wamid.button_reply", Some("Cancel")),
        (
            "interactive_list_reply",
            "wamid.list_reply",
            Some("Priority Mail Express"),
        ),
        ("reaction", "wamid.reaction", None),
        ("unsupported", "wamid.unsupported", None),
    ];
    for (name, id, text) in expected {
        let payload = fixture(name);
        let response = post_whatsapp(&app, &payload).await;
        assert_eq!(response.status(), StatusCode::OK, "{name}");
        let (status, shown) = detail(&app, id).await;
        assert_eq!(status, StatusCode::OK, "{name}: {shown}");
        let payload: Value = serde_json::from_str(&payload).expect("json");
        let raw = &payload["entry"][0]["changes"][0]["value"]["messages"][0];
        assert_eq!(shown["raw"], *raw, "{name}");
        assert_eq!(shown["text"], json!(text), "{name}");
        assert_eq!(
            (&shown["from"], &shown["to"], &shown["ts"], &shown["source"]),
            (
                &json!("+16315551181"),
                &json!("+16505551111"),
                &json!("2017-09-08T20:36:28Z"),
                &json!("whatsapp")
            ),
            "{name}"
        );
        assert!(
            shown["received_at"].as_str().is_some_and(|at| at.ends_with('Z')),
            "{shown}"
        );
    }
    let (_, page) = app.get_json("/messages?source=whatsapp&limit=100").await;
    assert_eq!(page["total"], expected.len());
    let (_, stats) = app.get_json("/stats").await;
    assert_eq!(
        stats["messages_per_source"],
        json!({"webhook": 0, "whatsapp": expected.len(), "twilio": 0})
    );
}

/// Ten messages in one POST: all stored, in one commit; the same POST again stores nothing.
async fn a_batch_commits_together_and_a_resend_changes_nothing(app: TestApp) {
    let payload = batch(&["b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8", "b9"]);
    assert_eq!(post_whatsapp(&app, &payload).await.status(), StatusCode::OK);
    assert_eq!(post_whatsapp(&app, &payload).await.status(), StatusCode::OK);
    let (_, page) = app.get_json("/messages?source=whatsapp&limit=100").await;
    assert_eq!(
        ids(&page),
        ["b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8", "b9"]
    );
    let text = metrics_text(&app).await;
    let requests = |result| metric(&text, "webhook_requests_total", &[("result", result)]);
    assert_eq!(
        (requests("created"), requests("duplicate")),
        (Some(1.0), Some(1.0))
    );
    let (_, stats) = app.get_json("/stats?source=whatsapp").await;
    assert_eq!(stats["total_messages"], 10);
    assert_eq!(
        stats["messages_per_sender"],
        json!([{"from": "+447700900123", "count": 10}])
    );
}

/// One POST of `ids`, each a text message one second after the previous.
pub fn batch(ids: &[&str]) -> String {
    let messages: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| {
            json!({"from": "447700900123", "id": id, "timestamp": (1_700_000_000 + n).to_string(),
                   "type": "text", "text": {"body": format!("message {id}")}})
        })
        .collect();
    json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "1"},
        "messages": messages,
    }}]}]})
    .to_string()
}

async fn status_updates_are_acknowledged_and_counted_as_ignored(app: TestApp) {
    let response = post_whatsapp(&app, &fixture("statuses")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = metrics_text(&app).await;
    assert_eq!(
        metric(&text, "webhook_requests_total", &[("result", "ignored")]),
        Some(1.0)
    );
    let (_, stats) = app.get_json("/stats").await;
    assert_eq!(stats["total_messages"], 0);
}

async fn a_bad_or_missing_whatsapp_signature_is_401_and_stores_nothing(app: TestApp) {
    let payload = fixture("text");
    for signature in [
        Some(signer::github("another-secret", payload.as_bytes())),
        Some(signer::github(APP_SECRET, b"another body")),
        Some("sha256=zz".to_owned()),
        None,
    ] {
        let mut request = app
            .client
            .post(app.url("/webhook/whatsapp"))
            .body(payload.clone());
        if let Some(signature) = &signature {
            request = request.header("x-hub-signature-256", signature);
        }
        let (status, body) = json_of(request.send().await.expect("request")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{signature:?}");
        assert_eq!(body, json!({"detail": "invalid signature"}));
    }
    let previous = signer::github("meta-app-secret-of-last-year", payload.as_bytes());
    let response = app
        .client
        .post(app.url("/webhook/whatsapp"))
        .header("x-hub-signature-256", previous)
        .body(payload)
        .send()
        .await
        .expect("request");
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the previous app secret still verifies"
    );
    let (_, stats) = app.get_json("/stats").await;
    assert_eq!(stats["total_messages"], 1);
}

/// A batch with one broken message stores none of it.
async fn a_malformed_batch_is_422_naming_the_field_and_stores_nothing(app: TestApp) {
    let mut payload: Value = serde_json::from_str(&batch(&["m0", "m1", "m2"])).expect("json");
    payload["entry"][0]["changes"][0]["value"]["messages"][1]["timestamp"] = json!("soon");
    payload["entry"][0]["changes"][0]["value"]["messages"][2]["from"] = json!("+44 7700");
    let (status, body) = json_of(post_whatsapp(&app, &payload.to_string()).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let locs: Vec<&Value> = body["detail"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|entry| &entry["loc"])
        .collect();
    assert_eq!(
        locs,
        [
            &json!([
                "body",
                "entry",
                0,
                "changes",
                0,
                "value",
                "messages",
                1,
                "timestamp"
            ]),
            &json!(["body", "entry", 0, "changes", 0, "value", "messages", 2, "from"]),
        ]
    );
    let (_, stats) = app.get_json("/stats").await;
    assert_eq!(stats["total_messages"], 0);
}

async fn twilio_messages_are_stored_and_answered_with_twiml(app: TestApp) {
    let sms = twilio_form("SM0001", "+14155550100", "Hello from SMS");
    let response = post_twilio(&app, "", &sms).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/xml");
    assert_eq!(
        response.text().await.expect("body"),
        r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#
    );
    let whatsapp = twilio_form("SM0002", "whatsapp:+14155550101", "Hello from WhatsApp");
    assert_eq!(
        post_twilio(&app, "?tenant=a%20b", &whatsapp).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        post_twilio(&app, "", &sms).await.status(),
        StatusCode::OK,
        "a retry"
    );

    let (status, shown) = detail(&app, "SM0002").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&shown["from"], &shown["to"]),
        (&json!("+14155550101"), &json!("+14155238886"))
    );
    assert_eq!(shown["text"], "Hello from WhatsApp");
    assert_eq!(shown["source"], "twilio");
    assert_eq!(shown["raw"]["From"], "whatsapp:+14155550101");
    assert_eq!(shown["raw"]["NumMedia"], "0");
    let (ts, received_at) = (
        shown["ts"].as_str().expect("ts"),
        shown["received_at"].as_str().expect("received_at"),
    );
    assert!(
        ts.len() == received_at.len() && ts <= received_at,
        "received at {ts}, stored at {received_at}"
    );
    let (_, page) = app.get_json("/messages?source=twilio").await;
    assert_eq!(ids(&page).len(), 2);
    assert_eq!(
        page["data"][0]
            .as_object()
            .expect("item")
            .keys()
            .collect::<Vec<_>>(),
        ["message_id", "from", "to", "ts", "text"],
        "the items keep exactly the Part A fields"
    );
}

async fn a_twilio_signature_for_another_url_or_token_is_401(app: TestApp) {
    let form = twilio_form("SM0003", "+14155550100", "hi");
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&form)
        .finish();
    for signature in [
        twilio::sign(AUTH_TOKEN, "https://elsewhere.example.com/webhook/twilio", &form),
        twilio::sign("another-token", &format!("{PUBLIC_URL}/webhook/twilio"), &form),
        twilio::sign(AUTH_TOKEN, &format!("{PUBLIC_URL}/webhook/twilio?x=1"), &form),
    ] {
        let (status, shown) = json_of(
            app.client
                .post(app.url("/webhook/twilio"))
                .header("x-twilio-signature", signature)
                .body(body.clone())
                .send()
                .await
                .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(shown, json!({"detail": "invalid signature"}));
    }
    let (status, _) = json_of(post_twilio(&app, "", &twilio_form("SM0004", "MyCompany", "hi")).await).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "an alphanumeric sender is not E.164"
    );
    let (_, stats) = app.get_json("/stats").await;
    assert_eq!(stats["total_messages"], 0);
}

/// The three sources side by side: filters, counts, the export and the detail.
async fn sources_live_side_by_side(app: TestApp) {
    app.store(&message(
        "w1",
        "+919876543210",
        "2025-01-15T10:00:00Z",
        Some("seed format"),
    ))
    .await;
    post_whatsapp(&app, &fixture("text")).await;
    post_whatsapp(&app, &batch(&["wa-1", "wa-2"])).await;
    post_twilio(&app, "", &twilio_form("SM0005", "+14155550100", "sms")).await;

    let count = |query: &'static str| {
        let app = &app;
        async move { app.get_json(query).await.1["total"].clone() }
    };
    assert_eq!(count("/messages").await, 5);
    assert_eq!(count("/messages?source=webhook").await, 1);
    assert_eq!(count("/messages?source=whatsapp").await, 3);
    assert_eq!(count("/messages?source=twilio").await, 1);
    assert_eq!(count("/messages?source=whatsapp&q=message%20wa").await, 2);
    assert_eq!(count("/messages?source=whatsapp&from=%2B447700900123").await, 2);
    assert_eq!(count("/messages?source=webhook&q=wa").await, 0);
    assert_eq!(count("/messages?source=").await, 5, "empty means no constraint");

    let (_, with_sources) = app.get_json("/messages?include=source&order=desc&limit=5").await;
    let sources: Vec<&Value> = with_sources["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|item| &item["source"])
        .collect();
    assert!(sources.iter().all(|source| source.is_string()), "{with_sources}");

    let (_, stats) = app.get_json("/stats").await;
    assert_eq!(
        stats["messages_per_source"],
        json!({"webhook": 1, "whatsapp": 3, "twilio": 1})
    );
    assert_eq!(stats["total_messages"], 5);
    let (_, whatsapp) = app.get_json("/stats?source=whatsapp").await;
    assert_eq!(whatsapp["total_messages"], 3);
    assert_eq!(whatsapp["senders_count"], 2);
    assert_eq!(whatsapp["first_message_ts"], "2017-09-08T20:36:28Z");
    assert_eq!(whatsapp["last_message_ts"], "2023-11-14T22:13:21Z");
    assert_eq!(
        whatsapp["messages_per_source"],
        json!({"webhook": 0, "whatsapp": 3, "twilio": 0})
    );

    let export = app.get("/messages/export?format=csv&source=whatsapp").await;
    let csv = export.text().await.expect("csv");
    assert!(csv.starts_with("message_id,from,to,ts,text,source\r\n"), "{csv}");
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(
        csv.lines().skip(1).all(|line| line.ends_with(",whatsapp")),
        "{csv}"
    );
    let ndjson = app
        .get("/messages/export?source=twilio")
        .await
        .text()
        .await
        .expect("ndjson");
    let line: Value = serde_json::from_str(ndjson.trim()).expect("one line");
    assert_eq!(
        (&line["message_id"], &line["source"]),
        (&json!("SM0005"), &json!("twilio"))
    );

    let (status, seed) = detail(&app, "w1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((&seed["source"], &seed["raw"]), (&json!("webhook"), &Value::Null));
}

async fn bad_source_values_are_422(app: TestApp) {
    for path in [
        "/messages?source=sms",
        "/messages/export?source=WhatsApp",
        "/stats?source=x",
    ] {
        let (status, body) = app.get_json(path).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}");
        assert_eq!(body["detail"][0]["loc"], json!(["query", "source"]), "{path}");
    }
    let (status, body) = app.get_json("/messages?include=everything").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["detail"][0]["loc"], json!(["query", "include"]));
}

async fn the_detail_finds_any_id_and_404s_the_rest(app: TestApp) {
    for id in [
        "plain",
        "with/slash",
        "with space+plus",
        "ünï 👋",
        "export2",
        "100%",
    ] {
        app.store(&message(id, "+919876543210", "2025-01-15T10:00:00Z", None))
            .await;
        let (status, shown) = detail(&app, id).await;
        assert_eq!(status, StatusCode::OK, "{id}");
        assert_eq!(shown["message_id"], id);
    }
    for missing in ["/messages/nothing-here", "/messages/%FF%FE"] {
        let (status, body) = app.get_json(missing).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
        assert_eq!(body, json!({"detail": "message not found"}), "{missing}");
    }
    let export = app.get("/messages/export").await;
    assert_eq!(
        export.status(),
        StatusCode::OK,
        "the export's path wins over an id"
    );
    app.store(&message("stream", "+919876543210", "2025-01-15T10:00:00Z", None))
        .await;
    let stream = app.get("/messages/stream").await;
    assert_eq!(
        (stream.status(), &stream.headers()["content-type"]),
        (StatusCode::OK, &"text/event-stream".parse().expect("header")),
        "the stream's path wins over an id"
    );
}

conformance!(
    options = with_providers;
    the_handshake_echoes_the_challenge_only_for_the_verify_token,
    every_published_whatsapp_type_is_stored_with_its_text_and_raw,
    a_batch_commits_together_and_a_resend_changes_nothing,
    status_updates_are_acknowledged_and_counted_as_ignored,
    a_bad_or_missing_whatsapp_signature_is_401_and_stores_nothing,
    a_malformed_batch_is_422_naming_the_field_and_stores_nothing,
    twilio_messages_are_stored_and_answered_with_twiml,
    a_twilio_signature_for_another_url_or_token_is_401,
    sources_live_side_by_side,
    bad_source_values_are_422,
    the_detail_finds_any_id_and_404s_the_rest,
);

/// Without their secrets the providers' routes do not exist, and readiness does not ask for them.
#[tokio::test]
async fn unconfigured_providers_have_no_route_and_no_say_in_readiness() {
    let app = TestApp::spawn(Backend::SqliteMemory).await;
    for (method, path) in [
        (reqwest::Method::GET, "/webhook/whatsapp?hub.mode=subscribe"),
        (reqwest::Method::POST, "/webhook/whatsapp"),
        (reqwest::Method::POST, "/webhook/twilio"),
    ] {
        let (status, body) = json_of(
            app.client
                .request(method, app.url(path))
                .send()
                .await
                .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body, json!({"detail": "Not Found"}));
    }
    assert_eq!(app.get("/health/ready").await.status(), StatusCode::OK);
}

/// Meta may put up to 1,000 messages in one POST: they fit when `MAX_BODY_BYTES` allows the body,
/// and a body over it is 413 with nothing stored.
#[tokio::test]
async fn a_thousand_messages_in_one_post_are_stored_together_within_the_body_limit() {
    let ids: Vec<String> = (0..1000).map(|n| format!("wamid.{n:04}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let payload = batch(&ids);
    let mut options = with_providers(Backend::SqliteFile);
    options.limits.max_body_bytes = payload.len();
    let app = TestApp::spawn_with(options).await;
    assert_eq!(post_whatsapp(&app, &payload).await.status(), StatusCode::OK);
    let (_, stats) = app.get_json("/stats").await;
    assert_eq!(stats["total_messages"], 1000);

    let larger = batch(
        &ids.iter()
            .map(|id| format!("{id}-again"))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(larger.len() > payload.len());
    assert_eq!(
        post_whatsapp(&app, &larger).await.status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let (_, stats) = app.get_json("/stats").await;
    assert_eq!(stats["total_messages"], 1000);
}

/// `send --provider` signs as Meta and Twilio do: the examples of `examples/` arrive whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sends_the_examples_signed_the_providers_way() {
    let app = TestApp::spawn_with(with_providers(Backend::SqliteMemory)).await;
    let url = app.url("/webhook");
    let example = |name: &str| format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"));
    let (whatsapp, twilio) = (example("whatsapp.json"), example("twilio.json"));
    let runs = tokio::task::spawn_blocking(move || {
        let whatsapp = crate::child::run_bin(
            &["send", "--provider", "whatsapp", &whatsapp],
            &[("WEBHOOK_URL", &url), ("WHATSAPP_APP_SECRET", APP_SECRET)],
            None,
        );
        let twilio = crate::child::run_bin(
            &["send", "--provider", "twilio", "--url", &url, &twilio],
            &[("TWILIO_AUTH_TOKEN", AUTH_TOKEN), ("PUBLIC_URL", PUBLIC_URL)],
            None,
        );
        let unsigned = crate::child::run_bin(
            &["send", "--provider", "twilio", "--url", &url, "-"],
            &[],
            Some(b"{}"),
        );
        (whatsapp, twilio, unsigned)
    })
    .await
    .expect("runs");
    let (whatsapp, twilio, unsigned) = runs;
    assert!(
        whatsapp.status.success(),
        "{} {}",
        whatsapp.stdout,
        whatsapp.stderr
    );
    assert!(twilio.status.success(), "{} {}", twilio.stdout, twilio.stderr);
    assert!(twilio.stdout.contains("<Response/>"), "{}", twilio.stdout);
    assert!(!unsigned.status.success());
    assert!(
        unsigned.stderr.contains("needs TWILIO_AUTH_TOKEN"),
        "{}",
        unsigned.stderr
    );

    let (_, stats) = app.get_json("/stats").await;
    assert_eq!(
        stats["messages_per_source"],
        json!({"webhook": 0, "whatsapp": 3, "twilio": 1})
    );
    let (_, page) = app.get_json("/messages?source=whatsapp").await;
    let texts: Vec<&Value> = page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|item| &item["text"])
        .collect();
    assert_eq!(
        texts,
        [
            &json!("Hi! Is my order #4821 on its way?"),
            &json!("The box arrived damaged"),
            &json!("Refund")
        ]
    );
    let (_, twilio_message) = app.get_json("/messages/SM5d4e0f3a2b1c0d9e8f7a6b5c4d3e2f1a").await;
    assert_eq!(twilio_message["from"], "+447700900123");
    assert_eq!(twilio_message["raw"]["ProfileName"], "Ada");
}
