//! The harness itself, against the real tools and services: if these fail, the other tests'
//! failures say nothing about Coinhub.

use alloy::primitives::U256;
use coinhub_tests::amqp::Amqp;
use coinhub_tests::anvil::AnvilNode;
use coinhub_tests::stack::{DECIMALS, TOKEN, to_base_units};
use coinhub_tests::{BaoDevServer, Database, Vhost, deploy_erc20, run_test};

/// Proves the anvil behaviour the deposit and reorg tests rely on.
///
/// Steps: start anvil; deploy the OpenZeppelin ERC-20 and move tokens; send a signed raw
/// ETH transfer; `anvil_reorg` the transfer's block away while re-mining the same raw
/// transaction one block later in the new branch; check the transfer kept its txid but
/// moved to a new block, and that the ETH transfer's old block hash is gone; then SIGKILL
/// anvil and restart it on the same port and check the genesis hash is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anvil_transfers_reorgs_and_restarts() {
    run_test("anvil_transfers_reorgs_and_restarts", |env| async move {
        let mut anvil = AnvilNode::start(&env).await?;
        let chain = anvil.client()?;
        let genesis = chain.block_hash(0).await?;

        let supply = to_base_units("1000", DECIMALS);
        let token = deploy_erc20(
            chain.provider(),
            "Test Token",
            TOKEN,
            supply,
            chain.account(0),
        )
        .await?;
        let recipient = chain.account(3);
        chain
            .send_erc20(token, 0, recipient, to_base_units("2.5", DECIMALS))
            .await?;
        assert_eq!(
            chain.erc20_balance(token, recipient).await?,
            to_base_units("2.5", DECIMALS)
        );

        let (txid, raw) = chain
            .sign_eth_transfer(1, recipient, U256::from(12_345u64))
            .await?;
        let receipt = chain.send_raw(&raw).await?;
        assert_eq!(receipt.transaction_hash, txid);
        let old_height = receipt.block_number.expect("mined");
        let old_hash = receipt.block_hash.expect("mined");
        chain.mine(1).await?;
        let tip = chain.block_number().await?;

        // Replace the transfer's block and the one after; the transfer lands at offset 1.
        let depth = tip - old_height + 1;
        chain.reorg(depth, &[(raw.clone(), 1)]).await?;
        assert_eq!(chain.block_number().await?, tip, "a reorg keeps the height");
        assert_ne!(
            chain.block_hash(old_height).await?,
            old_hash,
            "the old block is gone"
        );
        let moved = alloy::providers::Provider::get_transaction_receipt(chain.provider(), txid)
            .await?
            .expect("the transfer is in the new branch");
        assert_eq!(moved.block_number, Some(old_height + 1));

        anvil.kill();
        anvil.restart().await?;
        let chain = anvil.client()?;
        assert_eq!(
            chain.block_hash(0).await?,
            genesis,
            "same genesis after a restart"
        );
        assert_eq!(
            chain.block_number().await?,
            0,
            "a restarted node starts a fresh chain"
        );
        Ok(())
    })
    .await;
}

/// Proves the OpenBao, PostgreSQL and RabbitMQ helpers work and clean up.
///
/// Steps: start a dev OpenBao (with transit) and create a second transit key; create a
/// database and connect to
/// it; create a vhost, declare coinhub's topology in it and read its (empty) dead-letter
/// queue; drop them all and check the database is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_start_and_clean_up() {
    run_test("services_start_and_clean_up", |_env| async move {
        let bao = BaoDevServer::start().await?;
        bao.create_transit_key("e2e-key").await?;

        let database = Database::create("coinhub_e2e_harness").await?;
        let name = database.name().to_owned();
        let mut connection = database.connect().await?;
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut connection)
            .await?;
        assert_eq!(one, 1);
        drop(connection);

        let vhost = Vhost::create()?;
        let amqp = Amqp::connect(&vhost.amqp_url()).await?;
        amqp.declare_topology().await?;
        assert!(amqp.take_dead_letters().await?.is_empty());
        drop(amqp);
        drop(vhost);

        drop(database);
        let mut admin = sqlx::Connection::connect(&format!(
            "{}/postgres",
            coinhub_tests::database::server_url()
        ))
        .await
        .map(|c: sqlx::PgConnection| c)?;
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
        assert_eq!(left, 0, "database {name} was dropped");
        Ok(())
    })
    .await;
}
