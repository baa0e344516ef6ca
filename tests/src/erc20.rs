//! A real ERC-20 on the test chain: OpenZeppelin 4.9's `ERC20PresetFixedSupply`, deployed
//! from its published build artifact (no Solidity compiler needed).

use alloy::primitives::{Address, U256};
use alloy::providers::DynProvider;
use alloy::sol;
use alloy::sol_types::SolValue;

use crate::artifact::deploy_artifact;
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
/// deployment fails or reverts (see [`deploy_artifact`]).
pub async fn deploy_erc20(
    provider: &DynProvider,
    name: &str,
    symbol: &str,
    supply: U256,
    owner: Address,
) -> anyhow::Result<Address> {
    let artifact_path = paths::openzeppelin_artifact("ERC20PresetFixedSupply")?;
    let constructor_args = (name.to_owned(), symbol.to_owned(), supply, owner).abi_encode_params();
    deploy_artifact(provider, &artifact_path, &constructor_args).await
}
