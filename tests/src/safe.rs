//! A real Safe (v1.5.0) on the test chain: the `SafeL2` singleton and `SafeProxyFactory`
//! deployed from `@safe-global/safe-smart-account`'s published artifacts, and a 2-of-3
//! proxy created through the factory exactly as on a live chain; plus reads of its state and
//! `execTransaction` submission.

use std::time::Duration;

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::sol;
use alloy::sol_types::SolCall;
use anyhow::Context;
use coinhub_custody::safe::SafeTx;

use crate::anvil::ChainClient;
use crate::artifact::deploy_artifact;
use crate::paths;

/// Signatures a Safe deployed by [`deploy_safe`] needs (2-of-3).
pub const SAFE_THRESHOLD: u64 = 2;

sol! {
    /// The part of `Safe.sol` v1.5.0 the tests use (`Enum.Operation` is `uint8` in the ABI).
    // The generated `getTransactionHash` and `setup` methods take the contract's arguments.
    #[allow(clippy::too_many_arguments)]
    #[sol(rpc)]
    interface ISafe {
        /// Initializes a proxy: owners, threshold, optional module setup call, fallback
        /// handler and deployment payment.
        function setup(
            address[] calldata _owners,
            uint256 _threshold,
            address to,
            bytes calldata data,
            address fallbackHandler,
            address paymentToken,
            uint256 payment,
            address paymentReceiver
        ) external;
        /// The nonce the next executed transaction must carry.
        function nonce() external view returns (uint256);
        /// The owners, in the Safe's linked-list order.
        function getOwners() external view returns (address[] memory);
        /// Signatures required to execute.
        function getThreshold() external view returns (uint256);
        /// EIP-712 domain separator (chain id and the Safe's address).
        function domainSeparator() external view returns (bytes32);
        /// `"1.5.0"`.
        function VERSION() external view returns (string memory);
        /// The EIP-712 hash owners sign for these fields.
        function getTransactionHash(
            address to,
            uint256 value,
            bytes calldata data,
            uint8 operation,
            uint256 safeTxGas,
            uint256 baseGas,
            uint256 gasPrice,
            address gasToken,
            address refundReceiver,
            uint256 _nonce
        ) external view returns (bytes32);
        /// Emitted when an executed transaction's inner call succeeded.
        event ExecutionSuccess(bytes32 indexed txHash, uint256 payment);
        /// Emitted when an executed transaction's inner call failed (nonce still used).
        event ExecutionFailure(bytes32 indexed txHash, uint256 payment);
    }

    /// The part of `SafeProxyFactory.sol` v1.5.0 the tests use.
    #[sol(rpc)]
    interface ISafeProxyFactory {
        /// Creates a proxy of `_singleton` with CREATE2 (salt from `initializer` and
        /// `saltNonce`) and calls it with `initializer`.
        function createProxyWithNonce(address _singleton, bytes memory initializer, uint256 saltNonce)
            external
            returns (address proxy);
        /// Emitted for every proxy created.
        event ProxyCreation(address indexed proxy, address singleton);
    }
}

/// The Safe contracts of one test chain.
#[derive(Debug, Clone, Copy)]
pub struct SafeContracts {
    /// The `SafeL2` singleton (master copy) every proxy delegates to.
    pub singleton: Address,
    /// The `SafeProxyFactory`.
    pub factory: Address,
}

/// Deploys the `SafeL2` singleton and the `SafeProxyFactory` from the provider's default
/// signer.
///
/// Errors: an artifact is missing (see [`paths::safe_artifact`]), or a deployment fails.
pub async fn deploy_safe_contracts(provider: &DynProvider) -> anyhow::Result<SafeContracts> {
    let singleton =
        deploy_artifact(provider, &paths::safe_artifact("SafeL2.sol/SafeL2")?, &[]).await?;
    let factory = deploy_artifact(
        provider,
        &paths::safe_artifact("proxies/SafeProxyFactory.sol/SafeProxyFactory")?,
        &[],
    )
    .await?;
    Ok(SafeContracts { singleton, factory })
}

/// Creates a 2-of-3 Safe proxy owned by `owners` through `contracts.factory`
/// (`createProxyWithNonce(singleton, setup(owners, 2, 0, 0x, 0, 0, 0, 0), salt_nonce)`) and
/// returns its address, read from the factory's `ProxyCreation` event and checked against
/// the proxy's `getOwners()` and `getThreshold()`.
///
/// Errors: the transaction fails or reverts (e.g. the same owners and salt twice), or the
/// new Safe does not have exactly these owners and threshold.
pub async fn create_safe(
    provider: &DynProvider,
    contracts: SafeContracts,
    owners: [Address; 3],
    salt_nonce: U256,
) -> anyhow::Result<Address> {
    let initializer = ISafe::setupCall {
        _owners: owners.to_vec(),
        _threshold: U256::from(SAFE_THRESHOLD),
        to: Address::ZERO,
        data: Bytes::new(),
        fallbackHandler: Address::ZERO,
        paymentToken: Address::ZERO,
        payment: U256::ZERO,
        paymentReceiver: Address::ZERO,
    }
    .abi_encode();
    let factory = ISafeProxyFactory::new(contracts.factory, provider);
    let receipt = factory
        .createProxyWithNonce(contracts.singleton, initializer.into(), salt_nonce)
        .send()
        .await
        .context("sending createProxyWithNonce")?
        .get_receipt()
        .await?;
    anyhow::ensure!(
        receipt.status(),
        "createProxyWithNonce {} reverted",
        receipt.transaction_hash
    );
    let created = receipt
        .decoded_log::<ISafeProxyFactory::ProxyCreation>()
        .context("createProxyWithNonce emitted no ProxyCreation")?;
    anyhow::ensure!(
        created.singleton == contracts.singleton,
        "proxy created for singleton {}, not {}",
        created.singleton,
        contracts.singleton
    );
    let safe = created.proxy;

    let mut expected = owners.to_vec();
    let mut actual = safe_owners(provider, safe).await?;
    expected.sort();
    actual.sort();
    anyhow::ensure!(
        actual == expected,
        "safe {safe} has owners {actual:?}, expected {expected:?}"
    );
    let threshold = safe_threshold(provider, safe).await?;
    anyhow::ensure!(
        threshold == U256::from(SAFE_THRESHOLD),
        "safe {safe} has threshold {threshold}, expected {SAFE_THRESHOLD}"
    );
    Ok(safe)
}

/// Deploys the Safe contracts and a 2-of-3 Safe owned by `owners` (salt nonce 0), from the
/// provider's default signer; returns the Safe's (proxy's) address.
///
/// Errors: see [`deploy_safe_contracts`] and [`create_safe`].
pub async fn deploy_safe(provider: &DynProvider, owners: [Address; 3]) -> anyhow::Result<Address> {
    let contracts = deploy_safe_contracts(provider).await?;
    create_safe(provider, contracts, owners, U256::ZERO).await
}

/// The Safe's `nonce()`.
pub async fn safe_nonce(provider: &DynProvider, safe: Address) -> anyhow::Result<U256> {
    Ok(ISafe::new(safe, provider).nonce().call().await?)
}

/// The Safe's `getOwners()`.
pub async fn safe_owners(provider: &DynProvider, safe: Address) -> anyhow::Result<Vec<Address>> {
    Ok(ISafe::new(safe, provider).getOwners().call().await?)
}

/// The Safe's `getThreshold()`.
pub async fn safe_threshold(provider: &DynProvider, safe: Address) -> anyhow::Result<U256> {
    Ok(ISafe::new(safe, provider).getThreshold().call().await?)
}

/// The Safe's `domainSeparator()`.
pub async fn safe_domain_separator(provider: &DynProvider, safe: Address) -> anyhow::Result<B256> {
    Ok(ISafe::new(safe, provider).domainSeparator().call().await?)
}

/// The Safe's own `getTransactionHash(...)` of `tx` (all ten fields, `tx.nonce` included).
pub async fn safe_transaction_hash(
    provider: &DynProvider,
    safe: Address,
    tx: &SafeTx,
) -> anyhow::Result<B256> {
    Ok(ISafe::new(safe, provider)
        .getTransactionHash(
            tx.to,
            tx.value,
            tx.data.clone(),
            tx.operation,
            tx.safe_tx_gas,
            tx.base_gas,
            tx.gas_price,
            tx.gas_token,
            tx.refund_receiver,
            tx.nonce,
        )
        .call()
        .await?)
}

/// How long [`exec_transaction`] waits for its receipt.
pub const EXEC_RECEIPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Submits `calldata` (from [`coinhub_custody::safe::exec_transaction_calldata`]) to `safe`
/// from `executor`'s account 0, which pays the gas, and returns the mined receipt after
/// checking the Safe reported `ExecutionSuccess`.
///
/// The call is simulated first (`eth_call`), so a Safe refusal comes back as an error naming
/// its code (`GS020`, `GS026`, ...) without a transaction; the nonce is then read from the
/// node and set explicitly, so a refused attempt never leaves a gap in the executor's nonces.
///
/// Errors: the Safe refuses the call, the transaction reverts or is not mined within
/// [`EXEC_RECEIPT_TIMEOUT`], or the inner call failed (`ExecutionFailure`).
pub async fn exec_transaction(
    executor: &ChainClient,
    safe: Address,
    calldata: Bytes,
) -> anyhow::Result<TransactionReceipt> {
    let provider = executor.provider();
    let from = executor.account(0);
    let tx = TransactionRequest::default()
        .with_from(from)
        .with_to(safe)
        .with_input(calldata);
    provider
        .call(tx.clone())
        .await
        .context("simulating execTransaction")?;
    let nonce = provider.get_transaction_count(from).await?;
    let receipt = provider
        .send_transaction(tx.with_nonce(nonce))
        .await
        .context("sending execTransaction")?
        .with_timeout(Some(EXEC_RECEIPT_TIMEOUT))
        .get_receipt()
        .await
        .context("waiting for the execTransaction receipt")?;
    anyhow::ensure!(
        receipt.status(),
        "execTransaction {} reverted",
        receipt.transaction_hash
    );
    anyhow::ensure!(
        receipt.decoded_log::<ISafe::ExecutionSuccess>().is_some(),
        "execTransaction {} emitted no ExecutionSuccess",
        receipt.transaction_hash
    );
    Ok(receipt)
}
