//! The hash of the book's order-id index: consecutive ids land in consecutive buckets.
//!
//! Order ids arrive in ascending order (the service numbers them), and in a large book most
//! orders rest: with a scrambling hash (FxHash) every new id probed and then inserted a bucket
//! at a random place in a table of hundreds of MB, a cache and TLB miss per insert, and so did
//! every filled maker's removal. This hash keeps an id's low [`PAGE_BITS`] bits as they are and
//! scrambles only the rest (its "page"), so the 16 ids of a page take 16 consecutive buckets
//! (256 bytes, one `hashbrown` probe group) and a run of new ids, or of makers filled in time
//! priority, touches one place per 16 ids, while pages are spread over the table as FxHash
//! spreads keys. `hashbrown` picks the bucket from the hash's low bits and its control byte
//! from the top 7: above the page's bits both come from the scrambled page. Pages of 4,096 ids
//! were measured too: their runs of buckets overlap and the exchange-core mix was ~10 % slower
//! (docs/benchmarks.md).
//!
//! Not a defence against chosen keys, like FxHash: ids are the service's, never a member's.
//! The book never iterates its index, so the hash changes no result, only where entries sit.

use std::hash::{BuildHasherDefault, Hasher};

/// Low bits of an id kept as they are: a page of 2^4 consecutive ids.
pub(super) const PAGE_BITS: u32 = 4;

/// FxHash's multiplier (`rustc-hash` 2), applied to an id's page.
const SEED: u64 = 0xf135_7aea_2e62_a9c5;

/// [`std::hash::BuildHasher`] of the order-id index.
pub(super) type BuildOrderIdHasher = BuildHasherDefault<OrderIdHasher>;

/// Hashes one `u64` (an [`crate::OrderId`]): the id's page scrambled, its place in the page
/// kept. [`Hasher::write`] (bytes) folds each byte in the same way, for completeness; an
/// `OrderId` hashes through [`Hasher::write_u64`].
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct OrderIdHasher(u64);

impl Hasher for OrderIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64((self.0 << 8) | u64::from(byte));
        }
    }

    fn write_u64(&mut self, id: u64) {
        let in_page = id & ((1 << PAGE_BITS) - 1);
        // As FxHash does: multiply, then rotate the well-mixed high bits of the product down to
        // where the bucket is taken from (the low bits of a product mix poorly).
        let page = (id >> PAGE_BITS).wrapping_mul(SEED).rotate_left(26);
        // The id's low 7 bits go into the control byte too, so consecutive ids (neighbours in
        // a probe group) have different ones and a probe compares one key, not the group's.
        self.0 = ((page & !((1 << PAGE_BITS) - 1)) ^ (id << 57)) | in_page;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    use super::{BuildOrderIdHasher, PAGE_BITS};

    fn hash(id: u64) -> u64 {
        BuildOrderIdHasher::default().hash_one(crate::OrderId(id))
    }

    /// Consecutive ids of a page differ by one in their hash (consecutive buckets) and in
    /// their control bytes (top 7 bits), so a probe group holding a page compares one key;
    /// pages land far apart.
    #[test]
    fn a_page_is_consecutive_and_pages_are_spread() {
        let page_len = 1_u64 << PAGE_BITS;
        for page in [0, 7, 1 << 20, u64::MAX >> PAGE_BITS] {
            let base = page << PAGE_BITS;
            for offset in 0..page_len - 1 {
                let (id, next) = (base + offset, base + offset + 1);
                assert_eq!(
                    hash(next) & 0xffff_ffff,
                    (hash(id) & 0xffff_ffff) + 1,
                    "{id}"
                );
            }
            let control: HashSet<u64> = (0..page_len).map(|i| hash(base + i) >> 57).collect();
            assert_eq!(control.len(), 16, "page {page}");
        }
        let buckets_mask = (1_u64 << 16) - 1;
        let page_starts: HashSet<u64> = (0..256_u64)
            .map(|page| (hash(page << PAGE_BITS) & buckets_mask) >> PAGE_BITS)
            .collect();
        // 256 pages into 4,096 places at random would take ~248.
        assert!(page_starts.len() > 240, "{} distinct", page_starts.len());
    }
}
