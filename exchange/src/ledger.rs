//! The journal's rules, without I/O (DESIGN.md, "Exchange").
//!
//! Accounts are keyed by (owner, asset, kind): members own `available` and `locked`
//! (credit-normal liabilities), the platform owns `hot_wallet` (debit-normal: what we hold on
//! chain), `fee_revenue` (credit-normal) and `network_fees` (debit-normal expense: network
//! fees the hot wallet paid on chain) per asset. A [`Transfer`] moves value between
//! accounts with [`Leg`]s; it is valid only if, per asset, its debits equal its credits.
//! [`crate::journal`] stores transfers; PostgreSQL enforces the same rules again.
//!
//! The later matcher posts lock (`available` → `locked`), unlock, trade and fee transfers on
//! the same accounts with [`Transfer::new`].

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use bigdecimal::num_bigint::BigInt;
use coinhub_events::{BaseUnits, MemberId};
use uuid::Uuid;

use coinhub_events::numeric;

/// An asset's symbol as configured in coinhubd, e.g. `"ETH"` or `"USDT"`: 1 to 32 ASCII
/// letters, digits, `.`, `_` or `-`.
///
/// Shared text: a clone is a reference count, not a copy (every ledger account key holds
/// one). Equality, order and hash are the text's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AssetSymbol(Arc<str>);

impl AssetSymbol {
    /// The symbol as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for AssetSymbol {
    type Err = LedgerError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
        if value.is_empty() || value.len() > 32 || !value.chars().all(valid_char) {
            return Err(LedgerError::InvalidAsset {
                asset: value.to_owned(),
            });
        }
        Ok(Self(Arc::from(value)))
    }
}

impl fmt::Display for AssetSymbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The side of a leg, and an account's normal side (the side that increases its balance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// Stored as a positive entry amount.
    Debit,
    /// Stored as a negative entry amount.
    Credit,
}

impl Side {
    /// `"debit"` or `"credit"`, as stored in `account_kinds.normal_side`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debit => "debit",
            Self::Credit => "credit",
        }
    }
}

/// What an account is for. Its owner type and normal side follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum AccountKind {
    /// A member's spendable balance (credit-normal liability).
    Available,
    /// A member's balance held for open orders or pending withdrawals (credit-normal).
    Locked,
    /// What the platform holds on chain for an asset (debit-normal asset).
    HotWallet,
    /// Fees the platform earned in an asset (credit-normal revenue).
    FeeRevenue,
    /// Network fees the platform's hot wallet paid on chain in an asset (debit-normal
    /// expense; only ever debited, so its balance is the total paid).
    NetworkFees,
}

impl AccountKind {
    /// Every kind, in display order.
    pub const ALL: [Self; 5] = [
        Self::Available,
        Self::Locked,
        Self::HotWallet,
        Self::FeeRevenue,
        Self::NetworkFees,
    ];

    /// The name stored in the database, e.g. `"hot_wallet"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Available => "available",
            Self::Locked => "locked",
            Self::HotWallet => "hot_wallet",
            Self::FeeRevenue => "fee_revenue",
            Self::NetworkFees => "network_fees",
        }
    }

    /// The side that increases this kind of account's balance.
    pub fn normal_side(self) -> Side {
        match self {
            Self::HotWallet | Self::NetworkFees => Side::Debit,
            Self::Available | Self::Locked | Self::FeeRevenue => Side::Credit,
        }
    }

    /// Whether members (true) or the platform (false) own accounts of this kind.
    pub fn is_member_owned(self) -> bool {
        matches!(self, Self::Available | Self::Locked)
    }
}

impl FromStr for AccountKind {
    type Err = LedgerError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == value)
            .ok_or_else(|| LedgerError::UnknownAccountKind {
                kind: value.to_owned(),
            })
    }
}

impl fmt::Display for AccountKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who owns an account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// The exchange itself.
    Platform,
    /// An exchange member.
    Member(MemberId),
}

impl Owner {
    /// The member, for member accounts.
    pub fn member(&self) -> Option<&MemberId> {
        match self {
            Self::Member(member) => Some(member),
            Self::Platform => None,
        }
    }
}

/// An account's key: (owner, asset, kind). The constructors only build valid pairs of owner
/// and kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountKey {
    owner: Owner,
    asset: AssetSymbol,
    kind: AccountKind,
}

impl AccountKey {
    /// `member`'s spendable `asset`.
    pub fn available(member: MemberId, asset: AssetSymbol) -> Self {
        Self {
            owner: Owner::Member(member),
            asset,
            kind: AccountKind::Available,
        }
    }

    /// `member`'s `asset` held for orders or withdrawals.
    pub fn locked(member: MemberId, asset: AssetSymbol) -> Self {
        Self {
            owner: Owner::Member(member),
            asset,
            kind: AccountKind::Locked,
        }
    }

    /// The platform's on-chain holdings of `asset`.
    pub fn hot_wallet(asset: AssetSymbol) -> Self {
        Self {
            owner: Owner::Platform,
            asset,
            kind: AccountKind::HotWallet,
        }
    }

    /// The platform's fee revenue in `asset`.
    pub fn fee_revenue(asset: AssetSymbol) -> Self {
        Self {
            owner: Owner::Platform,
            asset,
            kind: AccountKind::FeeRevenue,
        }
    }

    /// The platform's network fees paid on chain in `asset` (an expense).
    pub fn network_fees(asset: AssetSymbol) -> Self {
        Self {
            owner: Owner::Platform,
            asset,
            kind: AccountKind::NetworkFees,
        }
    }

    /// Builds a key from stored parts.
    ///
    /// Errors: [`LedgerError::OwnerDoesNotMatchKind`] for a member-owned kind without a member
    /// or a platform kind with one.
    pub fn new(owner: Owner, asset: AssetSymbol, kind: AccountKind) -> Result<Self, LedgerError> {
        if kind.is_member_owned() != matches!(owner, Owner::Member(_)) {
            return Err(LedgerError::OwnerDoesNotMatchKind { kind });
        }
        Ok(Self { owner, asset, kind })
    }

    /// The owner.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// The asset.
    pub fn asset(&self) -> &AssetSymbol {
        &self.asset
    }

    /// The kind.
    pub fn kind(&self) -> AccountKind {
        self.kind
    }
}

impl fmt::Display for AccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.owner {
            Owner::Platform => write!(f, "platform/{}/{}", self.asset, self.kind),
            Owner::Member(member) => write!(f, "member {member}/{}/{}", self.asset, self.kind),
        }
    }
}

/// One leg of a transfer: `amount` base units of the account's asset on `side`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    /// The account moved.
    pub account: AccountKey,
    /// Debit or credit.
    pub side: Side,
    /// Base units, greater than zero.
    pub amount: BaseUnits,
}

impl Leg {
    /// A debit of `amount` to `account`.
    pub fn debit(account: AccountKey, amount: BaseUnits) -> Self {
        Self {
            account,
            side: Side::Debit,
            amount,
        }
    }

    /// A credit of `amount` to `account`.
    pub fn credit(account: AccountKey, amount: BaseUnits) -> Self {
        Self {
            account,
            side: Side::Credit,
            amount,
        }
    }

    /// The entry amount as stored: positive for a debit, negative for a credit.
    pub fn signed_amount(&self) -> BigInt {
        let amount = numeric::to_bigint(&self.amount);
        match self.side {
            Side::Debit => amount,
            Side::Credit => -amount,
        }
    }
}

/// A balanced set of legs with an id, a kind (e.g. `"deposit"`) and the external reference
/// it answers to (e.g. the deposit id). (kind, reference) is unique in the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    id: Uuid,
    kind: String,
    reference: String,
    legs: Vec<Leg>,
}

impl Transfer {
    /// Kind of the transfer that credits a confirmed deposit.
    pub const DEPOSIT: &'static str = "deposit";

    /// Namespace of [`Transfer::deposit_transfer_id`]'s UUID v5 (fixed forever).
    const DEPOSIT_TRANSFER_NAMESPACE: Uuid =
        Uuid::from_u128(0x0a9d_5c7e_31b4_4f62_9e08_d4c2_7b1f_5a63);

    /// Checks and builds a transfer.
    ///
    /// Errors: [`LedgerError::InvalidTransferKind`] unless `kind` is 1-32 of `a-z` and `_`;
    /// [`LedgerError::InvalidReference`] unless `reference` is 1-200 bytes;
    /// [`LedgerError::TooFewLegs`] for fewer than two legs; [`LedgerError::ZeroAmount`] for a
    /// zero leg; [`LedgerError::Unbalanced`] if debits and credits differ for an asset.
    pub fn new(id: Uuid, kind: &str, reference: &str, legs: Vec<Leg>) -> Result<Self, LedgerError> {
        let kind_ok = (1..=32).contains(&kind.len())
            && kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        if !kind_ok {
            return Err(LedgerError::InvalidTransferKind {
                kind: kind.to_owned(),
            });
        }
        if !(1..=200).contains(&reference.len()) {
            return Err(LedgerError::InvalidReference {
                reference: reference.to_owned(),
            });
        }
        check_legs(&legs)?;
        Ok(Self {
            id,
            kind: kind.to_owned(),
            reference: reference.to_owned(),
            legs,
        })
    }

    /// The transfer that credits a confirmed deposit: debit the platform's hot wallet,
    /// credit the member's available balance, both by `amount`. Its id is derived from
    /// `deposit_id` ([`Transfer::deposit_transfer_id`]) and its reference is `deposit_id`.
    ///
    /// Errors: [`LedgerError::ZeroAmount`] if `amount` is zero.
    pub fn deposit(
        deposit_id: Uuid,
        member: MemberId,
        asset: AssetSymbol,
        amount: BaseUnits,
    ) -> Result<Self, LedgerError> {
        let legs = vec![
            Leg::debit(AccountKey::hot_wallet(asset.clone()), amount.clone()),
            Leg::credit(AccountKey::available(member, asset), amount),
        ];
        Self::new(
            Self::deposit_transfer_id(deposit_id),
            Self::DEPOSIT,
            &deposit_id.to_string(),
            legs,
        )
    }

    /// The id of the transfer that credits deposit `deposit_id` (UUID v5, stable).
    pub fn deposit_transfer_id(deposit_id: Uuid) -> Uuid {
        Uuid::new_v5(&Self::DEPOSIT_TRANSFER_NAMESPACE, deposit_id.as_bytes())
    }

    /// Kind of the transfer that locks a withdrawal's amount and fee (`available` → `locked`).
    pub const WITHDRAWAL_LOCK: &'static str = "withdrawal_lock";
    /// Kind of the transfer that settles a confirmed withdrawal (`locked` → hot wallet and
    /// fee revenue; hot wallet → network fees of the fee asset).
    pub const WITHDRAWAL_SETTLE: &'static str = "withdrawal_settle";
    /// Kind of the transfer that unlocks a failed withdrawal (`locked` → `available`).
    pub const WITHDRAWAL_UNLOCK: &'static str = "withdrawal_unlock";

    /// Namespace of [`Transfer::withdrawal_transfer_id`]'s UUID v5 (fixed forever).
    const WITHDRAWAL_TRANSFER_NAMESPACE: Uuid =
        Uuid::from_u128(0x5e2f_8a41_c7d3_4b09_a6e1_93f0_2d7c_4b18);

    /// Locks a withdrawal: debit the member's `available` and credit their `locked`, both by
    /// `amount + fee` (what the member pays). Reference: the withdrawal id.
    ///
    /// Errors: [`LedgerError::ZeroAmount`] if the total is zero;
    /// [`LedgerError::AmountOverflow`] if it exceeds 78 digits.
    pub fn withdrawal_lock(
        withdrawal_id: Uuid,
        member: MemberId,
        asset: AssetSymbol,
        amount: &BaseUnits,
        fee: &BaseUnits,
    ) -> Result<Self, LedgerError> {
        let total = checked_add(amount, fee)?;
        let legs = vec![
            Leg::debit(
                AccountKey::available(member.clone(), asset.clone()),
                total.clone(),
            ),
            Leg::credit(AccountKey::locked(member, asset), total),
        ];
        Self::withdrawal(Self::WITHDRAWAL_LOCK, withdrawal_id, legs)
    }

    /// Settles a confirmed withdrawal, the mirror image of a deposit credit: debit the
    /// member's `locked` by `amount + fee`, credit the platform's `hot_wallet` by `amount`
    /// (it left our custody) and its `fee_revenue` by `fee` (no fee leg when `fee` is zero).
    /// Books no network fee; see [`Transfer::withdrawal_settle_with_network_fee`].
    ///
    /// Errors: as [`Transfer::withdrawal_lock`].
    pub fn withdrawal_settle(
        withdrawal_id: Uuid,
        member: MemberId,
        asset: AssetSymbol,
        amount: &BaseUnits,
        fee: &BaseUnits,
    ) -> Result<Self, LedgerError> {
        Self::withdrawal_settle_with_network_fee(withdrawal_id, member, asset, amount, fee, None)
    }

    /// [`Transfer::withdrawal_settle`], plus, when `network_fee` is `Some((fee_asset, fee))`
    /// with a non-zero fee, the network fee the hot wallet paid on chain: debit the platform's
    /// `network_fees` (an expense) and credit its `hot_wallet`, both of `fee_asset` (the
    /// chain's native coin, e.g. ETH for an ERC-20 withdrawal) by the fee. Same transfer id,
    /// kind and reference: one settlement transfer per withdrawal.
    ///
    /// Errors: as [`Transfer::withdrawal_lock`].
    pub fn withdrawal_settle_with_network_fee(
        withdrawal_id: Uuid,
        member: MemberId,
        asset: AssetSymbol,
        amount: &BaseUnits,
        fee: &BaseUnits,
        network_fee: Option<(AssetSymbol, &BaseUnits)>,
    ) -> Result<Self, LedgerError> {
        let total = checked_add(amount, fee)?;
        let mut legs = vec![
            Leg::debit(AccountKey::locked(member, asset.clone()), total),
            Leg::credit(AccountKey::hot_wallet(asset.clone()), amount.clone()),
        ];
        if !fee.is_zero() {
            legs.push(Leg::credit(AccountKey::fee_revenue(asset), fee.clone()));
        }
        if let Some((fee_asset, network_fee)) = network_fee.filter(|(_, fee)| !fee.is_zero()) {
            legs.push(Leg::debit(
                AccountKey::network_fees(fee_asset.clone()),
                network_fee.clone(),
            ));
            legs.push(Leg::credit(
                AccountKey::hot_wallet(fee_asset),
                network_fee.clone(),
            ));
        }
        Self::withdrawal(Self::WITHDRAWAL_SETTLE, withdrawal_id, legs)
    }

    /// Unlocks a failed withdrawal: debit the member's `locked` and credit their `available`,
    /// both by `amount + fee`.
    ///
    /// Errors: as [`Transfer::withdrawal_lock`].
    pub fn withdrawal_unlock(
        withdrawal_id: Uuid,
        member: MemberId,
        asset: AssetSymbol,
        amount: &BaseUnits,
        fee: &BaseUnits,
    ) -> Result<Self, LedgerError> {
        let total = checked_add(amount, fee)?;
        let legs = vec![
            Leg::debit(
                AccountKey::locked(member.clone(), asset.clone()),
                total.clone(),
            ),
            Leg::credit(AccountKey::available(member, asset), total),
        ];
        Self::withdrawal(Self::WITHDRAWAL_UNLOCK, withdrawal_id, legs)
    }

    fn withdrawal(kind: &str, withdrawal_id: Uuid, legs: Vec<Leg>) -> Result<Self, LedgerError> {
        Self::new(
            Self::withdrawal_transfer_id(kind, withdrawal_id),
            kind,
            &withdrawal_id.to_string(),
            legs,
        )
    }

    /// The id of withdrawal `withdrawal_id`'s transfer of `kind` (UUID v5, stable).
    pub fn withdrawal_transfer_id(kind: &str, withdrawal_id: Uuid) -> Uuid {
        Uuid::new_v5(
            &Self::WITHDRAWAL_TRANSFER_NAMESPACE,
            format!("{kind}/{withdrawal_id}").as_bytes(),
        )
    }

    /// The transfer's id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The kind, e.g. `"deposit"`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The external reference, e.g. a deposit id.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// The legs, in the order given (at least two, balanced per asset).
    pub fn legs(&self) -> &[Leg] {
        &self.legs
    }
}

/// `a + b`, exactly.
///
/// Errors: [`LedgerError::AmountOverflow`] if the sum has more than 78 digits.
pub fn checked_add(a: &BaseUnits, b: &BaseUnits) -> Result<BaseUnits, LedgerError> {
    let sum = numeric::to_bigint(a) + numeric::to_bigint(b);
    sum.to_string()
        .parse()
        .map_err(|_| LedgerError::AmountOverflow {
            sum: sum.to_string(),
        })
}

/// At least two legs, none zero, and per asset the signed amounts sum to zero.
fn check_legs(legs: &[Leg]) -> Result<(), LedgerError> {
    if legs.len() < 2 {
        return Err(LedgerError::TooFewLegs { count: legs.len() });
    }
    let mut sums: BTreeMap<&AssetSymbol, BigInt> = BTreeMap::new();
    for leg in legs {
        if leg.amount.is_zero() {
            return Err(LedgerError::ZeroAmount {
                account: leg.account.to_string(),
            });
        }
        *sums.entry(leg.account.asset()).or_default() += leg.signed_amount();
    }
    match sums.into_iter().find(|(_, sum)| *sum != BigInt::ZERO) {
        Some((asset, sum)) => Err(LedgerError::Unbalanced {
            asset: asset.to_string(),
            debits_minus_credits: sum.to_string(),
        }),
        None => Ok(()),
    }
}

/// A broken ledger rule. These never succeed on retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// An asset symbol that is not 1-32 of `A-Za-z0-9._-`.
    #[error("invalid asset symbol {asset:?}")]
    InvalidAsset {
        /// The refused symbol.
        asset: String,
    },
    /// An account kind this version does not know.
    #[error("unknown account kind {kind:?}")]
    UnknownAccountKind {
        /// The stored kind.
        kind: String,
    },
    /// A member kind without a member, or a platform kind with one.
    #[error("account kind {kind} does not match its owner")]
    OwnerDoesNotMatchKind {
        /// The kind.
        kind: AccountKind,
    },
    /// A transfer kind that is not 1-32 of `a-z` and `_`.
    #[error("invalid transfer kind {kind:?}")]
    InvalidTransferKind {
        /// The refused kind.
        kind: String,
    },
    /// A reference that is empty or longer than 200 bytes.
    #[error("invalid transfer reference {reference:?}")]
    InvalidReference {
        /// The refused reference.
        reference: String,
    },
    /// A transfer needs at least two legs.
    #[error("a transfer needs at least two legs, got {count}")]
    TooFewLegs {
        /// How many legs it had.
        count: usize,
    },
    /// A leg of zero base units.
    #[error("zero amount on {account}")]
    ZeroAmount {
        /// The leg's account.
        account: String,
    },
    /// A sum of amounts that does not fit 78 digits.
    #[error("amount {sum} does not fit 78 digits")]
    AmountOverflow {
        /// The sum.
        sum: String,
    },
    /// Debits and credits differ for an asset.
    #[error("transfer does not balance in {asset}: debits - credits = {debits_minus_credits}")]
    Unbalanced {
        /// The asset.
        asset: String,
        /// Debits minus credits, in base units.
        debits_minus_credits: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str) -> MemberId {
        id.parse().expect("valid member id")
    }

    fn asset(symbol: &str) -> AssetSymbol {
        symbol.parse().expect("valid asset")
    }

    fn units(value: &str) -> BaseUnits {
        value.parse().expect("valid amount")
    }

    #[test]
    fn deposit_debits_hot_wallet_and_credits_member() {
        let deposit_id = Uuid::from_u128(7);
        let amount = units("340282366920938463463374607431768211457"); // 2^128 + 1
        let transfer = Transfer::deposit(deposit_id, member("alice"), asset("ETH"), amount.clone())
            .expect("balanced");
        assert_eq!(transfer.kind(), "deposit");
        assert_eq!(transfer.reference(), deposit_id.to_string());
        assert_eq!(transfer.id(), Transfer::deposit_transfer_id(deposit_id));
        let legs = transfer.legs();
        assert_eq!(
            legs[0],
            Leg::debit(AccountKey::hot_wallet(asset("ETH")), amount.clone())
        );
        assert_eq!(
            legs[1],
            Leg::credit(AccountKey::available(member("alice"), asset("ETH")), amount)
        );
        let sum: BigInt = legs.iter().map(Leg::signed_amount).sum();
        assert_eq!(sum, BigInt::ZERO);
    }

    #[test]
    fn withdrawal_transfers_balance_and_route_the_fee() {
        let id = Uuid::from_u128(9);
        let (amount, fee) = (units("1000"), units("25"));
        let lock = Transfer::withdrawal_lock(id, member("alice"), asset("BTC"), &amount, &fee)
            .expect("balanced");
        assert_eq!(
            lock.legs(),
            [
                Leg::debit(
                    AccountKey::available(member("alice"), asset("BTC")),
                    units("1025")
                ),
                Leg::credit(
                    AccountKey::locked(member("alice"), asset("BTC")),
                    units("1025")
                ),
            ]
        );
        let settle = Transfer::withdrawal_settle(id, member("alice"), asset("BTC"), &amount, &fee)
            .expect("balanced");
        assert_eq!(
            settle.legs(),
            [
                Leg::debit(
                    AccountKey::locked(member("alice"), asset("BTC")),
                    units("1025")
                ),
                Leg::credit(AccountKey::hot_wallet(asset("BTC")), units("1000")),
                Leg::credit(AccountKey::fee_revenue(asset("BTC")), units("25")),
            ]
        );
        let free = Transfer::withdrawal_settle(
            id,
            member("alice"),
            asset("BTC"),
            &amount,
            &BaseUnits::zero(),
        )
        .expect("balanced");
        assert_eq!(free.legs().len(), 2, "no zero fee leg");
        let erc20 = Transfer::withdrawal_settle_with_network_fee(
            id,
            member("alice"),
            asset("USDT"),
            &amount,
            &fee,
            Some((asset("ETH"), &units("21000"))),
        )
        .expect("balanced per asset");
        assert_eq!(
            erc20.id(),
            settle.id(),
            "one settlement transfer per withdrawal"
        );
        assert_eq!(
            erc20.legs()[3..],
            [
                Leg::debit(AccountKey::network_fees(asset("ETH")), units("21000")),
                Leg::credit(AccountKey::hot_wallet(asset("ETH")), units("21000")),
            ]
        );
        let zero_network_fee = Transfer::withdrawal_settle_with_network_fee(
            id,
            member("alice"),
            asset("BTC"),
            &amount,
            &fee,
            Some((asset("BTC"), &BaseUnits::zero())),
        )
        .expect("balanced");
        assert_eq!(zero_network_fee.legs().len(), 3, "no zero network fee legs");
        let unlock = Transfer::withdrawal_unlock(id, member("alice"), asset("BTC"), &amount, &fee)
            .expect("balanced");
        assert_eq!(unlock.kind(), Transfer::WITHDRAWAL_UNLOCK);
        assert_eq!(unlock.reference(), id.to_string());
        assert_ne!(lock.id(), settle.id());
        assert_ne!(settle.id(), unlock.id());
        let max = units(&"9".repeat(78));
        assert!(matches!(
            checked_add(&max, &units("1")),
            Err(LedgerError::AmountOverflow { .. })
        ));
    }

    #[test]
    fn refuses_unbalanced_zero_and_single_legs() {
        let alice = AccountKey::available(member("alice"), asset("BTC"));
        let hot = AccountKey::hot_wallet(asset("BTC"));
        let unbalanced = Transfer::new(
            Uuid::from_u128(1),
            "deposit",
            "r",
            vec![
                Leg::debit(hot.clone(), units("5")),
                Leg::credit(alice.clone(), units("4")),
            ],
        );
        assert_eq!(
            unbalanced,
            Err(LedgerError::Unbalanced {
                asset: "BTC".into(),
                debits_minus_credits: "1".into()
            })
        );
        let zero = Transfer::new(
            Uuid::from_u128(1),
            "deposit",
            "r",
            vec![
                Leg::debit(hot.clone(), units("0")),
                Leg::credit(alice.clone(), units("0")),
            ],
        );
        assert!(matches!(zero, Err(LedgerError::ZeroAmount { .. })));
        let single = Transfer::new(
            Uuid::from_u128(1),
            "deposit",
            "r",
            vec![Leg::debit(hot, units("1"))],
        );
        assert_eq!(single, Err(LedgerError::TooFewLegs { count: 1 }));
        assert!(matches!(
            Transfer::new(Uuid::from_u128(1), "Deposit!", "r", vec![]),
            Err(LedgerError::InvalidTransferKind { .. })
        ));
    }

    #[test]
    fn balances_per_asset_not_across_assets() {
        // 5 BTC debited against 5 ETH credited is not balanced, although the numbers match.
        let legs = vec![
            Leg::debit(AccountKey::hot_wallet(asset("BTC")), units("5")),
            Leg::credit(
                AccountKey::available(member("bob"), asset("ETH")),
                units("5"),
            ),
        ];
        assert!(matches!(
            Transfer::new(Uuid::from_u128(2), "trade", "t1", legs),
            Err(LedgerError::Unbalanced { .. })
        ));
        // A trade: bob pays 3 ETH for 1 BTC from carol, each side balanced.
        let legs = vec![
            Leg::debit(AccountKey::locked(member("bob"), asset("ETH")), units("3")),
            Leg::credit(
                AccountKey::available(member("carol"), asset("ETH")),
                units("3"),
            ),
            Leg::debit(
                AccountKey::locked(member("carol"), asset("BTC")),
                units("1"),
            ),
            Leg::credit(
                AccountKey::available(member("bob"), asset("BTC")),
                units("1"),
            ),
        ];
        assert!(Transfer::new(Uuid::from_u128(3), "trade", "t2", legs).is_ok());
    }

    #[test]
    fn account_kinds_round_trip_and_match_owners() {
        for kind in AccountKind::ALL {
            assert_eq!(kind.as_str().parse::<AccountKind>(), Ok(kind));
        }
        assert_eq!(AccountKind::HotWallet.normal_side(), Side::Debit);
        assert_eq!(AccountKind::NetworkFees.normal_side(), Side::Debit);
        assert!(!AccountKind::NetworkFees.is_member_owned());
        assert_eq!(AccountKind::Available.normal_side(), Side::Credit);
        assert!(AccountKey::new(Owner::Platform, asset("ETH"), AccountKind::Available).is_err());
        assert!(
            AccountKey::new(
                Owner::Member(member("a")),
                asset("ETH"),
                AccountKind::HotWallet
            )
            .is_err()
        );
        assert!("E TH".parse::<AssetSymbol>().is_err());
    }
}
