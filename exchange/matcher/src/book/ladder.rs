//! One side's price levels in price order: an ordered map from a price (ticks) to its level's
//! slab index, built for what a book asks of it on every command (the best price, the level at
//! a price, a level added or removed) instead of a `BTreeMap`, whose searches were about a third
//! of the matcher's instructions on exchange-core's mix (`docs/benchmarks.md`).
//!
//! - **Order** comes from a three-tier bitmap over a window of [`WINDOW`] consecutive prices
//!   starting at `base`: bit `o` of the bottom tier is set iff price `base + o` has a level; a
//!   bit of the middle tier says a bottom word is non-zero, a bit of the top word says a middle
//!   word is. The best price, or the next one after a given price, is at most three words read
//!   and a `trailing_zeros`/`leading_zeros` each. Prices outside the window go to a `BTreeSet`
//!   and are merged into every answer, so any `u64` price works.
//! - **The window follows the market.** When a price outside the window arrives and the window
//!   is empty, or more of the outside prices would fit a window centred on the new price than
//!   the window holds now, the window moves to centre on it: the prices it held go to the
//!   `BTreeSet` unless the new window covers them, and the outside prices it now covers come
//!   into the bitmap. So a market whose price drifts away keeps its busy prices in the bitmap.
//!   Counting the outside prices a window would cover is done only when the `BTreeSet` has
//!   doubled since the last count, so it costs O(1) amortized per added price; a move costs
//!   O(levels), once per drift of half a window (with a tick of 0.01 USDT on a 90,000 USDT
//!   price, about 1.5 %).
//! - **The level at a price** comes from an `FxHashMap` (fixed hash, no seed). It is only
//!   looked up, never iterated, so the order of everything this type returns depends only on
//!   the set of prices: the book stays deterministic.
//!
//! Memory: 32 KiB of bitmap per side plus the map, whatever the number of levels.

use std::collections::BTreeSet;
use std::collections::hash_map::Entry;

use rustc_hash::FxHashMap;

use super::LevelId;

/// Prices covered by the bitmap: 2¹⁸ (e.g. ±131,072 ticks around the window's centre).
pub(super) const WINDOW: u64 = 1 << 18;
/// Bottom-tier words (one bit a price).
const WORDS: usize = (WINDOW / 64) as usize;
/// Middle-tier words (one bit a bottom word); one top word has a bit for each.
const GROUPS: usize = WORDS / 64;
const _: () = assert!(GROUPS == 64, "the top tier is one u64");
/// `outside` size from which a non-empty window is first considered for a move.
const MOVE_CHECK_MIN: usize = 16;

/// An ordered map from price (ticks) to level slab index. See the module docs.
#[derive(Clone)]
pub(super) struct Ladder {
    /// First price of the window; `base + WINDOW − 1` never overflows.
    base: u64,
    words: Box<[u64; WORDS]>,
    groups: [u64; GROUPS],
    top: u64,
    /// Every price with a level (inside and outside the window) → its slab index.
    levels: FxHashMap<u64, LevelId>,
    /// The prices outside the window, in order.
    outside: BTreeSet<u64>,
    /// `outside` size at which an added outside price next makes `add_price` count whether a
    /// window centred on it would hold more prices (twice the size at the last count).
    next_move_check: usize,
}

impl std::fmt::Debug for Ladder {
    /// The window's base and the (price, level) pairs in order, not the bitmap's 4,096 words.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ladder")
            .field("base", &self.base)
            .field("levels", &self.ascending().collect::<Vec<_>>())
            .finish()
    }
}

/// Bits of a word strictly above bit `i` (`i` < 64).
fn above(i: u64) -> u64 {
    if i == 63 { 0 } else { !0u64 << (i + 1) }
}

/// Bits of a word strictly below bit `i` (`i` < 64).
fn below(i: u64) -> u64 {
    (1u64 << i) - 1
}

/// Index of the highest set bit of a non-zero word.
fn highest(bits: u64) -> u64 {
    63 - u64::from(bits.leading_zeros())
}

/// Index of the lowest set bit of a non-zero word.
fn lowest(bits: u64) -> u64 {
    u64::from(bits.trailing_zeros())
}

impl Ladder {
    /// An empty ladder; its window starts at price 0 until a price outside it moves it.
    pub(super) fn new() -> Self {
        Ladder {
            base: 0,
            // Zeroed on the heap (not built on the stack and moved).
            words: vec![0; WORDS]
                .into_boxed_slice()
                .try_into()
                .expect("WORDS words"),
            groups: [0; GROUPS],
            top: 0,
            levels: FxHashMap::default(),
            outside: BTreeSet::new(),
            next_move_check: MOVE_CHECK_MIN,
        }
    }

    /// Whether no price has a level.
    pub(super) fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// The level at `price_ticks`, if any.
    pub(super) fn get(&self, price_ticks: u64) -> Option<LevelId> {
        self.levels.get(&price_ticks).copied()
    }

    /// The level at `price_ticks`, adding the one `new_level` returns when there is none.
    pub(super) fn get_or_insert_with(
        &mut self,
        price_ticks: u64,
        new_level: impl FnOnce() -> LevelId,
    ) -> LevelId {
        match self.levels.entry(price_ticks) {
            Entry::Occupied(entry) => *entry.get(),
            Entry::Vacant(entry) => {
                let level_id = *entry.insert(new_level());
                self.add_price(price_ticks);
                level_id
            }
        }
    }

    /// Removes `price_ticks`, returning its level, if it had one.
    pub(super) fn remove(&mut self, price_ticks: u64) -> Option<LevelId> {
        let level_id = self.levels.remove(&price_ticks)?;
        match self.offset(price_ticks) {
            Some(offset) => self.clear_bit(offset),
            None => {
                let removed = self.outside.remove(&price_ticks);
                debug_assert!(removed, "a price outside the window is in `outside`");
                if self.outside.len() * 4 < self.next_move_check {
                    self.next_move_check = (self.outside.len() * 2).max(MOVE_CHECK_MIN);
                }
            }
        }
        Some(level_id)
    }

    /// The lowest price with a level.
    pub(super) fn first(&self) -> Option<u64> {
        let inside = self.window_first().map(|offset| self.base + offset);
        min(inside, self.outside.first().copied())
    }

    /// The highest price with a level.
    pub(super) fn last(&self) -> Option<u64> {
        let inside = self.window_last().map(|offset| self.base + offset);
        inside.max(self.outside.last().copied())
    }

    /// The lowest price with a level above `price_ticks`.
    pub(super) fn next_above(&self, price_ticks: u64) -> Option<u64> {
        let inside = match price_ticks.checked_sub(self.base) {
            None => self.window_first(),
            Some(offset) if offset >= WINDOW => None,
            Some(offset) => self.window_next_above(offset),
        };
        let outside = match self.outside.is_empty() {
            true => None,
            false => self.outside.range(price_ticks.saturating_add(1)..).next(),
        };
        min(
            inside.map(|offset| self.base + offset),
            outside.copied().filter(|&price| price > price_ticks),
        )
    }

    /// The highest price with a level below `price_ticks`.
    pub(super) fn next_below(&self, price_ticks: u64) -> Option<u64> {
        let inside = match price_ticks.checked_sub(self.base) {
            None | Some(0) => None,
            Some(offset) if offset >= WINDOW => self.window_last(),
            Some(offset) => self.window_next_below(offset),
        };
        let outside = match self.outside.is_empty() {
            true => None,
            false => self.outside.range(..price_ticks).next_back(),
        };
        inside
            .map(|offset| self.base + offset)
            .max(outside.copied())
    }

    /// Prices and levels, lowest price first.
    pub(super) fn ascending(&self) -> impl Iterator<Item = (u64, LevelId)> + '_ {
        let mut next = self.first();
        std::iter::from_fn(move || {
            let price_ticks = next?;
            next = self.next_above(price_ticks);
            Some((price_ticks, self.levels[&price_ticks]))
        })
    }

    /// Prices and levels, highest price first.
    pub(super) fn descending(&self) -> impl Iterator<Item = (u64, LevelId)> + '_ {
        let mut next = self.last();
        std::iter::from_fn(move || {
            let price_ticks = next?;
            next = self.next_below(price_ticks);
            Some((price_ticks, self.levels[&price_ticks]))
        })
    }

    /// `price_ticks − base` when the price is in the window.
    fn offset(&self, price_ticks: u64) -> Option<u64> {
        price_ticks
            .checked_sub(self.base)
            .filter(|&offset| offset < WINDOW)
    }

    /// Records a newly added price (already in `levels`) in the bitmap or in `outside`, first
    /// moving the window to centre on it when that is better (module docs).
    fn add_price(&mut self, price_ticks: u64) {
        if self.offset(price_ticks).is_none() {
            let outside_after = self.outside.len() + 1;
            let check = outside_after >= self.next_move_check;
            if check {
                self.next_move_check = (outside_after * 2).max(MOVE_CHECK_MIN);
            }
            if self.top == 0 || (check && self.centred_window_holds_more(price_ticks)) {
                self.move_window(price_ticks);
            }
        }
        match self.offset(price_ticks) {
            Some(offset) => self.set_bit(offset),
            None => {
                let added = self.outside.insert(price_ticks);
                debug_assert!(added, "a new price is not yet in `outside`");
            }
        }
    }

    /// The window's first price when it is centred on `price_ticks`.
    fn base_for(price_ticks: u64) -> u64 {
        price_ticks
            .saturating_sub(WINDOW / 2)
            .min(u64::MAX - (WINDOW - 1))
    }

    /// Whether a window centred on the new outside price `price_ticks` would hold more prices
    /// than the window does now. It counts only the outside prices (and the new one) it would
    /// cover, a lower bound, so a move is never a loss.
    fn centred_window_holds_more(&self, price_ticks: u64) -> bool {
        let base = Self::base_for(price_ticks);
        let covered = self.outside.range(base..=base + (WINDOW - 1)).count() + 1;
        let inside_now = self.levels.len() - 1 - self.outside.len();
        covered > inside_now
    }

    /// Centres the window on `price_ticks`: the prices it held go to `outside` unless the new
    /// window covers them, and the outside prices it now covers come into the bitmap.
    fn move_window(&mut self, price_ticks: u64) {
        let mut inside = Vec::new();
        let mut next = self.window_first();
        while let Some(offset) = next {
            inside.push(self.base + offset);
            next = self.window_next_above(offset);
        }
        for price in &inside {
            self.clear_bit(price - self.base);
        }
        self.base = Self::base_for(price_ticks);
        let covered: Vec<u64> = self
            .outside
            .range(self.base..=self.base + (WINDOW - 1))
            .copied()
            .collect();
        for price in covered {
            self.outside.remove(&price);
            self.set_bit(price - self.base);
        }
        for price in inside {
            match self.offset(price) {
                Some(offset) => self.set_bit(offset),
                None => {
                    self.outside.insert(price);
                }
            }
        }
    }

    fn set_bit(&mut self, offset: u64) {
        let word = (offset / 64) as usize;
        let group = word / 64;
        self.words[word] |= 1 << (offset % 64);
        self.groups[group] |= 1 << (word % 64);
        self.top |= 1 << group;
    }

    fn clear_bit(&mut self, offset: u64) {
        let word = (offset / 64) as usize;
        let group = word / 64;
        self.words[word] &= !(1 << (offset % 64));
        if self.words[word] == 0 {
            self.groups[group] &= !(1 << (word % 64));
            if self.groups[group] == 0 {
                self.top &= !(1 << group);
            }
        }
    }

    /// The lowest set offset under the lowest bottom word of `group` named in `group_bits`
    /// (a non-zero subset of the group's bits).
    fn lowest_from_group(&self, group: usize, group_bits: u64) -> u64 {
        let word = group * 64 + lowest(group_bits) as usize;
        word as u64 * 64 + lowest(self.words[word])
    }

    /// The highest set offset under the highest bottom word of `group` named in `group_bits`.
    fn highest_from_group(&self, group: usize, group_bits: u64) -> u64 {
        let word = group * 64 + highest(group_bits) as usize;
        word as u64 * 64 + highest(self.words[word])
    }

    fn window_first(&self) -> Option<u64> {
        if self.top == 0 {
            return None;
        }
        let group = lowest(self.top) as usize;
        Some(self.lowest_from_group(group, self.groups[group]))
    }

    fn window_last(&self) -> Option<u64> {
        if self.top == 0 {
            return None;
        }
        let group = highest(self.top) as usize;
        Some(self.highest_from_group(group, self.groups[group]))
    }

    /// The lowest set offset above `offset` (< `WINDOW`).
    fn window_next_above(&self, offset: u64) -> Option<u64> {
        let word = (offset / 64) as usize;
        let bits = self.words[word] & above(offset % 64);
        if bits != 0 {
            return Some(word as u64 * 64 + lowest(bits));
        }
        let group = word / 64;
        let group_bits = self.groups[group] & above(word as u64 % 64);
        if group_bits != 0 {
            return Some(self.lowest_from_group(group, group_bits));
        }
        let top_bits = self.top & above(group as u64);
        if top_bits == 0 {
            return None;
        }
        let group = lowest(top_bits) as usize;
        Some(self.lowest_from_group(group, self.groups[group]))
    }

    /// The highest set offset below `offset` (< `WINDOW`).
    fn window_next_below(&self, offset: u64) -> Option<u64> {
        let word = (offset / 64) as usize;
        let bits = self.words[word] & below(offset % 64);
        if bits != 0 {
            return Some(word as u64 * 64 + highest(bits));
        }
        let group = word / 64;
        let group_bits = self.groups[group] & below(word as u64 % 64);
        if group_bits != 0 {
            return Some(self.highest_from_group(group, group_bits));
        }
        let top_bits = self.top & below(group as u64);
        if top_bits == 0 {
            return None;
        }
        let group = highest(top_bits) as usize;
        Some(self.highest_from_group(group, self.groups[group]))
    }
}

/// The smaller of two optional prices (`None` only when both are).
fn min(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::{Ladder, WINDOW};

    /// Checks every query of `ladder` against the same prices in a `BTreeMap`.
    fn assert_same(ladder: &Ladder, model: &BTreeMap<u64, u32>, probes: &[u64]) {
        assert_eq!(ladder.levels.len(), model.len());
        assert_eq!(ladder.first(), model.keys().next().copied(), "first");
        assert_eq!(ladder.last(), model.keys().next_back().copied(), "last");
        let ascending: Vec<(u64, u32)> = model.iter().map(|(p, l)| (*p, *l)).collect();
        assert_eq!(ladder.ascending().collect::<Vec<_>>(), ascending);
        let descending: Vec<(u64, u32)> = ascending.iter().rev().copied().collect();
        assert_eq!(ladder.descending().collect::<Vec<_>>(), descending);
        for &probe in probes {
            assert_eq!(ladder.get(probe), model.get(&probe).copied(), "get {probe}");
            let above = model.range(probe.saturating_add(1)..).next();
            let above = above.map(|(p, _)| *p).filter(|&p| p > probe);
            assert_eq!(ladder.next_above(probe), above, "next above {probe}");
            let below = model.range(..probe).next_back().map(|(p, _)| *p);
            assert_eq!(ladder.next_below(probe), below, "next below {probe}");
        }
    }

    /// Prices near 0, at the first window's end, around 1,000,000 and a window's half from
    /// it, far away and near `u64::MAX`: inside and outside the window, and moving it.
    fn price() -> impl Strategy<Value = u64> {
        const FAR: u64 = 1_000_000;
        prop_oneof![
            0..200u64,
            (WINDOW - 32)..(WINDOW + 32),
            (FAR - 100)..(FAR + 100),
            (FAR - WINDOW / 2 - 32)..(FAR - WINDOW / 2 + 32),
            (FAR + WINDOW / 2 - 32)..(FAR + WINDOW / 2 + 32),
            (1u64 << 40)..((1u64 << 40) + 64),
            (u64::MAX - 64)..=u64::MAX,
            any::<u64>(),
        ]
    }

    proptest! {
        /// Random adds and removes answer every query exactly as a `BTreeMap` does.
        #[test]
        fn answers_like_a_btree_map(
            steps in prop::collection::vec((any::<bool>(), price()), 0..300),
        ) {
            let mut ladder = Ladder::new();
            let mut model = BTreeMap::new();
            let fixed = [0, 1, WINDOW - 1, WINDOW, u64::MAX - 1, u64::MAX];
            let mut recent: Vec<u64> = Vec::new();
            for (i, (add, price)) in steps.into_iter().enumerate() {
                // Probe at, just above and just below the last 16 prices touched.
                recent.extend([price, price.saturating_add(1), price.saturating_sub(1)]);
                let start = recent.len().saturating_sub(48);
                recent.drain(..start);
                let probes: Vec<u64> = fixed.iter().chain(&recent).copied().collect();
                if add {
                    let level = i as u32;
                    let got = ladder.get_or_insert_with(price, || level);
                    let expected = *model.entry(price).or_insert(level);
                    prop_assert_eq!(got, expected);
                } else {
                    prop_assert_eq!(ladder.remove(price), model.remove(&price));
                }
                assert_same(&ladder, &model, &probes);
            }
        }
    }

    /// A window holding prices moves once more outside prices would fit a window centred on
    /// a new one: the prices it held go outside, and every query still answers as a
    /// `BTreeMap` does.
    #[test]
    fn a_window_moves_to_where_most_prices_are() {
        let far = 1u64 << 40;
        let mut ladder = Ladder::new();
        let mut model = BTreeMap::new();
        let mut add = |ladder: &mut Ladder, price: u64, level: u32| {
            ladder.get_or_insert_with(price, || level);
            model.insert(price, level);
        };
        for (i, price) in [100, 200, 300].into_iter().enumerate() {
            add(&mut ladder, price, i as u32);
        }
        for i in 0..15 {
            add(&mut ladder, far + i, 10 + i as u32);
        }
        assert_eq!(ladder.base, 0, "below the first check, the window stays");
        add(&mut ladder, far + 15, 25);
        assert_eq!(
            ladder.base,
            far + 15 - WINDOW / 2,
            "16 outside prices beat 3 inside"
        );
        let outside: Vec<u64> = ladder.outside.iter().copied().collect();
        assert_eq!(outside, [100, 200, 300]);
        assert_same(
            &ladder,
            &model,
            &[0, 150, 300, far - 1, far + 7, far + 16, u64::MAX],
        );
    }

    /// The window moves to a price far away once it is empty, and takes along the outside
    /// prices it then covers.
    #[test]
    fn an_empty_window_moves_to_a_far_price() {
        let mut ladder = Ladder::new();
        ladder.get_or_insert_with(100, || 1);
        ladder.get_or_insert_with(1 << 40, || 2);
        assert_eq!(ladder.base, 0, "the window holds 100, so it stays");
        assert!(ladder.outside.contains(&(1 << 40)));
        ladder.remove(100);
        ladder.get_or_insert_with((1 << 40) + 5, || 3);
        assert_eq!(ladder.base, (1 << 40) + 5 - WINDOW / 2);
        assert!(ladder.outside.is_empty(), "1 << 40 moved into the window");
        assert_eq!(ladder.first(), Some(1 << 40));
        assert_eq!(ladder.last(), Some((1 << 40) + 5));
    }
}
