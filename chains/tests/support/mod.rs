//! Shared test helpers of `coinhub-chains`' integration tests.

pub mod replay;
