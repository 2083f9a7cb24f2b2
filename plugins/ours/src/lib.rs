//! `ours`: a diverged ref keeps its local tip; the remote side is ignored for this run.

use mirror_plugin_sdk::types::Decision;

mirror_plugin_sdk::simple_conflict_strategy!(|_ctx, _diverged| Decision::KeepLocal);
