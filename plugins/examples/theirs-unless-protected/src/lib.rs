//! Example conflict strategy: a diverged ref takes the remote tip (`theirs`),
//! unless it is a protected branch: then it stays and an operator decides.

use mirror_plugin_sdk::types::Decision;

mirror_plugin_sdk::simple_conflict_strategy!(|_ctx, d| if d.protected {
    Decision::DeferManual(format!(
        "{} is protected and diverged ({} local, {} remote commits apart): an operator decides",
        d.name, d.ahead, d.behind
    ))
} else {
    Decision::TakeRemote
});
