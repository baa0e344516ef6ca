//! Intake of `withdrawal.request` (queue `coinhubd.withdrawal.request` on
//! `coinhub.commands`): every request is validated against the configuration, then stored
//! as `requested` or as `failed` with its reason (and `withdrawal.failed`), idempotent on
//! its id. Nothing is signed here.

use std::time::Duration;

use alloy::primitives::U256;
use coinhub_chains::destination::{self, DestinationNetwork};
use coinhub_custody::utxo::UtxoNetwork;
use coinhub_events::consumer::{ConsumerOptions, Handler, HandlerError};
use coinhub_events::topology::{WITHDRAWAL_REQUEST_QUEUE, routing};
use coinhub_events::{BaseUnits, WithdrawalRequest};
use lapin::message::Delivery;
use secrecy::SecretString;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::store::{self, Intake};
use crate::config::{ChainKind, Config};

/// The destination network of a configured chain.
///
/// Errors: a UTXO chain without a valid `network` (refused by config validation before).
pub fn destination_network(config: &Config, chain: &str) -> anyhow::Result<DestinationNetwork> {
    let chain_config = config
        .chains
        .get(chain)
        .ok_or_else(|| anyhow::anyhow!("unknown chain {chain:?}"))?;
    if chain_config.kind == ChainKind::Evm {
        return Ok(DestinationNetwork::Evm);
    }
    let network: UtxoNetwork = chain_config
        .network
        .as_deref()
        .unwrap_or_default()
        .parse()?;
    Ok(match network.bitcoin_network() {
        Some(bitcoin) => DestinationNetwork::Bitcoin(bitcoin),
        None => DestinationNetwork::Dash {
            testnet: network != UtxoNetwork::Dash,
        },
    })
}

/// Validates `request` against `config`: the asset is configured, its decimals agree, the
/// amount is a positive integer of base units at least `withdrawal_min` (and, on UTXO
/// chains, fits in a transaction output), the destination is valid for the asset's chain
/// and network (checksum, version bytes, EIP-55 when mixed case). Returns the asset symbol
/// (upper case) and the outcome; an invalid request's reason names the field.
pub fn validate(config: &Config, request: &WithdrawalRequest) -> (String, Intake) {
    let symbol = request.asset.to_uppercase();
    let Some((_, asset)) = config
        .assets
        .iter()
        .find(|(name, _)| name.to_uppercase() == symbol)
    else {
        let reason = format!("asset: unknown asset {:?}", request.asset);
        return (
            symbol,
            Intake::Invalid {
                chain: None,
                reason,
            },
        );
    };
    let chain = asset.chain.clone();
    let invalid = |reason: String| Intake::Invalid {
        chain: Some(chain.clone()),
        reason,
    };
    if request.decimals != asset.decimals {
        let reason = format!(
            "decimals: the request says {} but {symbol} has {}",
            request.decimals, asset.decimals
        );
        return (symbol, invalid(reason));
    }
    let amount = match destination::validate_amount(&request.amount, asset.withdrawal_min) {
        Ok(amount) => amount,
        Err(error) => return (symbol, invalid(format!("amount: {error}"))),
    };
    let kind = config.chains[&chain].kind;
    if kind.is_utxo() && amount > U256::from(bitcoin::Amount::MAX_MONEY.to_sat()) {
        let reason = format!("amount: {amount} is more than any transaction output can hold");
        return (symbol, invalid(reason));
    }
    let network = match destination_network(config, &chain) {
        Ok(network) => network,
        Err(error) => return (symbol, invalid(format!("chain {chain}: {error}"))),
    };
    let destination = match destination::parse_destination(network, &request.destination) {
        Ok(parsed) => parsed.canonical_text(),
        Err(error) => return (symbol, invalid(format!("destination: {error}"))),
    };
    let amount: BaseUnits = match amount.to_string().parse() {
        Ok(amount) => amount,
        Err(error) => return (symbol, invalid(format!("amount: {error}"))),
    };
    (
        symbol,
        Intake::Valid {
            chain,
            amount,
            destination,
        },
    )
}

struct RequestHandler {
    pool: PgPool,
    config: std::sync::Arc<Config>,
}

impl Handler for RequestHandler {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        if delivery.routing_key.as_str() != routing::WITHDRAWAL_REQUEST {
            return Err(HandlerError::Reject(format!(
                "unknown routing key {:?}",
                delivery.routing_key.as_str()
            )));
        }
        let request = WithdrawalRequest::parse(&delivery.data)
            .map_err(|e| HandlerError::Reject(e.to_string()))?;
        let (asset, intake) = validate(&self.config, &request);
        let stored = store::record_request(&self.pool, &request, &asset, &intake)
            .await
            .map_err(|e| HandlerError::Retry(e.to_string()))?;
        match (&intake, stored) {
            (_, false) => tracing::info!(id = %request.id, "withdrawal request already known"),
            (Intake::Valid { chain, .. }, true) => {
                tracing::info!(id = %request.id, %chain, %asset, "withdrawal requested")
            }
            (Intake::Invalid { reason, .. }, true) => {
                tracing::warn!(id = %request.id, %reason, "withdrawal refused")
            }
        }
        Ok(())
    }
}

/// Consumes `withdrawal.request` until `cancel` fires, reconnecting to RabbitMQ when needed.
pub async fn serve(
    pool: PgPool,
    config: std::sync::Arc<Config>,
    amqp_url: SecretString,
    cancel: CancellationToken,
) {
    let options = ConsumerOptions {
        queue: WITHDRAWAL_REQUEST_QUEUE.to_owned(),
        consumer_tag: "coinhubd.withdrawal".to_owned(),
        prefetch: 32,
        retry_delay: Duration::from_secs(1),
    };
    crate::consumers::serve(amqp_url, options, cancel, |connection| {
        let handler = RequestHandler {
            pool: pool.clone(),
            config: config.clone(),
        };
        Box::pin(async move {
            let channel = connection.create_channel().await?;
            // The cosigner's queue too: a request must reach both (see the function's doc).
            crate::cosigner::requests::declare(&channel).await?;
            let _ = channel.close(200, "declared".into()).await;
            Ok(handler)
        })
    })
    .await;
}

#[cfg(test)]
mod tests {
    use figment::Figment;
    use figment::providers::{Format, Toml};

    use super::*;

    const CONFIG: &str = r#"
        [database]
        url = "postgres://localhost/x"
        [amqp]
        url = "amqp://localhost"
        [vault]
        address = "http://127.0.0.1:8200"
        token = "t"
        transit_key = "coinhub-a"
        [admin]
        listen = "127.0.0.1:1"
        token = "t"
        [chains.ethereum]
        kind = "evm"
        rpc_urls = ["http://127.0.0.1:8545"]
        chain_id = 1
        [chains.bitcoin]
        kind = "bitcoin"
        network = "bitcoin-regtest"
        rpc_urls = ["http://127.0.0.1:18443"]
        rpc_user = "u"
        rpc_password = "p"
        cosigner_xpub = "x"
        backup_xpub = "x"
        [assets.eth]
        chain = "ethereum"
        decimals = 18
        confirmations_min = 1
        withdrawal_min = "1000"
        [assets.btc]
        chain = "bitcoin"
        decimals = 8
        confirmations_min = 1
        withdrawal_min = "546"
    "#;

    fn config() -> Config {
        let config: Config = Figment::new()
            .merge(Toml::string(CONFIG))
            .extract()
            .expect("test config parses");
        config.validate().expect("test config is valid");
        config
    }

    fn request(asset: &str, amount: &str, decimals: u8, destination: &str) -> WithdrawalRequest {
        WithdrawalRequest {
            version: 1,
            id: uuid::Uuid::from_u128(9),
            occurred_at: time::macros::datetime!(2026-11-22 10:00:00 UTC),
            member: "alice".parse().expect("member"),
            asset: asset.to_owned(),
            amount: amount.to_owned(),
            decimals,
            destination: destination.to_owned(),
        }
    }

    fn reason(intake: Intake) -> String {
        match intake {
            Intake::Invalid { reason, .. } => reason,
            Intake::Valid { .. } => panic!("expected a refusal"),
        }
    }

    const REGTEST: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
    const MAINNET: &str = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4";
    const EVM_LOWER: &str = "0x52908400098527886e0f7030069857d2e4169ee7";

    #[test]
    fn a_valid_request_is_normalized() {
        let (asset, intake) = validate(&config(), &request("btc", "100000", 8, REGTEST));
        assert_eq!(asset, "BTC");
        let Intake::Valid {
            chain,
            amount,
            destination,
        } = intake
        else {
            panic!("valid");
        };
        assert_eq!(
            (chain.as_str(), amount.as_str(), destination.as_str()),
            ("bitcoin", "100000", REGTEST)
        );
        let (_, intake) = validate(&config(), &request("ETH", "1000", 18, EVM_LOWER));
        let Intake::Valid { destination, .. } = intake else {
            panic!("valid");
        };
        assert_eq!(
            destination, "0x52908400098527886E0F7030069857D2E4169EE7",
            "EIP-55"
        );
    }

    #[test]
    fn bad_requests_are_refused_naming_the_field() {
        let config = config();
        let cases = [
            (
                request("XYZ", "1000", 8, REGTEST),
                "asset: unknown asset \"XYZ\"",
            ),
            (
                request("BTC", "1000", 18, REGTEST),
                "decimals: the request says 18 but BTC has 8",
            ),
            (request("BTC", "0", 8, REGTEST), "amount: amount is zero"),
            (
                request("BTC", "-5", 8, REGTEST),
                "amount: amount \"-5\" is negative",
            ),
            (
                request("BTC", "1.5", 8, REGTEST),
                "amount: amount \"1.5\" has a decimal point",
            ),
            (
                request("BTC", "545", 8, REGTEST),
                "amount: amount 545 is below the minimum withdrawal 546",
            ),
            (request("BTC", "1000", 8, MAINNET), "destination:"),
            (
                request("BTC", "1000", 8, "bcrt1qnotanaddress"),
                "destination:",
            ),
            (request("BTC", "1000", 8, EVM_LOWER), "destination:"),
            (
                request("BTC", "2100000000000001", 8, REGTEST),
                "amount: 2100000000000001 is more than",
            ),
            (
                request(
                    "ETH",
                    "1000",
                    18,
                    "0x52908400098527886E0F7030069857D2E4169Ee7",
                ),
                "destination:",
            ),
            (
                request(
                    "ETH",
                    "1000",
                    18,
                    "0x0000000000000000000000000000000000000000",
                ),
                "destination:",
            ),
        ];
        for (request, expected) in cases {
            let text = reason(validate(&config, &request).1);
            assert!(
                text.starts_with(expected),
                "{request:?}: {text:?} should start with {expected:?}"
            );
        }
    }
}
