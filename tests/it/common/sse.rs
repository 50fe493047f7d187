//! A client of `GET /messages/stream` that reads its Server-Sent Events frame by frame.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

/// One frame: the fields before a blank line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Frame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Option<String>,
    pub comments: Vec<String>,
}

/// What the stream gave next.
#[derive(Debug)]
pub enum Next {
    Frame(Frame),
    /// Nothing arrived in time.
    Quiet,
    /// The server ended the stream.
    End,
}

/// A message event: its id and its data.
#[derive(Debug, Clone)]
pub struct MessageEvent {
    pub id: u64,
    pub data: Value,
}

impl MessageEvent {
    pub fn message_id(&self) -> String {
        self.data["message_id"].as_str().expect("message_id").to_owned()
    }
}

pub struct EventStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
    ended: bool,
    /// The first frame's id: where the stream started.
    pub start: Option<u64>,
}

impl EventStream {
    /// Opens the stream at `url` (with `Last-Event-ID` when given), expects 200 and reads its
    /// first frame, the starting id.
    pub async fn open(client: &reqwest::Client, url: &str, last_event_id: Option<u64>) -> EventStream {
        let mut request = client.get(url);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.expect("open the stream");
        assert_eq!(response.status(), StatusCode::OK, "opening {url}");
        assert_eq!(
            response.headers()["content-type"].to_str().expect("text"),
            "text/event-stream"
        );
        let mut stream = EventStream {
            response,
            buffer: Vec::new(),
            ended: false,
            start: None,
        };
        match stream.next(Duration::from_secs(10)).await {
            Next::Frame(frame) => {
                assert_eq!((&frame.event, &frame.data), (&None, &None), "{frame:?}");
                stream.start = Some(frame.id.expect("a starting id").parse().expect("a number"));
            }
            other => panic!("no starting id: {other:?}"),
        }
        stream
    }

    /// The next frame within `within`.
    pub async fn next(&mut self, within: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.windows(2).position(|pair| pair == b"\n\n") {
                let frame: Vec<u8> = self.buffer.drain(..end + 2).collect();
                return Next::Frame(parse_frame(std::str::from_utf8(&frame).expect("UTF-8")));
            }
            if self.ended {
                return Next::End;
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Err(_) => return Next::Quiet,
                Ok(Ok(Some(chunk))) => self.buffer.extend_from_slice(&chunk),
                Ok(Ok(None) | Err(_)) => self.ended = true,
            }
        }
    }

    /// The next message event within `within`, passing over comments; `None` when none came
    /// in time or the stream ended.
    pub async fn next_message(&mut self, within: Duration) -> Option<MessageEvent> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Next::Frame(frame) if frame.event.is_some() => return Some(message_event(&frame)),
                Next::Frame(_) => continue,
                Next::Quiet | Next::End => return None,
            }
        }
    }

    /// The next `count` message events, each within `within`.
    pub async fn messages(&mut self, count: usize, within: Duration) -> Vec<MessageEvent> {
        let mut events = Vec::with_capacity(count);
        while events.len() < count {
            match self.next_message(within).await {
                Some(event) => events.push(event),
                None => panic!("{} of {count} messages came: {events:?}", events.len()),
            }
        }
        events
    }

    /// Asserts that no message event comes within `within`.
    pub async fn expect_no_message(&mut self, within: Duration) {
        if let Some(event) = self.next_message(within).await {
            panic!("an unexpected message: {event:?}");
        }
    }
}

fn message_event(frame: &Frame) -> MessageEvent {
    assert_eq!(frame.event.as_deref(), Some("message"), "{frame:?}");
    MessageEvent {
        id: frame.id.as_deref().expect("an id").parse().expect("a numeric id"),
        data: serde_json::from_str(frame.data.as_deref().expect("data")).expect("JSON data"),
    }
}

fn parse_frame(text: &str) -> Frame {
    let mut frame = Frame::default();
    for line in text.lines().filter(|line| !line.is_empty()) {
        if let Some(comment) = line.strip_prefix(':') {
            frame.comments.push(comment.trim().to_owned());
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
        match field {
            "id" => frame.id = Some(value),
            "event" => frame.event = Some(value),
            "data" => frame.data = Some(value),
            other => panic!("an unknown field {other:?} in {text:?}"),
        }
    }
    frame
}
