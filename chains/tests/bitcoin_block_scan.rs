//! The fast block scanner against rust-bitcoin's full decode, on the real 1 MB mainnet block
//! 413,567 (`../shared/data/bitcoin/block413567.raw`) and on segwit blocks built from it.

use std::collections::HashSet;
use std::path::PathBuf;

use bitcoin::consensus::{deserialize, serialize};
use bitcoin::{Amount, Block, ScriptBuf, Txid, Witness};
use coinhub_chains::bitcoin::block::{ScriptSet, TxFormat, WatchedOutput, block_txids, scan_block};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const BLOCK_HASH: &str = "0000000000000000025aff8be8a55df8f89c77296db6198f272d6577325d4069";

fn real_block() -> Vec<u8> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/bitcoin/block413567.raw");
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every output of `block` whose script satisfies `watched`, as the scanner reports them.
fn expected_outputs(block: &Block, watched: impl Fn(&ScriptBuf) -> bool) -> Vec<WatchedOutput> {
    let mut outputs = Vec::new();
    for (tx_index, tx) in block.txdata.iter().enumerate() {
        let txid = tx.compute_txid();
        for (vout, output) in tx.output.iter().enumerate() {
            if watched(&output.script_pubkey) {
                outputs.push(WatchedOutput {
                    txid,
                    vout: vout as u32,
                    tx_index: tx_index as u32,
                    script_pubkey: output.script_pubkey.clone(),
                    amount: output.value,
                });
            }
        }
    }
    outputs
}

/// Proves the real block decodes to its published facts both ways: rust-bitcoin and the
/// scanner agree on 1,557 transactions, 3,581 outputs and the header hash; with nothing
/// watched the scanner reports no output.
#[test]
fn real_block_counts_and_hash() {
    let raw = real_block();
    assert_eq!(raw.len(), 999_887);
    let block: Block = deserialize(&raw).expect("rust-bitcoin decodes the block");
    assert_eq!(block.txdata.len(), 1_557);
    let outputs: usize = block.txdata.iter().map(|tx| tx.output.len()).sum();
    assert_eq!(outputs, 3_581);
    assert_eq!(block.block_hash().to_string(), BLOCK_HASH);

    let scan = scan_block(&raw, &ScriptSet::new()).expect("scanner decodes the block");
    assert_eq!(scan.tx_count, 1_557);
    assert_eq!(scan.output_count, 3_581);
    assert_eq!(scan.hash.to_string(), BLOCK_HASH);
    assert_eq!(scan.header, block.header);
    assert!(scan.outputs.is_empty());
    assert!(scan.special_txs.is_empty());

    let block_ref = scan.block_ref(413_567);
    assert_eq!(block_ref.hash.as_str(), BLOCK_HASH);
    assert_eq!(
        block_ref.parent_hash.as_str(),
        block.header.prev_blockhash.to_string()
    );
}

/// Proves the scanner's txids are rust-bitcoin's and that they hash to the header's merkle
/// root. Steps: `block_txids`, compare with `compute_txid` of every transaction, rebuild the
/// merkle root.
#[test]
fn real_block_txids_match_and_merkle_root() {
    let raw = real_block();
    let block: Block = deserialize(&raw).expect("rust-bitcoin decodes the block");
    let txids = block_txids(&raw, TxFormat::Bitcoin).expect("scanner decodes the block");
    let expected: Vec<Txid> = block.txdata.iter().map(|tx| tx.compute_txid()).collect();
    assert_eq!(txids, expected);
    let root = bitcoin::merkle_tree::calculate_root(txids.iter().map(|t| t.to_raw_hash()))
        .expect("non-empty block");
    assert_eq!(root, block.header.merkle_root.to_raw_hash());
}

/// Proves the scanner reports exactly rust-bitcoin's outputs, in order, with the same txid,
/// vout, script and satoshi amount, when every output's script is watched.
#[test]
fn all_outputs_watched_match_full_decode() {
    let raw = real_block();
    let block: Block = deserialize(&raw).expect("rust-bitcoin decodes the block");
    let watched: ScriptSet = block
        .txdata
        .iter()
        .flat_map(|tx| {
            tx.output
                .iter()
                .map(|o| o.script_pubkey.as_bytes().to_vec())
        })
        .collect();
    let scan = scan_block(&raw, &watched).expect("scanner decodes the block");
    assert_eq!(scan.outputs.len(), 3_581);
    assert_eq!(scan.outputs, expected_outputs(&block, |_| true));
}

/// Proves the match is exact when a random 1% of the block's distinct scripts are watched
/// (seeded, so a failure replays): every output paying one of them is found, none other.
/// Steps: pick 1% of the scripts, scan, compare with rust-bitcoin's outputs filtered by the
/// same set, over several seeds.
#[test]
fn one_percent_watched_match_full_decode() {
    let raw = real_block();
    let block: Block = deserialize(&raw).expect("rust-bitcoin decodes the block");
    let mut scripts: Vec<ScriptBuf> = block
        .txdata
        .iter()
        .flat_map(|tx| tx.output.iter().map(|o| o.script_pubkey.clone()))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    scripts.sort();
    for seed in 0..5u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let chosen: HashSet<ScriptBuf> = scripts
            .choose_multiple(&mut rng, scripts.len() / 100)
            .cloned()
            .collect();
        assert!(!chosen.is_empty());
        let watched: ScriptSet = chosen.iter().map(|s| s.as_bytes().to_vec()).collect();
        let scan = scan_block(&raw, &watched).expect("scanner decodes the block");
        let expected = expected_outputs(&block, |s| chosen.contains(s));
        assert!(expected.len() >= chosen.len(), "seed {seed}");
        assert_eq!(scan.outputs, expected, "seed {seed}");
    }
}

/// Proves a batched transaction paying two watched scripts yields both outputs, and a
/// transaction paying one watched script twice yields each output once, with their own
/// vout and amount (deposits are keyed by outpoint). Steps: take a real transaction with
/// two outputs to distinct scripts; build a block whose second transaction is a copy of it
/// with one more output to the first script; watch the two scripts; scan; compare with the
/// rust-bitcoin decode.
#[test]
fn batched_and_repeated_outputs_each_reported() {
    let raw = real_block();
    let block: Block = deserialize(&raw).expect("rust-bitcoin decodes the block");
    let batched = block
        .txdata
        .iter()
        .skip(1)
        .find(|tx| {
            tx.output.len() >= 3
                && tx.output[0].script_pubkey != tx.output[1].script_pubkey
                && block
                    .txdata
                    .iter()
                    .flat_map(|t| &t.output)
                    .filter(|o| {
                        o.script_pubkey == tx.output[0].script_pubkey
                            || o.script_pubkey == tx.output[1].script_pubkey
                    })
                    .count()
                    == 2
        })
        .expect("the block has a transaction with outputs to two scripts used nowhere else");
    let (first, second) = (&batched.output[0], &batched.output[1]);
    let watched: ScriptSet = [
        first.script_pubkey.as_bytes(),
        second.script_pubkey.as_bytes(),
    ]
    .into_iter()
    .collect();

    // The real transaction: two watched outputs, found with their own amounts.
    let scan = scan_block(&raw, &watched).expect("scanner decodes the block");
    let txid = batched.compute_txid();
    let found: Vec<(Txid, u32, Amount)> = scan
        .outputs
        .iter()
        .map(|o| (o.txid, o.vout, o.amount))
        .collect();
    assert_eq!(found, vec![(txid, 0, first.value), (txid, 1, second.value)]);

    // A copy paying the first script a second time.
    let mut repeated = batched.clone();
    let mut again = first.clone();
    again.value = Amount::from_sat(12_345);
    repeated.output.push(again);
    let mut small = block.clone();
    small.txdata = vec![block.txdata[0].clone(), repeated.clone()];
    let raw_small = serialize(&small);
    let scan = scan_block(&raw_small, &watched).expect("scanner decodes the built block");
    let last = (repeated.output.len() - 1) as u32;
    let found: Vec<(Txid, u32, Amount)> = scan
        .outputs
        .iter()
        .map(|o| (o.txid, o.vout, o.amount))
        .collect();
    let repeated_txid = repeated.compute_txid();
    assert_eq!(
        found,
        vec![
            (repeated_txid, 0, first.value),
            (repeated_txid, 1, second.value),
            (repeated_txid, last, Amount::from_sat(12_345)),
        ]
    );
    let watched_scripts = [first.script_pubkey.clone(), second.script_pubkey.clone()];
    assert_eq!(
        scan.outputs,
        expected_outputs(&small, |s| watched_scripts.contains(s))
    );
    let transfers: Vec<_> = scan.outputs.iter().map(|o| o.to_transfer("BTC")).collect();
    assert_eq!(transfers[2].index, last);
    assert_eq!(transfers[2].txid, repeated_txid.to_string());
    assert_eq!(
        transfers[2].amount,
        alloy::primitives::U256::from(12_345u64)
    );
}

/// Proves segwit transactions (BIP141/BIP144) are walked and hashed right: the txid covers
/// the non-witness serialization only. Steps: give a random third of the real block's
/// transactions a random witness per input (seeded), serialize with rust-bitcoin, scan with
/// every script watched and compare outputs, txids and merkle root with rust-bitcoin.
#[test]
fn segwit_block_matches_full_decode() {
    let raw = real_block();
    let mut block: Block = deserialize(&raw).expect("rust-bitcoin decodes the block");
    let mut rng = StdRng::seed_from_u64(141);
    for tx in block.txdata.iter_mut().skip(1) {
        if rng.gen_ratio(1, 3) {
            for input in &mut tx.input {
                let items: Vec<Vec<u8>> = (0..rng.gen_range(0..4))
                    .map(|_| {
                        (0..rng.gen_range(0..300))
                            .map(|_| rng.r#gen::<u8>())
                            .collect()
                    })
                    .collect();
                input.witness = Witness::from_slice(&items);
            }
            // BIP144: the flag is only written when some witness is non-empty.
            tx.input[0].witness.push([1u8, 2, 3]);
        }
    }
    block.header.merkle_root = block.compute_merkle_root().expect("non-empty block");
    let raw = serialize(&block);
    let reread: Block = deserialize(&raw).expect("rust-bitcoin decodes the segwit block");
    assert_eq!(reread, block);
    assert!(
        block
            .txdata
            .iter()
            .filter(|tx| !tx.input[0].witness.is_empty())
            .count()
            > 400
    );

    let watched: ScriptSet = block
        .txdata
        .iter()
        .flat_map(|tx| {
            tx.output
                .iter()
                .map(|o| o.script_pubkey.as_bytes().to_vec())
        })
        .collect();
    let scan = scan_block(&raw, &watched).expect("scanner decodes the segwit block");
    assert_eq!(scan.outputs, expected_outputs(&block, |_| true));
    let txids = block_txids(&raw, TxFormat::Bitcoin).expect("scanner decodes the segwit block");
    let root = bitcoin::merkle_tree::calculate_root(txids.iter().map(|t| t.to_raw_hash()))
        .expect("non-empty block");
    assert_eq!(root, block.header.merkle_root.to_raw_hash());
}

/// Proves no truncation of the real block is accepted: every cut inside the block is an
/// error (checked at a sample of cut points, including inside the header and the last byte).
#[test]
fn truncated_real_block_is_an_error() {
    let raw = real_block();
    let watched = ScriptSet::new();
    for cut in [0, 79, 80, 81, 1_000, 500_000, raw.len() - 4, raw.len() - 1] {
        assert!(scan_block(&raw[..cut], &watched).is_err(), "cut at {cut}");
    }
}

/// Proves the set's memory is bounded and measured: 1,000,000 random P2WSH scripts take at
/// most 80 bytes each in the table, and are all found.
#[test]
fn million_scripts_memory_bound() {
    let mut rng = StdRng::seed_from_u64(1);
    let mut watched = ScriptSet::with_capacity(1_000_000);
    let mut sample = Vec::new();
    for i in 0..1_000_000 {
        let mut script = vec![0x00, 0x20];
        script.extend(rng.r#gen::<[u8; 32]>());
        watched.insert(&script);
        if i % 10_000 == 0 {
            sample.push(script);
        }
    }
    assert_eq!(watched.len(), 1_000_000);
    assert!(sample.iter().all(|s| watched.contains(s)));
    let per_script = watched.heap_bytes() / watched.len();
    assert!(per_script <= 80, "{per_script} bytes per watched script");
}
