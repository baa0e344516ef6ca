//! A real anvil node per test, and a small client that sends ETH and ERC-20 transfers from
//! anvil's funded accounts, mines blocks and rewrites recent history (reorgs).

use std::time::Duration;

use alloy::eips::eip2718::Encodable2718;
use alloy::network::{EthereumWallet, NetworkTransactionBuilder, TransactionBuilder};
use alloy::primitives::{Address, B256, Bytes, TxHash, U256};
use alloy::providers::ext::AnvilApi;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use anyhow::Context;

use crate::env::TestEnv;
use crate::erc20::IERC20;
use crate::paths;
use crate::process::ChildProcess;
use crate::wait::{free_port, wait_until};

/// Chain id of anvil's default chain.
pub const ANVIL_CHAIN_ID: u64 = 31_337;
/// Private key of account 0 of anvil's default mnemonic
/// (`test test test test test test test test test test test junk`, `m/44'/60'/0'/0/0`,
/// address `0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266`), funded with 10 000 ETH.
pub const ANVIL_KEY_0: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
/// Genesis timestamp given to every test node, so that a node restarted on the same port
/// has the same genesis block (and so the same block 0 hash) as before.
pub const GENESIS_TIMESTAMP: u64 = 1_700_000_000;

/// An anvil child process on a free port (automine on: every transaction is mined in its
/// own block at once; more blocks come from [`ChainClient::mine`]).
pub struct AnvilNode {
    process: ChildProcess,
    port: u16,
    keys: Vec<B256>,
}

impl AnvilNode {
    /// Starts anvil on a free port and waits until it answers `eth_chainId` (on another
    /// port if another process took the first between its choice and anvil's bind).
    pub async fn start(env: &TestEnv) -> anyhow::Result<Self> {
        let mut attempt = 1;
        loop {
            match Self::start_on(env, "anvil", free_port()?).await {
                Err(error)
                    if attempt < 3 && format!("{error:#}").contains("died while starting") =>
                {
                    tracing::warn!(%error, attempt, "anvil did not start; trying another port");
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    /// Starts anvil named `name` on `port`.
    pub async fn start_on(env: &TestEnv, name: &str, port: u16) -> anyhow::Result<Self> {
        let anvil = paths::anvil()?;
        let args = [
            "--host".to_owned(),
            "127.0.0.1".to_owned(),
            "--port".to_owned(),
            port.to_string(),
            "--timestamp".to_owned(),
            GENESIS_TIMESTAMP.to_string(),
        ];
        let process = ChildProcess::new(env, name, &anvil, args)
            .env("NO_COLOR", "1")
            .env("FOUNDRY_DISABLE_NIGHTLY_WARNING", "1");
        let mut node = Self {
            process,
            port,
            keys: Vec::new(),
        };
        node.process.spawn()?;
        node.wait_ready().await?;
        node.keys = parse_private_keys(&std::fs::read_to_string(node.process.stdout_log())?);
        anyhow::ensure!(!node.keys.is_empty(), "anvil printed no private keys");
        Ok(node)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let url = self.rpc_url();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let process = &mut self.process;
        wait_until("anvil answers eth_chainId", Duration::from_secs(30), Duration::from_millis(100), || {
            let exited = process.ensure_running();
            let request = http
                .post(&url)
                .json(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}));
            async move {
                if let Err(error) = exited {
                    // Fail fast: it will not come up.
                    return Err(error.context("anvil died while starting"));
                }
                let response = request.send().await?;
                Ok(response.status().is_success().then_some(()))
            }
        })
        .await
    }

    /// `http://127.0.0.1:<port>`.
    pub fn rpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// SIGKILLs the node (its chain is lost).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts a killed node again on the same port: a fresh chain with the same genesis.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.process.restart()?;
        self.wait_ready().await
    }

    /// A client signing with anvil's funded accounts.
    pub fn client(&self) -> anyhow::Result<ChainClient> {
        ChainClient::connect(&self.rpc_url(), &self.keys)
    }
}

/// Reads the `(i) 0x<64 hex>` lines after anvil's `Private Keys` header.
fn parse_private_keys(stdout: &str) -> Vec<B256> {
    stdout
        .lines()
        .skip_while(|line| !line.starts_with("Private Keys"))
        .take_while(|line| !line.starts_with("Wallet"))
        .filter(|line| line.starts_with('('))
        .filter_map(|line| line.split_whitespace().nth(1))
        .filter_map(|key| key.parse::<B256>().ok())
        .collect()
}

/// JSON-RPC client of an EVM dev node with local signers.
pub struct ChainClient {
    provider: DynProvider,
    wallet: EthereumWallet,
    accounts: Vec<Address>,
    rpc_url: String,
}

impl ChainClient {
    /// Connects to `rpc_url` and signs with `keys` (account `i` is `keys[i]`).
    pub fn connect(rpc_url: &str, keys: &[B256]) -> anyhow::Result<Self> {
        let mut signers = keys
            .iter()
            .map(|key| PrivateKeySigner::from_bytes(key).context("invalid private key"))
            .collect::<anyhow::Result<Vec<_>>>()?
            .into_iter();
        let first = signers.next().context("no signing key given")?;
        let mut accounts = vec![first.address()];
        let mut wallet = EthereumWallet::new(first);
        for signer in signers {
            accounts.push(signer.address());
            wallet.register_signer(signer);
        }
        let url = rpc_url
            .parse()
            .with_context(|| format!("invalid RPC URL {rpc_url}"))?;
        let provider = ProviderBuilder::new()
            .wallet(wallet.clone())
            .connect_http(url)
            .erased();
        Ok(Self {
            provider,
            wallet,
            accounts,
            rpc_url: rpc_url.to_owned(),
        })
    }

    /// The node's URL.
    pub fn rpc_url(&self) -> &str {
        &self.rpc_url
    }

    /// The provider (signs as [`ChainClient::account`] `0` unless `from` says otherwise).
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// Address of signing account `i`.
    pub fn account(&self, i: usize) -> Address {
        self.accounts[i]
    }

    /// Sends `wei` from account `from` to `to` and returns the mined receipt.
    ///
    /// Errors: RPC failures, or a reverted transaction.
    pub async fn send_eth(
        &self,
        from: usize,
        to: Address,
        wei: U256,
    ) -> anyhow::Result<TransactionReceipt> {
        let tx = TransactionRequest::default()
            .with_from(self.account(from))
            .with_to(to)
            .with_value(wei);
        let receipt = self
            .provider
            .send_transaction(tx)
            .await?
            .get_receipt()
            .await?;
        anyhow::ensure!(
            receipt.status(),
            "ETH transfer {} reverted",
            receipt.transaction_hash
        );
        Ok(receipt)
    }

    /// Signs (does not send) a transfer of `wei` from account `from` to `to` with the
    /// account's next nonce: the raw bytes can be sent later, or re-mined into another
    /// branch by [`ChainClient::reorg`] with the same txid.
    pub async fn sign_eth_transfer(
        &self,
        from: usize,
        to: Address,
        wei: U256,
    ) -> anyhow::Result<(TxHash, Bytes)> {
        let sender = self.account(from);
        let nonce = self.provider.get_transaction_count(sender).await?;
        let chain_id = self.provider.get_chain_id().await?;
        let fees = self.provider.estimate_eip1559_fees().await?;
        let tx = TransactionRequest::default()
            .with_from(sender)
            .with_to(to)
            .with_value(wei)
            .with_nonce(nonce)
            .with_chain_id(chain_id)
            .with_gas_limit(21_000)
            // Headroom: the transaction may be mined later, into blocks with another base fee.
            .with_max_fee_per_gas(fees.max_fee_per_gas.saturating_mul(4).max(10_000_000_000))
            .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
        let envelope = tx
            .build(&self.wallet)
            .await
            .context("signing the transfer")?;
        Ok((*envelope.tx_hash(), Bytes::from(envelope.encoded_2718())))
    }

    /// Sends a signed transaction and returns the mined receipt.
    pub async fn send_raw(&self, raw: &Bytes) -> anyhow::Result<TransactionReceipt> {
        let receipt = self
            .provider
            .send_raw_transaction(raw)
            .await?
            .get_receipt()
            .await?;
        anyhow::ensure!(
            receipt.status(),
            "transaction {} reverted",
            receipt.transaction_hash
        );
        Ok(receipt)
    }

    /// Transfers `amount` base units of ERC-20 `token` from account `from` to `to`.
    pub async fn send_erc20(
        &self,
        token: Address,
        from: usize,
        to: Address,
        amount: U256,
    ) -> anyhow::Result<TransactionReceipt> {
        let contract = IERC20::new(token, &self.provider);
        let receipt = contract
            .transfer(to, amount)
            .from(self.account(from))
            .send()
            .await?
            .get_receipt()
            .await?;
        anyhow::ensure!(
            receipt.status(),
            "ERC-20 transfer {} reverted",
            receipt.transaction_hash
        );
        Ok(receipt)
    }

    /// ERC-20 `balanceOf(owner)`.
    pub async fn erc20_balance(&self, token: Address, owner: Address) -> anyhow::Result<U256> {
        Ok(IERC20::new(token, &self.provider)
            .balanceOf(owner)
            .call()
            .await?)
    }

    /// The native balance of `owner`, wei.
    pub async fn eth_balance(&self, owner: Address) -> anyhow::Result<U256> {
        Ok(self.provider.get_balance(owner).await?)
    }

    /// Turns automine (a block per transaction) on or off (`evm_setAutomine`); with it off,
    /// transactions wait in the mempool until [`ChainClient::mine`].
    pub async fn set_automine(&self, on: bool) -> anyhow::Result<()> {
        let _: serde_json::Value = self
            .provider
            .raw_request("evm_setAutomine".into(), (on,))
            .await?;
        Ok(())
    }

    /// Removes transaction `hash` from anvil's mempool (`anvil_dropTransaction`), as a node
    /// restart or an eviction would.
    pub async fn drop_transaction(&self, hash: &str) -> anyhow::Result<()> {
        let hash: B256 = hash.parse()?;
        let _: serde_json::Value = self
            .provider
            .raw_request("anvil_dropTransaction".into(), (hash,))
            .await?;
        Ok(())
    }

    /// Whether the node knows transaction `hash` (pending or mined).
    pub async fn knows_transaction(&self, hash: &str) -> anyhow::Result<bool> {
        let hash: B256 = hash.parse()?;
        Ok(self.provider.get_transaction_by_hash(hash).await?.is_some())
    }

    /// Hashes (`0x` hex) of the transactions in the best-chain block at `height`.
    pub async fn transactions_in_block(&self, height: u64) -> anyhow::Result<Vec<String>> {
        let block = self
            .provider
            .get_block_by_number(height.into())
            .await?
            .with_context(|| format!("no block at height {height}"))?;
        Ok(block
            .transactions
            .hashes()
            .map(|hash| hash.to_string())
            .collect())
    }

    /// Mines `blocks` empty blocks (`anvil_mine`).
    pub async fn mine(&self, blocks: u64) -> anyhow::Result<()> {
        self.provider.anvil_mine(Some(blocks), None).await?;
        Ok(())
    }

    /// The node's best height.
    pub async fn block_number(&self) -> anyhow::Result<u64> {
        Ok(self.provider.get_block_number().await?)
    }

    /// `anvil_reorg`: replaces the last `depth` blocks with `depth` new ones (new hashes,
    /// same height), mining each `(raw transaction, block offset)` of `txs` into the new
    /// block at that offset (0 = the first new block). Transactions of the removed blocks
    /// that are not in `txs` are gone.
    pub async fn reorg(&self, depth: u64, txs: &[(Bytes, u64)]) -> anyhow::Result<()> {
        let params = (depth, txs.to_vec());
        let _: serde_json::Value = self
            .provider
            .raw_request("anvil_reorg".into(), params)
            .await?;
        Ok(())
    }

    /// Hash of the best-chain block at `height`.
    pub async fn block_hash(&self, height: u64) -> anyhow::Result<B256> {
        let block = self
            .provider
            .get_block_by_number(height.into())
            .await?
            .with_context(|| format!("no block at height {height}"))?;
        Ok(block.header.hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_anvil_private_keys() {
        let stdout = "Available Accounts\n==================\n\n(0) 0xf39F (10000 ETH)\n\n\
                      Private Keys\n==================\n\n\
                      (0) 0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80\n\
                      (1) 0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d\n\n\
                      Wallet\n==================\nMnemonic: test test\n";
        let keys = parse_private_keys(stdout);
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0], ANVIL_KEY_0.parse::<B256>().expect("valid key"));
    }
}
