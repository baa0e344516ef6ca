//! The process's memory: no transparent huge pages (THP).
//!
//! mimalloc returns memory it no longer uses to the kernel (it purges it, `MADV_DONTNEED`)
//! and takes it back at the next peak. Where the process may have transparent huge pages,
//! each 2 MiB region taken back is then faulted in as one huge page, which the kernel zeroes
//! in full at the first touch (`clear_page_erms` under `do_huge_pmd_anonymous_page` in
//! `perf`). In the settlement benchmark that was ~25 % of this process's CPU: 19–21 µs of it
//! a settled trade with huge pages, 16–18 µs without (4 alternated pairs; with the host's
//! setting at `always`, 20–22 against 17–18 µs in 3 pairs; docs/benchmarks.md, exchange
//! settlement, 2026-12-07 22:18 UTC).
//!
//! Two settings keep them away, because hosts differ
//! (`/sys/kernel/mm/transparent_hugepage/enabled`):
//! - `madvise` (Debian's default): huge pages only where a program asks. The workspace builds
//!   mimalloc with its `no_thp` feature, so it never asks (`madvise(MADV_HUGEPAGE)`).
//! - `always` (some distributions' default): every large enough anonymous mapping gets them.
//!   [`disable_transparent_huge_pages`] turns them off for the whole process.

/// Turns transparent huge pages off for this process and the processes it starts
/// (`prctl(PR_SET_THP_DISABLE, 1)`, Linux 3.15 and later; see prctl(2): the flag belongs to
/// the process's address space, so it holds for all its threads). Memory already
/// faulted in keeps its pages; every later fault gets base pages (4 KiB).
///
/// Call it first thing in `main`. Errors: the kernel's, e.g. `EINVAL` where the kernel lacks
/// the option; the process works on without it (only slower at peak), so callers log it.
#[cfg(target_os = "linux")]
pub fn disable_transparent_huge_pages() -> std::io::Result<()> {
    rustix::thread::disable_transparent_huge_pages(true).map_err(std::io::Error::from)
}

/// Elsewhere than on Linux there is nothing to turn off: returns `Ok(())`.
#[cfg(not(target_os = "linux"))]
pub fn disable_transparent_huge_pages() -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// After the call the kernel reports the process's THP as disabled
    /// (`prctl(PR_GET_THP_DISABLE)`).
    #[test]
    fn the_kernel_reports_transparent_huge_pages_off() {
        super::disable_transparent_huge_pages().expect("prctl(PR_SET_THP_DISABLE)");
        assert!(
            rustix::thread::transparent_huge_pages_are_disabled()
                .expect("prctl(PR_GET_THP_DISABLE)")
        );
    }
}
