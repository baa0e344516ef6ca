//! The node-client path per block: fetch (`getblockhash` over JSON-RPC + REST
//! `/rest/block/<hash>.bin`, coinhub-chains' `BitcoinRpc`) and decode + match
//! (`UtxoSource::scan`, i.e. `scan_block` against the watchlist), against the regtest double,
//! with 1,000,000 watched scripts as in `chains/benches/block_scan.rs`.
//!
//! Run: `cargo bench -p coinhub-bitcoind-double --bench node_client`.
//!
//! Two kinds of block, each its own criterion group:
//! - `real_1mb`: the real mainnet block 413,567 (`shared/data/bitcoin/block413567.raw`,
//!   999,887 bytes, 1,557 transactions), put on the double's chain 8 times with the
//!   benchmark-only hook `BitcoindDouble::append_block_unchecked` (transactions byte for
//!   byte, header re-linked to the tip); the bench cycles through the 8 heights.
//! - `small_mined`: 20 blocks mined by the double (`generatetoaddress`), each with a coinbase
//!   and 3 wallet payments of 2 watched outputs + change (about 1 kB).
//!
//! Per group:
//! - `fetch`: `get_block_hash(h)` + `get_block_raw(&hash)` (REST);
//! - `fetch_getblock_hex`: `get_block_hash(h)` + `getblock <hash> 0` + hex decode (the
//!   client's fallback when the node runs with `-rest=0`);
//! - `decode+match`: `UtxoSource::scan` of already fetched bytes (decode + match + transfers);
//! - `block_at+scan`: what the follower does per block: `UtxoSource::block_at(h)` (fetch,
//!   then a scan to check the bytes hash to the named block) + `UtxoSource::scan`.
//!
//! Client and double share this machine: the double serializes the block from its
//! rust-bitcoin `Block` on every request, on its own thread.

// `criterion_group!` defines an undocumented function.
#![allow(missing_docs)]

use std::collections::HashSet;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::consensus::deserialize;
use bitcoin::{Amount, Block, ScriptBuf};
use coinhub_bitcoind_double::wallet::TestWallet;
use coinhub_bitcoind_double::{BitcoindDouble, Params};
use coinhub_chains::bitcoin::rpc::{Auth, BitcoinRpc, RpcConfig};
use coinhub_chains::bitcoin::source::{RawBlock, ScriptWatchlist, UtxoFlavor, UtxoSource};
use coinhub_chains::follower::ChainSource;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// Watched scripts in total.
const WATCHED: usize = 1_000_000;
/// Of which taken from the real block's outputs (so the scan finds something).
const FROM_BLOCK: usize = 100;
/// Copies of the real block on the double's chain.
const REAL_COPIES: usize = 8;
/// Small mined blocks with payments.
const SMALL_BLOCKS: usize = 20;
/// Wallet payments per small block (each pays 2 watched outputs + change).
const PAYMENTS_PER_BLOCK: usize = 3;

fn random_p2wsh(rng: &mut StdRng) -> ScriptBuf {
    let mut script = vec![0x00, 0x20];
    script.extend(rng.r#gen::<[u8; 32]>());
    ScriptBuf::from_bytes(script)
}

fn client(node: &BitcoindDouble) -> BitcoinRpc {
    BitcoinRpc::new(RpcConfig::new(
        node.rpc_url.clone(),
        Auth::UserPass {
            user: node.user.clone(),
            password: node.password.clone().into(),
        },
    ))
    .expect("client config")
}

/// One kind of block on the double: heights to cycle through, their fetched bytes,
/// watched outputs per block.
struct Blocks {
    name: &'static str,
    heights: Vec<u64>,
    fetched: Vec<RawBlock>,
    bytes_per_block: u64,
    matched_per_block: Vec<usize>,
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/bitcoin/block413567.raw"
    );
    let raw = std::fs::read(path).expect("read the benchmark block");
    let block: Block = deserialize(&raw).expect("decode the benchmark block");

    // The same 1,000,000 scripts as chains/benches/block_scan.rs.
    let mut seen = HashSet::new();
    let mut watched: Vec<ScriptBuf> = block
        .txdata
        .iter()
        .flat_map(|tx| tx.output.iter().map(|o| o.script_pubkey.clone()))
        .filter(|script| seen.insert(script.clone()))
        .take(FROM_BLOCK)
        .collect();
    let mut rng = StdRng::seed_from_u64(413_567);
    let mut unique: HashSet<ScriptBuf> = watched.iter().cloned().collect();
    while unique.len() < WATCHED {
        let script = random_p2wsh(&mut rng);
        if unique.insert(script.clone()) {
            watched.push(script);
        }
    }
    drop(unique);
    let watchlist = Arc::new(ScriptWatchlist::default());
    watchlist.extend(watched.iter().map(|s| s.as_bytes()));
    assert_eq!(watchlist.len(), WATCHED);
    // Two random watched P2WSH scripts the small blocks pay.
    let deposit_a = watched[FROM_BLOCK].clone();
    let deposit_b = watched[FROM_BLOCK + 1].clone();
    drop(watched);

    let node = BitcoindDouble::start(Params::bitcoin()).expect("the double starts");
    let rpc = client(&node);
    let source = UtxoSource::new(
        client(&node),
        UtxoFlavor::Bitcoin,
        "BTC".to_owned(),
        Arc::clone(&watchlist),
    );

    // Small blocks: fund the wallet, then blocks of PAYMENTS_PER_BLOCK payments each.
    let wallet = TestWallet::new(&node);
    let small_heights: Vec<u64> = rt.block_on(async {
        wallet
            .fund((SMALL_BLOCKS * PAYMENTS_PER_BLOCK) as u64)
            .await
            .expect("fund");
        let mut heights = Vec::new();
        for _ in 0..SMALL_BLOCKS {
            for _ in 0..PAYMENTS_PER_BLOCK {
                wallet
                    .pay(&[
                        (deposit_a.clone(), Amount::from_sat(100_000)),
                        (deposit_b.clone(), Amount::from_sat(200_000)),
                    ])
                    .await
                    .expect("pay");
            }
            wallet.mine(1).await.expect("mine");
            heights.push(rpc.get_block_count().await.expect("getblockcount"));
        }
        heights
    });
    // The real block, REAL_COPIES times on top.
    for _ in 0..REAL_COPIES {
        node.append_block_unchecked(&raw)
            .expect("append the real block");
    }
    let tip = rt.block_on(rpc.get_block_count()).expect("getblockcount");
    let real_heights: Vec<u64> = ((tip + 1 - REAL_COPIES as u64)..=tip).collect();

    let mut kinds = Vec::new();
    for (name, heights) in [("real_1mb", real_heights), ("small_mined", small_heights)] {
        let fetched: Vec<RawBlock> = heights
            .iter()
            .map(|h| {
                rt.block_on(source.block_at(*h))
                    .expect("block_at")
                    .expect("block present")
            })
            .collect();
        let matched_per_block: Vec<usize> = fetched
            .iter()
            .map(|b| rt.block_on(source.scan(b)).expect("scan").transfers.len())
            .collect();
        let total: usize = fetched.iter().map(|b| b.raw.len()).sum();
        kinds.push(Blocks {
            name,
            bytes_per_block: (total / fetched.len()) as u64,
            heights,
            fetched,
            matched_per_block,
        });
    }
    assert!(kinds[0].fetched.iter().all(|b| b.raw[80..] == raw[80..]));
    for kind in &kinds {
        println!(
            "{}: heights {}..={}, {} bytes per block (mean), watched outputs per block {:?}, \
             {} watched scripts",
            kind.name,
            kind.heights[0],
            kind.heights[kind.heights.len() - 1],
            kind.bytes_per_block,
            kind.matched_per_block,
            watchlist.len(),
        );
    }

    for kind in &kinds {
        let mut group = c.benchmark_group(format!("node_client/{}", kind.name));
        group.throughput(Throughput::Bytes(kind.bytes_per_block));
        group.sample_size(40);
        group.warm_up_time(Duration::from_secs(2));
        group.measurement_time(Duration::from_secs(6));
        let n = kind.heights.len();

        let mut i = 0;
        group.bench_function("fetch", |b| {
            b.iter(|| {
                let height = kind.heights[i % n];
                i += 1;
                rt.block_on(async {
                    let hash = rpc.get_block_hash(height).await.expect("getblockhash");
                    rpc.get_block_raw(&hash).await.expect("rest block")
                })
            })
        });
        let mut i = 0;
        group.bench_function("fetch_getblock_hex", |b| {
            b.iter(|| {
                let height = kind.heights[i % n];
                i += 1;
                rt.block_on(async {
                    let hash = rpc.get_block_hash(height).await.expect("getblockhash");
                    let hex: String = rpc
                        .call("getblock", &[json!(hash.to_string()), json!(0)])
                        .await
                        .expect("getblock 0");
                    hex::decode(hex).expect("hex")
                })
            })
        });
        let mut i = 0;
        group.bench_function("decode+match", |b| {
            b.iter(|| {
                let k = i % n;
                i += 1;
                let scan = rt
                    .block_on(source.scan(black_box(&kind.fetched[k])))
                    .expect("scan");
                assert_eq!(scan.transfers.len(), kind.matched_per_block[k]);
                scan
            })
        });
        let mut i = 0;
        group.bench_function("block_at+scan", |b| {
            b.iter(|| {
                let k = i % n;
                i += 1;
                rt.block_on(async {
                    let block = source
                        .block_at(kind.heights[k])
                        .await
                        .expect("block_at")
                        .expect("block present");
                    let scan = source.scan(&block).await.expect("scan");
                    assert_eq!(scan.transfers.len(), kind.matched_per_block[k]);
                    scan
                })
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
