//! A real ERC-20 on the test chain: OpenZeppelin 4.9's `ERC20PresetFixedSupply`, deployed
//! from its published build artifact (no Solidity compiler needed).

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, Bytes, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::TransactionRequest;
use alloy::sol;
use alloy::sol_types::SolValue;
use anyhow::Context;

use crate::paths;

sol! {
    /// The part of ERC-20 the tests use.
    #[sol(rpc)]
    interface IERC20 {
        /// Moves `amount` base units from the caller to `to`.
        function transfer(address to, uint256 amount) external returns (bool);
        /// Balance of `owner` in base units.
        function balanceOf(address owner) external view returns (uint256);
        /// Emitted by every transfer (and the mint, from the zero address).
        event Transfer(address indexed from, address indexed to, uint256 value);
    }
}

/// Deploys `ERC20PresetFixedSupply(name, symbol, supply, owner)` (18 decimals; the whole
/// `supply`, in base units, is minted to `owner`) from the provider's default signer and
/// returns the contract's address.
///
/// Errors: the artifact is missing (see [`paths::openzeppelin_artifact`]), or the
/// deployment fails or reverts.
pub async fn deploy_erc20(
    provider: &DynProvider,
    name: &str,
    symbol: &str,
    supply: U256,
    owner: Address,
) -> anyhow::Result<Address> {
    let artifact_path = paths::openzeppelin_artifact("ERC20PresetFixedSupply")?;
    let artifact: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&artifact_path)
            .with_context(|| format!("reading {}", artifact_path.display()))?,
    )
    .with_context(|| format!("parsing {}", artifact_path.display()))?;
    let bytecode: Bytes = artifact["bytecode"]
        .as_str()
        .context("artifact has no bytecode")?
        .parse()
        .context("artifact bytecode is not hex")?;
    let constructor_args = (name.to_owned(), symbol.to_owned(), supply, owner).abi_encode_params();
    let mut code = bytecode.to_vec();
    code.extend_from_slice(&constructor_args);
    let receipt = provider
        .send_transaction(TransactionRequest::default().with_deploy_code(code))
        .await
        .context("sending the ERC-20 deployment")?
        .get_receipt()
        .await?;
    anyhow::ensure!(
        receipt.status(),
        "ERC-20 deployment {} reverted",
        receipt.transaction_hash
    );
    receipt
        .contract_address
        .context("deployment receipt has no contract address")
}
