//! The guest side of the `mirror:plugin` contract.
//!
//! One module per world with the generated `Guest` trait and an export macro
//! (`branch_filter::export!` and its twins).
//! The shared WIT types live in [`types`]; [`log`] writes to the host's plugin log.
//! Helpers for the JSON config string and for ref names sit beside them.

pub use wit_bindgen;

// The generated bindings name this crate by its public path, from inside it too.
extern crate self as mirror_plugin_sdk;

/// Bindings for the `branch-filter` world; also the home of the shared types.
// The generated glue takes one argument per flattened WIT parameter.
#[allow(clippy::too_many_arguments)]
pub mod branch_filter {
    wit_bindgen::generate!({
        world: "branch-filter",
        path: "../../wit",
        pub_export_macro: true,
        default_bindings_module: "mirror_plugin_sdk::branch_filter",
        runtime_path: "mirror_plugin_sdk::wit_bindgen::rt",
    });
}

/// Bindings for the `conflict-strategy` world.
pub mod conflict_strategy {
    wit_bindgen::generate!({
        world: "conflict-strategy",
        path: "../../wit",
        pub_export_macro: true,
        default_bindings_module: "mirror_plugin_sdk::conflict_strategy",
        runtime_path: "mirror_plugin_sdk::wit_bindgen::rt",
        with: {
            "mirror:plugin/types@0.1.0": crate::types,
            "mirror:plugin/log@0.1.0": crate::log,
        },
    });
}

/// Bindings for the `auth-provider` world.
pub mod auth_provider {
    wit_bindgen::generate!({
        world: "auth-provider",
        path: "../../wit",
        pub_export_macro: true,
        default_bindings_module: "mirror_plugin_sdk::auth_provider",
        runtime_path: "mirror_plugin_sdk::wit_bindgen::rt",
        with: {
            "mirror:plugin/types@0.1.0": crate::types,
            "mirror:plugin/log@0.1.0": crate::log,
        },
    });
}

pub use branch_filter::mirror::plugin::{log, types};

pub mod auth;
pub mod config;
pub mod refs;

/// Builds the [`types::PluginInfo`] of the calling crate from its Cargo metadata.
#[macro_export]
macro_rules! plugin_info {
    () => {
        $crate::types::PluginInfo {
            name: env!("CARGO_PKG_NAME").to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: env!("CARGO_PKG_DESCRIPTION").to_string(),
        }
    };
}

/// Exports a conflict strategy that takes no config and decides from the diverged
/// ref alone: `simple_conflict_strategy!(|ctx, diverged| Decision::KeepLocal);`.
#[macro_export]
macro_rules! simple_conflict_strategy {
    ($decide:expr) => {
        struct SimpleStrategy;

        impl $crate::conflict_strategy::Guest for SimpleStrategy {
            fn info() -> $crate::types::PluginInfo {
                $crate::plugin_info!()
            }

            fn validate_config(config: String) -> Result<(), String> {
                $crate::config::expect_empty(&config)
            }

            fn decide(
                ctx: $crate::types::MirrorContext,
                config: String,
                diverged: $crate::types::DivergedRef,
            ) -> Result<$crate::types::Decision, String> {
                $crate::config::expect_empty(&config)?;
                let decide: fn(
                    &$crate::types::MirrorContext,
                    &$crate::types::DivergedRef,
                ) -> $crate::types::Decision = $decide;
                Ok(decide(&ctx, &diverged))
            }
        }

        $crate::conflict_strategy::export!(SimpleStrategy);
    };
}
