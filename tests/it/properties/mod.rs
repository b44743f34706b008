//! Property tests of the pure domain (no database, no broker): the command decoder and its
//! fingerprint, every parser of a command's `data`, the Ping++ charge and event rules, and the
//! ledger, whose every accepted command must conserve money.
//!
//! Case counts are kept modest so that `cargo test --all-targets` stays quick; set
//! `PROPTEST_CASES` to run every property with more (`PROPTEST_CASES=20000 cargo test --release
//! --test it properties::`).
//!
//! A file per area: `decoder`, `parsers`, `ledger`, `pingpp` and `redpackets`; what they share is in
//! `strategies` (the generators) and `expect` (the properties' own reading of data, and the
//! journals they expect).

mod expect;
mod strategies;

mod decoder;
mod holds;
mod ledger;
mod parsers;
mod pingpp;
mod redpackets;

use proptest::prelude::ProptestConfig;
use proptest::test_runner::FileFailurePersistence;

/// `default` cases, unless `PROPTEST_CASES` says otherwise.
fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        // A failure's seed goes to a file beside the failing property's own, with the extension
        // .proptest-regressions (properties/parsers.proptest-regressions for a property of
        // parsers.rs). Commit it with the fix: it is replayed first on every run.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}
