//! `abort`: any diverged ref cancels the whole run, so no ref of the run changes.

use mirror_plugin_sdk::types::Decision;

mirror_plugin_sdk::simple_conflict_strategy!(|_ctx, d| Decision::Abort(format!(
    "{} diverged ({} local, {} remote commits apart)",
    d.name, d.ahead, d.behind
)));
