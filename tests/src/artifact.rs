//! Contracts deployed from published build artifacts (`{abi, bytecode, ...}` JSON from npm
//! packages), so the tests need no Solidity compiler.

use std::path::Path;

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, Bytes};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::TransactionRequest;
use anyhow::Context;

/// The creation bytecode (`bytecode`) of the artifact at `artifact_path`.
///
/// Errors: the file is missing or not JSON, or has no hex `bytecode`.
pub fn creation_bytecode(artifact_path: &Path) -> anyhow::Result<Bytes> {
    let artifact: serde_json::Value = serde_json::from_slice(
        &std::fs::read(artifact_path)
            .with_context(|| format!("reading {}", artifact_path.display()))?,
    )
    .with_context(|| format!("parsing {}", artifact_path.display()))?;
    let bytecode: Bytes = artifact["bytecode"]
        .as_str()
        .with_context(|| format!("{} has no bytecode", artifact_path.display()))?
        .parse()
        .with_context(|| format!("{} bytecode is not hex", artifact_path.display()))?;
    anyhow::ensure!(
        !bytecode.is_empty(),
        "{} has empty bytecode (an interface or abstract contract?)",
        artifact_path.display()
    );
    Ok(bytecode)
}

/// Deploys the contract of the artifact at `artifact_path` from the provider's default
/// signer, with `constructor_args` (ABI-encoded, may be empty) appended to its creation
/// bytecode, and returns the contract's address.
///
/// Errors: the artifact cannot be read (see [`creation_bytecode`]), or the deployment fails
/// or reverts.
pub async fn deploy_artifact(
    provider: &DynProvider,
    artifact_path: &Path,
    constructor_args: &[u8],
) -> anyhow::Result<Address> {
    let mut code = creation_bytecode(artifact_path)?.to_vec();
    code.extend_from_slice(constructor_args);
    let name = artifact_path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default();
    let receipt = provider
        .send_transaction(TransactionRequest::default().with_deploy_code(code))
        .await
        .with_context(|| format!("sending the {name} deployment"))?
        .get_receipt()
        .await?;
    anyhow::ensure!(
        receipt.status(),
        "{name} deployment {} reverted",
        receipt.transaction_hash
    );
    receipt
        .contract_address
        .with_context(|| format!("{name} deployment receipt has no contract address"))
}
