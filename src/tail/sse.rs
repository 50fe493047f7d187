//! A reader of Server-Sent Events, fed a response body chunk by chunk.
//!
//! Chunks end wherever the network cut them: in the middle of a line, between the `\r` and the
//! `\n` of a line break, even inside a multi-byte UTF-8 character. So bytes are kept until their
//! line is complete, and only whole lines are decoded. Lines end with `\n`, `\r\n` or `\r`, as
//! the format allows. A frame is dispatched at the blank line that closes it; one cut off by the
//! end of the body is dropped (its sender did not finish it).

/// The longest line kept, so that a broken or hostile server cannot make the reader hold an
/// endless line in memory. A message's `data:` line is far shorter.
pub const LINE_LIMIT: usize = 16 * 1024 * 1024;

/// One frame: the fields seen before the blank line that closed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frame {
    pub id: Option<String>,
    pub event: Option<String>,
    /// Every `data:` line, joined with `\n`.
    pub data: Option<String>,
}

/// What the body says, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Frame(Frame),
    /// A comment line (`:` and what follows, without the colon and one leading space):
    /// heartbeats, and the reason a stream is about to end.
    Comment(String),
}

/// A line reached [`LINE_LIMIT`] bytes without ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the stream sent a line longer than {LINE_LIMIT} bytes")]
pub struct LineTooLong;

/// The parser's state between two chunks.
#[derive(Debug, Default)]
pub struct FrameReader {
    /// The bytes of the line not yet ended.
    line: Vec<u8>,
    /// The last byte was a `\r`: a `\n` right after it ends no further line.
    after_cr: bool,
    /// The fields of the frame not yet closed; `None` until one is seen.
    frame: Option<Frame>,
}

impl FrameReader {
    pub fn new() -> FrameReader {
        FrameReader::default()
    }

    /// Reads `chunk` and returns the items it completes.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Item>, LineTooLong> {
        let mut items = Vec::new();
        for &byte in chunk {
            let after_cr = std::mem::replace(&mut self.after_cr, byte == b'\r');
            match byte {
                b'\n' if after_cr => {}
                b'\n' | b'\r' => {
                    let line = std::mem::take(&mut self.line);
                    items.extend(self.end_line(&line));
                }
                _ if self.line.len() >= LINE_LIMIT => return Err(LineTooLong),
                _ => self.line.push(byte),
            }
        }
        Ok(items)
    }

    /// Takes in one whole line; returns an item when the line completes one.
    fn end_line(&mut self, line: &[u8]) -> Option<Item> {
        if line.is_empty() {
            return self.frame.take().map(Item::Frame);
        }
        let line = String::from_utf8_lossy(line);
        if let Some(comment) = line.strip_prefix(':') {
            return Some(Item::Comment(without_one_space(comment).to_owned()));
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, without_one_space(value)),
            None => (line.as_ref(), ""),
        };
        let frame = self.frame.get_or_insert_with(Frame::default);
        match field {
            "id" if !value.contains('\0') => frame.id = Some(value.to_owned()),
            "event" => frame.event = Some(value.to_owned()),
            "data" => match &mut frame.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => frame.data = Some(value.to_owned()),
            },
            // `retry:` and fields this reader does not know: ignored, as the format says.
            _ => {}
        }
        None
    }
}

fn without_one_space(value: &str) -> &str {
    value.strip_prefix(' ').unwrap_or(value)
}

#[cfg(test)]
mod tests {
    use super::{Frame, FrameReader, Item, LINE_LIMIT, LineTooLong};

    /// What the service sends: the starting id alone, a message, a heartbeat, a farewell.
    const BODY: &str = "id: 41\n\n\
                        id: 42\nevent: message\ndata: {\"message_id\":\"m1\",\"text\":\"Grüße 👋\"}\n\n\
                        :\n\n\
                        : closed: the service is shutting down; resume from the last id\n\n";

    fn expected() -> Vec<Item> {
        vec![
            Item::Frame(Frame {
                id: Some("41".to_owned()),
                ..Frame::default()
            }),
            Item::Frame(Frame {
                id: Some("42".to_owned()),
                event: Some("message".to_owned()),
                data: Some("{\"message_id\":\"m1\",\"text\":\"Grüße 👋\"}".to_owned()),
            }),
            Item::Comment(String::new()),
            Item::Comment("closed: the service is shutting down; resume from the last id".to_owned()),
        ]
    }

    fn read_in(chunks: &[&[u8]]) -> Vec<Item> {
        let mut reader = FrameReader::new();
        chunks
            .iter()
            .flat_map(|chunk| reader.feed(chunk).expect("short lines"))
            .collect()
    }

    #[test]
    fn a_whole_body_gives_id_only_frames_messages_and_comments() {
        assert_eq!(read_in(&[BODY.as_bytes()]), expected());
    }

    #[test]
    fn a_body_cut_at_any_byte_reads_the_same() {
        let body = BODY.as_bytes();
        // Every byte is a cut somewhere: inside `data:`, between the two bytes of `ü` and the
        // four of the emoji, between a line's end and the blank line.
        for cut in 0..=body.len() {
            let (head, tail) = body.split_at(cut);
            assert_eq!(read_in(&[head, tail]), expected(), "cut at byte {cut}");
        }
        let one_by_one: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(read_in(&one_by_one), expected());
    }

    #[test]
    fn crlf_and_lone_cr_end_lines_too_even_when_cut_between_cr_and_lf() {
        for line_end in ["\r\n", "\r"] {
            let body = BODY.replace('\n', line_end);
            let body = body.as_bytes();
            for cut in 0..=body.len() {
                let (head, tail) = body.split_at(cut);
                assert_eq!(
                    read_in(&[head, tail]),
                    expected(),
                    "{line_end:?}, cut at byte {cut}"
                );
            }
        }
    }

    #[test]
    fn data_lines_are_joined_and_a_field_without_colon_is_empty() {
        let items = read_in(&[b"data\ndata:one\ndata:  two\nevent:x\nretry: 10\nfuture: y\n\n"]);
        assert_eq!(
            items,
            [Item::Frame(Frame {
                id: None,
                event: Some("x".to_owned()),
                data: Some("\none\n two".to_owned()),
            })]
        );
    }

    #[test]
    fn blank_lines_alone_and_an_unfinished_frame_give_nothing() {
        assert_eq!(read_in(&[b"\n\n\r\n", b"id: 7\ndata: {}\n"]), []);
    }

    #[test]
    fn an_id_holding_nul_is_ignored() {
        assert_eq!(
            read_in(&[b"id: 1\0\ndata: x\n\n"]),
            [Item::Frame(Frame {
                id: None,
                event: None,
                data: Some("x".to_owned()),
            })]
        );
    }

    #[test]
    fn an_endless_line_is_refused_at_the_limit() {
        let mut reader = FrameReader::new();
        let block = vec![b'a'; 1024 * 1024];
        let mut fed = 0;
        let outcome = loop {
            match reader.feed(&block) {
                Ok(items) => assert!(items.is_empty()),
                Err(error) => break error,
            }
            fed += block.len();
            assert!(fed <= LINE_LIMIT, "the limit was passed");
        };
        assert_eq!(outcome, LineTooLong);
    }
}
