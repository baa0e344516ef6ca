//! Deposit addresses handed out over AMQP, the admin API and the CLI are one per member and
//! chain.

use std::time::Duration;

use coinhub_tests::stack::CHAIN;
use coinhub_tests::{Stack, StackOptions, run_test};

const WAIT: Duration = Duration::from_secs(30);

/// Proves: concurrent `address.request` commands for one member and chain all get the same
/// address (no second derivation index is taken by the race), two members get different
/// addresses, the admin API and the `coinhub address new` CLI agree with the AMQP replies,
/// the address survives a coinhubd crash, and an unknown chain gets an error reply rather
/// than silence.
///
/// Steps: start coinhubd (no exchange); over AMQP send eight requests back to back, four
/// for carol and four for dave, interleaved, before reading any reply, while the same
/// eight go to the admin API concurrently; check every reply
/// is correlated, carries an EIP-55 address and no error, carol's four agree, dave's four
/// agree, and carol's differs from dave's; ask the API and the CLI for carol's address;
/// check `/metrics` counts two addresses issued, not one per request;
/// SIGKILL and restart coinhubd and ask again over AMQP; ask for a chain that does not
/// exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_address_requests_get_one_address() {
    run_test(
        "concurrent_address_requests_get_one_address",
        |env| async move {
            let options = StackOptions {
                with_token: false,
                with_exchange: false,
                ..StackOptions::default()
            };
            let mut stack = Stack::start(&env, options).await?;
            let amqp = stack.amqp().await?;

            let burst: Vec<(&str, &str)> = (0..8)
                .map(|i| (if i % 2 == 0 { "carol" } else { "dave" }, CHAIN))
                .collect();
            // The AMQP consumer handles one request at a time; the admin API races it.
            let api = stack.coinhubd.api().clone();
            let http_burst = futures::future::join_all(burst.iter().map(|(member, chain)| {
                let api = api.clone();
                async move { api.new_address(member, chain).await }
            }));
            let (replies, http_replies) =
                tokio::join!(amqp.request_addresses(&burst, WAIT), http_burst);
            let replies = replies?;
            for ((member, chain), reply) in burst.iter().zip(&replies) {
                assert_eq!(reply.member.as_str(), *member, "{reply:?}");
                assert_eq!(reply.chain, *chain, "{reply:?}");
                assert_eq!(reply.error, None, "{reply:?}");
                let address = reply.address.as_deref().expect("an address");
                let parsed: alloy::primitives::Address = address.parse()?;
                assert_eq!(parsed.to_checksum(None), address, "EIP-55: {reply:?}");
            }
            let of = |member: &str| -> Vec<String> {
                replies
                    .iter()
                    .filter(|r| r.member.as_str() == member)
                    .filter_map(|r| r.address.clone())
                    .collect()
            };
            let carol = of("carol");
            let dave = of("dave");
            assert_eq!(carol.len(), 4);
            assert!(
                carol.iter().all(|a| *a == carol[0]),
                "carol got several addresses: {carol:?}"
            );
            assert!(
                dave.iter().all(|a| *a == dave[0]),
                "dave got several addresses: {dave:?}"
            );
            assert_ne!(carol[0], dave[0], "two members share an address");

            for ((member, _), reply) in burst.iter().zip(http_replies) {
                let reply = reply?;
                let expected = if *member == "carol" {
                    &carol[0]
                } else {
                    &dave[0]
                };
                assert_eq!(
                    &reply.address, expected,
                    "the API and AMQP agree: {reply:?}"
                );
            }
            let from_api = stack.coinhubd.api().new_address("carol", CHAIN).await?;
            assert_eq!(from_api.address, carol[0]);
            let cli = stack
                .coinhubd
                .cli(&["address", "new", "--member", "carol", "--chain", CHAIN])
                .await?;
            assert!(
                cli.status.success(),
                "coinhub address new failed: {}",
                String::from_utf8_lossy(&cli.stderr)
            );
            assert_eq!(
                String::from_utf8_lossy(&cli.stdout).trim(),
                carol[0],
                "the CLI prints the address alone"
            );
            // Eighteen requests, two addresses derived: repeats are not counted as issued.
            let metrics = stack.coinhubd.api().metrics().await?;
            let issued = format!("coinhub_deposit_addresses_issued_total{{chain=\"{CHAIN}\"}} 2");
            assert!(metrics.lines().any(|line| line == issued), "{metrics}");

            stack.coinhubd.kill();
            stack.coinhubd.restart().await?;
            let after = amqp
                .request_addresses(&[("carol", CHAIN), ("dave", CHAIN)], WAIT)
                .await?;
            assert_eq!(
                after[0].address.as_deref(),
                Some(carol[0].as_str()),
                "carol's address after a crash"
            );
            assert_eq!(
                after[1].address.as_deref(),
                Some(dave[0].as_str()),
                "dave's address after a crash"
            );

            let unknown = amqp
                .request_addresses(&[("carol", "no-such-chain")], WAIT)
                .await?;
            assert_eq!(unknown[0].address, None, "{:?}", unknown[0]);
            assert!(
                unknown[0].error.as_deref().is_some_and(|e| !e.is_empty()),
                "{:?}",
                unknown[0]
            );
            Ok(())
        },
    )
    .await;
}
