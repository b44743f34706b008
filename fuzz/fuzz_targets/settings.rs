//! A config file's text: read over the defaults and checked as at start-up (no environment).

#![no_main]

use libfuzzer_sys::fuzz_target;

use pluspay::config::Settings;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    // `<key>_file` settings read files: the fuzzer would name /dev/stdin and wait for ever.
    if text.contains("_file") {
        return;
    }
    if let Ok(settings) = Settings::from_toml_str(text) {
        // What start-up goes on to make of accepted settings, short of connecting.
        let _ = settings.amqp.broker_urls();
        let _ = settings.security.operators();
        let _ = settings.shutdown_timeout();
        assert!(settings.wallet.check().is_ok());
    }
});
