//! A branch filter that misbehaves on purpose, so the host's sandbox can be tested
//! against a real component. The config string picks the misbehaviour.
//! Never embedded in the service; only the test suite loads it.

use mirror_plugin_sdk::branch_filter::Guest;
use mirror_plugin_sdk::log::{Level, log};
use mirror_plugin_sdk::types::{CandidateRefs, MirrorContext, PluginInfo};

struct Hostile;

impl Guest for Hostile {
    fn info() -> PluginInfo {
        mirror_plugin_sdk::plugin_info!()
    }

    fn validate_config(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn filter(
        _ctx: MirrorContext,
        config: String,
        refs: CandidateRefs,
    ) -> Result<Vec<String>, String> {
        match config.as_str() {
            "loop" => spin(),
            "memory-bomb" => hoard(),
            "panic" => panic!("hostile plugin panics on purpose"),
            // Two 1 MiB names: over the 1 MiB answer cap, and cheap to make, so
            // the cap (not the time budget) stops it even on a loaded machine.
            "oversized" => Ok(vec![format!("refs/heads/{}", "x".repeat(1 << 20)); 2]),
            "log-flood" => loop {
                log(Level::Info, "flooding the plugin log");
            },
            "stdout-flood" => {
                let page = "flooding stdout ".repeat(256);
                loop {
                    println!("{page}");
                }
            }
            "stranger" => Ok(vec!["refs/heads/never-offered".to_string()]),
            _ => Ok(refs.iter().map(|r| r.name.to_string()).collect()),
        }
    }
}

fn spin() -> ! {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

fn hoard() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}

mirror_plugin_sdk::branch_filter::export!(Hostile);
