//! A batch's members' funds in one market: their available balances as the batch runs, and the
//! net change it makes to each of their ledger accounts.
//!
//! Kept per member, two assets side by side (index 0 the quote asset, 1 the base asset, see
//! [`slot`]), so that every lock, unlock and trade of a command is a hash lookup by member.
//! A batch makes several such changes per command; keyed by [`AccountKey`] they were a
//! search of an ordered map comparing member ids, with an account key built and dropped each
//! time (the market's task took 3.4–3.6 µs a command at 200 members, now 2.9–3.0;
//! docs/benchmarks.md). The ledger's view, one net change per account, is built once per
//! batch by [`Changes::accounts`], on the batch's writer.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use super::MemberId;
use crate::ledger::AccountKey;
use crate::markets::Market;

/// Available balances of a batch's members: `[quote, base]` in base units of each asset.
pub(crate) type Available = FxHashMap<MemberId, [u128; 2]>;

/// (credits, debits) to an account, base units, on its normal (credit) side.
pub(crate) type Change = (u128, u128);

/// The `base` argument that names a market's base asset.
pub(crate) const BASE: bool = true;
/// The `base` argument that names a market's quote asset.
pub(crate) const QUOTE: bool = false;

/// The index of the base asset (`true`) or the quote asset in a `[quote, base]` pair.
pub(crate) fn slot(base: bool) -> usize {
    usize::from(base)
}

/// Which of a member's two accounts of an asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    /// What the member may spend (`available`).
    Available,
    /// What open orders hold (`locked`).
    Locked,
}

/// A member's changes: `[quote, base]` per account kind.
#[derive(Debug, Default, Clone, Copy)]
struct MemberChanges {
    available: [Change; 2],
    locked: [Change; 2],
}

/// The net change a batch makes to its members' accounts and to the quote asset's fee
/// revenue.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    members: FxHashMap<MemberId, MemberChanges>,
    fees: Change,
}

impl Changes {
    /// Credits `amount` to `member`'s `held` account of the base (or quote) asset.
    pub(crate) fn credit(&mut self, member: &MemberId, held: Held, base: bool, amount: u128) {
        if amount > 0 {
            let change = self.account(member, held, base);
            change.0 = change.0.checked_add(amount).expect("batch sums fit u128");
        }
    }

    /// Debits `amount` from `member`'s `held` account of the base (or quote) asset.
    pub(crate) fn debit(&mut self, member: &MemberId, held: Held, base: bool, amount: u128) {
        if amount > 0 {
            let change = self.account(member, held, base);
            change.1 = change.1.checked_add(amount).expect("batch sums fit u128");
        }
    }

    /// Credits `amount` of the quote asset to the platform's fee revenue.
    pub(crate) fn credit_fees(&mut self, amount: u128) {
        self.fees.0 = self
            .fees
            .0
            .checked_add(amount)
            .expect("batch sums fit u128");
    }

    /// `available` (the balances a later batch starts from) with this batch's net change of
    /// each available account added. A balance that would go below zero (another writer
    /// lowered it after this batch read it; this batch will then not commit) counts as zero.
    pub(crate) fn carry_forward(&self, available: &mut Available) {
        for (member, balances) in available.iter_mut() {
            let Some(changes) = self.members.get(member) else {
                continue;
            };
            for (balance, (credits, debits)) in balances.iter_mut().zip(changes.available) {
                *balance = balance
                    .checked_add(credits)
                    .expect("balances fit u128")
                    .saturating_sub(debits);
            }
        }
    }

    /// Whether the batch changed no account.
    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty() && self.fees == (0, 0)
    }

    /// The change of every account the batch touched, as the ledger names them in `market`
    /// (accounts it credited and debited by the same amount included, at (x, x)).
    pub(crate) fn accounts(&self, market: &Market) -> BTreeMap<AccountKey, Change> {
        let assets = [&market.quote, &market.base];
        let mut accounts = BTreeMap::new();
        for (member, changes) in &self.members {
            for (slot, asset) in assets.iter().enumerate() {
                let kinds = [
                    (changes.available[slot], Held::Available),
                    (changes.locked[slot], Held::Locked),
                ];
                for (change, held) in kinds {
                    if change == (0, 0) {
                        continue;
                    }
                    let key = match held {
                        Held::Available => AccountKey::available(member.clone(), (*asset).clone()),
                        Held::Locked => AccountKey::locked(member.clone(), (*asset).clone()),
                    };
                    accounts.insert(key, change);
                }
            }
        }
        if self.fees != (0, 0) {
            accounts.insert(AccountKey::fee_revenue(market.quote.clone()), self.fees);
        }
        accounts
    }

    fn account(&mut self, member: &MemberId, held: Held, base: bool) -> &mut Change {
        // Cloned (a reference count) only the first time the batch meets the member.
        if !self.members.contains_key(member) {
            self.members
                .insert(member.clone(), MemberChanges::default());
        }
        let changes = self.members.get_mut(member).expect("inserted above");
        let accounts = match held {
            Held::Available => &mut changes.available,
            Held::Locked => &mut changes.locked,
        };
        &mut accounts[slot(base)]
    }
}

#[cfg(test)]
mod tests {
    use super::{Available, BASE, Changes, Held, MemberId, QUOTE};
    use crate::ledger::AccountKey;
    use crate::markets::sample_market;

    /// A lock, a trade and an unlock end up as one net change per ledger account, named as
    /// the ledger names them; an account credited and debited alike stays at (x, x); an
    /// untouched one is absent.
    #[test]
    fn changes_become_one_per_account() {
        let member = |id: &str| -> MemberId { id.parse().expect("member id") };
        let (alice, bob) = (member("alice"), member("bob"));
        let mut changes = Changes::default();
        assert!(changes.is_empty());
        // Alice locks 100 quote for a buy, pays 90 + 1 fee to bob's sale of 5 base, and gets
        // 9 back when her order is done.
        changes.debit(&alice, Held::Available, QUOTE, 100);
        changes.credit(&alice, Held::Locked, QUOTE, 100);
        changes.debit(&alice, Held::Locked, QUOTE, 91);
        changes.credit(&alice, Held::Available, BASE, 5);
        changes.debit(&alice, Held::Locked, QUOTE, 9);
        changes.credit(&alice, Held::Available, QUOTE, 9);
        changes.debit(&bob, Held::Locked, BASE, 5);
        changes.credit(&bob, Held::Available, QUOTE, 89);
        changes.credit_fees(3);
        changes.credit(&bob, Held::Available, BASE, 0);
        let market = sample_market();
        let accounts = changes.accounts(&market);
        let (btc, usdt) = (market.base.clone(), market.quote.clone());
        let expected = [
            (AccountKey::available(alice.clone(), usdt.clone()), (9, 100)),
            (AccountKey::locked(alice.clone(), usdt.clone()), (100, 100)),
            (AccountKey::available(alice.clone(), btc.clone()), (5, 0)),
            (AccountKey::available(bob.clone(), usdt.clone()), (89, 0)),
            (AccountKey::locked(bob.clone(), btc), (0, 5)),
            (AccountKey::fee_revenue(usdt), (3, 0)),
        ];
        assert_eq!(accounts.len(), expected.len(), "{accounts:?}");
        for (key, change) in expected {
            assert_eq!(accounts.get(&key), Some(&change), "{key:?}");
        }
    }

    /// A later batch starts from the available balances plus this batch's net change, a
    /// member the batch did not touch unchanged, and a balance another writer lowered
    /// meanwhile at zero, not below.
    #[test]
    fn carried_forward_balances_add_the_net_change() {
        let member = |id: &str| -> MemberId { id.parse().expect("member id") };
        let (alice, bob, carol) = (member("alice"), member("bob"), member("carol"));
        let mut changes = Changes::default();
        changes.debit(&alice, Held::Available, QUOTE, 100);
        changes.credit(&alice, Held::Available, BASE, 5);
        changes.credit(&alice, Held::Locked, QUOTE, 100);
        changes.debit(&bob, Held::Available, BASE, 50);
        let mut available: Available = [
            (alice.clone(), [1_000, 0]),
            (bob.clone(), [7, 20]),
            (carol.clone(), [3, 4]),
        ]
        .into_iter()
        .collect();
        changes.carry_forward(&mut available);
        assert_eq!(available[&alice], [900, 5]);
        assert_eq!(available[&bob], [7, 0]);
        assert_eq!(available[&carol], [3, 4]);
    }
}
