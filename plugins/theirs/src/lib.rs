//! `theirs`: a diverged ref is overwritten with the remote tip (local commits are dropped
//! from the ref; the conflict history keeps the old oid).

use mirror_plugin_sdk::types::Decision;

mirror_plugin_sdk::simple_conflict_strategy!(|_ctx, _diverged| Decision::TakeRemote);
