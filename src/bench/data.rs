//! The generated data that `seed`, `ingest` and `read` agree on: sender names, timestamps, texts
//! and the rare marker word that the `q` scenario searches for.

use std::fmt::Write;

use time::OffsetDateTime;

/// 2025-01-01T00:00:00Z: seeded row `n` is stamped `n` seconds after it.
pub const SEED_EPOCH: i64 = 1_735_689_600;

/// Every generated message goes to this one number.
pub const RECIPIENT: &str = "+14155550100";

/// The word that one seeded row in [`MARKER_EVERY`] carries (followed by its row number), and
/// that no other generated text contains.
pub const MARKER: &str = "zebra";

/// One row in this many carries [`MARKER`]: 0.5% of the rows.
pub const MARKER_EVERY: u64 = 200;

/// Words the texts are cut from. None contains [`MARKER`], nor does any run of them.
const FILLER: &str = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor \
                      incididunt ut labore et dolore magna aliqua ut enim ad minim veniam quis nostrud ";

/// The sender of index `index`: `+9199` and eight digits, so that seeded and sent messages, and
/// the `from` scenario, name the same people.
pub fn sender(index: u64) -> String {
    let mut name = String::with_capacity(13);
    write_sender(&mut name, index);
    name
}

/// Appends [`sender`]`(index)` to `out`.
pub fn write_sender(out: &mut String, index: u64) {
    // Writing to a String cannot fail.
    let _ = write!(out, "+9199{index:08}");
}

/// Appends the `ts` of `unix_seconds`, as `YYYY-MM-DDTHH:MM:SSZ`, to `out`.
pub fn write_timestamp(out: &mut String, unix_seconds: i64) {
    let instant = OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(unix_seconds);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        instant.year(),
        u8::from(instant.month()),
        instant.day(),
        instant.hour(),
        instant.minute(),
        instant.second()
    );
}

/// The `ts` of seeded row `row`: one second apart from 2025-01-01T00:00:00Z.
pub fn seeded_timestamp(row: u64) -> String {
    let mut ts = String::with_capacity(20);
    write_timestamp(&mut ts, SEED_EPOCH.saturating_add_unsigned(row));
    ts
}

/// Whether seeded row `row` carries the marker word.
pub fn is_marked(row: u64) -> bool {
    row % MARKER_EVERY == MARKER_EVERY / 2
}

/// Appends the text of row `row`: about `bytes` ASCII bytes of filler starting at a place that
/// depends on the row, preceded by `zebra<row>` when `marked` (the marker is kept whole even when
/// it is longer than `bytes`).
pub fn write_text(out: &mut String, row: u64, bytes: usize, marked: bool) {
    let start = out.len();
    if marked {
        let _ = write!(out, "{MARKER}{row} ");
    }
    let mut position = usize::try_from(row.wrapping_mul(7)).unwrap_or(0) % FILLER.len();
    while out.len() - start < bytes {
        let wanted = bytes - (out.len() - start);
        let piece = &FILLER[position..FILLER.len().min(position + wanted)];
        out.push_str(piece);
        position = (position + piece.len()) % FILLER.len();
    }
    let marker_len = if marked {
        MARKER.len() + decimal_digits(row)
    } else {
        0
    };
    out.truncate(start + bytes.max(marker_len));
}

/// The text of seeded row `row`, as [`write_text`] writes it.
pub fn text(row: u64, bytes: usize, marked: bool) -> String {
    let mut text = String::with_capacity(bytes + 16);
    write_text(&mut text, row, bytes, marked);
    text
}

fn decimal_digits(value: u64) -> usize {
    value.checked_ilog10().map_or(1, |log| log as usize + 1)
}

/// A small, fast, seedable generator (SplitMix64): good enough to pick senders and ids, and
/// the same on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (0 when `bound` is 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        // Multiply-shift: unbiased enough for load generation, and no division.
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Timestamp, is_msisdn};

    #[test]
    fn senders_are_valid_numbers_named_by_index() {
        assert_eq!(sender(0), "+919900000000");
        assert_eq!(sender(9_999), "+919900009999");
        assert_eq!(sender(123_456_789), "+9199123456789");
        assert!(is_msisdn(&sender(42)));
    }

    #[test]
    fn seeded_timestamps_are_one_second_apart_from_2025() {
        assert_eq!(seeded_timestamp(0), "2025-01-01T00:00:00Z");
        assert_eq!(seeded_timestamp(59), "2025-01-01T00:00:59Z");
        assert_eq!(seeded_timestamp(86_400 * 59), "2025-03-01T00:00:00Z");
        assert_eq!(seeded_timestamp(999_999), "2025-01-12T13:46:39Z");
        assert!(Timestamp::parse(&seeded_timestamp(999_999)).is_some());
    }

    #[test]
    fn leap_days_are_real_days() {
        let mut ts = String::new();
        write_timestamp(&mut ts, 1_709_164_800); // 2024-02-29T00:00:00Z
        assert_eq!(ts, "2024-02-29T00:00:00Z");
    }

    #[test]
    fn texts_have_the_asked_size_and_vary_by_row() {
        assert_eq!(text(1, 64, false).len(), 64);
        assert_eq!(text(2, 300, false).len(), 300);
        assert_eq!(text(3, 0, false), "");
        assert_ne!(text(1, 64, false), text(2, 64, false));
    }

    #[test]
    fn only_marked_texts_contain_the_marker() {
        let marked = text(100, 64, true);
        assert!(marked.starts_with("zebra100 "), "{marked}");
        assert_eq!(marked.len(), 64);
        assert_eq!(text(123_456, 3, true), "zebra123456");
        for row in 0..2_000 {
            assert!(!text(row, 200, false).contains(MARKER));
        }
    }

    #[test]
    fn the_marker_is_on_half_a_percent_of_rows() {
        let marked = (0..100_000).filter(|&row| is_marked(row)).count();
        assert_eq!(marked, 500);
    }

    #[test]
    fn the_generator_stays_below_its_bound() {
        let mut rng = Rng::new(7);
        let draws: Vec<u64> = (0..1_000).map(|_| rng.below(10)).collect();
        assert!(draws.iter().all(|&draw| draw < 10));
        assert!((0..10).all(|value| draws.contains(&value)));
        assert_eq!(rng.below(0), 0);
    }
}
