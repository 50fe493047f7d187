//! `GET /messages`: ordering, pagination, filters and query validation.

use crate::common::{TestApp, ids, message};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ALICE: &str = "+919876543210";
const BOB: &str = "+911234567890";

fn m1() -> Value {
    message("m1", ALICE, "2025-01-15T10:00:00Z", Some("Hello"))
}
fn m2() -> Value {
    message("m2", ALICE, "2025-01-15T09:00:00Z", Some("Earlier"))
}
fn m3() -> Value {
    message("m3", BOB, "2025-01-15T11:00:00Z", Some("Hello again"))
}
fn m4() -> Value {
    message("m4", BOB, "2025-01-15T09:45:00Z", Some("Meeting"))
}

/// Stores the evaluator's four messages in the evaluator's order.
async fn evaluator_data(app: &TestApp) {
    for body in [m1(), m2(), m3(), m4()] {
        app.store(&body).await;
    }
}

/// GETs `/messages` with `query`, asserts 200, and returns the page.
async fn page(app: &TestApp, query: &str) -> Value {
    let (status, page) = app.get_json(&format!("/messages{query}")).await;
    assert_eq!(status, StatusCode::OK, "{query}: {page}");
    page
}

/// GETs `/messages` with `query`, asserts 422, and returns the `(type, loc)` of each entry.
async fn rejected(app: &TestApp, query: &str) -> Vec<(String, Value)> {
    let (status, answer) = app.get_json(&format!("/messages{query}")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {answer}");
    answer["detail"]
        .as_array()
        .expect("detail is a list")
        .iter()
        .map(|entry| {
            (
                entry["type"].as_str().expect("type").to_owned(),
                entry["loc"].clone(),
            )
        })
        .collect()
}

/// Removes `next_cursor` from a page and returns it (`None` when it was null).
fn take_cursor(page: &mut Value) -> Option<String> {
    let cursor = page
        .as_object_mut()
        .expect("page object")
        .remove("next_cursor")
        .expect("every page has next_cursor");
    cursor.as_str().map(str::to_owned)
}

/// Follows `next_cursor` from the first page of `query` to the last; returns every id in order.
async fn walk_with_cursor(app: &TestApp, query: &str) -> Vec<String> {
    let mut walked = Vec::new();
    let mut next = page(app, &format!("?{query}")).await;
    for _ in 0..1000 {
        walked.extend(ids(&next));
        let Some(cursor) = take_cursor(&mut next) else {
            return walked;
        };
        next = page(app, &format!("?{query}&cursor={cursor}")).await;
    }
    panic!("the cursor never reached a last page");
}

fn kind(kind: &str, loc: Value) -> (String, Value) {
    (kind.to_owned(), loc)
}

// ---------------------------------------------------------------------------------------------
// Ordering and the page envelope
// ---------------------------------------------------------------------------------------------

/// `q` is a search term: 256 characters at most (counted as characters), 422 past that, on the
/// page and on the export alike.
async fn q_longer_than_256_characters_is_422(app: TestApp) {
    let at_the_bound = "é".repeat(256);
    let (status, _) = app.get_json(&format!("/messages?q={at_the_bound}")).await;
    assert_eq!(status, StatusCode::OK);
    for too_long in ["a".repeat(257), "é".repeat(257), "x".repeat(65_000)] {
        assert_eq!(
            rejected(&app, &format!("?q={too_long}")).await,
            [kind("string_too_long", json!(["query", "q"]))]
        );
        let (status, answer) = app.get_json(&format!("/messages/export?q={too_long}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        assert_eq!(answer["detail"][0]["ctx"], json!({"max_length": 256}));
    }
}

async fn evaluator_data_is_ordered_by_ts_then_id(app: TestApp) {
    evaluator_data(&app).await;
    assert_eq!(
        page(&app, "").await,
        json!({"data": [m2(), m4(), m1(), m3()], "total": 4, "limit": 50, "offset": 0, "next_cursor": null})
    );
}

async fn empty_store_gives_an_empty_page(app: TestApp) {
    assert_eq!(
        page(&app, "").await,
        json!({"data": [], "total": 0, "limit": 50, "offset": 0, "next_cursor": null})
    );
}

async fn limit_two_returns_the_first_two_and_echoes(app: TestApp) {
    evaluator_data(&app).await;
    let mut first_two = page(&app, "?limit=2&offset=0").await;
    assert!(take_cursor(&mut first_two).is_some(), "two more rows follow");
    assert_eq!(
        first_two,
        json!({"data": [m2(), m4()], "total": 4, "limit": 2, "offset": 0})
    );
}

async fn total_ignores_limit_and_offset(app: TestApp) {
    evaluator_data(&app).await;
    let mut third = page(&app, "?limit=1&offset=2").await;
    assert!(take_cursor(&mut third).is_some(), "m3 follows");
    assert_eq!(
        third,
        json!({"data": [m1()], "total": 4, "limit": 1, "offset": 2})
    );
}

async fn offset_alone_keeps_the_default_limit(app: TestApp) {
    evaluator_data(&app).await;
    assert_eq!(
        page(&app, "?offset=3").await,
        json!({"data": [m3()], "total": 4, "limit": 50, "offset": 3, "next_cursor": null})
    );
}

async fn limit_bounds_1_and_100_are_accepted(app: TestApp) {
    evaluator_data(&app).await;
    let first = page(&app, "?limit=1").await;
    assert_eq!((ids(&first), &first["limit"]), (vec!["m2".to_owned()], &json!(1)));
    let all = page(&app, "?limit=100").await;
    assert_eq!(ids(&all), ["m2", "m4", "m1", "m3"]);
    assert_eq!(all["limit"], json!(100));
}

async fn offset_past_the_end_gives_empty_data_and_the_total(app: TestApp) {
    evaluator_data(&app).await;
    assert_eq!(
        page(&app, "?offset=10").await,
        json!({"data": [], "total": 4, "limit": 50, "offset": 10, "next_cursor": null})
    );
    assert_eq!(
        page(&app, "?offset=4&limit=1").await,
        json!({"data": [], "total": 4, "limit": 1, "offset": 4, "next_cursor": null})
    );
}

async fn pages_walk_the_whole_set_without_gaps_or_duplicates(app: TestApp) {
    let mut expected = Vec::new();
    for n in 0..23 {
        // Shuffled timestamps and three messages per second, so ties on ts occur.
        let second = (n * 7) % 8;
        let id = format!("w{n:02}");
        app.store(&message(
            &id,
            ALICE,
            &format!("2025-01-15T10:00:0{second}Z"),
            None,
        ))
        .await;
        expected.push((second, id));
    }
    expected.sort();
    let expected: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();
    let mut walked = Vec::new();
    for offset in (0..25).step_by(5) {
        let page = page(&app, &format!("?limit=5&offset={offset}")).await;
        assert_eq!(page["total"], json!(23));
        walked.extend(ids(&page));
    }
    assert_eq!(walked, expected);
    assert_eq!(ids(&page(&app, "").await), expected);
}

async fn cursor_pages_walk_the_whole_set_in_order(app: TestApp) {
    let mut expected = Vec::new();
    for n in 0..23 {
        // Shuffled timestamps, ties on ts, and fractions that sort before whole seconds as text.
        let ts = match n % 4 {
            0 => format!("2025-01-15T10:00:0{}Z", n % 7),
            1 => format!("2025-01-15T10:00:0{}.5Z", n % 7),
            _ => format!("2025-01-15T10:00:0{}.25Z", (n * 3) % 7),
        };
        let id = format!("c{n:02}");
        app.store(&message(&id, ALICE, &ts, None)).await;
        expected.push(id);
    }
    let all = ids(&page(&app, "?limit=100").await);
    assert_eq!(all.len(), 23);
    expected.sort_by_key(|id| all.iter().position(|other| other == id));
    assert_eq!(walk_with_cursor(&app, "limit=5").await, expected);
    assert_eq!(walk_with_cursor(&app, "limit=1").await, expected);
    assert_eq!(walk_with_cursor(&app, "limit=23").await, expected);
    let mut last = page(&app, "?limit=23").await;
    assert_eq!(take_cursor(&mut last), None, "one page holds everything");

    // Newest first: the same order reversed, by cursor and by offset alike.
    let newest_first: Vec<String> = expected.iter().rev().cloned().collect();
    for limit in [1, 5, 23] {
        assert_eq!(
            walk_with_cursor(&app, &format!("order=desc&limit={limit}")).await,
            newest_first,
            "limit {limit}"
        );
    }
    let mut by_offset = Vec::new();
    for offset in (0..23).step_by(5) {
        let window = page(&app, &format!("?order=desc&limit=5&offset={offset}")).await;
        assert_eq!(window["total"], json!(23));
        by_offset.extend(ids(&window));
    }
    assert_eq!(by_offset, newest_first);
}

/// Every page by offset, shallow or deep (a deep one is read from the far end of the order), in
/// both orders, with and without a filter: exactly its slice, and a `next_cursor` that continues
/// with the rows after it.
async fn every_offset_gives_its_slice_and_a_cursor_that_goes_on_from_it(app: TestApp) {
    for n in 0..17 {
        let from = if n % 3 == 0 { BOB } else { ALICE };
        let ts = format!("2025-01-15T10:00:{:02}Z", (n * 7) % 11);
        app.store(&message(&format!("o{n:02}"), from, &ts, None)).await;
    }
    for filter in ["", "&from=%2B911234567890"] {
        for order in ["asc", "desc"] {
            let all = ids(&page(&app, &format!("?limit=100&order={order}{filter}")).await);
            let total = all.len();
            for limit in [1, 3, 5] {
                for offset in 0..=total {
                    let query = format!("limit={limit}&order={order}{filter}");
                    let mut window = page(&app, &format!("?{query}&offset={offset}")).await;
                    let expected: Vec<String> = all.iter().skip(offset).take(limit).cloned().collect();
                    let context = format!("{query}&offset={offset}");
                    assert_eq!(ids(&window), expected, "{context}");
                    assert_eq!(window["total"], json!(total), "{context}");
                    let cursor = take_cursor(&mut window);
                    assert_eq!(cursor.is_some(), offset + limit < total, "{context}");
                    if let Some(cursor) = cursor {
                        let after = page(&app, &format!("?{query}&cursor={cursor}")).await;
                        let expected: Vec<String> =
                            all.iter().skip(offset + limit).take(limit).cloned().collect();
                        assert_eq!(ids(&after), expected, "after {context}");
                    }
                }
            }
        }
    }
}

/// `order=desc` lists newest first, filters and totals unchanged; anything but `asc` or `desc`
/// is 422.
async fn order_desc_lists_newest_first(app: TestApp) {
    evaluator_data(&app).await;
    assert_eq!(
        page(&app, "?order=desc").await,
        json!({"data": [m3(), m1(), m4(), m2()], "total": 4, "limit": 50, "offset": 0, "next_cursor": null})
    );
    assert_eq!(page(&app, "?order=asc").await, page(&app, "").await);
    let mut newest = page(&app, "?order=desc&limit=1&offset=1").await;
    assert!(take_cursor(&mut newest).is_some());
    assert_eq!(
        newest,
        json!({"data": [m1()], "total": 4, "limit": 1, "offset": 1})
    );
    assert_eq!(
        walk_with_cursor(&app, "order=desc&limit=1&from=+911234567890").await,
        ["m3", "m4"]
    );
    for bad in ["DESC", "newest", ""] {
        assert_eq!(
            rejected(&app, &format!("?order={bad}")).await,
            [kind("enum", json!(["query", "order"]))]
        );
    }
}

async fn cursor_pages_keep_the_filters(app: TestApp) {
    for n in 0..12 {
        let from = if n % 3 == 0 { BOB } else { ALICE };
        let text = if n % 2 == 0 { "Hello there" } else { "bye" };
        app.store(&message(
            &format!("f{n:02}"),
            from,
            &format!("2025-01-15T10:00:{n:02}Z"),
            Some(text),
        ))
        .await;
    }
    let query = "limit=2&from=%2B919876543210&q=HELLO&since=2025-01-15T10:00:01Z";
    assert_eq!(walk_with_cursor(&app, query).await, ["f02", "f04", "f08", "f10"]);
    let mut first = page(&app, &format!("?{query}")).await;
    let cursor = take_cursor(&mut first).expect("a second page");
    assert_eq!(
        first["total"],
        json!(4),
        "total counts every match, not what is left"
    );
    let second = page(&app, &format!("?{query}&cursor={cursor}")).await;
    assert_eq!(second["total"], json!(4), "after a cursor too");
    let none = page(&app, "?q=no-such-text").await;
    assert_eq!(none["total"], json!(0));
    assert!(ids(&none).is_empty());
}

async fn a_cursor_does_not_shift_when_earlier_rows_arrive(app: TestApp) {
    for n in 0..6 {
        app.store(&message(
            &format!("s{n}"),
            ALICE,
            &format!("2025-01-15T10:00:0{n}Z"),
            None,
        ))
        .await;
    }
    let mut first = page(&app, "?limit=3").await;
    assert_eq!(ids(&first), ["s0", "s1", "s2"]);
    let cursor = take_cursor(&mut first).expect("more follow");
    app.store(&message("early", ALICE, "2025-01-15T09:00:00Z", None))
        .await;
    let mut second = page(&app, &format!("?limit=3&cursor={cursor}")).await;
    assert_eq!(
        ids(&second),
        ["s3", "s4", "s5"],
        "an offset would have repeated s2"
    );
    assert_eq!(take_cursor(&mut second), None);
    assert_eq!(second["total"], json!(7));
}

async fn bad_cursors_are_422(app: TestApp) {
    evaluator_data(&app).await;
    for cursor in ["abc", "%21%21", "MjAyNS0wMS0xNVQxMDowMDowMFo"] {
        assert_eq!(
            rejected(&app, &format!("?cursor={cursor}")).await,
            [kind("value_error", json!(["query", "cursor"]))],
            "{cursor}"
        );
    }
    let mut first = page(&app, "?limit=1").await;
    let cursor = take_cursor(&mut first).expect("more follow");
    assert_eq!(
        rejected(&app, &format!("?cursor={cursor}&offset=1")).await,
        [kind("value_error", json!(["query", "offset"]))]
    );
    assert_eq!(
        ids(&page(&app, &format!("?cursor={cursor}&offset=0")).await),
        ["m4", "m1", "m3"]
    );
}

/// `q` is answered by a trigram index for three characters or more and by a scan below that;
/// both must agree with a plain case-folded substring test, whatever the query holds (FTS5
/// operators and quotes included).
async fn q_of_any_length_agrees_with_a_folded_substring_test(app: TestApp) {
    let texts = [
        "Hello World",
        "hello, world!",
        "Straße am Meer",
        "STRASSE",
        "ΟΔΟΣ οδός",
        "say \"hi\" AND bye",
        "NEAR(a b) OR c*",
        "100% of_it",
        "emoji 😀 party",
        "日本語のテキスト",
        "tab\there",
        "aaa aaaa",
    ];
    for (n, text) in texts.iter().enumerate() {
        app.store(&message(
            &format!("t{n:02}"),
            ALICE,
            &format!("2025-01-15T10:00:{n:02}Z"),
            Some(text),
        ))
        .await;
    }
    app.store(&message("null-text", ALICE, "2025-01-15T11:00:00Z", None))
        .await;
    let queries = [
        "h",
        "he",
        "hel",
        "hello",
        "WORLD",
        "o, w",
        "ss",
        "ß",
        "straße",
        "asse",
        "σ",
        "ΟΔΟΣ",
        "οδό",
        "\"hi\"",
        "\"",
        "AND",
        "and bye",
        "NEAR(",
        "c*",
        "*",
        "OR",
        "%",
        "0% o",
        "_",
        "😀",
        "😀 p",
        "本語の",
        "\t",
        "aaa",
        "aaaa",
        "aaaaa",
        "-",
        "zzz",
    ];
    for q in queries {
        let folded_q = caseless::default_case_fold_str(q);
        let expected: Vec<String> = texts
            .iter()
            .enumerate()
            .filter(|(_, text)| caseless::default_case_fold_str(text).contains(&folded_q))
            .map(|(n, _)| format!("t{n:02}"))
            .collect();
        let encoded: String = q.bytes().map(|byte| format!("%{byte:02X}")).collect();
        let found = page(&app, &format!("?limit=100&q={encoded}")).await;
        assert_eq!(ids(&found), expected, "q={q:?}");
        assert_eq!(found["total"], json!(expected.len()), "q={q:?}");
    }
}

/// When most rows match, SQLite walks the `ts` order instead of sorting the hits: the pages,
/// their order and the total must not change with the plan.
async fn q_matching_most_rows_pages_in_order(app: TestApp) {
    let mut expected = Vec::new();
    for n in 0..30 {
        let text = if n % 6 == 5 {
            "rare words"
        } else {
            "a Common thread"
        };
        let id = format!("p{n:02}");
        app.store(&message(
            &id,
            ALICE,
            &format!("2025-01-15T10:{:02}:00Z", (n * 7) % 30),
            Some(text),
        ))
        .await;
        if n % 6 != 5 {
            expected.push(((n * 7) % 30, id));
        }
    }
    expected.sort();
    let expected: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();
    assert_eq!(walk_with_cursor(&app, "limit=4&q=COMMON").await, expected);
    let first = page(&app, "?limit=4&q=common").await;
    assert_eq!(first["total"], json!(25));
    let deep = page(&app, "?limit=4&offset=20&q=common").await;
    assert_eq!(ids(&deep), expected[20..24]);
    let since = page(&app, "?q=common&since=2025-01-15T10:15:00Z").await;
    assert_eq!(since["total"], json!(expected.len() - 13));
    // Newest first, through the search index and without it (a term of two characters).
    let newest_first: Vec<String> = expected.iter().rev().cloned().collect();
    assert_eq!(
        walk_with_cursor(&app, "limit=4&q=COMMON&order=desc").await,
        newest_first
    );
    assert_eq!(
        walk_with_cursor(&app, "limit=4&q=mm&order=desc").await,
        newest_first
    );
    let deep = page(&app, "?limit=4&offset=20&q=common&order=desc").await;
    assert_eq!(ids(&deep), newest_first[20..24]);
}

async fn ties_on_ts_are_ordered_by_message_id(app: TestApp) {
    for id in ["b", "c", "a", "B"] {
        app.store(&message(id, ALICE, "2025-01-15T10:00:00Z", None)).await;
    }
    assert_eq!(ids(&page(&app, "").await), ["B", "a", "b", "c"]);
}

async fn ts_is_ordered_as_an_instant_not_as_text(app: TestApp) {
    app.store(&message("half", ALICE, "2025-01-15T10:00:00.5Z", None))
        .await;
    app.store(&message("whole", ALICE, "2025-01-15T10:00:00Z", None))
        .await;
    app.store(&message("tenth", ALICE, "2025-01-15T10:00:00.1Z", None))
        .await;
    app.store(&message("later", ALICE, "2025-01-15T10:00:01Z", None))
        .await;
    let page = page(&app, "").await;
    assert_eq!(ids(&page), ["whole", "tenth", "half", "later"]);
    assert_eq!(page["data"][2]["ts"], json!("2025-01-15T10:00:00.5Z"));
}

async fn equal_instants_written_differently_tie_on_message_id(app: TestApp) {
    app.store(&message("b", ALICE, "2025-01-15T10:00:00.500Z", None))
        .await;
    app.store(&message("a", ALICE, "2025-01-15T10:00:00.5Z", None))
        .await;
    let page = page(&app, "").await;
    assert_eq!(ids(&page), ["a", "b"]);
    assert_eq!(page["data"][1]["ts"], json!("2025-01-15T10:00:00.500Z"));
}

async fn null_text_appears_as_json_null(app: TestApp) {
    let body = message("m1", ALICE, "2025-01-15T10:00:00Z", None);
    app.store(&body).await;
    let page = page(&app, "").await;
    let row = page["data"][0].as_object().expect("row object");
    assert_eq!(row.get("text"), Some(&Value::Null));
    assert_eq!(page["data"], json!([body]));
}

// ---------------------------------------------------------------------------------------------
// from
// ---------------------------------------------------------------------------------------------

async fn from_sent_unencoded_filters_by_sender(app: TestApp) {
    evaluator_data(&app).await;
    assert_eq!(
        page(&app, "?from=+919876543210").await,
        json!({"data": [m2(), m1()], "total": 2, "limit": 50, "offset": 0, "next_cursor": null})
    );
}

async fn from_percent_encoded_filters_by_sender(app: TestApp) {
    evaluator_data(&app).await;
    assert_eq!(
        page(&app, "?from=%2B911234567890").await,
        json!({"data": [m4(), m3()], "total": 2, "limit": 50, "offset": 0, "next_cursor": null})
    );
}

async fn from_is_an_exact_match(app: TestApp) {
    evaluator_data(&app).await;
    for query in [
        "?from=%2B91987654321",
        "?from=%2B9198765432100",
        "?from=919876543210",
    ] {
        let page = page(&app, query).await;
        assert_eq!((page["total"].clone(), ids(&page)), (json!(0), vec![]), "{query}");
    }
}

async fn from_of_an_unknown_sender_is_empty(app: TestApp) {
    evaluator_data(&app).await;
    assert_eq!(
        page(&app, "?from=+15550000000").await,
        json!({"data": [], "total": 0, "limit": 50, "offset": 0, "next_cursor": null})
    );
}

// ---------------------------------------------------------------------------------------------
// since
// ---------------------------------------------------------------------------------------------

async fn since_filters_like_the_evaluator(app: TestApp) {
    evaluator_data(&app).await;
    let page = page(&app, "?since=2025-01-15T09:30:00Z").await;
    assert_eq!(ids(&page), ["m4", "m1", "m3"]);
    assert_eq!(page["total"], json!(3));
}

async fn since_is_inclusive(app: TestApp) {
    evaluator_data(&app).await;
    let page = page(&app, "?since=2025-01-15T10:00:00Z").await;
    assert_eq!(ids(&page), ["m1", "m3"]);
    assert_eq!(page["total"], json!(2));
}

async fn since_after_everything_is_empty(app: TestApp) {
    evaluator_data(&app).await;
    assert_eq!(
        page(&app, "?since=2025-01-15T11:00:00.000000001Z").await,
        json!({"data": [], "total": 0, "limit": 50, "offset": 0, "next_cursor": null})
    );
}

async fn since_compares_instants_with_fractions(app: TestApp) {
    app.store(&message("whole", ALICE, "2025-01-15T10:00:00Z", None))
        .await;
    app.store(&message("half", ALICE, "2025-01-15T10:00:00.5Z", None))
        .await;
    assert_eq!(ids(&page(&app, "").await), ["whole", "half"]);
    let after_tenth = page(&app, "?since=2025-01-15T10:00:00.1Z").await;
    assert_eq!(ids(&after_tenth), ["half"]);
    assert_eq!(after_tenth["total"], json!(1));
    assert_eq!(
        ids(&page(&app, "?since=2025-01-15T10:00:00Z").await),
        ["whole", "half"]
    );
    assert_eq!(ids(&page(&app, "?since=2025-01-15T10:00:00.50Z").await), ["half"]);
    assert_eq!(
        ids(&page(&app, "?since=2025-01-15T10:00:00.500000001Z").await),
        Vec::<String>::new()
    );
}

// ---------------------------------------------------------------------------------------------
// q
// ---------------------------------------------------------------------------------------------

async fn q_is_a_case_insensitive_substring(app: TestApp) {
    evaluator_data(&app).await;
    for query in ["?q=hello", "?q=HELLO", "?q=hElLo", "?q=ell"] {
        let page = page(&app, query).await;
        assert_eq!(ids(&page), ["m1", "m3"], "{query}");
        assert_eq!(page["total"], json!(2), "{query}");
    }
    assert_eq!(ids(&page(&app, "?q=again").await), ["m3"]);
    assert_eq!(ids(&page(&app, "?q=nothing").await), Vec::<String>::new());
}

async fn q_is_case_insensitive_beyond_ascii(app: TestApp) {
    app.store(&message(
        "upper",
        ALICE,
        "2025-01-15T10:00:00Z",
        Some("ÜBER ALLES"),
    ))
    .await;
    app.store(&message(
        "lower",
        ALICE,
        "2025-01-15T10:00:01Z",
        Some("über alles"),
    ))
    .await;
    app.store(&message(
        "plain",
        ALICE,
        "2025-01-15T10:00:02Z",
        Some("uber alles"),
    ))
    .await;
    assert_eq!(ids(&page(&app, "?q=%C3%BCber").await), ["upper", "lower"]);
    assert_eq!(ids(&page(&app, "?q=%C3%9CBER").await), ["upper", "lower"]);
    assert_eq!(ids(&page(&app, "?q=uber").await), ["plain"]);
}

/// A `q` that is literally part of the text must match it, whatever case rules apply around it:
/// lowercasing the text turns a word-final `Σ` into `ς`, while a lone `Σ` lowercases to `σ`.
async fn q_matches_greek_sigma_whatever_its_position(app: TestApp) {
    app.store(&message("road", ALICE, "2025-01-15T10:00:00Z", Some("ΟΔΟΣ")))
        .await;
    for q in ["Σ", "σ", "ς", "ΟΔΟΣ", "οδος", "οδοσ"] {
        let query = format!("?q={}", utf8_percent(q));
        assert_eq!(ids(&page(&app, &query).await), ["road"], "q={q}");
    }
}

/// Percent-encodes every byte of `text`.
fn utf8_percent(text: &str) -> String {
    text.bytes().map(|byte| format!("%{byte:02X}")).collect()
}

async fn q_treats_percent_as_an_ordinary_character(app: TestApp) {
    app.store(&message("pct", ALICE, "2025-01-15T10:00:00Z", Some("100% sure")))
        .await;
    app.store(&message(
        "word",
        ALICE,
        "2025-01-15T10:00:01Z",
        Some("100 percent"),
    ))
    .await;
    let percent = page(&app, "?q=%25").await;
    assert_eq!(ids(&percent), ["pct"]);
    assert_eq!(percent["total"], json!(1));
    assert_eq!(ids(&page(&app, "?q=0%25%20s").await), ["pct"]);
}

async fn q_treats_underscore_as_an_ordinary_character(app: TestApp) {
    app.store(&message("under", ALICE, "2025-01-15T10:00:00Z", Some("a_b")))
        .await;
    app.store(&message("other", ALICE, "2025-01-15T10:00:01Z", Some("axb")))
        .await;
    assert_eq!(ids(&page(&app, "?q=_").await), ["under"]);
    assert_eq!(ids(&page(&app, "?q=a_b").await), ["under"]);
}

async fn q_never_matches_null_text(app: TestApp) {
    app.store(&message("none", ALICE, "2025-01-15T10:00:00Z", None))
        .await;
    app.store(&message(
        "some",
        ALICE,
        "2025-01-15T10:00:01Z",
        Some("null and void"),
    ))
    .await;
    for query in ["?q=null", "?q=n", "?q=%20"] {
        let page = page(&app, query).await;
        assert_eq!(ids(&page), ["some"], "{query}");
        assert_eq!(page["total"], json!(1), "{query}");
    }
}

async fn empty_q_does_not_filter(app: TestApp) {
    app.store(&message("none", ALICE, "2025-01-15T10:00:00Z", None))
        .await;
    app.store(&message("some", ALICE, "2025-01-15T10:00:01Z", Some("text")))
        .await;
    assert_eq!(ids(&page(&app, "?q=").await), ["none", "some"]);
}

// ---------------------------------------------------------------------------------------------
// Filters together
// ---------------------------------------------------------------------------------------------

async fn filters_combine_and_total_counts_the_combination(app: TestApp) {
    evaluator_data(&app).await;
    app.store(&message(
        "m5",
        ALICE,
        "2025-01-15T12:00:00Z",
        Some("hello once more"),
    ))
    .await;
    app.store(&message(
        "m6",
        ALICE,
        "2025-01-15T08:00:00Z",
        Some("hello, early"),
    ))
    .await;
    app.store(&message(
        "m7",
        BOB,
        "2025-01-15T12:00:00Z",
        Some("Hello from Bob"),
    ))
    .await;
    let all = page(&app, "?from=+919876543210&since=2025-01-15T10:00:00Z&q=HELLO").await;
    assert_eq!(ids(&all), ["m1", "m5"]);
    assert_eq!(all["total"], json!(2));
    assert_eq!(
        page(
            &app,
            "?from=+919876543210&since=2025-01-15T10:00:00Z&q=HELLO&limit=1&offset=1"
        )
        .await,
        json!({
            "data": [message("m5", ALICE, "2025-01-15T12:00:00Z", Some("hello once more"))],
            "total": 2,
            "limit": 1,
            "offset": 1, "next_cursor": null,
        })
    );
}

// ---------------------------------------------------------------------------------------------
// Query validation
// ---------------------------------------------------------------------------------------------

async fn limit_zero_is_422_greater_than_equal(app: TestApp) {
    let (status, answer) = app.get_json("/messages?limit=0").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        answer,
        json!({"detail": [{
            "type": "greater_than_equal",
            "loc": ["query", "limit"],
            "msg": "Input should be greater than or equal to 1",
            "input": "0",
            "ctx": {"ge": 1},
        }]})
    );
}

async fn limit_negative_is_422_greater_than_equal(app: TestApp) {
    assert_eq!(
        rejected(&app, "?limit=-1").await,
        [kind("greater_than_equal", json!(["query", "limit"]))]
    );
}

async fn limit_101_is_422_less_than_equal(app: TestApp) {
    let (status, answer) = app.get_json("/messages?limit=101").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        answer,
        json!({"detail": [{
            "type": "less_than_equal",
            "loc": ["query", "limit"],
            "msg": "Input should be less than or equal to 100",
            "input": "101",
            "ctx": {"le": 100},
        }]})
    );
}

async fn limit_not_an_integer_is_422_int_parsing(app: TestApp) {
    for query in ["?limit=abc", "?limit=1.5", "?limit=", "?limit=1e2", "?limit=0x10"] {
        assert_eq!(
            rejected(&app, query).await,
            [kind("int_parsing", json!(["query", "limit"]))],
            "{query}"
        );
    }
    let (_, answer) = app.get_json("/messages?limit=abc").await;
    assert_eq!(
        answer,
        json!({"detail": [{
            "type": "int_parsing",
            "loc": ["query", "limit"],
            "msg": "Input should be a valid integer, unable to parse string as an integer",
            "input": "abc",
        }]})
    );
}

async fn offset_negative_is_422_greater_than_equal(app: TestApp) {
    let (status, answer) = app.get_json("/messages?offset=-1").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        answer,
        json!({"detail": [{
            "type": "greater_than_equal",
            "loc": ["query", "offset"],
            "msg": "Input should be greater than or equal to 0",
            "input": "-1",
            "ctx": {"ge": 0},
        }]})
    );
}

async fn offset_not_an_integer_is_422_int_parsing(app: TestApp) {
    for query in ["?offset=abc", "?offset=2.0", "?offset="] {
        assert_eq!(
            rejected(&app, query).await,
            [kind("int_parsing", json!(["query", "offset"]))],
            "{query}"
        );
    }
}

async fn since_malformed_is_422(app: TestApp) {
    for query in [
        "?since=2025-02-30T00:00:00Z",
        "?since=yesterday",
        "?since=2025-01-15T10:00:00%2B05:30",
        "?since=2025-01-15T10:00:00+05:30",
        "?since=2025-01-15T10:00:00",
        "?since=2025-01-15",
        "?since=",
    ] {
        assert_eq!(
            rejected(&app, query).await,
            [kind("value_error", json!(["query", "since"]))],
            "{query}"
        );
    }
    let (_, answer) = app.get_json("/messages?since=yesterday").await;
    assert_eq!(answer["detail"][0]["input"], json!("yesterday"));
}

async fn several_bad_params_give_one_entry_each(app: TestApp) {
    assert_eq!(
        rejected(&app, "?limit=0&offset=abc&since=2025-02-30T00:00:00Z").await,
        [
            kind("greater_than_equal", json!(["query", "limit"])),
            kind("int_parsing", json!(["query", "offset"])),
            kind("value_error", json!(["query", "since"])),
        ]
    );
}

async fn unknown_query_params_are_ignored(app: TestApp) {
    evaluator_data(&app).await;
    assert_eq!(page(&app, "?sort=desc&page=3").await["total"], json!(4));
}

conformance!(
    evaluator_data_is_ordered_by_ts_then_id,
    every_offset_gives_its_slice_and_a_cursor_that_goes_on_from_it,
    order_desc_lists_newest_first,
    q_longer_than_256_characters_is_422,
    q_matching_most_rows_pages_in_order,
    q_of_any_length_agrees_with_a_folded_substring_test,
    cursor_pages_walk_the_whole_set_in_order,
    cursor_pages_keep_the_filters,
    a_cursor_does_not_shift_when_earlier_rows_arrive,
    bad_cursors_are_422,
    q_matches_greek_sigma_whatever_its_position,
    empty_store_gives_an_empty_page,
    limit_two_returns_the_first_two_and_echoes,
    total_ignores_limit_and_offset,
    offset_alone_keeps_the_default_limit,
    limit_bounds_1_and_100_are_accepted,
    offset_past_the_end_gives_empty_data_and_the_total,
    pages_walk_the_whole_set_without_gaps_or_duplicates,
    ties_on_ts_are_ordered_by_message_id,
    ts_is_ordered_as_an_instant_not_as_text,
    equal_instants_written_differently_tie_on_message_id,
    null_text_appears_as_json_null,
    from_sent_unencoded_filters_by_sender,
    from_percent_encoded_filters_by_sender,
    from_is_an_exact_match,
    from_of_an_unknown_sender_is_empty,
    since_filters_like_the_evaluator,
    since_is_inclusive,
    since_after_everything_is_empty,
    since_compares_instants_with_fractions,
    q_is_a_case_insensitive_substring,
    q_is_case_insensitive_beyond_ascii,
    q_treats_percent_as_an_ordinary_character,
    q_treats_underscore_as_an_ordinary_character,
    q_never_matches_null_text,
    empty_q_does_not_filter,
    filters_combine_and_total_counts_the_combination,
    limit_zero_is_422_greater_than_equal,
    limit_negative_is_422_greater_than_equal,
    limit_101_is_422_less_than_equal,
    limit_not_an_integer_is_422_int_parsing,
    offset_negative_is_422_greater_than_equal,
    offset_not_an_integer_is_422_int_parsing,
    since_malformed_is_422,
    several_bad_params_give_one_entry_each,
    unknown_query_params_are_ignored,
);
