use crate::common::{TestApp, message};
use serde_json::json;

async fn stores_and_lists_a_message(app: TestApp) {
    app.store(&message(
        "m1",
        "+919876543210",
        "2025-01-15T10:00:00Z",
        Some("Hello"),
    ))
    .await;
    let (status, page) = app.get_json("/messages").await;
    assert_eq!(status, 200);
    assert_eq!(page["total"], json!(1));
    assert_eq!(crate::common::ids(&page), ["m1"]);
}

async fn survives_a_restart(app: TestApp) {
    app.store(&message("m1", "+919876543210", "2025-01-15T10:00:00Z", None))
        .await;
    let options = app.options.clone();
    if options.backend == crate::common::Backend::SqliteMemory {
        return;
    }
    let database = app.stop().await;
    let app = TestApp::spawn_on(database, options).await;
    let (_, page) = app.get_json("/messages").await;
    assert_eq!(crate::common::ids(&page), ["m1"]);
}

conformance!(stores_and_lists_a_message, survives_a_restart);
