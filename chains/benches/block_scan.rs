//! Decode + match of the real 1 MB Bitcoin mainnet block 413,567 (1,557 transactions,
//! 3,581 outputs) against 1,000,000 watched scripts.
//!
//! Run: `cargo bench -p coinhub-chains --bench block_scan`. Compares:
//! - `fast_scan`: `coinhub_chains::bitcoin::block::scan_block` (walks the serialization,
//!   looks every output up in a `ScriptSet`, hashes only transactions with a watched output);
//! - `rust_bitcoin_decode+hashset`: rust-bitcoin `Block` decode, each output looked up in a
//!   `HashSet<ScriptBuf>`, txid computed for matches (the plain approach);
//! - `rust_bitcoin_decode+scriptset`: the same decode with `ScriptSet` lookups;
//! - `all_txids`: `block_txids`, the walk plus double SHA-256 of every transaction.
//!
//! Also prints the watched set's memory per script (table size and resident-memory growth).

// `criterion_group!` defines an undocumented function.
#![allow(missing_docs)]

use std::collections::HashSet;
use std::hint::black_box;
use std::path::PathBuf;

use bitcoin::consensus::deserialize;
use bitcoin::{Block, ScriptBuf};
use coinhub_chains::bitcoin::block::{ScriptSet, TxFormat, block_txids, scan_block};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Watched scripts in total.
const WATCHED: usize = 1_000_000;
/// Of which taken from the block's outputs (so the scan finds something).
const FROM_BLOCK: usize = 100;

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// `bytes / count` with one decimal, in integer arithmetic.
fn per_script(bytes: usize, count: usize) -> String {
    format!("{}.{}", bytes / count, bytes * 10 / count % 10)
}

fn random_p2wsh(rng: &mut StdRng) -> ScriptBuf {
    let mut script = vec![0x00, 0x20];
    script.extend(rng.r#gen::<[u8; 32]>());
    ScriptBuf::from_bytes(script)
}

fn bench(c: &mut Criterion) {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/bitcoin/block413567.raw");
    let raw = std::fs::read(&path).expect("read the benchmark block");
    let block: Block = deserialize(&raw).expect("decode the benchmark block");
    // The first FROM_BLOCK distinct output scripts in block order: the same every run.
    let mut seen = HashSet::new();
    let from_block: Vec<ScriptBuf> = block
        .txdata
        .iter()
        .flat_map(|tx| tx.output.iter().map(|o| o.script_pubkey.clone()))
        .filter(|script| seen.insert(script.clone()))
        .take(FROM_BLOCK)
        .collect();

    let rss_before = resident_bytes();
    let mut watched = ScriptSet::with_capacity(WATCHED);
    let mut rng = StdRng::seed_from_u64(413_567);
    for script in &from_block {
        watched.insert(script.as_bytes());
    }
    while watched.len() < WATCHED {
        watched.insert(random_p2wsh(&mut rng).as_bytes());
    }
    let rss_after = resident_bytes();
    let expected = scan_block(&raw, &watched).expect("scan").outputs.len();
    println!(
        "watched scripts: {}; ScriptSet table {} bytes = {} bytes/script; resident growth \
         {} bytes = {} bytes/script; outputs matched per block: {expected}",
        watched.len(),
        watched.heap_bytes(),
        per_script(watched.heap_bytes(), watched.len()),
        rss_after.saturating_sub(rss_before),
        per_script(rss_after.saturating_sub(rss_before), watched.len()),
    );

    // The plain approach's set: the same scripts as owned `ScriptBuf`s (SipHash).
    let rss_before = resident_bytes();
    let mut plain: HashSet<ScriptBuf> = HashSet::with_capacity(WATCHED);
    let mut rng = StdRng::seed_from_u64(413_567);
    plain.extend(from_block.iter().cloned());
    while plain.len() < WATCHED {
        plain.insert(random_p2wsh(&mut rng));
    }
    let rss_after = resident_bytes();
    println!(
        "HashSet<ScriptBuf> of the same size: resident growth {} bytes/script",
        per_script(rss_after.saturating_sub(rss_before), plain.len()),
    );

    let mut group = c.benchmark_group("block413567");
    group.throughput(Throughput::Bytes(raw.len() as u64));
    group.bench_function("fast_scan", |b| {
        b.iter(|| {
            let scan = scan_block(black_box(&raw), &watched).expect("scan");
            assert_eq!(scan.outputs.len(), expected);
            scan
        })
    });
    group.bench_function("rust_bitcoin_decode+hashset", |b| {
        b.iter(|| {
            let block: Block = deserialize(black_box(&raw)).expect("decode");
            let mut found = Vec::new();
            for tx in &block.txdata {
                for (vout, output) in tx.output.iter().enumerate() {
                    if plain.contains(&output.script_pubkey) {
                        found.push((tx.compute_txid(), vout, output.value));
                    }
                }
            }
            assert_eq!(found.len(), expected);
            found
        })
    });
    group.bench_function("rust_bitcoin_decode+scriptset", |b| {
        b.iter(|| {
            let block: Block = deserialize(black_box(&raw)).expect("decode");
            let mut found = Vec::new();
            for tx in &block.txdata {
                for (vout, output) in tx.output.iter().enumerate() {
                    if watched.contains(output.script_pubkey.as_bytes()) {
                        found.push((tx.compute_txid(), vout, output.value));
                    }
                }
            }
            assert_eq!(found.len(), expected);
            found
        })
    });
    group.bench_function("all_txids", |b| {
        b.iter(|| block_txids(black_box(&raw), TxFormat::Bitcoin).expect("walk"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
