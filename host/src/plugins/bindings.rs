//! Host-side bindings of the three `mirror:plugin` worlds, generated from `wit/`.
//! The shared `types` and `log` interfaces are generated once, with the
//! branch-filter world, and reused by the other two.

pub mod branch_filter {
    wasmtime::component::bindgen!({
        world: "branch-filter",
        path: "../wit",
        imports: { "mirror:plugin/log.log": trappable },
        additional_derives: [PartialEq, Eq],
    });
}

pub mod conflict_strategy {
    wasmtime::component::bindgen!({
        world: "conflict-strategy",
        path: "../wit",
        with: {
            "mirror:plugin/types": super::branch_filter::mirror::plugin::types,
            "mirror:plugin/log": super::branch_filter::mirror::plugin::log,
        },
    });
}

pub mod auth_provider {
    wasmtime::component::bindgen!({
        world: "auth-provider",
        path: "../wit",
        with: {
            "mirror:plugin/types": super::branch_filter::mirror::plugin::types,
            "mirror:plugin/log": super::branch_filter::mirror::plugin::log,
        },
    });
}

pub use branch_filter::mirror::plugin::{log, types};
