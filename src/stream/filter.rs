//! The `/messages` filters applied to one message at a time, as the stores apply them.

use crate::message::{Message, Source, fold_case, folded_contains};
use crate::store::MessageFilter;

/// A [`MessageFilter`] made ready to test messages: `q` folded once.
#[derive(Debug, Clone, Default)]
pub struct StreamFilter {
    from: Option<String>,
    since_key: Option<String>,
    folded_q: Option<String>,
    source: Option<Source>,
}

impl StreamFilter {
    pub fn new(filter: &MessageFilter) -> StreamFilter {
        StreamFilter {
            from: filter.from.clone(),
            since_key: filter.since.as_ref().map(|since| since.sort_key().to_owned()),
            folded_q: filter.text_contains.as_deref().map(fold_case),
            source: filter.source,
        }
    }

    /// Whether `/messages` with this filter would list `message`.
    pub fn admits(&self, message: &Message) -> bool {
        self.from.as_ref().is_none_or(|from| *from == message.from)
            && self.source.is_none_or(|source| source == message.source)
            && self
                .since_key
                .as_deref()
                .is_none_or(|since| message.ts.sort_key() >= since)
            && self.folded_q.as_deref().is_none_or(|needle| {
                message
                    .text
                    .as_deref()
                    .is_some_and(|text| folded_contains(text, needle))
            })
    }
}
