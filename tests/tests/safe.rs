//! The EVM hot wallet's Safe transactions (`coinhub_custody::safe`) against a real Safe
//! v1.5.0 on a real anvil: our SafeTx hash is the contract's, two owner signatures move ETH
//! and ERC-20 tokens exactly, and one signature or a non-owner's signature moves nothing.
//!
//! Keys: A from the public BIP39 vector "zoo … wrong" (a stand-in for the hot key, which
//! in the stack comes from OpenBao), B and C from the harness's [`KEY_B_WORDS`] and
//! [`KEY_C_WORDS`]. Each key's Safe owner is its EVM account's `1/0`; key C's is derived
//! from its account xpub alone. The executor, which submits `execTransaction` and pays gas,
//! is A's account `2/0`, funded from an anvil dev account.

use alloy::primitives::{Address, B256, U256, address};
use coinhub_custody::derivation::{
    EXECUTOR_BRANCH, EvmPrivateKey, MasterKey, SAFE_OWNER_BRANCH, evm_address_at,
};
use coinhub_custody::mnemonic::Mnemonic;
use coinhub_custody::safe::{
    SafeTransfer, SafeTx, describe_safe_tx, domain_separator, exec_transaction_calldata,
    pack_signatures, recover_owner, safe_tx_hash, sign_safe_tx,
};
use coinhub_tests::anvil::{ANVIL_CHAIN_ID, AnvilNode, ChainClient};
use coinhub_tests::safe::{
    deploy_safe, exec_transaction, safe_domain_separator, safe_nonce, safe_owners,
    safe_transaction_hash,
};
use coinhub_tests::stack::{DECIMALS, KEY_B_WORDS, KEY_C_WORDS, TOKEN, to_base_units};
use coinhub_tests::{TestEnv, deploy_erc20, run_test};

/// Public BIP39 test vector (entropy `ff…ff`) standing in for hot key A (never for real
/// funds); "abandon … about" is already key B.
const KEY_A_WORDS: &str = "zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo wrong";

/// Recipient of the withdrawals: a fresh address with no ETH and no tokens.
const RECIPIENT: Address = address!("0x00000000000000000000000000000000C0FFee01");

/// The master key of test mnemonic `words` (no passphrase).
fn master(words: &str) -> anyhow::Result<MasterKey> {
    Ok(MasterKey::from_seed(&Mnemonic::parse(words)?.to_seed())?)
}

/// One test's chain: anvil, a funded 2-of-3 Safe, an ERC-20 and the executor.
struct Fixture {
    /// Kept alive for the test; killed on drop.
    _anvil: AnvilNode,
    /// Signs as anvil's dev accounts.
    chain: ChainClient,
    /// Signs as the executor, A's `2/0`.
    executor: ChainClient,
    /// Safe owner keys of A, B (C's stays offline: only its owner address is known).
    owner_a: EvmPrivateKey,
    owner_b: EvmPrivateKey,
    /// Key A's deposit key `0/0`: not an owner.
    stranger: EvmPrivateKey,
    safe: Address,
    token: Address,
}

/// ETH the Safe is funded with.
fn safe_eth() -> U256 {
    to_base_units("5", DECIMALS)
}

/// Tokens the Safe is funded with.
fn safe_tokens() -> U256 {
    to_base_units("1000", DECIMALS)
}

/// Starts anvil; derives owners (C's from its xpub alone) and the executor; deploys the
/// Safe, checks its owners; funds the executor with 10 ETH, the Safe with [`safe_eth`] and
/// [`safe_tokens`] of a fresh ERC-20.
async fn fixture(env: &TestEnv) -> anyhow::Result<Fixture> {
    let anvil = AnvilNode::start(env).await?;
    let chain = anvil.client()?;

    let (a, b, c) = (
        master(KEY_A_WORDS)?,
        master(KEY_B_WORDS)?,
        master(KEY_C_WORDS)?,
    );
    let owner_a = a.evm_key_at(SAFE_OWNER_BRANCH, 0)?;
    let owner_b = b.evm_key_at(SAFE_OWNER_BRANCH, 0)?;
    let owner_c = evm_address_at(&c.evm_account_xpub()?, SAFE_OWNER_BRANCH, 0)?;
    assert_eq!(
        owner_c,
        c.evm_key_at(SAFE_OWNER_BRANCH, 0)?.address(),
        "C's owner from its xpub is the address of its key"
    );
    let executor_key = a.evm_key_at(EXECUTOR_BRANCH, 0)?;
    let stranger = a.evm_private_key(0)?;

    let owners = [owner_a.address(), owner_b.address(), owner_c];
    let safe = deploy_safe(chain.provider(), owners).await?;
    let mut on_chain = safe_owners(chain.provider(), safe).await?;
    on_chain.sort();
    let mut expected = owners.to_vec();
    expected.sort();
    assert_eq!(on_chain, expected);
    assert!(!on_chain.contains(&executor_key.address()));
    assert!(!on_chain.contains(&stranger.address()));

    let executor = ChainClient::connect(
        chain.rpc_url(),
        &[B256::from(*executor_key.expose_secret())],
    )?;
    chain
        .send_eth(0, executor_key.address(), to_base_units("10", DECIMALS))
        .await?;

    let token = deploy_erc20(
        chain.provider(),
        "Test Token",
        TOKEN,
        to_base_units("1000000", DECIMALS),
        chain.account(0),
    )
    .await?;
    chain.send_eth(0, safe, safe_eth()).await?;
    chain.send_erc20(token, 0, safe, safe_tokens()).await?;

    Ok(Fixture {
        _anvil: anvil,
        chain,
        executor,
        owner_a,
        owner_b,
        stranger,
        safe,
        token,
    })
}

impl Fixture {
    /// `execTransaction` calldata of `tx` signed by `signers` (their signatures packed by
    /// owner address).
    fn signed_calldata(&self, tx: &SafeTx, signers: &[&EvmPrivateKey]) -> alloy::primitives::Bytes {
        let hash = safe_tx_hash(tx, ANVIL_CHAIN_ID, self.safe);
        let signatures: Vec<_> = signers
            .iter()
            .map(|key| (key.address(), sign_safe_tx(key, hash)))
            .collect();
        exec_transaction_calldata(tx, pack_signatures(&signatures))
    }

    async fn nonce(&self) -> anyhow::Result<U256> {
        safe_nonce(self.chain.provider(), self.safe).await
    }

    async fn eth(&self, owner: Address) -> anyhow::Result<U256> {
        Ok(alloy::providers::Provider::get_balance(self.chain.provider(), owner).await?)
    }

    async fn tokens(&self, owner: Address) -> anyhow::Result<U256> {
        self.chain.erc20_balance(self.token, owner).await
    }
}

/// Asserts `outcome` failed with the Safe error code `code` (e.g. `GS020`) in its message.
fn assert_safe_error<T: std::fmt::Debug>(outcome: anyhow::Result<T>, code: &str) {
    let error = outcome.expect_err("the Safe refuses the transaction");
    let text = format!("{error:#}");
    assert!(text.contains(code), "expected {code}, got: {text}");
}

/// Proves that `safe_tx_hash` and `domain_separator` compute exactly what the deployed Safe
/// computes.
///
/// Steps: deploy and fund the Safe; compare our domain separator with `domainSeparator()`;
/// for a native transfer, an ERC-20 transfer (at the current and a later nonce) and a
/// transaction with every field non-zero (DELEGATECALL, gas refund, a token and receiver —
/// `getTransactionHash` hashes whatever it is given), compare our hash with
/// `getTransactionHash`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safe_tx_hash_matches_contract() {
    run_test("safe_tx_hash_matches_contract", |env| async move {
        let f = fixture(&env).await?;
        let provider = f.chain.provider();
        assert_eq!(
            safe_domain_separator(provider, f.safe).await?,
            domain_separator(ANVIL_CHAIN_ID, f.safe)
        );
        let nonce = f.nonce().await?;
        assert_eq!(nonce, U256::ZERO);
        let every_field = SafeTx {
            to: f.token,
            value: U256::from(3),
            data: vec![0x44; 37].into(),
            operation: 1,
            safe_tx_gas: U256::from(5),
            base_gas: U256::from(6),
            gas_price: U256::from(7),
            gas_token: f.token,
            refund_receiver: RECIPIENT,
            nonce: U256::from(10),
        };
        let txs = [
            SafeTx::native_transfer(RECIPIENT, U256::from(1), nonce),
            SafeTx::erc20_transfer(f.token, RECIPIENT, U256::from(2), nonce),
            SafeTx::erc20_transfer(f.token, RECIPIENT, U256::MAX, U256::from(7)),
            every_field,
        ];
        for tx in &txs {
            assert_eq!(
                safe_tx_hash(tx, ANVIL_CHAIN_ID, f.safe),
                safe_transaction_hash(provider, f.safe, tx).await?,
                "{tx:?}"
            );
        }
        Ok(())
    })
    .await;
}

/// Proves that signatures of owners A and B, submitted by the executor, move ETH and
/// ERC-20 tokens out of the Safe exactly, consume one nonce each, and cannot be replayed.
///
/// Steps: deploy and fund the Safe; the cosigner's view (`describe_safe_tx`) of each
/// transfer is what was built; execute 1.25 ETH to a fresh recipient with A and B signing
/// (given in B, A order: packing sorts them); check the recipient got exactly 1.25 ETH, the
/// Safe lost exactly that (the executor paid the gas), nonce 0 → 1; send the same calldata
/// again and check it is refused (`GS026`: at nonce 1 the signatures recover to
/// non-owners); execute 123.456 tokens at nonce 1 and check token balances to the base unit
/// and nonce 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_owners_move_eth_and_tokens() {
    run_test("two_owners_move_eth_and_tokens", |env| async move {
        let f = fixture(&env).await?;

        let amount_wei = to_base_units("1.25", DECIMALS);
        let native = SafeTx::native_transfer(RECIPIENT, amount_wei, f.nonce().await?);
        assert_eq!(
            describe_safe_tx(&native)?,
            SafeTransfer {
                token: None,
                destination: RECIPIENT,
                amount: amount_wei
            }
        );
        let calldata = f.signed_calldata(&native, &[&f.owner_b, &f.owner_a]);
        exec_transaction(&f.executor, f.safe, calldata.clone()).await?;
        assert_eq!(f.eth(RECIPIENT).await?, amount_wei);
        assert_eq!(f.eth(f.safe).await?, safe_eth() - amount_wei);
        assert_eq!(f.nonce().await?, U256::from(1));

        assert_safe_error(
            exec_transaction(&f.executor, f.safe, calldata).await,
            "GS026",
        );
        assert_eq!(
            f.eth(RECIPIENT).await?,
            amount_wei,
            "a replay moves nothing"
        );
        assert_eq!(f.nonce().await?, U256::from(1));

        let amount = to_base_units("123.456", DECIMALS);
        let transfer = SafeTx::erc20_transfer(f.token, RECIPIENT, amount, f.nonce().await?);
        assert_eq!(
            describe_safe_tx(&transfer)?,
            SafeTransfer {
                token: Some(f.token),
                destination: RECIPIENT,
                amount
            }
        );
        let calldata = f.signed_calldata(&transfer, &[&f.owner_a, &f.owner_b]);
        exec_transaction(&f.executor, f.safe, calldata).await?;
        assert_eq!(f.tokens(RECIPIENT).await?, amount);
        assert_eq!(f.tokens(f.safe).await?, safe_tokens() - amount);
        assert_eq!(f.eth(f.safe).await?, safe_eth() - amount_wei);
        assert_eq!(f.nonce().await?, U256::from(2));
        Ok(())
    })
    .await;
}

/// Proves that one owner's signature, or two where one is not an owner's, moves nothing.
///
/// Steps: deploy and fund the Safe; submit an ETH transfer signed by A only and check the
/// Safe refuses it with `GS020` (signatures too short for the threshold); submit it signed
/// by A and A's deposit key (not an owner) and check `recover_owner` names a non-owner and
/// the Safe refuses it with `GS026`; submit it with A's signature twice and check `GS026`;
/// the recipient's and the Safe's balances and the Safe's nonce are unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_signature_or_non_owner_is_refused() {
    run_test("one_signature_or_non_owner_is_refused", |env| async move {
        let f = fixture(&env).await?;
        let tx = SafeTx::native_transfer(RECIPIENT, U256::from(1_000), f.nonce().await?);

        let one = f.signed_calldata(&tx, &[&f.owner_a]);
        assert_safe_error(exec_transaction(&f.executor, f.safe, one).await, "GS020");

        let hash = safe_tx_hash(&tx, ANVIL_CHAIN_ID, f.safe);
        let stranger_signature = sign_safe_tx(&f.stranger, hash);
        let signer = recover_owner(hash, &stranger_signature)?;
        assert_eq!(signer, f.stranger.address());
        assert!(
            !safe_owners(f.chain.provider(), f.safe)
                .await?
                .contains(&signer),
            "the cosigner sees the signer is not an owner"
        );
        let with_stranger = f.signed_calldata(&tx, &[&f.owner_a, &f.stranger]);
        assert_safe_error(
            exec_transaction(&f.executor, f.safe, with_stranger).await,
            "GS026",
        );

        let twice = f.signed_calldata(&tx, &[&f.owner_a, &f.owner_a]);
        assert_safe_error(exec_transaction(&f.executor, f.safe, twice).await, "GS026");

        assert_eq!(f.eth(RECIPIENT).await?, U256::ZERO);
        assert_eq!(f.eth(f.safe).await?, safe_eth());
        assert_eq!(f.tokens(f.safe).await?, safe_tokens());
        assert_eq!(f.nonce().await?, U256::ZERO);
        Ok(())
    })
    .await;
}
