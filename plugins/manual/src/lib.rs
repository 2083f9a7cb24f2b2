//! `manual`: a diverged ref keeps its local tip and an open conflict waits for an operator.

use mirror_plugin_sdk::types::Decision;

mirror_plugin_sdk::simple_conflict_strategy!(|_ctx, d| Decision::DeferManual(format!(
    "{} diverged ({} local, {} remote commits apart); resolve it with ours or theirs",
    d.name, d.ahead, d.behind
)));
