//! What the examples share. A directory module: cargo would build `examples/common.rs` as an
//! example of its own.

/// Logs to stderr at `default` (such as `zoho_auth=info`) unless `RUST_LOG` says otherwise, in
/// colour only on a terminal, so that stdout carries only the example's own output.
pub fn init_logging(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
