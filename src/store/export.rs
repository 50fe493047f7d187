//! The export's reader: every message that matches a filter, one keyset page at a time.

use std::sync::Arc;

use super::contract::{MessageFilter, Position, Store, StoreError};
use crate::message::Message;

/// How many rows an export reads at a time: what it holds in memory is one such page.
pub const EXPORT_PAGE_ROWS: u32 = 1000;

/// Every message that matches a filter, in the `/messages` order, read one keyset page at a time
/// ([`Store::export_page`]). Each page is a short read of its own that starts just after the
/// last row of the page before, so an export of any size holds one page in memory and keeps no
/// database connection (nor an old snapshot) between pages. Rows stored while it runs appear
/// when they sort after the rows already read; no row appears twice.
pub struct ExportPages {
    store: Arc<dyn Store>,
    filter: MessageFilter,
    page_rows: u32,
    next: NextPage,
}

enum NextPage {
    From(Option<Position>),
    Done,
}

impl ExportPages {
    pub fn new(store: Arc<dyn Store>, filter: MessageFilter) -> ExportPages {
        ExportPages {
            store,
            filter,
            page_rows: EXPORT_PAGE_ROWS,
            next: NextPage::From(None),
        }
    }

    /// The next page (possibly empty when the one before was full), or `None` once the last
    /// page or an error was returned.
    pub async fn next_page(&mut self) -> Option<Result<Vec<Message>, StoreError>> {
        let NextPage::From(after) = std::mem::replace(&mut self.next, NextPage::Done) else {
            return None;
        };
        let page = self
            .store
            .export_page(&self.filter, after.as_ref(), self.page_rows)
            .await;
        if let Ok(rows) = &page
            && rows.len() >= self.page_rows as usize
        {
            self.next = NextPage::From(rows.last().map(Position::of));
        }
        Some(page)
    }
}
